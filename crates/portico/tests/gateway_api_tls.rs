#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Several certificateRefs on one HTTPS listener: every certificate is loaded, and the
//! handshake picks by SNI (the certificate whose names match) and then by key type (RSA or
//! ECDSA, whichever the client can verify), as Istio's `credentialNames` do.

mod common;

use common::*;
use rcgen::{CertificateParams, DnType, KeyPair};
use std::path::Path;
use std::process::{Command, Stdio};

struct Cert {
    cert: String,
    key: String,
}

fn cert(cn: &str, names: &[&str], rsa: bool) -> Cert {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = if rsa { KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap() } else { KeyPair::generate().unwrap() };
    let c = p.self_signed(&key).unwrap();
    Cert { cert: c.pem(), key: key.serialize_pem() }
}

fn secret(name: &str, c: &Cert) -> String {
    let indent = |p: &str| p.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(&c.cert),
        indent(&c.key)
    )
}

/// The subject CN the server presents for `sni`, with only `sigalgs` offered.
fn served_cn(port: u16, sni: &str, sigalgs: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni, "-sigalgs", sigalgs])
        .args(["-tls1_3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("subject=")
                .map(|s| s.trim().trim_start_matches("CN").trim_start_matches([' ', '=']).to_string())
        })
        .unwrap_or_else(|| format!("none: {text}"))
}

/// An HTTPS GET trusting only `ca`; the body when the handshake verified.
fn curl(port: u16, host: &str, ca: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{host}:{port}/"))
        .output()
        .unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

#[test]
fn every_certificate_ref_is_served_by_sni_and_key_type() {
    if Command::new("openssl").arg("version").output().is_err()
        || Command::new("curl").arg("--version").output().is_err()
    {
        eprintln!("SKIP: openssl or curl is not installed");
        return;
    }
    let web = free_port();
    let _web = echo_backend(web, "web");
    let a = cert("a-cert", &["a.example.com"], false);
    let b = cert("b-cert", &["b.example.com"], false);
    let c_ec = cert("c-ecdsa", &["c.example.com"], false);
    let c_rsa = cert("c-rsa", &["c.example.com"], true);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}{}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: default}}
spec:
  gatewayClassName: portico
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificateRefs: [{{name: a}}, {{name: b}}, {{name: c-rsa}}, {{name: c-ecdsa}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  resolution: STATIC
  location: MESH_INTERNAL
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {web}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: web}}]
  rules: [{{backendRefs: [{{name: web, port: 8080}}]}}]
",
        secret("a", &a),
        secret("b", &b),
        secret("c-rsa", &c_rsa),
        secret("c-ecdsa", &c_ec)
    );
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let https = free_port();
    let _gw = start_gateway(dir.path(), &["--port-map", &format!("443={https}")]);
    wait_port(https);
    let ca = |c: &Cert, n: &str| {
        let p = dir.path().join(format!("{n}.pem"));
        std::fs::write(&p, &c.cert).unwrap();
        p
    };
    // By SNI: each host gets its own certificate, verified against only that one.
    assert_eq!(curl(https, "a.example.com", &ca(&a, "a")), "web");
    assert_eq!(curl(https, "b.example.com", &ca(&b, "b")), "web");
    assert!(curl(https, "b.example.com", &ca(&a, "a2")).starts_with("failed"), "b is not served a's certificate");
    // By key type, for one name with an RSA and an ECDSA certificate.
    assert_eq!(served_cn(https, "c.example.com", "ECDSA+SHA256"), "c-ecdsa");
    assert_eq!(served_cn(https, "c.example.com", "rsa_pss_rsae_sha256:RSA+SHA256"), "c-rsa");
    assert_eq!(served_cn(https, "a.example.com", "ECDSA+SHA256"), "a-cert");
}
