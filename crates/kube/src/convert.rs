//! Kubernetes objects → what the compiler reads. Pure: no client, no clock.
//!
//! Istio kinds and Secrets go through the same parser as files (`portico_api::parse_text`), with
//! a `k8s://Kind/namespace/name` pseudo-file name so a diagnostic says which object it is about.
//! A Service with its EndpointSlices and Pods becomes one synthesized `ServiceEntry`
//! (`name.ns.svc.<suffix>`, resolution STATIC, one endpoint per ready address labelled with its
//! pod's labels), which is how the file source already feeds the registry: `model` stays pure
//! and unaware of Kubernetes.

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_api::istio::{Location as SeLocation, Resolution, ServiceEntry, ServicePort, WorkloadEntry};
use portico_api::k8s::ObjectMeta;
use portico_api::{FieldIndex, Origin, Parsed, Resource, Spec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `k8s://Kind/namespace/name`: the "file" of an object read from the API.
pub fn pseudo_file(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("k8s://{kind}/{name}")
    } else {
        format!("k8s://{kind}/{namespace}/{name}")
    }
}

/// Parse one API object (as JSON) with the file parser. `managedFields` is dropped first: it
/// is server bookkeeping, large, and nothing Portico reads.
pub fn parse_object(kind: &str, mut obj: serde_json::Value, default_namespace: &str) -> Parsed {
    let (ns, name) = {
        let meta = obj.get("metadata");
        let s = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.as_str()).unwrap_or("").to_string();
        (s("namespace"), s("name"))
    };
    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    let text = serde_json::to_string_pretty(&obj).unwrap_or_default();
    portico_api::parse_text(&pseudo_file(kind, &ns, &name), &text, default_namespace)
}

/// Istio's protocol for a Service port: `appProtocol` first, then the port name's prefix
/// (`http`, `http-web`, `grpc-api`…); `None` when neither says (Istio would sniff).
pub fn port_protocol(p: &K8sServicePort) -> Option<String> {
    if let Some(ap) = p.app_protocol.as_deref() {
        let known = match ap.to_ascii_lowercase().as_str() {
            "http" | "kubernetes.io/ws" => Some("HTTP"),
            "http2" | "kubernetes.io/h2c" => Some("HTTP2"),
            "grpc" => Some("GRPC"),
            "grpc-web" => Some("GRPC-WEB"),
            "https" | "kubernetes.io/wss" => Some("HTTPS"),
            "tls" => Some("TLS"),
            "tcp" => Some("TCP"),
            "mongo" => Some("MONGO"),
            "redis" => Some("REDIS"),
            "mysql" => Some("MYSQL"),
            _ => None,
        };
        if let Some(k) = known {
            return Some(k.to_string());
        }
    }
    let name = p.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or("");
    let by_name = match prefix {
        "http" => "HTTP",
        "http2" => "HTTP2",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-WEB",
        "https" => "HTTPS",
        "tls" => "TLS",
        "tcp" => "TCP",
        "mongo" => "MONGO",
        "redis" => "REDIS",
        "mysql" => "MYSQL",
        _ => return None,
    };
    // `grpc-web` has a dash of its own.
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        return Some("GRPC-WEB".to_string());
    }
    Some(by_name.to_string())
}

/// Port names of the synthesized ServiceEntry must be DNS labels; a single unnamed Service
/// port gets one from its number.
fn port_name(p: &K8sServicePort) -> String {
    match p.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => format!("port-{}", p.port),
    }
}

/// Labels of one pod, by `namespace/name`.
pub type PodLabels = BTreeMap<String, BTreeMap<String, String>>;

/// The ServiceEntry for one Service: its host, ports and (from its EndpointSlices) endpoints.
/// `None` for a Service Portico cannot route to (no TCP port).
pub fn service_entry(
    svc: &Service,
    slices: &[&EndpointSlice],
    pods: &PodLabels,
    domain_suffix: &str,
) -> Option<Resource> {
    let meta = &svc.metadata;
    let name = meta.name.as_deref()?;
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let spec = svc.spec.as_ref()?;
    let host = format!("{name}.{ns}.svc.{domain_suffix}");
    // UDP and SCTP ports carry nothing a gateway proxies.
    let k8s_ports: Vec<&K8sServicePort> =
        spec.ports.iter().flatten().filter(|p| p.protocol.as_deref().is_none_or(|pr| pr == "TCP")).collect();
    let mut ports = Vec::new();
    // Slice port name ("" when unnamed) → the synthesized port name.
    let mut by_slice_name: BTreeMap<String, String> = BTreeMap::new();
    for p in &k8s_ports {
        let Ok(number) = u32::try_from(p.port) else { continue };
        let target_port = match &p.target_port {
            Some(IntOrString::Int(n)) => u32::try_from(*n).ok().filter(|n| *n > 0),
            _ => None,
        };
        let pname = port_name(p);
        by_slice_name.insert(p.name.clone().unwrap_or_default(), pname.clone());
        ports.push(ServicePort { number, protocol: port_protocol(p), name: pname, target_port });
    }
    if ports.is_empty() && spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    let external = spec.type_.as_deref() == Some("ExternalName");
    let mut endpoints = Vec::new();
    if external {
        if let Some(ext) = spec.external_name.as_deref().filter(|e| !e.is_empty()) {
            endpoints
                .push(WorkloadEntry { address: Some(ext.trim_end_matches('.').to_string()), ..Default::default() });
        }
    } else {
        let mut seen = std::collections::BTreeSet::new();
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            let mut ep_ports = BTreeMap::new();
            for sp in slice.ports.iter().flatten() {
                let sname = sp.name.clone().unwrap_or_default();
                if let (Some(pname), Some(port)) = (by_slice_name.get(&sname), sp.port) {
                    if let Ok(port) = u32::try_from(port) {
                        ep_ports.insert(pname.clone(), port);
                    }
                }
            }
            for ep in &slice.endpoints {
                let c = ep.conditions.as_ref();
                // Kubernetes: an unset `ready` means ready. A terminating endpoint takes no new
                // requests (Envoy drains it), even while it still serves the ones in flight.
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                if !ready || terminating {
                    continue;
                }
                let labels = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        let pod_ns = r.namespace.as_deref().unwrap_or(ns);
                        pods.get(&format!("{pod_ns}/{}", r.name.as_deref().unwrap_or("")))
                    })
                    .cloned()
                    .unwrap_or_default();
                let locality = ep.zone.clone().filter(|z| !z.is_empty()).map(|z| {
                    let region = labels.get("topology.kubernetes.io/region").cloned().unwrap_or_default();
                    format!("{region}/{z}")
                });
                for addr in &ep.addresses {
                    // The same address may be listed by two slices during a rollover.
                    if !seen.insert((addr.clone(), ep_ports.clone())) {
                        continue;
                    }
                    endpoints.push(WorkloadEntry {
                        address: Some(addr.clone()),
                        ports: ep_ports.clone(),
                        labels: labels.clone(),
                        locality: locality.clone(),
                        ..Default::default()
                    });
                }
            }
        }
    }
    let se = ServiceEntry {
        hosts: vec![host],
        ports,
        location: Some(SeLocation::MeshInternal),
        resolution: Some(if external { Resolution::Dns } else { Resolution::Static }),
        endpoints,
        export_to: export_to(&meta.annotations.clone().unwrap_or_default()),
        ..Default::default()
    };
    let file: Arc<str> = Arc::from(pseudo_file("Service", ns, name));
    Some(Resource {
        api_version: "v1".to_string(),
        meta: ObjectMeta {
            name: name.to_string(),
            namespace: ns.to_string(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: BTreeMap::new(),
            creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            resource_version: meta.resource_version.clone(),
            generation: None,
            status_conditions: Vec::new(),
        },
        origin: Origin { file, line: 0, col: 0, fields: Arc::new(FieldIndex::default()) },
        spec: Arc::new(Spec::ServiceEntry(se)),
    })
}

/// The Service itself, for the analyzers only (IST0162 compares a Gateway's ports with the
/// target ports of the Services selecting the gateway's pods); routing uses the ServiceEntry.
pub fn service_object(svc: &Service) -> Option<Resource> {
    let meta = &svc.metadata;
    let name = meta.name.as_deref()?;
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let spec = svc.spec.as_ref()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| portico_api::k8s::ServicePortSpec {
            name: p.name.clone(),
            port: u32::try_from(p.port).unwrap_or(0),
            target_port: p.target_port.as_ref().map(|t| match t {
                IntOrString::Int(n) => serde_json::Value::from(*n),
                IntOrString::String(s) => serde_json::Value::from(s.clone()),
            }),
            protocol: p.protocol.clone(),
        })
        .collect();
    let object = portico_api::k8s::Service {
        selector: spec.selector.clone().unwrap_or_default(),
        ports,
        type_: spec.type_.clone(),
    };
    Some(Resource {
        api_version: "v1".to_string(),
        meta: ObjectMeta {
            name: name.to_string(),
            namespace: ns.to_string(),
            labels: meta.labels.clone().unwrap_or_default(),
            creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            resource_version: meta.resource_version.clone(),
            ..ObjectMeta::default()
        },
        origin: Origin {
            file: Arc::from(pseudo_file("Service", ns, name)),
            line: 0,
            col: 0,
            fields: Arc::new(FieldIndex::default()),
        },
        spec: Arc::new(Spec::Service(object)),
    })
}

/// Istio's `networking.istio.io/exportTo` annotation on a Service: a comma-separated list.
pub fn export_to(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get("networking.istio.io/exportTo")
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The Service an EndpointSlice belongs to (`namespace/name`), from its label.
pub fn slice_service(slice: &EndpointSlice) -> Option<String> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{svc}", slice.metadata.namespace.as_deref().unwrap_or("default")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn service_with_slices_and_pod_labels() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 9080, "targetPort": 8080}, {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }));
        let sl = slice(serde_json::json!({
            "metadata": {"name": "reviews-abc", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "r1", "namespace": "default"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "r2"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["10.0.0.4"], "targetRef": {"kind": "Pod", "name": "r4"}}
            ]
        }));
        let mut pods = PodLabels::new();
        pods.insert("default/r1".into(), BTreeMap::from([("version".into(), "v1".into())]));
        pods.insert("default/r4".into(), BTreeMap::from([("version".into(), "v2".into())]));
        let r = service_entry(&s, &[&sl], &pods, "cluster.local").unwrap();
        let Spec::ServiceEntry(se) = &*r.spec else { panic!() };
        assert_eq!(se.hosts, vec!["reviews.default.svc.cluster.local"]);
        assert_eq!(se.ports.len(), 1);
        assert_eq!(se.ports[0].protocol.as_deref(), Some("HTTP"));
        let addrs: Vec<_> = se.endpoints.iter().map(|e| e.address.clone().unwrap()).collect();
        assert_eq!(addrs, vec!["10.0.0.1", "10.0.0.4"]);
        assert_eq!(se.endpoints[0].ports.get("http"), Some(&8080));
        assert_eq!(se.endpoints[1].labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(&*r.origin.file, "k8s://Service/default/reviews");
    }

    #[test]
    fn protocols_follow_istio() {
        let p = |name: &str, ap: Option<&str>| {
            port_protocol(&K8sServicePort {
                name: Some(name.into()),
                app_protocol: ap.map(str::to_string),
                port: 80,
                ..Default::default()
            })
        };
        assert_eq!(p("http-web", None).as_deref(), Some("HTTP"));
        assert_eq!(p("grpc", None).as_deref(), Some("GRPC"));
        assert_eq!(p("grpc-web", None).as_deref(), Some("GRPC-WEB"));
        assert_eq!(p("web", Some("kubernetes.io/h2c")).as_deref(), Some("HTTP2"));
        assert_eq!(p("http", Some("tcp")).as_deref(), Some("TCP"));
        assert_eq!(p("web", None), None);
    }

    #[test]
    fn export_to_annotation_applies() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "private", "namespace": "a", "annotations": {"networking.istio.io/exportTo": ". , b"}},
            "spec": {"ports": [{"port": 80}]}
        }));
        let r = service_entry(&s, &[], &PodLabels::new(), "cluster.local").unwrap();
        let Spec::ServiceEntry(se) = &*r.spec else { panic!() };
        assert_eq!(se.export_to, vec![".", "b"]);
        assert_eq!(se.ports[0].name, "port-80", "an unnamed port gets a DNS-label name");
    }

    #[test]
    fn external_name_resolves_by_dns() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "a"},
            "spec": {"type": "ExternalName", "externalName": "api.example.com", "ports": [{"port": 443, "name": "https"}]}
        }));
        let r = service_entry(&s, &[], &PodLabels::new(), "cluster.local").unwrap();
        let Spec::ServiceEntry(se) = &*r.spec else { panic!() };
        assert_eq!(se.resolution, Some(Resolution::Dns));
        assert_eq!(se.endpoints[0].address.as_deref(), Some("api.example.com"));
    }

    #[test]
    fn service_object_keeps_selector_and_target_ports() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"}, "ports": [
                {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": "https"},
                {"name": "plain", "port": 9000}]}
        }));
        let r = service_object(&s).unwrap();
        let Spec::Service(o) = &*r.spec else { panic!() };
        assert_eq!(r.key(), "Service/istio-system/istio-ingressgateway");
        assert_eq!(o.selector.get("istio").map(String::as_str), Some("ingressgateway"));
        let targets: Vec<u32> = o.ports.iter().map(|p| p.target_number()).collect();
        assert_eq!(targets, vec![8080, 0, 9000]);
    }
}
