//! Binding and compilation: resources in, `Snapshot` and diagnostics out. Pure: no I/O, no clock.
//!
//! Order of work: validate (drop what Istio's webhook would reject) → translate Ingresses →
//! select the Gateways this instance applies → merge their servers per port → bind
//! VirtualServices to servers (host intersection) → compile routes → build clusters from the
//! registry and DestinationRules → cross-resource analysis (`analyze/`, istioctl's analyzers).

use crate::host;
use crate::ingress;
use crate::registry::{self, Registry};
use crate::routes::{self, RouteCtx};
use crate::snapshot::{
    Listener, ListenerKind, Protocol, RouteTable, SecretData, ServerBlock, Snapshot, TcpRoute, TlsRoute, VirtualHost,
};
use crate::Options;
use portico_api::diag::code;
use portico_api::istio::{Gateway, Server, ServerTlsMode, VirtualService};
use portico_api::{Diagnostic, Kind, Resource, Spec};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
}

/// Istio's precedence among resources of one kind: oldest first (by the instant, whatever the
/// offset it is written in; no timestamp counts as oldest, like Go's zero time), then name,
/// then namespace (Istio's `sortConfigByCreationTime`).
pub(crate) fn precedence(a: &Resource, b: &Resource) -> std::cmp::Ordering {
    let t = |r: &Resource| r.meta.creation_timestamp.as_deref().and_then(timestamp).unwrap_or(i64::MIN);
    t(a).cmp(&t(b)).then_with(|| a.name().cmp(b.name())).then_with(|| a.namespace().cmp(b.namespace()))
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05Z`, `…05.5+02:00`);
/// fractions are dropped (Kubernetes keeps whole seconds). `None` when it does not read.
pub fn timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let num =
        |x: Option<&str>| x.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))?.parse::<i64>().ok();
    let (y, m, day) = (num(d.next())?, num(d.next())?, num(d.next())?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut o = off[1..].splitn(2, ':');
        let (oh, om) = (num(o.next())?, num(o.next())?);
        (c, sign * (oh * 3600 + om * 60))
    };
    let clock = clock.split_once('.').map(|(c, _)| c).unwrap_or(clock);
    let mut c = clock.splitn(3, ':');
    let (h, mi, sec) = (num(c.next())?, num(c.next())?, num(c.next())?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

pub fn compile(resources: &[Resource], opts: &Options) -> Compiled {
    let Built { snapshot, mut diagnostics, analysis } = build(resources, opts);
    diagnostics.extend(analysis.run(&snapshot));
    tidy(&mut diagnostics);
    Compiled { snapshot, diagnostics }
}

/// A snapshot ready to serve, what validation and compilation found on the way, and the
/// cross-resource analysis still to run.
pub struct Built<'a> {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    pub analysis: Analysis<'a>,
}

/// istioctl's analyzers over one load. They only add findings, so a reload serves the snapshot
/// first and runs them after: with thousands of resources they cost as much as compiling.
pub struct Analysis<'a> {
    resources: &'a [Resource],
    opts: &'a Options,
    /// The user's resources that passed validation, were rejected by it, or are not exported
    /// to this gateway: the analyzers see all of them.
    analyzed: Vec<&'a Resource>,
    /// What the compiler served besides the user's own (from Ingresses and the Gateway API).
    translated: Vec<Resource>,
    gateway_api: Vec<Resource>,
    /// Served resources the compiler saw (valid, exported, not Ingresses).
    served: Vec<&'a Resource>,
    /// What a server collision did at run time (IST0145), merged into the analyzer's finding.
    conflicts: Vec<Diagnostic>,
}

impl Analysis<'_> {
    /// The analyzers' findings (not yet merged with the compiler's: see [`compile`]).
    pub fn run(self, snapshot: &Snapshot) -> Vec<Diagnostic> {
        // The same registry and DestinationRules the compiler used, rebuilt from the same
        // resources in the same order.
        let mut all: Vec<&Resource> = self.served.clone();
        all.extend(self.translated.iter());
        all.extend(self.gateway_api.iter());
        all.sort_by(|a, b| precedence(a, b));
        let of_kind = |k: Kind| -> Vec<&Resource> { all.iter().copied().filter(|r| r.kind() == k).collect() };
        let registry = Registry::build(&of_kind(Kind::ServiceEntry), &self.opts.domain_suffix);
        let drs = of_kind(Kind::DestinationRule);
        let cx = crate::analyze::Ctx {
            resources: self.analyzed,
            translated: self.translated.iter().collect(),
            opts: self.opts,
            registry: &registry,
            drs: &drs,
            secrets: &snapshot.secrets,
        };
        let mut found = Vec::new();
        crate::analyze::run(&cx, &mut found);
        merge_runtime_conflicts(&mut found, self.conflicts);
        crate::analyze::apply_suppress_annotations(self.resources, &mut found);
        tidy(&mut found);
        found
    }
}

/// Diagnostics in file order, each once.
fn tidy(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
}

/// Validate and compile: the snapshot to serve, with the analysis left to run.
pub fn build<'a>(resources: &'a [Resource], opts: &'a Options) -> Built<'a> {
    let mut diags = Vec::new();

    // 1. Validation and duplicates.
    // FxHash: config names, hashed once per object on every reload (SipHash was 3% of it).
    let mut seen = rustc_hash::FxHashSet::default();
    seen.reserve(resources.len());
    let mut valid: Vec<&Resource> = Vec::new();
    // What the webhook rejects is not served, but istioctl's analyzers still see it (a
    // VirtualService naming a Gateway with a schema error gets IST0106 on the Gateway, not a
    // "gateway not found").
    let mut rejected_res: Vec<&Resource> = Vec::new();
    let mut hidden: Vec<&Resource> = Vec::new();
    for res in resources {
        let found = crate::validate::validate(res);
        let rejected = found.iter().any(Diagnostic::is_error);
        diags.extend(found);
        if rejected {
            rejected_res.push(res);
            continue;
        }
        diags.extend(crate::support::unsupported(res));
        if !seen.insert((res.kind(), res.namespace().to_string(), res.name().to_string())) {
            diags.push(Diagnostic::error(
                res.origin.location(),
                code::DUPLICATE,
                res.key(),
                format!("duplicate {}: an earlier file already defines it; this one is ignored", res.key()),
            ));
            continue;
        }
        if !exported_to_gateway(res, &opts.gateway_namespace, &mut diags) {
            // Not served here, but the analyzers reason about exportTo themselves (IST0109,
            // hosts exported to a VirtualService's namespace).
            hidden.push(res);
            continue;
        }
        valid.push(res);
    }

    // 2. Ingress → Gateway + VirtualServices (owned, so kept in a side vector).
    let ingresses: Vec<&Resource> = valid.iter().copied().filter(|r| r.kind() == Kind::Ingress).collect();
    let translated = ingress::translate(&ingresses, opts, &mut diags);
    // 2b. Gateway API → Gateway + VirtualServices, with the status of every object we own.
    let gateway_api = crate::gateway_api::translate(&valid, opts, &mut diags);
    let mut all: Vec<&Resource> = valid.iter().copied().filter(|r| r.kind() != Kind::Ingress).collect();
    all.extend(translated.iter());
    all.extend(gateway_api.resources.iter());
    all.sort_by(|a, b| precedence(a, b));

    let of_kind = |k: Kind| -> Vec<&Resource> { all.iter().copied().filter(|r| r.kind() == k).collect() };
    let gateways = of_kind(Kind::Gateway);
    let vss = of_kind(Kind::VirtualService);
    let drs = of_kind(Kind::DestinationRule);
    let ses = of_kind(Kind::ServiceEntry);

    let mut snapshot = Snapshot::default();
    for res in of_kind(Kind::Secret) {
        if let Spec::Secret(s) = &*res.spec {
            snapshot
                .secrets
                .insert([res.namespace(), res.name()].join("/"), Arc::new(decode_secret(res, s, &mut diags)));
        }
    }

    let registry = Registry::build(&ses, &opts.domain_suffix);
    let mut b = Builder { opts, diags, registry, drs, vss: vss.clone(), snapshot, conflicts: Vec::new() };

    // 3. Gateways this instance applies.
    let applied: Vec<(&Resource, &Gateway)> = gateways
        .iter()
        .filter_map(|r| match &*r.spec {
            Spec::Gateway(g) => Some((*r, g)),
            _ => None,
        })
        .filter(|(_, g)| g.selector.iter().all(|(k, v)| opts.labels.get(k) == Some(v)))
        .collect();

    b.build_listeners(&applied, &vss);
    b.build_clusters();

    // Cross-resource analysis on what the user wrote (Ingress and Gateway API
    // translations are not theirs; the Gateway API reports its problems as status).
    let mut analyzed: Vec<&Resource> =
        valid.iter().copied().chain(rejected_res.iter().copied()).chain(hidden.iter().copied()).collect();
    analyzed.sort_by(|a, b| precedence(a, b));
    let served: Vec<&Resource> = valid.iter().copied().filter(|r| r.kind() != Kind::Ingress).collect();
    let Builder { mut diags, mut snapshot, conflicts, .. } = b;
    snapshot.gateway_api = gateway_api.statuses;
    crate::analyze::apply_suppress_annotations(resources, &mut diags);
    tidy(&mut diags);
    let analysis =
        Analysis { resources, opts, analyzed, translated, gateway_api: gateway_api.resources, served, conflicts };
    Built { snapshot, diagnostics: diags, analysis }
}

/// Istio's `exportTo`: a VirtualService, DestinationRule or ServiceEntry applies to this gateway
/// only when exported to the gateway's own namespace (`.` is the resource's namespace, `*` every
/// namespace, `~` none; unset is `*`, Istio's default). A hidden VirtualService that names
/// gateways is most likely a mistake and is warned; other hidden resources are meant for sidecars
/// elsewhere and are dropped silently, as Istio does.
fn exported_to_gateway(res: &Resource, gateway_ns: &str, diags: &mut Vec<Diagnostic>) -> bool {
    let export_to = match &*res.spec {
        Spec::VirtualService(vs) => &vs.export_to,
        Spec::DestinationRule(dr) => &dr.export_to,
        Spec::ServiceEntry(se) => &se.export_to,
        _ => return true,
    };
    if exported_to(export_to, res.namespace(), gateway_ns) {
        return true;
    }
    if let Spec::VirtualService(vs) = &*res.spec {
        if vs.gateways.iter().any(|g| g != "mesh") {
            diags.push(Diagnostic::warning(
                res.origin.locate("spec.exportTo"),
                code::IGNORED,
                res.key(),
                format!(
                    "exportTo {export_to:?} does not include the gateway's namespace `{gateway_ns}`: this gateway does \
                     not see this VirtualService"
                ),
            ));
        }
    }
    false
}

/// Whether a resource in `own_ns` with `export_to` is visible in `ns`.
pub fn exported_to(export_to: &[String], own_ns: &str, ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "~" => false,
            "." => own_ns == ns,
            other => other == ns,
        })
}

fn decode_secret(res: &Resource, s: &portico_api::k8s::Secret, diags: &mut Vec<Diagnostic>) -> SecretData {
    use base64::Engine;
    let mut data = BTreeMap::new();
    for (k, v) in &s.data {
        let compact: String = v.split_whitespace().collect();
        match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
            Ok(bytes) => {
                data.insert(k.clone(), bytes);
            }
            Err(e) => diags.push(Diagnostic::error(
                res.origin.locate(&format!("data.{k}")),
                code::BAD_VALUE,
                res.key(),
                format!("data.{k}: not valid base64 ({e})"),
            )),
        }
    }
    for (k, v) in &s.string_data {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    SecretData { data }
}

/// A server host without its `namespace/` part, lower case.
fn host_name(h: &str) -> String {
    host::split_namespace(h).1.to_ascii_lowercase()
}

/// The virtual hosts of one route table, merged by name: a name already there gets the routes
/// appended (catch-alls kept last, Istio's `CombineVHostRoutes`) and redirects if either side
/// does. Names are indexed: a port with thousands of hosts merges in linear time.
#[derive(Default)]
struct VhostMerge {
    vhosts: Vec<VirtualHost>,
    at: rustc_hash::FxHashMap<String, usize>,
}

impl VhostMerge {
    fn add(&mut self, vh: VirtualHost) {
        let existing = match self.at.get(&vh.name) {
            Some(&i) => &mut self.vhosts[i],
            None => {
                self.at.insert(vh.name.clone(), self.vhosts.len());
                self.vhosts.push(vh);
                return;
            }
        };
        existing.https_redirect |= vh.https_redirect;
        if vh.routes.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut existing.routes);
        all.extend(vh.routes);
        let (specific, catch_all): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| !r.is_catch_all());
        existing.routes = specific;
        existing.routes.extend(catch_all);
    }
}

/// A Gateway server in the merge, with where it came from.
struct ServerRef<'a> {
    gw_res: &'a Resource,
    index: usize,
    server: &'a Server,
    protocol: Protocol,
}

impl ServerRef<'_> {
    fn gateway_key(&self) -> String {
        [self.gw_res.namespace(), self.gw_res.name()].join("/")
    }
}

struct Builder<'a> {
    opts: &'a Options,
    diags: Vec<Diagnostic>,
    registry: Registry<'a>,
    drs: Vec<&'a Resource>,
    /// All VirtualServices, where `delegate` references are looked up.
    vss: Vec<&'a Resource>,
    snapshot: Snapshot,
    /// What a server collision did at run time (IST0145), merged into the analyzer's finding.
    conflicts: Vec<Diagnostic>,
}

/// Join each run-time collision note to the analyzer's IST0145 for the same server; notes the
/// analyzer has no finding for (different selectors that both match this instance) stand alone.
fn merge_runtime_conflicts(found: &mut Vec<Diagnostic>, notes: Vec<Diagnostic>) {
    for note in notes {
        let same = found.iter_mut().find(|d| {
            d.code == code::CONFLICTING_GATEWAYS
                && d.resource == note.resource
                && d.location == note.location
                && d.message.starts_with("Conflict with gateways")
        });
        match same {
            Some(d) => {
                d.message.push_str(" At run time: ");
                d.message.push_str(&note.message);
            }
            None => found.push(note),
        }
    }
}

/// Does the VirtualService name this Gateway in `gateways` (`name` = the VS's namespace, `ns/name`)?
pub fn vs_names_gateway(vs_ns: &str, gateways: &[String], gw_ns: &str, gw_name: &str) -> bool {
    gateways.iter().any(|g| gateway_ref_matches(g, vs_ns, gw_ns, gw_name))
}

pub(crate) fn gateway_ref_matches(g: &str, vs_ns: &str, gw_ns: &str, gw_name: &str) -> bool {
    let (ns, name) = match g.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (vs_ns, g),
    };
    // Istio also accepts `name.namespace.svc.cluster.local`-style refs; `name.ns` short form too.
    if ns == gw_ns && name == gw_name {
        return true;
    }
    if !g.contains('/') {
        if let Some((n, rest)) = g.split_once('.') {
            let rest_ns = rest.split('.').next().unwrap_or("");
            return n == gw_name && rest_ns == gw_ns;
        }
    }
    false
}

/// The names a VirtualService serves on a server: each VS host (short names resolved)
/// intersected with each server host whose `ns/` part admits the VS's namespace.
fn bound_hosts(
    server_hosts: &[String],
    gw_ns: &str,
    vs_res: &Resource,
    vs: &VirtualService,
    domain_suffix: &str,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for vh in &vs.hosts {
        let vh = host::resolve_short_name(vh, vs_res.namespace(), domain_suffix);
        for sh in server_hosts {
            let (ns, shost) = host::split_namespace(sh);
            if !namespace_allows(ns, gw_ns, vs_res.namespace()) {
                continue;
            }
            if let Some(name) = host::intersect(shost, &vh) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

fn route_ctx<'x>(
    opts: &'x Options,
    s: &ServerRef<'x>,
    vs_res: &'x Resource,
    port: u32,
    vss: &'x [&'x Resource],
) -> RouteCtx<'x> {
    RouteCtx {
        vss,
        vs_res,
        gw_ns: s.gw_res.namespace(),
        gw_name: s.gw_res.name(),
        port,
        labels: &opts.labels,
        gateway_namespace: &opts.gateway_namespace,
        domain_suffix: &opts.domain_suffix,
    }
}

/// May a VirtualService in `vs_ns` bind to a server host written `ns/host` on a Gateway in `gw_ns`?
fn namespace_allows(host_ns: &str, gw_ns: &str, vs_ns: &str) -> bool {
    match host_ns {
        "*" => true,
        "." => vs_ns == gw_ns,
        "~" => false,
        ns => ns == vs_ns,
    }
}

impl<'a> Builder<'a> {
    fn build_listeners(&mut self, applied: &[(&'a Resource, &'a Gateway)], vss: &[&'a Resource]) {
        // Merge servers per port, in Gateway precedence order.
        let mut by_port: BTreeMap<u32, Vec<ServerRef<'a>>> = BTreeMap::new();
        for (gw_res, gw) in applied {
            for (i, server) in gw.servers.iter().enumerate() {
                let Some(port) = &server.port else { continue };
                let Some(protocol) = Protocol::parse(&port.protocol) else { continue };
                by_port.entry(port.number).or_default().push(ServerRef { gw_res, index: i, server, protocol });
            }
        }
        for (port, servers) in by_port {
            if let Some(l) = self.build_listener(port, servers, vss) {
                self.snapshot.listeners.push(l);
            }
        }
    }

    fn listener_kind(s: &ServerRef<'_>) -> ListenerKind {
        if s.protocol.is_plain_http() {
            ListenerKind::Http
        } else if s.protocol.is_tcp() {
            ListenerKind::Tcp
        } else {
            ListenerKind::Tls
        }
    }

    fn build_listener(&mut self, port: u32, servers: Vec<ServerRef<'a>>, vss: &[&'a Resource]) -> Option<Listener> {
        let kind = Self::listener_kind(&servers[0]);
        // Istio's gateway merge, in Gateway precedence order: a port serves one kind of traffic
        // (later servers of another kind are dropped); a port serves one TCP server (later ones
        // are dropped, so an older TCP server without routes leaves the port closed); a TLS
        // server repeating a host an earlier TLS server has on the port is dropped whole;
        // plaintext HTTP servers all stay and share their virtual hosts.
        let mut kept: Vec<ServerRef<'a>> = Vec::new();
        for s in servers {
            let first = kept.first().map(|k| k.gateway_key()).unwrap_or_default();
            if Self::listener_kind(&s) != kind {
                self.conflicts.push(Diagnostic::error(
                    s.gw_res.origin.locate(&format!("spec.servers[{}].hosts", s.index)),
                    code::CONFLICTING_GATEWAYS,
                    s.gw_res.key(),
                    format!(
                        "port {port}: protocol {} conflicts with the {:?} server of Gateway {first} already on this port; this server is ignored",
                        s.protocol.as_str(),
                        kind
                    ),
                ));
                continue;
            }
            if kind == ListenerKind::Tcp && !kept.is_empty() {
                self.conflicts.push(Diagnostic::error(
                    s.gw_res.origin.locate(&format!("spec.servers[{}].hosts", s.index)),
                    code::CONFLICTING_GATEWAYS,
                    s.gw_res.key(),
                    format!(
                        "port {port} already has the TCP server of Gateway {first}, which takes precedence (older, or same age and first by name then namespace); this server is ignored"
                    ),
                ));
                continue;
            }
            if kind == ListenerKind::Tls {
                let dup = kept.iter().find_map(|k| {
                    s.server
                        .hosts
                        .iter()
                        .map(|h| host_name(h))
                        .find(|h| k.server.hosts.iter().any(|o| host_name(o) == *h))
                        .map(|h| (k.gateway_key(), h))
                });
                if let Some((owner, h)) = dup {
                    self.conflicts.push(Diagnostic::error(
                        s.gw_res.origin.locate(&format!("spec.servers[{}].hosts", s.index)),
                        code::CONFLICTING_GATEWAYS,
                        s.gw_res.key(),
                        format!(
                            "port {port} host `{h}` is already served by a TLS server of Gateway {owner}, which takes precedence; this whole server is ignored"
                        ),
                    ));
                    continue;
                }
            }
            kept.push(s);
        }
        if kind == ListenerKind::Http {
            self.note_shared_hosts(port, &kept);
        }

        let mut blocks = Vec::new();
        let mut http_vhosts = VhostMerge::default();
        let mut tcp_routes = Vec::new();
        for s in &kept {
            let bound: Vec<(&'a Resource, &'a VirtualService)> = vss
                .iter()
                .filter_map(|r| match &*r.spec {
                    Spec::VirtualService(vs) => Some((*r, vs)),
                    _ => None,
                })
                .filter(|(r, vs)| vs_names_gateway(r.namespace(), &vs.gateways, s.gw_res.namespace(), s.gw_res.name()))
                .collect();
            let tls = s.server.tls.as_ref();
            let https_redirect = tls.is_some_and(|t| t.https_redirect);
            let tls_ctx = crate::tls::TlsCtx {
                gw_res: s.gw_res,
                server_index: s.index,
                secrets: &self.snapshot.secrets,
                gateway_namespace: &self.opts.gateway_namespace,
            };
            let server_tls = crate::tls::server_tls(&tls_ctx, s.server, &mut self.diags);
            let mut block = ServerBlock {
                gateway: s.gateway_key(),
                index: s.index,
                name: s.server.name.clone(),
                port_name: s.server.port.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                protocol: s.protocol,
                hosts: s.server.hosts.clone(),
                https_redirect,
                tls: server_tls,
                http: None,
                tls_routes: Vec::new(),
                tcp_routes: Vec::new(),
            };
            match kind {
                ListenerKind::Http => {
                    let vhosts = self.virtual_hosts(s, &bound, port, https_redirect);
                    for vh in vhosts {
                        http_vhosts.add(vh);
                    }
                    // Istio builds a redirecting virtual host for every host of an
                    // `httpsRedirect` server, VirtualService or not.
                    if https_redirect {
                        for h in &s.server.hosts {
                            let vh = VirtualHost { name: host_name(h), routes: Vec::new(), https_redirect: true };
                            http_vhosts.add(vh);
                        }
                    }
                }
                ListenerKind::Tls => {
                    let mode = tls.map(|t| t.mode).unwrap_or_default();
                    let terminated =
                        matches!(mode, ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
                    if terminated && s.protocol == Protocol::Https {
                        let vhosts = self.virtual_hosts(s, &bound, port, false);
                        block.http = Some(Arc::new(RouteTable::new(vhosts)));
                    } else if terminated {
                        block.tcp_routes = self.tcp_routes(s, &bound, port);
                    } else {
                        block.tls_routes = self.tls_routes(s, &bound, port);
                    }
                }
                ListenerKind::Tcp => {
                    let routes = self.tcp_routes(s, &bound, port);
                    if tcp_routes.is_empty() {
                        tcp_routes = routes.clone();
                    }
                    block.tcp_routes = routes;
                }
            }
            blocks.push(Arc::new(block));
        }
        if blocks.is_empty() {
            return None;
        }
        // A TCP server with no route opens no listener (Istio builds no filter chain for it).
        if kind == ListenerKind::Tcp && tcp_routes.is_empty() {
            return None;
        }
        let binds: BTreeSet<Option<&String>> = kept.iter().map(|s| s.server.bind.as_ref()).collect();
        let bind = if binds.len() == 1 { binds.into_iter().next().flatten().cloned() } else { None };
        let sni = host::HostIndex::new(
            blocks.iter().enumerate().flat_map(|(i, b)| b.hosts.iter().map(move |h| (host::split_namespace(h).1, i))),
        );
        Some(Listener {
            port,
            kind,
            bind,
            servers: blocks,
            http: (kind == ListenerKind::Http).then(|| Arc::new(RouteTable::new(http_vhosts.vhosts))),
            tcp_routes,
            sni,
        })
    }

    /// Plaintext HTTP servers of several Gateways on one port that name the same host: Istio
    /// serves one virtual host for it with the routes of every bound VirtualService.
    fn note_shared_hosts(&mut self, port: u32, servers: &[ServerRef<'a>]) {
        let mut owners: Vec<(String, String)> = Vec::new();
        for s in servers {
            for h in &s.server.hosts {
                let hostname = host_name(h);
                if let Some((_, owner)) = owners.iter().find(|(hn, owner)| *hn == hostname && *owner != s.gateway_key())
                {
                    self.conflicts.push(Diagnostic::error(
                        s.gw_res.origin.locate(&format!("spec.servers[{}].hosts", s.index)),
                        code::CONFLICTING_GATEWAYS,
                        s.gw_res.key(),
                        format!(
                            "port {port} host `{hostname}` is also a host of Gateway {owner}; the two share one virtual host (routes of both, the older Gateway's first)"
                        ),
                    ));
                } else {
                    owners.push((hostname, s.gateway_key()));
                }
            }
        }
    }

    /// Virtual hosts of one server: for each bound VS, the intersection of its hosts with the
    /// server's hosts (the narrower name wins), routes of several VSs concatenated.
    fn virtual_hosts(
        &mut self,
        s: &ServerRef<'a>,
        bound: &[(&'a Resource, &'a VirtualService)],
        port: u32,
        https_redirect: bool,
    ) -> Vec<VirtualHost> {
        let mut order: Vec<String> = Vec::new();
        let mut routes_by_host: BTreeMap<String, Vec<Arc<crate::snapshot::Route>>> = BTreeMap::new();
        for (vs_res, vs) in bound {
            if vs.http.is_empty() {
                continue;
            }
            let names = bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs, &self.opts.domain_suffix);
            if names.is_empty() {
                continue;
            }
            let ctx = route_ctx(self.opts, s, vs_res, port, &self.vss);
            let compiled = routes::compile_http_routes(&ctx, vs, &self.registry, &mut self.diags);
            for name in names {
                let routes = match routes_by_host.entry(name) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        order.push(e.key().clone());
                        e.insert(Vec::new())
                    }
                };
                routes.extend(compiled.iter().cloned());
            }
        }
        order
            .into_iter()
            .map(|name| {
                let mut routes = routes_by_host.remove(&name).unwrap_or_default();
                // Catch-all routes go last so a later VS's specific routes stay reachable (Istio).
                let (specific, catch_all): (Vec<_>, Vec<_>) = routes.drain(..).partition(|r| !r.is_catch_all());
                let mut routes = specific;
                routes.extend(catch_all);
                VirtualHost { name, routes, https_redirect }
            })
            .collect()
    }

    fn tcp_routes(
        &mut self,
        s: &ServerRef<'a>,
        bound: &[(&'a Resource, &'a VirtualService)],
        port: u32,
    ) -> Vec<Arc<TcpRoute>> {
        let mut out = Vec::new();
        for (vs_res, vs) in bound {
            if vs.tcp.is_empty()
                || bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs, &self.opts.domain_suffix).is_empty()
            {
                continue;
            }
            let ctx = route_ctx(self.opts, s, vs_res, port, &self.vss);
            let routes = routes::compile_tcp_routes(&ctx, vs, &self.registry, &mut self.diags);
            // Istio: the first VirtualService with TCP routes for the server wins.
            if !routes.is_empty() {
                out = routes;
                break;
            }
        }
        out
    }

    fn tls_routes(
        &mut self,
        s: &ServerRef<'a>,
        bound: &[(&'a Resource, &'a VirtualService)],
        port: u32,
    ) -> Vec<Arc<TlsRoute>> {
        let mut out = Vec::new();
        for (vs_res, vs) in bound {
            if vs.tls.is_empty()
                || bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs, &self.opts.domain_suffix).is_empty()
            {
                continue;
            }
            let ctx = route_ctx(self.opts, s, vs_res, port, &self.vss);
            let routes = routes::compile_tls_routes(&ctx, vs, &s.server.hosts, &self.registry, &mut self.diags);
            out.extend(routes);
        }
        out
    }

    /// Clusters for every registry host × port, and for each DestinationRule subset.
    fn build_clusters(&mut self) {
        let mut clusters = BTreeMap::new();
        for svc in self.registry.services.values() {
            if svc.host.starts_with('*') {
                continue;
            }
            let svc_ns = svc.service_namespace.clone();
            let dr = registry::find_destination_rule(
                &self.drs,
                &svc.host,
                &self.opts.gateway_namespace,
                &svc_ns,
                &self.opts.domain_suffix,
            );
            for port in &svc.ports {
                let base = registry::port_policy(dr.and_then(|(_, d)| d.traffic_policy.as_ref()), port.number);
                let mut c = registry::build_cluster(svc, port, None, &base);
                registry::apply_locality(&mut c, &base, self.opts);
                let dr_ns = dr.map(|(r, _)| r.namespace()).unwrap_or(&svc_ns);
                let namespaces = [self.opts.gateway_namespace.as_str(), dr_ns];
                c.tls = registry::upstream_tls(base.tls.as_ref(), &self.snapshot.secrets, &namespaces);
                clusters.insert(c.name.clone(), Arc::new(c));
                if let Some((dr_res, d)) = dr {
                    for (si, subset) in d.subsets.iter().enumerate() {
                        let sub_pol =
                            subset.traffic_policy.as_ref().map(|tp| registry::port_policy(Some(tp), port.number));
                        let policy = match &sub_pol {
                            Some(p) => registry::merge_policy(base.clone(), p),
                            None => base.clone(),
                        };
                        let mut c = registry::build_cluster(svc, port, Some((&subset.name, &subset.labels)), &policy);
                        registry::apply_locality(&mut c, &policy, self.opts);
                        c.tls = registry::upstream_tls(policy.tls.as_ref(), &self.snapshot.secrets, &namespaces);
                        // Istio reports a subset no workload matches, once per subset; an entry
                        // without endpoints has none to match (its host is resolved only for
                        // the subset-less cluster).
                        if c.endpoints.is_empty() && port.number == svc.ports[0].number {
                            self.diags.push(Diagnostic::error(
                                dr_res.origin.locate(&format!("spec.subsets[{si}].labels")),
                                code::SUBSET_NO_ENDPOINTS,
                                dr_res.key(),
                                format!(
                                    "The Subset {} defined in the DestinationRule does not select any pods. Which may \
                                     lead to 503 UH (NoHealthyUpstream). (No endpoint of {} has the labels {:?}.)",
                                    subset.name, svc.host, subset.labels
                                ),
                            ));
                        }
                        clusters.insert(c.name.clone(), Arc::new(c));
                    }
                }
            }
        }
        self.snapshot.clusters = clusters;
    }
}
