#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! The `validate` and `routes` commands as a user runs them: real binary, real files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn portico() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run portico");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn seed_example_validates_clean() {
    let (code, stdout, stderr) = output(portico().arg("validate").arg(repo("examples/seed")));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains(": error "), "{stdout}");
}

#[test]
fn seed_routes_show_reviews_on_both_ports() {
    let (code, stdout, stderr) = output(portico().args(["routes", "--config"]).arg(repo("examples/seed")));
    assert_eq!(code, 0, "{stderr}");
    let port80 = stdout.split("port 443").next().unwrap_or("");
    let port443 = stdout.split("port 443").nth(1).unwrap_or("");
    for (port, text) in [("80", port80), ("443", port443)] {
        assert!(text.contains("dev.example.com"), "port {port}:\n{stdout}");
        assert!(text.contains("prefix /reviews  → reviews.default.svc.cluster.local:9080"), "port {port}:\n{stdout}");
    }
    let (code, json, _) = output(portico().args(["routes", "--json", "--config"]).arg(repo("examples/seed")));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("routes --json is JSON");
    let ports: Vec<u64> = v["listeners"].as_array().unwrap().iter().map(|l| l["port"].as_u64().unwrap()).collect();
    assert_eq!(ports, vec![80, 443]);
}

#[test]
fn brief_verbatim_reports_the_gateway_namespace_trap() {
    let (code, stdout, _) = output(portico().arg("validate").arg(repo("crates/portico/tests/fixtures/brief")));
    assert_eq!(code, 1, "{stdout}");
    let ist0101 = stdout
        .lines()
        .find(|l| l.contains("error IST0101 VirtualService/default/bookinfo") && l.contains("gateway"))
        .unwrap_or_else(|| panic!("no IST0101 for the gateway:\n{stdout}"));
    assert!(ist0101.contains("istio-system/my-gateway"), "{ist0101}");
    // FILE:LINE:COL points at the `gateways` entry.
    assert!(ist0101.contains("brief.yaml:52:5:"), "{ist0101}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("warning") && l.contains("Ingress/default/simple-ingress") && l.contains("class")),
        "the class-less Ingress must be reported:\n{stdout}"
    );
}

#[test]
fn mistakes_are_reported_with_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hostz: [a.example.com]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not config").unwrap();
    let (code, stdout, _) = output(portico().arg("validate").arg(dir.path()));
    assert_eq!(code, 1, "{stdout}");
    let typo = stdout.lines().find(|l| l.contains("typo.yaml")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(typo.contains("typo.yaml:8:5: error PTC0002 Gateway/default/gw:"), "{typo}");
    assert!(typo.contains("did you mean `hosts`"), "{typo}");
    let broken = stdout.lines().find(|l| l.contains("broken.yaml")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(broken.contains(": error PTC0001 -: "), "{broken}");
    assert!(!stdout.contains("notes.txt"));
}

#[test]
fn locality_flag_and_env_set_endpoint_priorities() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc}
spec:
  hosts: [svc.example.internal]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/a}
  - {address: 10.0.0.2, locality: us-west/a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc.example.internal
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}
"#,
    )
    .unwrap();
    let priorities = |cmd: &mut Command| -> Vec<u64> {
        let (code, json, stderr) = output(cmd);
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("routes --json is JSON");
        let eps = v["clusters"]["outbound|80||svc.example.internal"]["endpoints"].as_array().unwrap().clone();
        eps.iter().map(|e| e["priority"].as_u64().unwrap_or(0)).collect()
    };
    let routes = || {
        let mut c = portico();
        c.args(["routes", "--json", "--config"]).arg(dir.path()).env_remove("PORTICO_LOCALITY");
        c
    };
    assert_eq!(priorities(&mut routes()), [0, 0], "no locality: locality LB off");
    assert_eq!(priorities(routes().args(["--locality", "us-east/a"])), [0, 3]);
    assert_eq!(priorities(routes().env("PORTICO_LOCALITY", "us-west/a/x")), [3, 1]);
    let (code, _, stderr) = output(routes().args(["--locality", "a/b/c/d"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("--locality"), "{stderr}");
}
