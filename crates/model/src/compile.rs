//! Binding and compilation: resources in, `Snapshot` and diagnostics out. Pure: no I/O, no clock.
//!
//! Order of work: validate (drop what Istio's webhook would reject) → translate Ingresses →
//! select the Gateways this instance applies → merge their servers per port → bind
//! VirtualServices to servers (host intersection) → compile routes → build clusters from the
//! registry and DestinationRules → cross-resource analysis.

use crate::host;
use crate::ingress;
use crate::registry::{self, Registry};
use crate::routes::{self, RouteCtx};
use crate::snapshot::{
    Listener, ListenerKind, Protocol, RouteTable, SecretData, ServerBlock, Snapshot, TcpRoute, TlsRoute, VirtualHost,
};
use portico_api::diag::code;
use portico_api::istio::{Gateway, Server, ServerTlsMode, VirtualService};
use portico_api::{Diagnostic, Kind, Resource, Spec};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// What this gateway instance is.
#[derive(Clone, Debug)]
pub struct Options {
    /// This instance's labels; a Gateway applies when its selector is a subset.
    pub labels: BTreeMap<String, String>,
    /// The namespace the gateway runs in (where `credentialName` secrets are looked up).
    pub gateway_namespace: String,
    /// This instance's locality, `region/zone/subzone` (Istio's); `None` turns locality load
    /// balancing off.
    pub locality: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            gateway_namespace: "istio-system".to_string(),
            locality: None,
        }
    }
}

pub struct Compiled {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
}

/// Istio's precedence among resources of one kind: oldest first, then name, then namespace.
fn precedence(a: &Resource, b: &Resource) -> std::cmp::Ordering {
    let ta = a.meta.creation_timestamp.as_deref().unwrap_or("");
    let tb = b.meta.creation_timestamp.as_deref().unwrap_or("");
    ta.cmp(tb).then_with(|| a.name().cmp(b.name())).then_with(|| a.namespace().cmp(b.namespace()))
}

pub fn compile(resources: &[Resource], opts: &Options) -> Compiled {
    let mut diags = Vec::new();

    // 1. Validation and duplicates.
    let mut seen = HashSet::new();
    let mut valid: Vec<&Resource> = Vec::new();
    for res in resources {
        let found = crate::validate::validate(res);
        let rejected = found.iter().any(Diagnostic::is_error);
        diags.extend(found);
        if rejected {
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
            continue;
        }
        valid.push(res);
    }

    // 2. Ingress → Gateway + VirtualServices (owned, so kept in a side vector).
    let ingresses: Vec<&Resource> = valid.iter().copied().filter(|r| r.kind() == Kind::Ingress).collect();
    let translated = ingress::translate(&ingresses, opts, &mut diags);
    let mut all: Vec<&Resource> = valid.iter().copied().filter(|r| r.kind() != Kind::Ingress).collect();
    all.extend(translated.iter());
    all.sort_by(|a, b| precedence(a, b));

    let of_kind = |k: Kind| -> Vec<&Resource> { all.iter().copied().filter(|r| r.kind() == k).collect() };
    let gateways = of_kind(Kind::Gateway);
    let vss = of_kind(Kind::VirtualService);
    let drs = of_kind(Kind::DestinationRule);
    let ses = of_kind(Kind::ServiceEntry);

    let mut snapshot = Snapshot::default();
    for res in of_kind(Kind::Secret) {
        if let Spec::Secret(s) = &res.spec {
            snapshot
                .secrets
                .insert(format!("{}/{}", res.namespace(), res.name()), Arc::new(decode_secret(res, s, &mut diags)));
        }
    }

    let registry = Registry::build(&ses);
    let mut b = Builder { opts, diags, registry, drs, vss: vss.clone(), snapshot };

    // 3. Gateways this instance applies.
    let applied: Vec<(&Resource, &Gateway)> = gateways
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((*r, g)),
            _ => None,
        })
        .filter(|(_, g)| g.selector.iter().all(|(k, v)| opts.labels.get(k) == Some(v)))
        .collect();

    b.analyze_vs_gateway_refs(&vss, &gateways);
    b.build_listeners(&applied, &vss);
    b.build_clusters();
    b.analyze_destinations(&vss);
    analyze_reachability(&vss, &mut b.diags);

    let Builder { mut diags, snapshot, .. } = b;
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
    Compiled { snapshot, diagnostics: diags }
}

/// Istio's `exportTo`: a VirtualService, DestinationRule or ServiceEntry applies to this gateway
/// only when exported to the gateway's own namespace (`.` is the resource's namespace, `*` every
/// namespace, `~` none; unset is `*`, Istio's default). A hidden VirtualService that names
/// gateways is most likely a mistake and is warned; other hidden resources are meant for sidecars
/// elsewhere and are dropped silently, as Istio does.
fn exported_to_gateway(res: &Resource, gateway_ns: &str, diags: &mut Vec<Diagnostic>) -> bool {
    let export_to = match &res.spec {
        Spec::VirtualService(vs) => &vs.export_to,
        Spec::DestinationRule(dr) => &dr.export_to,
        Spec::ServiceEntry(se) => &se.export_to,
        _ => return true,
    };
    if exported_to(export_to, res.namespace(), gateway_ns) {
        return true;
    }
    if let Spec::VirtualService(vs) = &res.spec {
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

/// A Gateway server in the merge, with where it came from.
struct ServerRef<'a> {
    gw_res: &'a Resource,
    index: usize,
    server: &'a Server,
    protocol: Protocol,
}

impl ServerRef<'_> {
    fn gateway_key(&self) -> String {
        format!("{}/{}", self.gw_res.namespace(), self.gw_res.name())
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
}

/// Does the VirtualService name this Gateway in `gateways` (`name` = the VS's namespace, `ns/name`)?
pub fn vs_names_gateway(vs_ns: &str, gateways: &[String], gw_ns: &str, gw_name: &str) -> bool {
    gateways.iter().any(|g| gateway_ref_matches(g, vs_ns, gw_ns, gw_name))
}

fn gateway_ref_matches(g: &str, vs_ns: &str, gw_ns: &str, gw_name: &str) -> bool {
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
fn bound_hosts(server_hosts: &[String], gw_ns: &str, vs_res: &Resource, vs: &VirtualService) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for vh in &vs.hosts {
        let vh = host::resolve_short_name(vh, vs_res.namespace());
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
        // A port serves one kind of traffic; later servers of another kind lose (Istio: first wins).
        let mut kept: Vec<ServerRef<'a>> = Vec::new();
        for s in servers {
            if Self::listener_kind(&s) != kind {
                let first = &kept.first().map(|k| k.gateway_key()).unwrap_or_default();
                self.diags.push(Diagnostic::error(
                    s.gw_res.origin.locate(&format!("spec.servers[{}].port", s.index)),
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
            kept.push(s);
        }
        self.check_host_conflicts(port, &kept);

        let mut blocks = Vec::new();
        let mut http_vhosts: Vec<VirtualHost> = Vec::new();
        let mut tcp_routes = Vec::new();
        for s in &kept {
            let bound: Vec<(&'a Resource, &'a VirtualService)> = vss
                .iter()
                .filter_map(|r| match &r.spec {
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
                        if http_vhosts.iter().any(|v| v.name == vh.name) {
                            continue; // reported by check_host_conflicts
                        }
                        http_vhosts.push(vh);
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
        Some(Listener {
            port,
            kind,
            bind,
            servers: blocks,
            http: (kind == ListenerKind::Http).then(|| Arc::new(RouteTable::new(http_vhosts))),
            tcp_routes,
        })
    }

    /// Same port, same host on two servers: IST0145. For plaintext HTTP the first server keeps
    /// the host; for TLS the SNI is ambiguous and the later one loses too.
    fn check_host_conflicts(&mut self, port: u32, servers: &[ServerRef<'a>]) {
        let mut owners: Vec<(String, String)> = Vec::new();
        for s in servers {
            for h in &s.server.hosts {
                let (_, hostname) = host::split_namespace(h);
                let hostname = hostname.to_ascii_lowercase();
                if let Some((_, owner)) = owners.iter().find(|(hn, owner)| *hn == hostname && *owner != s.gateway_key())
                {
                    self.diags.push(Diagnostic::error(
                        s.gw_res.origin.locate(&format!("spec.servers[{}].hosts", s.index)),
                        code::CONFLICTING_GATEWAYS,
                        s.gw_res.key(),
                        format!(
                            "conflicting gateways: port {port} host `{hostname}` is already served by Gateway {owner} on this instance; the older Gateway wins"
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
            let names = bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs);
            if names.is_empty() {
                continue;
            }
            let ctx = route_ctx(self.opts, s, vs_res, port, &self.vss);
            let compiled = routes::compile_http_routes(&ctx, vs, &self.registry, &mut self.diags);
            for name in names {
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                routes_by_host.entry(name).or_default().extend(compiled.iter().cloned());
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
            if vs.tcp.is_empty() || bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs).is_empty() {
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
            if vs.tls.is_empty() || bound_hosts(&s.server.hosts, s.gw_res.namespace(), vs_res, vs).is_empty() {
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
            let svc_ns = registry::service_namespace(&svc.host).unwrap_or(&svc.namespace).to_string();
            let dr = registry::find_destination_rule(&self.drs, &svc.host, &self.opts.gateway_namespace, &svc_ns);
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
                        if c.endpoints.is_empty()
                            && !svc.spec.endpoints.is_empty()
                            && port.number == svc.ports[0].number
                        {
                            self.diags.push(Diagnostic::warning(
                                dr_res.origin.locate(&format!("spec.subsets[{si}].labels")),
                                code::SUBSET_NO_ENDPOINTS,
                                dr_res.key(),
                                format!(
                                    "subset `{}` selects no endpoints of {} (labels {:?}); requests to it get 503 UH",
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

    /// IST0101 for `gateways` entries that name no Gateway, with a hint when a Gateway of that
    /// name lives in another namespace (a classic trap: `my-gateway` means the VS's namespace).
    fn analyze_vs_gateway_refs(&mut self, vss: &[&'a Resource], gateways: &[&'a Resource]) {
        for vs_res in vss {
            let Spec::VirtualService(vs) = &vs_res.spec else { continue };
            for (i, g) in vs.gateways.iter().enumerate() {
                if g == "mesh" {
                    continue;
                }
                let found =
                    gateways.iter().find(|gw| gateway_ref_matches(g, vs_res.namespace(), gw.namespace(), gw.name()));
                match found {
                    None => {
                        let name = g.rsplit('/').next().unwrap_or(g);
                        let others: Vec<String> = gateways
                            .iter()
                            .filter(|gw| gw.name() == name)
                            .map(|gw| format!("{}/{}", gw.namespace(), gw.name()))
                            .collect();
                        let (ns, _) = g.split_once('/').unwrap_or((vs_res.namespace(), g));
                        let hint = if others.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; did you mean `{}`? (a bare name refers to the VirtualService's own namespace)",
                                others.join("` or `")
                            )
                        };
                        self.diags.push(Diagnostic::error(
                            vs_res.origin.locate(&format!("spec.gateways[{i}]")),
                            code::REFERENCED_RESOURCE_NOT_FOUND,
                            vs_res.key(),
                            format!("referenced gateway not found: `{g}` (looked for Gateway {ns}/{name}){hint}"),
                        ));
                    }
                    Some(gw) => {
                        let Spec::Gateway(gws) = &gw.spec else { continue };
                        if vs.hosts.is_empty() {
                            continue;
                        }
                        let any =
                            gws.servers.iter().any(|s| !bound_hosts(&s.hosts, gw.namespace(), vs_res, vs).is_empty());
                        if !any {
                            self.diags.push(Diagnostic::warning(
                                vs_res.origin.locate("spec.hosts"),
                                code::VS_HOST_NOT_IN_GATEWAY,
                                vs_res.key(),
                                format!(
                                    "none of the hosts {:?} matches a host of Gateway {}/{} (or the namespace is not allowed): the VirtualService serves nothing there",
                                    vs.hosts,
                                    gw.namespace(),
                                    gw.name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Destinations: host in the registry (IST0101), subset defined (IST0101), port needed (IST0112).
    fn analyze_destinations(&mut self, vss: &[&'a Resource]) {
        for vs_res in vss {
            let Spec::VirtualService(vs) = &vs_res.spec else { continue };
            let mut dests: Vec<(String, &portico_api::istio::Destination)> = Vec::new();
            for (ri, r) in vs.http.iter().enumerate() {
                for (di, d) in r.route.iter().enumerate() {
                    dests.push((format!("spec.http[{ri}].route[{di}].destination"), &d.destination));
                }
                if let Some(m) = &r.mirror {
                    dests.push((format!("spec.http[{ri}].mirror"), m));
                }
                for (mi, m) in r.mirrors.iter().enumerate() {
                    dests.push((format!("spec.http[{ri}].mirrors[{mi}].destination"), &m.destination));
                }
            }
            for (ri, r) in vs.tcp.iter().enumerate() {
                for (di, d) in r.route.iter().enumerate() {
                    dests.push((format!("spec.tcp[{ri}].route[{di}].destination"), &d.destination));
                }
            }
            for (ri, r) in vs.tls.iter().enumerate() {
                for (di, d) in r.route.iter().enumerate() {
                    dests.push((format!("spec.tls[{ri}].route[{di}].destination"), &d.destination));
                }
            }
            for (path, d) in dests {
                let h = host::resolve_short_name(&d.host, vs_res.namespace());
                let loc = vs_res.origin.locate(&path);
                let Some(svc) = self.registry.lookup(&h) else {
                    self.diags.push(Diagnostic::error(
                        loc,
                        code::REFERENCED_RESOURCE_NOT_FOUND,
                        vs_res.key(),
                        format!(
                            "{path}: referenced host not found: `{h}`; add a ServiceEntry for it (requests to it get 503 NC)"
                        ),
                    ));
                    continue;
                };
                if d.port.is_none() && svc.ports.len() > 1 {
                    self.diags.push(Diagnostic::error(
                        loc.clone(),
                        code::DESTINATION_PORT_REQUIRED,
                        vs_res.key(),
                        format!(
                            "{path}: `{h}` has {} ports ({}); destination.port.number is required",
                            svc.ports.len(),
                            svc.ports.iter().map(|p| p.number.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if let Some(port) = &d.port {
                    if !svc.ports.iter().any(|p| p.number == port.number) {
                        self.diags.push(Diagnostic::error(
                            loc.clone(),
                            code::REFERENCED_RESOURCE_NOT_FOUND,
                            vs_res.key(),
                            format!("{path}: `{h}` has no port {} (requests get 503 NC)", port.number),
                        ));
                    }
                }
                if let Some(subset) = &d.subset {
                    let svc_ns = registry::service_namespace(&h).unwrap_or(&svc.namespace).to_string();
                    let dr = registry::find_destination_rule(&self.drs, &h, &self.opts.gateway_namespace, &svc_ns);
                    if !dr.is_some_and(|(_, d)| d.subsets.iter().any(|s| &s.name == subset)) {
                        self.diags.push(Diagnostic::error(
                            loc,
                            code::REFERENCED_RESOURCE_NOT_FOUND,
                            vs_res.key(),
                            format!("{path}: referenced subset not found: `{subset}` of `{h}` (no DestinationRule defines it; requests get 503 NC)"),
                        ));
                    }
                }
            }
        }
    }
}

/// IST0130: an http route after one that matches every request can never match.
/// IST0131: a match block identical to an earlier one in the same VirtualService is ineffective.
fn analyze_reachability(vss: &[&Resource], diags: &mut Vec<Diagnostic>) {
    for vs_res in vss {
        let Spec::VirtualService(vs) = &vs_res.spec else { continue };
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(String, usize, usize)> = Vec::new();
        for (i, r) in vs.http.iter().enumerate() {
            if let Some(j) = catch_all {
                diags.push(Diagnostic::warning(
                    vs_res.origin.locate(&format!("spec.http[{i}]")),
                    code::UNREACHABLE_RULE,
                    vs_res.key(),
                    format!("spec.http[{i}] is unreachable: spec.http[{j}] before it matches every request"),
                ));
                continue;
            }
            for (k, m) in r.matches.iter().enumerate() {
                let mut key = m.clone();
                key.name = None;
                let key = serde_json::to_string(&key).unwrap_or_default();
                if let Some((_, pi, pk)) = seen.iter().find(|(s, _, _)| *s == key) {
                    diags.push(Diagnostic::warning(
                        vs_res.origin.locate(&format!("spec.http[{i}].match[{k}]")),
                        code::INEFFECTIVE_MATCH,
                        vs_res.key(),
                        format!("spec.http[{i}].match[{k}] is ineffective: spec.http[{pi}].match[{pk}] is the same condition and comes first"),
                    ));
                } else {
                    seen.push((key, i, k));
                }
            }
            let matches_all = r.matches.is_empty()
                || r.matches.iter().any(|m| {
                    let mut bare = m.clone();
                    bare.name = None;
                    let uri_all = match &bare.uri {
                        None => true,
                        Some(u) => u.prefix.as_deref() == Some("/") && u.exact.is_none() && u.regex.is_none(),
                    };
                    bare.uri = None;
                    uri_all && bare == portico_api::istio::HttpMatchRequest::default()
                });
            // Only routes that forward, redirect or respond make later ones unreachable.
            if matches_all && r.delegate.is_none() {
                catch_all = Some(i);
            }
        }
    }
}
