#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico validate` judges a `credentialName` certificate's dates now, as `istioctl analyze`
//! does (IST0161), on the real binary.

use std::process::Command;

fn secret(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["s.example.com".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = params.self_signed(&key).unwrap();
    let indent = |pem: String| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\nstringData:\n  tls.crt: |\n{}  \
         tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}

fn validate(secret_yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let gateway =
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: secure, namespace: istio-system}\n\
        spec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, \
        hosts: [s.example.com], tls: {mode: SIMPLE, credentialName: cert}}]\n";
    std::fs::write(dir.path().join("gw.yaml"), format!("{secret_yaml}---\n{gateway}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico")).arg("validate").arg(dir.path()).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn expired_and_future_certificates_are_ist0161() {
    let (ok, text) = validate(&secret("cert", (2001, 1, 1), (2002, 1, 1)));
    assert!(!ok, "{text}");
    assert!(text.contains("IST0161") && text.contains("expired at 2002-01-01T00:00:00Z"), "{text}");
    let (ok, text) = validate(&secret("cert", (2200, 1, 1), (2201, 1, 1)));
    assert!(!ok, "{text}");
    assert!(text.contains("IST0161") && text.contains("is not valid before 2200-01-01T00:00:00Z"), "{text}");
    let (ok, text) = validate(&secret("cert", (2001, 1, 1), (2200, 1, 1)));
    assert!(ok && !text.contains("IST0161"), "{text}");
}
