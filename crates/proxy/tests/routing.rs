#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Virtual hosts, route matching, weights, redirects, direct responses, rewrites, header rules.

mod common;

use common::*;
use http::HeaderName;
use portico_model::matcher::{Re, RequestMatch, StrMatch};
use portico_model::snapshot::*;
use portico_proxy::ResponseFlags;
use std::sync::Arc;

fn direct(body: &str) -> RouteAction {
    RouteAction::DirectResponse { status: 200, body: Arc::from(body.as_bytes()) }
}

#[tokio::test]
async fn virtual_host_selection() {
    let vh = |name: &str| vhost(name, vec![route(vec![], direct(name))]);
    let snap = snapshot(
        vec![listener(80, vec![vh("a.example.com"), vh("*.example.com"), vh("*.b.example.com"), vh("*")])],
        vec![],
    );
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;
    for (host, expect) in [
        ("a.example.com", "a.example.com"),
        ("A.Example.COM", "a.example.com"),
        ("a.example.com:8080", "a.example.com"),
        ("x.example.com", "*.example.com"),
        ("x.y.example.com", "*.example.com"),
        ("x.b.example.com", "*.b.example.com"),
        ("X.B.EXAMPLE.COM:1234", "*.b.example.com"),
        ("example.com", "*"),
        ("other.org", "*"),
    ] {
        let r = c.get(host, "/").await;
        assert_eq!((r.status, r.text()), (200, expect.to_string()), "host {host}");
    }
}

#[tokio::test]
async fn unknown_host_and_no_route_are_404_nr() {
    let sink = Arc::new(RecordingSink::default());
    let snap = snapshot(
        vec![listener(80, vec![vhost("a.example.com", vec![route(vec![uri_prefix("/only")], direct("ok"))])])],
        vec![],
    );
    let (_proxy, addr) =
        start_with(portico_proxy::ProxyOptions { access_log: sink.clone(), ..opts(&[80]) }, snap).await;
    let mut c = H1::connect(addr).await;
    assert_eq!(c.get("a.example.com", "/only/x").await.status, 200);
    let r = c.get("b.example.com", "/only").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("server").as_deref(), Some("istio-envoy"));
    assert_eq!(r.header("x-envoy-upstream-service-time"), None, "no upstream was involved");
    let r = c.get("a.example.com", "/other").await;
    assert_eq!(r.status, 404);
    let recs = sink.wait_for(3).await;
    assert_eq!(recs.len(), 3);
    assert!(recs[0].flags.is_empty());
    assert_eq!(recs[1].flags, ResponseFlags::NO_ROUTE_FOUND);
    assert_eq!(recs[1].status, 404);
    // Envoy gives every request an id as it arrives: local replies are logged with one too.
    let id = recs[1].request_id.as_ref().expect("x-request-id of a 404");
    assert_eq!(id.len(), 36, "{id:?}");
    assert_eq!(recs[2].flags.to_string(), "NR");
}

fn m() -> RequestMatch {
    RequestMatch::default()
}

fn hdr(name: &str, s: StrMatch) -> Vec<(String, StrMatch)> {
    vec![(name.to_string(), s)]
}

#[tokio::test]
async fn every_match_field() {
    let exact = |s: &str| StrMatch::Exact(s.into());
    let routes = vec![
        route(vec![RequestMatch { uri: Some(exact("/exact")), ..m() }], direct("uri-exact")),
        route(
            vec![RequestMatch { uri: Some(StrMatch::Prefix("/Pre".into())), ignore_uri_case: true, ..m() }],
            direct("uri-prefix-ignore-case"),
        ),
        route(
            vec![RequestMatch { uri: Some(StrMatch::Regex(Re::new("/re/[0-9]+").unwrap())), ..m() }],
            direct("uri-regex"),
        ),
        route(vec![RequestMatch { method: Some(exact("POST")), ..uri_prefix("/m") }], direct("method")),
        route(vec![RequestMatch { scheme: Some(exact("https")), ..uri_prefix("/s") }], direct("scheme-https")),
        route(vec![RequestMatch { scheme: Some(exact("http")), ..uri_prefix("/s") }], direct("scheme-http")),
        route(
            vec![RequestMatch { authority: Some(StrMatch::Prefix("auth.".into())), ..uri_prefix("/auth") }],
            direct("authority"),
        ),
        route(vec![RequestMatch { headers: hdr("x-user", exact("alice")), ..uri_prefix("/h") }], direct("hdr-exact")),
        route(vec![RequestMatch { headers: hdr("x-empty", exact("")), ..uri_prefix("/h") }], direct("hdr-empty")),
        route(
            vec![RequestMatch { headers: hdr("x-any", StrMatch::Present), ..uri_prefix("/h") }],
            direct("hdr-present"),
        ),
        route(
            vec![RequestMatch { without_headers: hdr("x-canary", exact("1")), ..uri_prefix("/w") }],
            direct("without-headers"),
        ),
        route(
            vec![RequestMatch {
                query_params: vec![("q".into(), exact("v")), ("flag".into(), StrMatch::Present)],
                ..uri_prefix("/q")
            }],
            direct("query"),
        ),
        route(vec![RequestMatch { port: Some(81), ..uri_prefix("/p") }], direct("port-81")),
        route(vec![RequestMatch { port: Some(80), ..uri_prefix("/p") }], direct("port-80")),
        // Any one of several match blocks.
        route(vec![uri_prefix("/one"), uri_prefix("/two")], direct("any-of")),
        route(vec![], direct("fallback")),
    ];
    let snap = snapshot(vec![listener(80, vec![vhost("*", routes)])], vec![]);
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;
    /// (method, host, path, headers, expected route)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", "h", "/exact", vec![], "uri-exact"),
        ("GET", "h", "/exact/", vec![], "fallback"),
        ("GET", "h", "/pREfix/x", vec![], "uri-prefix-ignore-case"),
        ("GET", "h", "/re/123", vec![], "uri-regex"),
        ("GET", "h", "/re/123/x", vec![], "fallback"),
        ("POST", "h", "/m", vec![], "method"),
        ("GET", "h", "/m", vec![], "fallback"),
        ("GET", "h", "/s", vec![], "scheme-http"),
        ("GET", "auth.example.com", "/auth", vec![], "authority"),
        ("GET", "other.example.com", "/auth", vec![], "fallback"),
        ("GET", "h", "/h", vec![("x-user", "alice")], "hdr-exact"),
        ("GET", "h", "/h", vec![("x-user", "bob")], "fallback"),
        ("GET", "h", "/h", vec![("x-empty", "")], "hdr-empty"),
        ("GET", "h", "/h", vec![("x-empty", "v")], "fallback"),
        ("GET", "h", "/h", vec![("x-any", "")], "hdr-present"),
        ("GET", "h", "/h", vec![("x-any", "whatever")], "hdr-present"),
        ("GET", "h", "/h", vec![], "fallback"),
        ("GET", "h", "/w", vec![], "without-headers"),
        ("GET", "h", "/w", vec![("x-canary", "2")], "without-headers"),
        ("GET", "h", "/w", vec![("x-canary", "1")], "fallback"),
        ("GET", "h", "/q?q=v&flag", vec![], "query"),
        ("GET", "h", "/q?flag=&q=v", vec![], "query"),
        ("GET", "h", "/q?q=v", vec![], "fallback"),
        ("GET", "h", "/q?q=w&flag", vec![], "fallback"),
        ("GET", "h", "/p", vec![], "port-80"),
        ("GET", "h", "/two/x", vec![], "any-of"),
    ];
    for (method, host, path, headers, expect) in cases {
        let mut b = req(method, host, path);
        for (k, v) in &headers {
            b = b.header(*k, *v);
        }
        let r = c.send(b.body(Default::default()).unwrap()).await;
        assert_eq!(r.text(), expect, "{method} {host}{path} {headers:?}");
    }
}

#[tokio::test]
async fn weights_follow_shares() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", vec![route(vec![], weighted(&[("a", 10), ("b", 30), ("c", 60)]))])])],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr]), cluster("c", &[c.addr])],
    );
    let (_proxy, addr) = start(snap).await;
    let mut client = H1::connect(addr).await;
    const N: usize = 2000;
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for _ in 0..N {
        *counts.entry(client.get("h", "/").await.backend()).or_default() += 1;
    }
    // Tolerance: ±4 percentage points of N (the binomial standard deviation is ≤ 1.1 points).
    for (name, share) in [("a", 0.10), ("b", 0.30), ("c", 0.60)] {
        let got = counts.get(name).copied().unwrap_or(0) as f64 / N as f64;
        assert!((got - share).abs() < 0.04, "{name}: {got} vs {share} ({counts:?})");
    }
}

#[tokio::test]
async fn redirects_and_direct_responses() {
    let redirect = |uri: Option<&str>, authority: Option<&str>, scheme: Option<&str>, port: Option<u16>, code| {
        RouteAction::Redirect(Redirect {
            uri: uri.map(Into::into),
            authority: authority.map(Into::into),
            port,
            port_from_request: false,
            scheme: scheme.map(Into::into),
            code,
        })
    };
    let mut teapot = route(
        vec![uri_prefix("/teapot")],
        RouteAction::DirectResponse { status: 418, body: Arc::from(&b"short and stout"[..]) },
    );
    teapot.headers.response.set.push((HeaderName::from_static("x-direct"), "yes".into()));
    let snap = snapshot(
        vec![listener(
            80,
            vec![
                vhost(
                    "*",
                    vec![
                        route(vec![uri_prefix("/old")], redirect(Some("/new"), None, None, None, 301)),
                        route(
                            vec![uri_prefix("/move")],
                            redirect(None, Some("b.example.com"), Some("https"), Some(8443), 302),
                        ),
                        teapot,
                    ],
                ),
                VirtualHost {
                    https_redirect: true,
                    ..vhost("secure.example.com", vec![route(vec![], direct("never"))])
                },
            ],
        )],
        vec![],
    );
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;

    let r = c.get("a.example.com", "/old/path?x=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").unwrap(), "http://a.example.com/new?x=1");

    let r = c.get("a.example.com", "/move/it").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location").unwrap(), "https://b.example.com:8443/move/it");

    let r = c.get("a.example.com", "/teapot").await;
    assert_eq!((r.status, r.text().as_str()), (418, "short and stout"));
    assert_eq!(r.header("x-direct").as_deref(), Some("yes"));

    let r = c.get("secure.example.com", "/a/../b?q=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").unwrap(), "https://secure.example.com/b?q=1");
}

#[tokio::test]
async fn rewrites_and_header_rules() {
    let be = backend("be").await;
    let mut prefix = route(vec![uri_prefix("/api/")], forward("be"));
    prefix.rewrite =
        Some(Rewrite { uri: Some("/v2/".into()), authority: Some("internal.svc".into()), uri_regex: None });
    let mut exact = route(vec![RequestMatch { uri: Some(StrMatch::Exact("/login".into())), ..m() }], forward("be"));
    exact.rewrite = Some(Rewrite { uri: Some("/auth/login".into()), authority: None, uri_regex: None });
    let mut regex = route(vec![uri_prefix("/users/")], forward("be"));
    regex.rewrite = Some(Rewrite {
        uri: None,
        authority: None,
        uri_regex: Some((Re::new("/users/([0-9]+)/(.*)").unwrap(), r"/u/\2/\1".into())),
    });
    let mut hdrs = route(vec![uri_prefix("/hdr")], weighted(&[("be", 1)]));
    let name = HeaderName::from_static;
    hdrs.headers.request = HeaderOps {
        set: vec![(name("x-set"), "route".into())],
        add: vec![(name("x-add"), "route".into())],
        remove: vec![name("x-drop")],
    };
    hdrs.headers.response =
        HeaderOps { set: vec![(name("x-resp"), "set".into())], add: vec![], remove: vec![name("x-backend")] };
    if let RouteAction::Forward(wc) = &mut hdrs.action {
        wc.destinations[0].headers.request.set.push((name("x-dest"), "d".into()));
        wc.destinations[0].headers.response.add.push((name("x-dest-resp"), "d".into()));
    }
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", vec![prefix, exact, regex, hdrs])])],
        vec![cluster("be", &[be.addr])],
    );
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;

    let r = c.get("a.example.com", "/api/items?x=1").await;
    assert_eq!(r.seen_path(), "/v2/items?x=1");
    // Envoy tells the upstream what it rewrote.
    assert_eq!(r.seen("x-envoy-original-path").as_deref(), Some("/api/items?x=1"));
    assert_eq!(r.seen("host").as_deref(), Some("internal.svc"));

    let r = c.get("a.example.com", "/login?next=/").await;
    assert_eq!(r.seen_path(), "/auth/login?next=/");
    assert_eq!(r.seen("x-envoy-original-path").as_deref(), Some("/login?next=/"));
    assert_eq!(r.seen("host").as_deref(), Some("a.example.com"));

    let r = c.get("a.example.com", "/users/42/profile").await;
    assert_eq!(r.seen_path(), "/u/profile/42");
    assert_eq!(r.seen("x-envoy-original-path").as_deref(), Some("/users/42/profile"));

    let r = c
        .send(
            req("GET", "a.example.com", "/hdr")
                .header("x-set", "client")
                .header("x-add", "client")
                .header("x-drop", "1")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.seen("x-set").as_deref(), Some("route"));
    assert_eq!(r.seen("x-add").as_deref(), Some("client, route"));
    assert_eq!(r.seen("x-drop"), None);
    assert_eq!(r.seen("x-envoy-original-path"), None, "nothing was rewritten");
    assert_eq!(r.seen("x-dest").as_deref(), Some("d"));
    assert_eq!(r.header("x-resp").as_deref(), Some("set"));
    assert_eq!(r.header("x-dest-resp").as_deref(), Some("d"));
    assert_eq!(r.header("x-backend"), None);
    // As an Istio gateway answers: `server` overwritten, the upstream's time in milliseconds.
    assert_eq!(r.header("server").as_deref(), Some("istio-envoy"));
    let ms = r.header("x-envoy-upstream-service-time").expect("x-envoy-upstream-service-time");
    assert!(ms.parse::<u64>().is_ok(), "{ms}");
}
