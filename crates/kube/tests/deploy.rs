#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! The manifests in `deploy/` against Kubernetes' own schema (k8s-openapi types): every object
//! decodes as its kind, and nothing is lost on the way (a misspelt or misplaced field would be
//! dropped by the typed decode and show up as a difference); then the properties the README
//! promises: probes, non-root, read-only root, the unprivileged-port sysctl, ports, RBAC.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every object of the kustomization's resources, as JSON.
fn objects() -> Vec<Value> {
    let dir = deploy_dir();
    let k: Value = serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap();
    let files = k["resources"].as_array().unwrap();
    assert!(!files.is_empty());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(dir.join(f.as_str().unwrap())).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).unwrap();
        out.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    out
}

/// Numbers that YAML gave as floats or ints compare by value; nulls are absent fields.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Number(n) => n.as_f64().map(|f| serde_json::json!(f)).unwrap_or(Value::Number(n.clone())),
        other => other.clone(),
    }
}

/// Decode as `T` and back: the result must equal the input.
fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> T {
    let typed: T = serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", obj["metadata"]["name"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(normalize(&back), normalize(obj), "fields lost decoding {} {}", obj["kind"], obj["metadata"]["name"]);
    typed
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

#[test]
fn manifests_match_the_kubernetes_schema() {
    let objs = objects();
    for o in &objs {
        match (o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap()) {
            ("apps/v1", "Deployment") => drop(roundtrip::<Deployment>(o)),
            ("v1", "Service") => drop(roundtrip::<Service>(o)),
            ("v1", "ServiceAccount") => drop(roundtrip::<ServiceAccount>(o)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(roundtrip::<ClusterRole>(o)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => drop(roundtrip::<ClusterRoleBinding>(o)),
            ("rbac.authorization.k8s.io/v1", "Role") => drop(roundtrip::<Role>(o)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(roundtrip::<RoleBinding>(o)),
            ("autoscaling/v2", "HorizontalPodAutoscaler") => drop(roundtrip::<HorizontalPodAutoscaler>(o)),
            ("policy/v1", "PodDisruptionBudget") => drop(roundtrip::<PodDisruptionBudget>(o)),
            (av, kind) => panic!("unexpected {av} {kind}"),
        }
    }
}

#[test]
fn deployment_is_hardened_and_probed_on_readiness() {
    let objs = objects();
    let d: Deployment = roundtrip(one(&objs, "Deployment"));
    let spec = d.spec.unwrap().template.spec.unwrap();
    let psc = spec.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let sysctls = psc.sysctls.unwrap();
    assert!(sysctls.iter().any(|s| s.name == "net.ipv4.ip_unprivileged_port_start" && s.value == "0"));
    let c = &spec.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let probe = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz/ready"));
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--kubernetes".to_string()));
    // The status address the probe uses is the one the gateway serves.
    let env = c.env.clone().unwrap();
    let status = env.iter().find(|e| e.name == "PORTICO_STATUS").and_then(|e| e.value.clone()).unwrap();
    let port = match &probe.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
        other => panic!("probe port {other:?}"),
    };
    assert!(status.ends_with(&format!(":{port}")), "{status} vs {port}");
    assert!(env.iter().any(|e| e.name == "POD_NAMESPACE"));
}

#[test]
fn service_and_rbac_are_what_the_gateway_needs() {
    let objs = objects();
    let s: Service = roundtrip(one(&objs, "Service"));
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    let mut ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    ports.sort();
    assert_eq!(ports, vec![80, 443, 15021]);

    let cr: ClusterRole = roundtrip(one(&objs, "ClusterRole"));
    let rules = cr.rules.unwrap();
    let allows = |group: &str, resource: &str| {
        rules.iter().any(|r| {
            r.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g == group))
                && r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == resource))
                && ["get", "list", "watch"].iter().all(|v| r.verbs.iter().any(|x| x == v))
        })
    };
    for (g, r) in [
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("networking.istio.io", "serviceentries"),
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
        ("gateway.networking.k8s.io", "gatewayclasses"),
        ("gateway.networking.k8s.io", "gateways"),
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "grpcroutes"),
        ("gateway.networking.k8s.io", "referencegrants"),
        ("gateway.networking.k8s.io", "tlsroutes"),
        ("gateway.networking.k8s.io", "tcproutes"),
    ] {
        assert!(allows(g, r), "ClusterRole lacks get/list/watch on {g}/{r}");
    }
    assert!(!allows("", "secrets"), "secrets only through the namespaced Role");
    // Read-only, except the Gateway API status subresource (written by the lease holder).
    for r in &rules {
        let status_only = r.resources.as_ref().is_some_and(|rs| rs.iter().all(|x| x.ends_with("/status")));
        let ok = |v: &String| {
            ["get", "list", "watch"].contains(&v.as_str()) || (status_only && ["patch", "update"].contains(&v.as_str()))
        };
        assert!(r.verbs.iter().all(ok), "read-only but status: {:?} on {:?}", r.verbs, r.resources);
    }
    assert!(rules.iter().any(|r| r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == "httproutes/status"))
        && r.verbs.iter().any(|v| v == "patch")));
    let role: Role = roundtrip(one(&objs, "Role"));
    let role_rules = role.rules.unwrap();
    assert!(role_rules.iter().any(|r| r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == "secrets"))));
    // Leader election for status write-back: a Lease in the gateway's namespace.
    assert!(role_rules.iter().any(|r| r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == "leases"))
        && ["get", "create", "update"].iter().all(|v| r.verbs.iter().any(|x| x == v))));
    let _: HorizontalPodAutoscaler = roundtrip(one(&objs, "HorizontalPodAutoscaler"));
    let _: PodDisruptionBudget = roundtrip(one(&objs, "PodDisruptionBudget"));
}
