#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico convert`: ingress-nginx Ingresses → Istio and Gateway API YAML that `portico validate`
//! accepts, that routes the same requests to the same backends as the original Ingress (served
//! as class `istio`), and that carries the annotations (canary, rewrite) or reports them.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const FIXTURE: &str = "crates/portico/tests/fixtures/ingress-nginx";
const SERVICES: [&str; 4] = ["api", "api-canary", "web", "blog"];

fn portico(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// ServiceEntries for the fixture's Services (namespace `shop`, the ports the Ingresses name),
/// and the TLS secret its HTTPS host uses.
fn registry(ports: &[u16]) -> String {
    let mut s = String::new();
    for (svc, port) in SERVICES.iter().zip(ports) {
        let svc_port = if svc.starts_with("api") { 8080 } else { 80 };
        s.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {svc}, namespace: shop}}\n\
             spec:\n  hosts: [{svc}.shop.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
             \x20 ports: [{{number: {svc_port}, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
        ));
    }
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_string()]).unwrap();
    let indent = |p: String| p.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    s.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: shop-tls, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    ));
    s
}

fn write_dir(dir: &Path, files: &[(&str, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// (status, backend) for each request.
/// (host, path, headers).
type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn answers(port: u16, reqs: &[Request<'_>]) -> Vec<(u16, String)> {
    reqs.iter()
        .map(|(host, path, headers)| {
            let r = get(port, host, path, headers).unwrap();
            (r.status, r.header("x-backend").unwrap_or("-").to_string())
        })
        .collect()
}

#[test]
fn converted_yaml_validates_and_routes_like_the_original() {
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let _backends: Vec<Proc> = SERVICES.iter().zip(&ports).map(|(s, p)| echo_backend(*p, s)).collect();
    for p in &ports {
        wait_port(*p);
    }
    let reg = registry(&ports);

    // Convert, both ways; every result validates with the registry beside it.
    let (code, istio, findings) = portico(&["convert", &repo(FIXTURE).display().to_string()]);
    assert_eq!(code, 0, "{findings}");
    let (code, gwapi, _) = portico(&["convert", "--to", "gateway-api", &repo(FIXTURE).display().to_string()]);
    assert_eq!(code, 0);
    // Annotations that cannot be carried over are named with file:line.
    for want in [
        "shop.yaml:13:5: warning Ingress/shop/shop: annotation `nginx.ingress.kubernetes.io/whitelist-source-range`: NOT CARRIED OVER",
        "shop.yaml:14:5: warning Ingress/shop/shop: annotation `nginx.ingress.kubernetes.io/configuration-snippet`: not carried over",
        "moved.yaml:27:5: warning Ingress/shop/admin: annotation `nginx.ingress.kubernetes.io/auth-type`: NOT CARRIED OVER: authentication",
    ] {
        assert!(findings.contains(want), "missing `{want}` in:\n{findings}");
    }
    for (name, yaml) in [("istio", &istio), ("gateway-api", &gwapi)] {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &[("converted.yaml", yaml.clone()), ("registry.yaml", reg.clone())]);
        let (code, out, err) = portico(&["validate", &dir.path().display().to_string()]);
        assert_eq!(code, 0, "{name}: validate rejected the converted YAML:\n{out}\n{err}\n{yaml}");
        assert!(!out.contains("error"), "{name}: {out}");
    }

    // The original, served as Istio serves Ingress (class `istio`); the canary Ingress left out,
    // since Istio's translation has no canaries.
    let orig = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string(repo(FIXTURE).join("shop.yaml")).unwrap();
    let main_only = shop.split("\n---\n").next().unwrap().replace("ingressClassName: nginx", "ingressClassName: istio");
    write_dir(orig.path(), &[("shop.yaml", main_only), ("registry.yaml", reg.clone())]);

    let never: &[(&str, &str)] = &[("x-canary", "never")];
    let reqs: Vec<Request<'_>> = vec![
        ("shop.example.com", "/api", never),
        ("shop.example.com", "/api/v1/items", never),
        ("shop.example.com", "/apix", never),
        ("shop.example.com", "/healthz", never),
        ("shop.example.com", "/healthz/deep", never),
        ("shop.example.com", "/", never),
        ("shop.example.com", "/index.html", never),
        ("unknown.example.com", "/", never),
    ];
    let gw = start_gateway(orig.path(), &["--port-map", &format!("443={}", free_port())]);
    wait_port(gw.http_port);
    let want = answers(gw.http_port, &reqs);
    drop(gw);
    // The expectation itself, so a broken original cannot make the comparison pass.
    let backends: Vec<&str> = want.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(backends, ["api", "api", "web", "api", "web", "web", "web", "-"], "{want:?}");

    for (name, yaml) in [("istio", &istio), ("gateway-api", &gwapi)] {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &[("converted.yaml", yaml.clone()), ("registry.yaml", reg.clone())]);
        let gw = start_gateway(dir.path(), &["--port-map", &format!("443={}", free_port())]);
        wait_port(gw.http_port);
        assert_eq!(answers(gw.http_port, &reqs), want, "{name} routes differently from the original");
        // What only the converted YAML does: the canary by header and by weight, the rewrite.
        let r = get(gw.http_port, "shop.example.com", "/api/v1", &[("x-canary", "always")]).unwrap();
        assert_eq!(r.header("x-backend"), Some("api-canary"), "{name}");
        let mut canary = 0;
        for _ in 0..200 {
            let r = get(gw.http_port, "shop.example.com", "/api", &[]).unwrap();
            if r.header("x-backend") == Some("api-canary") {
                canary += 1;
            }
        }
        // 10 % of 200: mean 20, sd ≈ 4.2; 5..=40 is beyond 3.5 sd either way.
        assert!((5..=40).contains(&canary), "{name}: canary share {canary}/200");
        // `x-canary: never` keeps every request off the canary, whatever its weight (10 % of 100
        // requests leaking would show here with probability 1 - 0.9^100).
        for _ in 0..100 {
            let r = get(gw.http_port, "shop.example.com", "/api", &[("x-canary", "never")]).unwrap();
            assert_eq!(r.header("x-backend"), Some("api"), "{name}: `never` went to the canary");
        }
        // permanent-redirect (+ its code) answers every request of the Ingress.
        let r = get(gw.http_port, "old.example.com", "/any/path", &[]).unwrap();
        assert_eq!((r.status, r.header("location")), (308, Some("https://new.example.com/welcome")), "{name}");
        // TLS without `ssl-redirect: "false"`: plain HTTP is redirected (ingress-nginx's default).
        let r = get(gw.http_port, "accounts.example.com", "/login", &[]).unwrap();
        assert_eq!((r.status, r.header("location")), (301, Some("https://accounts.example.com/login")), "{name}");
        if name == "istio" {
            let r = get(gw.http_port, "blog.example.com", "/blog/post/1?echo", &[]).unwrap();
            assert_eq!(r.header("x-backend"), Some("blog"), "{name}");
            assert!(r.body.contains("GET /post/1?echo"), "{name}: rewrite-target /$2: {}", r.body);
        }
    }
}

/// `--domain-suffix` reaches `convert`: the Service hosts are in the cluster's domain, and a
/// value that is not a domain is refused like the other commands refuse it.
#[test]
fn convert_honours_domain_suffix() {
    let fixture = repo(FIXTURE).display().to_string();
    let (code, yaml, err) = portico(&["convert", "--domain-suffix", "corp.internal.", &fixture]);
    assert_eq!(code, 0, "{err}");
    assert!(yaml.contains(".shop.svc.corp.internal"), "{yaml}");
    assert!(!yaml.contains("cluster.local"), "{yaml}");
    let (code, _, err) = portico(&["convert", "--domain-suffix", "not a domain", &fixture]);
    assert_ne!(code, 0);
    assert!(err.contains("--domain-suffix"), "{err}");
}
