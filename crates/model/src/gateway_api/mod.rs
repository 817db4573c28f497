//! Kubernetes Gateway API → Istio Gateway + VirtualService, the way istiod translates them: one
//! Istio `Gateway` per listener of a Gateway of our class (`--gateway-class`, default `portico`),
//! and one `VirtualService` per listener and effective hostname holding every attached rule in the
//! Gateway API's precedence order (so the ordinary compiler then routes them). Status conditions
//! (`Accepted`, `Programmed`, `ResolvedRefs`) are computed on the way and returned beside the
//! generated resources. Pure: works on `Resource`s whatever their source (files or the API).

pub mod status;
pub mod validate;

mod routes;

use crate::Options;
use portico_api::diag::code;
use portico_api::gateway_api::{
    BackendRef, KubeGateway, LabelSelector, Listener, ParentReference, ReferenceGrant, GATEWAY_API_GROUP,
};
use portico_api::istio::{Gateway, Port, Server, ServerTlsMode, ServerTlsSettings};
use portico_api::k8s::ObjectMeta;
use portico_api::{Diagnostic, Kind, Resource, Spec};
use status::{Condition, ListenerStatus, ObjectStatus, ParentStatus};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The controller name Portico reports and accepts on its GatewayClass.
pub const CONTROLLER_NAME: &str = "portico.dev/gateway-controller";

/// Generated resources and the status of every Gateway API object this controller owns.
#[derive(Default)]
pub struct Translated {
    pub resources: Vec<Resource>,
    pub statuses: Vec<ObjectStatus>,
}

/// A listener of one of our Gateways, ready to take routes.
pub(crate) struct Bound<'a> {
    pub gw_res: &'a Resource,
    pub listener: &'a Listener,
    /// The Istio Gateway generated for this listener, `ns/name`.
    pub istio_gateway: String,
    /// Route kinds this listener accepts.
    pub kinds: Vec<&'static str>,
    /// False when the listener itself is invalid (it then takes no routes).
    pub valid: bool,
    pub attached: u32,
}

/// Everything the translation looks things up in.
pub(crate) struct World<'a> {
    pub opts: &'a Options,
    pub grants: Vec<(&'a Resource, &'a ReferenceGrant)>,
    /// Namespace labels, from `Namespace` objects when the config has them.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Hosts known to the registry (ServiceEntry hosts), to tell a missing Service.
    pub services: HashSet<String>,
    pub secrets: HashSet<String>,
    /// Gateways (`ns/name`) of other classes: routes to them are other controllers' business.
    pub foreign_gateways: HashSet<String>,
}

impl World<'_> {
    /// Does a ReferenceGrant in `to_ns` let `from` (group, kind, namespace) refer to (group, kind, name)?
    pub fn granted(&self, from: (&str, &str, &str), to_ns: &str, to: (&str, &str, &str)) -> bool {
        self.grants.iter().any(|(res, g)| {
            res.namespace() == to_ns
                && g.from.iter().any(|f| {
                    f.group.as_deref().unwrap_or("") == from.0
                        && f.kind.as_deref().unwrap_or("") == from.1
                        && f.namespace.as_deref().unwrap_or("") == from.2
                })
                && g.to.iter().any(|t| {
                    t.group.as_deref().unwrap_or("") == to.0
                        && t.kind.as_deref().unwrap_or("") == to.1
                        && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to.2)
                })
        })
    }

    fn selector_matches(&self, ns: &str, sel: &LabelSelector) -> bool {
        let empty = BTreeMap::new();
        // Kubernetes always labels a namespace with its own name.
        let mut labels = self.namespaces.get(ns).unwrap_or(&empty).clone();
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        sel.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && sel.match_expressions.iter().all(|e| {
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }
}

/// Resolution of one backendRef.
pub(crate) enum Backend {
    /// `name.ns.svc.cluster.local` and port.
    Service(String, u32),
    /// Why it cannot be used: (reason, message). Requests it would get answer 500, as the spec says.
    Invalid(&'static str, String),
}

/// Resolve a Service backendRef the way Istio does: `name.namespace.svc.cluster.local`.
pub(crate) fn resolve_backend(w: &World<'_>, route: &Resource, b: &BackendRef) -> Backend {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Backend::Invalid(
            "InvalidKind",
            format!("backendRef {group}/{kind} `{}`: only core Services are supported", b.name),
        );
    }
    let ns = b.namespace.as_deref().unwrap_or(route.namespace());
    if ns != route.namespace()
        && !w.granted((GATEWAY_API_GROUP, route.kind().as_str(), route.namespace()), ns, ("", "Service", &b.name))
    {
        return Backend::Invalid(
            "RefNotPermitted",
            format!("backendRef to Service {ns}/{} is not permitted: no ReferenceGrant in `{ns}` allows it", b.name),
        );
    }
    let host = format!("{}.{ns}.svc.{}", b.name, w.opts.domain_suffix);
    if !w.services.contains(&host) {
        return Backend::Invalid(
            "BackendNotFound",
            format!("backendRef Service {ns}/{} not found (no ServiceEntry has host `{host}`)", b.name),
        );
    }
    let Some(port) = b.port.and_then(|p| u32::try_from(p).ok()) else {
        return Backend::Invalid("UnsupportedValue", format!("backendRef Service {ns}/{} has no port", b.name));
    };
    Backend::Service(host, port)
}

/// The Istio server protocol of a listener protocol and the route kinds it takes.
fn listener_kinds(l: &Listener) -> Option<(&'static str, Vec<&'static str>)> {
    let passthrough = l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough");
    Some(match l.protocol.as_str() {
        "HTTP" => ("HTTP", vec!["HTTPRoute", "GRPCRoute"]),
        "HTTPS" => ("HTTPS", vec!["HTTPRoute", "GRPCRoute"]),
        "TLS" if passthrough => ("TLS", vec!["TLSRoute"]),
        "TLS" => ("TLS", vec!["TCPRoute", "TLSRoute"]),
        "TCP" => ("TCP", vec!["TCPRoute"]),
        _ => return None,
    })
}

fn synthetic(origin_res: &Resource, ns: &str, name: String, spec: Spec) -> Resource {
    Resource {
        // Provenance: what this Istio object was generated from (TLS looks secrets up by it).
        api_version: format!("{GATEWAY_API_GROUP}/v1"),
        meta: ObjectMeta {
            name,
            namespace: ns.to_string(),
            creation_timestamp: origin_res.meta.creation_timestamp.clone(),
            ..Default::default()
        },
        origin: origin_res.origin.clone(),
        spec: std::sync::Arc::new(spec),
    }
}

/// A DNS-label-safe piece of a generated name.
pub(crate) fn name_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' }).collect()
}

pub fn translate(valid: &[&Resource], opts: &Options, diags: &mut Vec<Diagnostic>) -> Translated {
    let mut out = Translated::default();
    if !valid.iter().any(|r| r.kind().is_gateway_api()) {
        return out;
    }
    let mut w = World {
        opts,
        grants: Vec::new(),
        namespaces: HashMap::new(),
        services: HashSet::new(),
        secrets: HashSet::new(),
        foreign_gateways: HashSet::new(),
    };
    for r in valid {
        match &*r.spec {
            Spec::ReferenceGrant(g) => w.grants.push((r, g)),
            Spec::Namespace => {
                w.namespaces.insert(r.name().to_string(), r.meta.labels.clone());
            }
            Spec::ServiceEntry(se) => w.services.extend(se.hosts.iter().cloned()),
            Spec::Secret(_) => {
                w.secrets.insert(format!("{}/{}", r.namespace(), r.name()));
            }
            Spec::KubeGateway(g) if g.gateway_class_name != opts.gateway_class => {
                w.foreign_gateways.insert(format!("{}/{}", r.namespace(), r.name()));
            }
            _ => {}
        }
    }

    // GatewayClass: ours by name. A folder need not define it (as Istio creates `istio` itself).
    for r in valid.iter().filter(|r| r.kind() == Kind::GatewayClass) {
        if r.name() != opts.gateway_class {
            continue;
        }
        out.statuses.push(ObjectStatus {
            kind: "GatewayClass",
            namespace: String::new(),
            name: r.name().to_string(),
            observed_generation: r.meta.generation,
            // Every CRD version this build parses (v1, v1beta1, v1alpha2/3 for the L4 routes).
            conditions: vec![
                Condition::ok("Accepted", "Accepted"),
                Condition::ok("SupportedVersion", "SupportedVersion"),
            ],
            ..Default::default()
        });
    }

    // Gateways of our class → one Istio Gateway per valid listener.
    let mut bound: Vec<Bound<'_>> = Vec::new();
    let mut gw_status: Vec<(usize, ObjectStatus)> = Vec::new();
    for r in valid.iter().copied() {
        let Spec::KubeGateway(g) = &*r.spec else { continue };
        if g.gateway_class_name != opts.gateway_class {
            continue;
        }
        let st = gateway(&w, r, g, &mut bound, &mut out.resources, diags);
        gw_status.push((bound.len(), st));
    }

    // Routes.
    let mut route_statuses = Vec::new();
    let mut plan = routes::Plan::default();
    for r in valid.iter().copied() {
        let (parents, kind) = match &*r.spec {
            Spec::HttpRoute(h) => (&h.parent_refs, "HTTPRoute"),
            Spec::GrpcRoute(g) => (&g.parent_refs, "GRPCRoute"),
            Spec::TlsRoute(t) => (&t.parent_refs, "TLSRoute"),
            Spec::TcpRoute(t) => (&t.parent_refs, "TCPRoute"),
            _ => continue,
        };
        let hostnames: &[String] = match &*r.spec {
            Spec::HttpRoute(h) => &h.hostnames,
            Spec::GrpcRoute(g) => &g.hostnames,
            Spec::TlsRoute(t) => &t.hostnames,
            _ => &[],
        };
        let mut st = ObjectStatus {
            kind: r.kind().as_str(),
            namespace: r.namespace().to_string(),
            name: r.name().to_string(),
            observed_generation: r.meta.generation,
            ..Default::default()
        };
        let resolved = routes::resolved_refs(&w, r);
        for (pi, p) in parents.iter().enumerate() {
            let Some(accepted) = attach(&w, r, kind, hostnames, pi, p, &mut bound, &mut plan, diags) else {
                continue;
            };
            st.parents
                .push(ParentStatus { parent_ref: parent_ref_text(r, p), conditions: vec![accepted, resolved.clone()] });
        }
        if !resolved.is_true() && !st.parents.is_empty() {
            diags.push(Diagnostic::warning(
                r.origin.locate("spec.rules"),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                r.key(),
                format!("ResolvedRefs=False {}: {}", resolved.reason, resolved.message),
            ));
        }
        if !st.parents.is_empty() {
            route_statuses.push(st);
        }
    }
    plan.emit(&w, &bound, &mut out.resources, diags);

    // Listener attachedRoutes are known only now.
    for (end, mut st) in gw_status {
        let first = end - st.listeners.len();
        for (i, ls) in st.listeners.iter_mut().enumerate() {
            if let Some(b) = bound.get(first + i) {
                ls.attached_routes = b.attached;
            }
        }
        out.statuses.push(st);
    }
    out.statuses.extend(route_statuses);
    out
}

fn parent_ref_text(route: &Resource, p: &ParentReference) -> String {
    let mut s = format!("{}/{}", p.namespace.as_deref().unwrap_or(route.namespace()), p.name);
    if let Some(sn) = &p.section_name {
        s.push('/');
        s.push_str(sn);
    }
    if let Some(port) = p.port {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s
}

/// Validate one Gateway's listeners, generate their Istio Gateways, and compute its status.
fn gateway<'a>(
    w: &World<'_>,
    r: &'a Resource,
    g: &'a KubeGateway,
    bound: &mut Vec<Bound<'a>>,
    out: &mut Vec<Resource>,
    diags: &mut Vec<Diagnostic>,
) -> ObjectStatus {
    let mut st = ObjectStatus {
        kind: "Gateway",
        namespace: r.namespace().to_string(),
        name: r.name().to_string(),
        observed_generation: r.meta.generation,
        ..Default::default()
    };
    let mut any_programmed = false;
    for (i, l) in g.listeners.iter().enumerate() {
        let path = format!("spec.listeners[{i}]");
        let mut conds = Vec::new();
        let mut valid = true;
        let Some((protocol, supported)) = listener_kinds(l) else {
            conds.push(Condition::bad(
                "Accepted",
                "UnsupportedProtocol",
                format!("protocol {} is not supported", l.protocol),
            ));
            conds.push(Condition::bad("Programmed", "Invalid", "listener not accepted"));
            diags.push(Diagnostic::warning(
                r.origin.locate(&format!("{path}.protocol")),
                code::NOT_SUPPORTED,
                r.key(),
                format!(
                    "{path}: listener `{}`: protocol {} is not supported (UnsupportedProtocol); it is not served",
                    l.name, l.protocol
                ),
            ));
            st.listeners.push(ListenerStatus { name: l.name.clone(), conditions: conds, ..Default::default() });
            bound.push(Bound {
                gw_res: r,
                listener: l,
                istio_gateway: String::new(),
                kinds: vec![],
                valid: false,
                attached: 0,
            });
            continue;
        };
        // Same port, different protocol family: a conflict the spec says to report on both.
        let protocol_conflict = g.listeners.iter().enumerate().any(|(j, o)| {
            j != i && o.port == l.port && listener_kinds(o).is_some_and(|(p, _)| l4_family(p) != l4_family(protocol))
        });
        let hostname_conflict = g
            .listeners
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.port == l.port && o.protocol == l.protocol && o.hostname == l.hostname);
        let conflict = protocol_conflict || hostname_conflict;
        // Allowed kinds: the listener's kinds, narrowed by `allowedRoutes.kinds`.
        let mut kinds = supported.clone();
        let mut resolved = Condition::ok("ResolvedRefs", "ResolvedRefs");
        if let Some(ar) = l.allowed_routes.as_ref().filter(|a| !a.kinds.is_empty()) {
            kinds.clear();
            for k in &ar.kinds {
                let group_ok = k.group.as_deref().unwrap_or(GATEWAY_API_GROUP) == GATEWAY_API_GROUP;
                match supported.iter().find(|s| **s == k.kind) {
                    Some(s) if group_ok => kinds.push(*s),
                    _ => {
                        resolved = Condition::bad(
                            "ResolvedRefs",
                            "InvalidRouteKinds",
                            format!(
                                "route kind {}/{} is not supported on a {} listener",
                                k.group.as_deref().unwrap_or(GATEWAY_API_GROUP),
                                k.kind,
                                l.protocol
                            ),
                        )
                    }
                }
            }
        }
        // TLS: the certificate for Terminate.
        let mut tls = None;
        if protocol == "HTTPS" || protocol == "TLS" {
            let t = l.tls.clone().unwrap_or_default();
            if t.mode.as_deref() == Some("Passthrough") {
                tls = Some(ServerTlsSettings { mode: ServerTlsMode::Passthrough, ..Default::default() });
            } else {
                if t.certificate_refs.is_empty() {
                    resolved = Condition::bad(
                        "ResolvedRefs",
                        "InvalidCertificateRef",
                        "a Terminate listener needs a certificateRef",
                    );
                    valid = false;
                }
                // Every certificateRef is served (Istio's `credentialNames`): the handshake picks
                // the one whose names match the SNI, then whose key type the client can verify.
                let mut names = Vec::new();
                for (ci, c) in t.certificate_refs.iter().enumerate() {
                    let ns = c.namespace.as_deref().unwrap_or(r.namespace());
                    let kind_ok = c.group.as_deref().unwrap_or("").is_empty()
                        && c.kind.as_deref().unwrap_or("Secret") == "Secret";
                    let permitted = ns == r.namespace()
                        || w.granted((GATEWAY_API_GROUP, "Gateway", r.namespace()), ns, ("", "Secret", &c.name));
                    let bad = if !kind_ok {
                        Some(("InvalidCertificateRef", format!("certificateRef `{}` is not a core Secret", c.name)))
                    } else if !permitted {
                        Some((
                            "RefNotPermitted",
                            format!("certificateRef to Secret {ns}/{} is not permitted by any ReferenceGrant", c.name),
                        ))
                    } else if !w.secrets.contains(&format!("{ns}/{}", c.name)) {
                        Some(("InvalidCertificateRef", format!("Secret {ns}/{} not found", c.name)))
                    } else {
                        None
                    };
                    if let Some((reason, msg)) = bad {
                        if valid {
                            resolved = Condition::bad("ResolvedRefs", reason, msg);
                        }
                        valid = false;
                        continue;
                    }
                    if ns != r.namespace() {
                        diags.push(Diagnostic::warning(
                            r.origin.locate(&format!("{path}.tls.certificateRefs[{ci}]")),
                            code::NOT_SUPPORTED,
                            r.key(),
                            format!("{path}: a Secret in another namespace ({ns}) is looked up as `{}` in the gateway's namespace", c.name),
                        ));
                    }
                    names.push(c.name.clone());
                }
                if valid && !names.is_empty() {
                    let mut settings = ServerTlsSettings { mode: ServerTlsMode::Simple, ..Default::default() };
                    if names.len() == 1 {
                        settings.credential_name = names.pop();
                    } else {
                        settings.credential_names = names;
                    }
                    tls = Some(settings);
                }
            }
        }
        if conflict {
            conds.push(Condition {
                type_: "Conflicted",
                status: "True",
                reason: if protocol_conflict { "ProtocolConflict" } else { "HostnameConflict" },
                message: if protocol_conflict {
                    "another listener uses this port with an incompatible protocol".into()
                } else {
                    "another listener uses this port, protocol and hostname".into()
                },
            });
            valid = false;
        } else {
            conds.push(Condition::not("Conflicted", "NoConflicts"));
        }
        conds.push(if valid {
            Condition::ok("Accepted", "Accepted")
        } else {
            Condition::bad("Accepted", "Invalid", "listener is invalid")
        });
        conds.push(resolved.clone());
        conds.push(if valid {
            Condition::ok("Programmed", "Programmed")
        } else {
            Condition::bad("Programmed", "Invalid", "listener is not served")
        });
        if !resolved.is_true() || conflict {
            diags.push(Diagnostic::warning(
                r.origin.locate(&path),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                r.key(),
                format!(
                    "{path}: listener `{}`: {} {}",
                    l.name,
                    if conflict { "Conflicted=True;" } else { "" },
                    format_args!("ResolvedRefs={} {}: {}", resolved.status, resolved.reason, resolved.message)
                ),
            ));
        }
        let istio_name = format!("{}-{}-gwapi", name_part(r.name()), name_part(&l.name));
        if valid {
            any_programmed = true;
            let port = u32::try_from(l.port).unwrap_or(0);
            let server = Server {
                port: Some(Port {
                    number: port,
                    protocol: protocol.into(),
                    name: format!("{}-{}", name_part(&l.name), port),
                    target_port: None,
                }),
                hosts: vec![l.hostname.clone().unwrap_or_else(|| "*".into())],
                tls,
                ..Default::default()
            };
            // No selector: a Gateway of our class applies to every Portico instance that owns it.
            out.push(synthetic(
                r,
                r.namespace(),
                istio_name.clone(),
                Spec::Gateway(Gateway { servers: vec![server], selector: BTreeMap::new() }),
            ));
        }
        st.listeners.push(ListenerStatus {
            name: l.name.clone(),
            attached_routes: 0,
            supported_kinds: kinds.iter().map(|k| k.to_string()).collect(),
            conditions: conds,
        });
        bound.push(Bound {
            gw_res: r,
            listener: l,
            istio_gateway: format!("{}/{istio_name}", r.namespace()),
            kinds,
            valid,
            attached: 0,
        });
    }
    if !g.addresses.is_empty() {
        diags.push(Diagnostic::warning(
            r.origin.locate("spec.addresses"),
            code::NOT_SUPPORTED,
            r.key(),
            "spec.addresses: Portico serves on the addresses it binds (`--bind`); requested addresses are not assigned",
        ));
    }
    st.conditions.push(Condition::ok("Accepted", "Accepted"));
    st.conditions.push(if any_programmed {
        Condition::ok("Programmed", "Programmed")
    } else {
        Condition::bad("Programmed", "Invalid", "no listener could be served")
    });
    st
}

fn l4_family(protocol: &str) -> &'static str {
    match protocol {
        "HTTP" => "http",
        "HTTPS" | "TLS" => "tls",
        _ => "tcp",
    }
}

/// The hostname a route hostname and a listener hostname have in common, if any
/// (Gateway API: `*.example.com` matches any name with that suffix and one label or more before it).
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let listener = match listener {
        None | Some("*") | Some("") => return Some(route.to_string()),
        Some(l) => l,
    };
    if listener.eq_ignore_ascii_case(route) {
        return Some(route.to_string());
    }
    let covers = |wild: &str, name: &str| {
        wild.strip_prefix('*').is_some_and(|suffix| {
            name.len() > suffix.len() && name.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase())
        })
    };
    if covers(listener, route) {
        return Some(route.to_string());
    }
    if covers(route, listener) {
        return Some(listener.to_string());
    }
    None
}

/// Attach route `r` to the listeners `p` selects; returns the `Accepted` condition for this
/// parent, or `None` when the parent is not ours (another class, or not a Gateway).
#[allow(clippy::too_many_arguments)]
fn attach<'a>(
    w: &World<'_>,
    r: &'a Resource,
    kind: &'static str,
    hostnames: &[String],
    pi: usize,
    p: &ParentReference,
    bound: &mut [Bound<'_>],
    plan: &mut routes::Plan<'a>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    if p.group.as_deref().unwrap_or(GATEWAY_API_GROUP) != GATEWAY_API_GROUP
        || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
    {
        return None;
    }
    let ns = p.namespace.as_deref().unwrap_or(r.namespace());
    let path = format!("spec.parentRefs[{pi}]");
    let ours: Vec<usize> =
        (0..bound.len()).filter(|&i| bound[i].gw_res.namespace() == ns && bound[i].gw_res.name() == p.name).collect();
    if ours.is_empty() && w.foreign_gateways.contains(&format!("{ns}/{}", p.name)) {
        return None;
    }
    if ours.is_empty() {
        diags.push(Diagnostic::warning(
            r.origin.locate(&path),
            code::REFERENCED_RESOURCE_NOT_FOUND,
            r.key(),
            format!(
                "{path}: Gateway {ns}/{} not found (or not of class `{}`); the route is not attached to it",
                p.name, w.opts.gateway_class
            ),
        ));
        return None;
    }
    let mut reason = "NoMatchingParent";
    let mut attached_any = false;
    for i in ours {
        let b = &bound[i];
        if p.section_name.as_ref().is_some_and(|s| *s != b.listener.name) {
            continue;
        }
        if p.port.is_some_and(|port| port != b.listener.port) {
            continue;
        }
        if !b.valid {
            continue;
        }
        // Namespace policy.
        let from = b.listener.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
        let ns_ok = match from.and_then(|f| f.from.as_deref()).unwrap_or("Same") {
            "All" => true,
            "Selector" => from.and_then(|f| f.selector.as_ref()).is_some_and(|s| w.selector_matches(r.namespace(), s)),
            "None" => false,
            _ => r.namespace() == b.gw_res.namespace(),
        };
        if !ns_ok || !b.kinds.contains(&kind) {
            if reason == "NoMatchingParent" {
                reason = "NotAllowedByListeners";
            }
            continue;
        }
        let names: Vec<String> = if hostnames.is_empty() || kind == "TCPRoute" {
            vec![b.listener.hostname.clone().unwrap_or_else(|| "*".into())]
        } else {
            hostnames.iter().filter_map(|h| intersect(b.listener.hostname.as_deref(), h)).collect()
        };
        if names.is_empty() {
            if matches!(reason, "NoMatchingParent" | "NotAllowedByListeners") {
                reason = "NoMatchingListenerHostname";
            }
            continue;
        }
        attached_any = true;
        bound[i].attached += 1;
        plan.add(i, names, r);
    }
    if attached_any {
        return Some(Condition::ok("Accepted", "Accepted"));
    }
    let msg = match reason {
        "NotAllowedByListeners" => "no listener of the parent allows this route's kind or namespace".to_string(),
        "NoMatchingListenerHostname" => "no hostname of the route matches a listener's hostname".to_string(),
        _ => "no listener of the parent matches sectionName/port".to_string(),
    };
    diags.push(Diagnostic::warning(
        r.origin.locate(&path),
        code::IGNORED,
        r.key(),
        format!("{path}: Accepted=False {reason}: {msg}; the route is not attached to {}", parent_ref_text(r, p)),
    ));
    Some(Condition::bad("Accepted", reason, msg))
}
