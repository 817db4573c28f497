#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico validate --output json|yaml` in `istioctl analyze -o json|yaml`'s shape, and
//! `--suppress CODE=RESOURCE` as istioctl spells it: the real binary on real files.

use std::path::Path;
use std::process::Command;

const CONFIG: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [bogus-gateway]
  http:
  - route: [{destination: {host: nowhere}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: team}
spec:
  hosts: [reviews.example.com]
  gateways: [bogus-gateway]
  http:
  - route: [{destination: {host: nowhere}}]
"#;

fn validate(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("validate")
        .args(args)
        .arg(dir)
        .output()
        .expect("run portico validate");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), CONFIG).unwrap();
    dir
}

#[test]
fn json_output_has_istioctl_message_fields() {
    let dir = config();
    let (code, stdout) = validate(dir.path(), &["--output", "json"]);
    assert_eq!(code, 1, "errors still fail the run:\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let list = v.as_array().expect("a JSON list, like istioctl");
    let gw = list
        .iter()
        .find(|m| {
            m["code"] == "IST0101"
                && m["origin"] == "VirtualService default/productpage"
                && m["message"].as_str().unwrap().contains("gateway")
        })
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(gw["level"], "Error");
    assert!(gw["message"].as_str().unwrap().starts_with("Referenced gateway not found: \"bogus-gateway\""), "{gw}");
    assert_eq!(gw["documentationUrl"], "https://istio.io/latest/docs/reference/config/analysis/ist0101/");
    let reference = gw["reference"].as_str().unwrap();
    assert!(reference.ends_with("vs.yaml:6"), "FILE:LINE of the gateways entry: {reference}");
    let host_not_in_gw = list.iter().find(|m| m["code"] == "IST0132").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(host_not_in_gw["level"], "Warning");
    // Every message has exactly istioctl's keys.
    for m in list {
        let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["code", "documentationUrl", "level", "message", "origin", "reference"], "{m}");
    }
}

#[test]
fn yaml_output_lists_the_same_messages() {
    let dir = config();
    let (_, json) = validate(dir.path(), &["-o", "json"]);
    let (code, yaml) = validate(dir.path(), &["-o", "yaml"]);
    assert_eq!(code, 1);
    let n = serde_json::from_str::<serde_json::Value>(&json).unwrap().as_array().unwrap().len();
    assert_eq!(yaml.lines().filter(|l| l.starts_with("- code: ")).count(), n, "{yaml}");
    assert!(yaml.contains("  origin: \"VirtualService default/productpage\"\n"), "{yaml}");
    assert!(yaml.contains("  level: \"Error\"\n"), "{yaml}");
}

#[test]
fn clean_config_gives_an_empty_list() {
    let (code, stdout) = validate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed"), &["-o", "json"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap(), serde_json::json!([]));
}

#[test]
fn suppress_silences_a_code_on_matching_resources() {
    let dir = config();
    let count = |args: &[&str], code: &str, origin: &str| {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (_, out) = validate(dir.path(), &all);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().iter().filter(|m| m["code"] == code && m["origin"] == origin).count()
    };
    let pp = "VirtualService default/productpage";
    let rv = "VirtualService team/reviews";
    assert_eq!(count(&[], "IST0132", pp), 1);
    // istioctl's spelling: Kind name.namespace.
    assert_eq!(count(&["--suppress", "IST0132=VirtualService productpage.default"], "IST0132", pp), 0);
    assert_eq!(count(&["--suppress", "IST0132=VirtualService productpage.default"], "IST0132", rv), 1);
    // A wildcard across namespaces, and Portico's Kind/namespace/name spelling.
    assert_eq!(count(&["-S", "IST0132=VirtualService *"], "IST0132", rv), 0);
    assert_eq!(count(&["-S", "IST0101=VirtualService/team/*"], "IST0101", rv), 0);
    assert_eq!(count(&["-S", "IST0101=VirtualService/team/*"], "IST0101", pp), 2);
    // Another code on the same resource stays.
    assert_eq!(count(&["-S", "IST0132=VirtualService/default/productpage"], "IST0101", pp), 2);
    // Suppressing every error makes the run pass.
    let (code, _) = validate(dir.path(), &["-S", "IST0101=*"]);
    assert_eq!(code, 0);
}

#[test]
fn a_malformed_suppress_is_a_usage_error() {
    let dir = config();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["validate", "--suppress", "IST0101"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CODE=RESOURCE"));
}

#[test]
fn thresholds_filter_output_and_decide_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // Only a warning (IST0132: the host is not on the Gateway).
    std::fs::write(
        dir.path().join("warn.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [b.example.com]
  gateways: [gw]
  http: [{directResponse: {status: 200}}]
"#,
    )
    .unwrap();
    let (code, out) = validate(dir.path(), &["-o", "json"]);
    assert_eq!(code, 0, "a warning does not fail by default: {out}");
    assert!(out.contains("IST0132"), "{out}");
    let (code, _) = validate(dir.path(), &["--failure-threshold", "Warning"]);
    assert_eq!(code, 1, "istioctl's --failure-threshold Warning");
    let (code, out) = validate(dir.path(), &["-o", "json", "--output-threshold", "Error"]);
    assert_eq!((code, out.trim()), (0, "[]"));
}
