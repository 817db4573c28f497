#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! The Gateway API's conformance manifests (`../shared/conformance/gateway-api/`, unmodified),
//! served by the real binary and checked over real sockets against echo backends with the
//! expectations of the upstream Go tests of the same names; and the API's invalid examples,
//! each rejected by `portico validate` with the field and the reason.
//! When the corpus is absent the tests say so and pass.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> Option<PathBuf> {
    // Beside a clone (`../shared`), or beside the clone a worktree was made from.
    ["../shared/conformance/gateway-api", "../../shared/conformance/gateway-api"]
        .iter()
        .map(|p| repo(p))
        .find(|p| p.is_dir())
}

const INFRA: &str = "gateway-conformance-infra";
const APP: &str = "gateway-conformance-app-backend";
const WEB: &str = "gateway-conformance-web-backend";
const BACKENDS: [(&str, &str); 6] = [
    (INFRA, "infra-backend-v1"),
    (INFRA, "infra-backend-v2"),
    (INFRA, "infra-backend-v3"),
    (APP, "app-backend-v1"),
    (APP, "app-backend-v2"),
    (WEB, "web-backend"),
];

struct Backends {
    _procs: Vec<Proc>,
    entries: String,
}

/// Echo backends for the suite's Services, and ServiceEntries that make
/// `NAME.NS.svc.cluster.local:8080` reach them.
fn backends() -> Backends {
    let mut procs = Vec::new();
    let mut entries = String::new();
    for (ns, name) in BACKENDS {
        let port = free_port();
        procs.push(echo_backend(port, name));
        entries.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
             \x20 ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
        ));
        wait_port(port);
    }
    Backends { _procs: procs, entries }
}

/// One request of a case and what the upstream test expects of it.
#[derive(Default, Clone)]
struct Req {
    host: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    /// Gateway port (the test maps it to a local one); 80 when 0.
    port: u16,
    status: u16,
    backend: Option<&'static str>,
    /// Path the backend must have seen.
    seen_path: Option<&'static str>,
    seen_headers: Vec<(&'static str, &'static str)>,
    absent_headers: Vec<&'static str>,
    resp_headers: Vec<(&'static str, &'static str)>,
    resp_absent: Vec<&'static str>,
    location: Option<&'static str>,
}

fn to(path: &'static str, backend: &'static str) -> Req {
    Req { path, backend: Some(backend), status: 200, ..Default::default() }
}

fn status(path: &'static str, status: u16) -> Req {
    Req { path, status, ..Default::default() }
}

impl Req {
    fn host(mut self, h: &'static str) -> Self {
        self.host = h;
        self
    }
    fn hdr(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn seen(mut self, p: &'static str) -> Self {
        self.seen_path = Some(p);
        self
    }
    fn seen_hdr(mut self, k: &'static str, v: &'static str) -> Self {
        self.seen_headers.push((k, v));
        self
    }
    fn absent(mut self, k: &'static str) -> Self {
        self.absent_headers.push(k);
        self
    }
    fn resp_hdr(mut self, k: &'static str, v: &'static str) -> Self {
        self.resp_headers.push((k, v));
        self
    }
    fn resp_absent(mut self, k: &'static str) -> Self {
        self.resp_absent.push(k);
        self
    }
    fn location(mut self, l: &'static str) -> Self {
        self.location = Some(l);
        self
    }
}

/// Send one HTTP/1.1 request (any method; `?echo` asks the backend to print what it saw).
fn send(port: u16, r: &Req) -> std::io::Result<Resp> {
    let method = if r.method.is_empty() { "GET" } else { r.method };
    let host = if r.host.is_empty() { "conformance.example" } else { r.host };
    let sep = if r.path.contains('?') { '&' } else { '?' };
    let path = format!("{}{sep}echo", r.path);
    let mut headers: Vec<(&str, &str)> = r.headers.to_vec();
    headers.push(("content-length", "0"));
    portico_testkit::blocking::request(port, method, host, &path, &headers, b"")
}

/// What the echo backend saw: (path, headers), from its `?echo` body.
fn seen(body: &str) -> (String, Vec<(String, String)>) {
    let mut lines = body.lines().skip(1);
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .map(|p| p.split('?').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let headers = lines
        .take_while(|l| !l.starts_with("body:"))
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())))
        .collect();
    (path, headers)
}

fn check(r: &Req, resp: &Resp) -> Result<(), String> {
    let want = if r.status == 0 { 200 } else { r.status };
    if resp.status != want {
        return Err(format!("status {} (want {want})", resp.status));
    }
    if let Some(b) = r.backend {
        let got = resp.header("x-backend").unwrap_or("-");
        if got != b {
            return Err(format!("backend {got} (want {b})"));
        }
    }
    let (path, hs) = seen(&resp.body);
    if let Some(p) = r.seen_path {
        if path != p {
            return Err(format!("backend saw path {path} (want {p})"));
        }
    }
    for (k, v) in &r.seen_headers {
        let all: Vec<&str> = hs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str()).collect();
        if all.join(",") != *v {
            return Err(format!("backend saw {k}: {all:?} (want {v})"));
        }
    }
    for k in &r.absent_headers {
        if hs.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)) {
            return Err(format!("backend saw {k}, which should have been removed"));
        }
    }
    for (k, v) in &r.resp_headers {
        let all: Vec<&str> =
            resp.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str()).collect();
        if all.join(",") != *v {
            return Err(format!("response {k}: {all:?} (want {v})"));
        }
    }
    for k in &r.resp_absent {
        if resp.header(k).is_some() {
            return Err(format!("response has {k}, which should have been removed"));
        }
    }
    if let Some(l) = r.location {
        let got = resp.header("location").unwrap_or("-");
        // `?echo` is ours; the redirect keeps the query.
        let got = got.trim_end_matches("?echo").trim_end_matches("&echo");
        if got != l {
            return Err(format!("location {got} (want {l})"));
        }
    }
    Ok(())
}

struct Case {
    name: &'static str,
    /// Manifests under `conformance/tests/`.
    files: &'static [&'static str],
    /// Gateway ports besides 80, 8001, 8002.
    ports: &'static [u16],
    reqs: Vec<Req>,
}

fn case(name: &'static str, files: &'static [&'static str], reqs: Vec<Req>) -> Case {
    Case { name, files, ports: &[], reqs }
}

fn cases() -> Vec<Case> {
    let v1 = "infra-backend-v1";
    let v2 = "infra-backend-v2";
    let v3 = "infra-backend-v3";
    vec![
        case("HTTPRouteSimpleSameNamespace", &["httproute-simple-same-namespace.yaml"], vec![to("/", v1)]),
        case(
            "HTTPRouteMatching",
            &["httproute-matching.yaml"],
            vec![
                to("/", v1),
                to("/example", v1),
                to("/", v1).hdr("Version", "one"),
                to("/v2", v2),
                to("/v2/example", v2),
                to("/", v2).hdr("Version", "two"),
            ],
        ),
        case(
            "HTTPExactPathMatching",
            &["httproute-exact-path-matching.yaml"],
            vec![to("/one", v1), to("/two", v2), status("/", 404), status("/one/example", 404), status("/two/", 404)],
        ),
        case(
            "HTTPRoutePathMatchOrder",
            &["httproute-path-match-order.yaml"],
            vec![
                to("/match/exact/one", v3),
                to("/match/exact", v2),
                to("/match", v1),
                to("/match/prefix/one/any", v2),
                to("/match/prefix/any", v1),
                to("/match/any", v3),
            ],
        ),
        case(
            "HTTPRouteHeaderMatching",
            &["httproute-header-matching.yaml"],
            vec![
                to("/", v1).hdr("Version", "one"),
                to("/", v2).hdr("Version", "two"),
                to("/", v1).hdr("Version", "two").hdr("Color", "orange"),
                to("/", v1).hdr("Color", "blue"),
                to("/", v1).hdr("Color", "green"),
                to("/", v2).hdr("Color", "red"),
                to("/", v2).hdr("Color", "yellow"),
                status("/", 404).hdr("Version", "three"),
                status("/", 404).hdr("Color", "purple"),
            ],
        ),
        case(
            "HTTPRouteQueryParamMatching",
            &["httproute-query-param-matching.yaml"],
            vec![
                to("/?animal=whale", v1),
                to("/?animal=dolphin", v2),
                to("/?animal=dolphin&color=blue", v3),
                to("/?ANIMAL=Whale", v3),
                to("/path1?animal=whale", v1),
                to("/?animal=whale", v2).hdr("version", "one"),
                to("/path2?animal=whale", v3).hdr("version", "two"),
                status("/?animal=shark", 404),
                status("/?animal=whale&otheranimal=dolphin", 200),
            ],
        ),
        case(
            "HTTPRouteMethodMatching",
            &["httproute-method-matching.yaml"],
            vec![
                to("/", v1).method("POST"),
                to("/", v2).method("GET"),
                to("/path1", v1).method("GET"),
                to("/", v2).method("PUT").hdr("version", "one"),
                to("/path2", v3).method("POST").hdr("version", "two"),
                to("/path3", v1).method("PATCH"),
                to("/path4", v1).method("DELETE").hdr("version", "three"),
                to("/path5", v1).method("PATCH"),
                status("/", 404).method("HEAD"),
            ],
        ),
        case(
            "HTTPRouteRequestHeaderModifier",
            &["httproute-request-header-modifier.yaml"],
            vec![
                to("/set", v1)
                    .hdr("Some-Other-Header", "val")
                    .seen_hdr("Some-Other-Header", "val")
                    .seen_hdr("X-Header-Set", "set-overwrites-values"),
                to("/set", v1)
                    .hdr("X-Header-Set", "some-other-value")
                    .seen_hdr("X-Header-Set", "set-overwrites-values"),
                to("/add", v1).hdr("Some-Other-Header", "val").seen_hdr("X-Header-Add", "add-appends-values"),
                to("/add", v1)
                    .hdr("X-Header-Add", "some-other-value")
                    .seen_hdr("X-Header-Add", "some-other-value,add-appends-values"),
                to("/remove", v1).hdr("X-Header-Remove", "val").absent("X-Header-Remove"),
                to("/multiple", v1)
                    .hdr("X-Header-Set-2", "set-val-2")
                    .hdr("X-Header-Add-2", "add-val-2")
                    .hdr("X-Header-Remove-2", "remove-val-2")
                    .hdr("Another-Header", "another-header-val")
                    .seen_hdr("X-Header-Set-1", "header-set-1")
                    .seen_hdr("X-Header-Set-2", "header-set-2")
                    .seen_hdr("X-Header-Add-1", "header-add-1")
                    .seen_hdr("X-Header-Add-2", "add-val-2,header-add-2")
                    .seen_hdr("X-Header-Add-3", "header-add-3")
                    .seen_hdr("Another-Header", "another-header-val")
                    .absent("X-Header-Remove-1")
                    .absent("X-Header-Remove-2"),
            ],
        ),
        case(
            "HTTPRouteRequestHeaderModifierBackend",
            &["httproute-request-header-modifier-backend.yaml"],
            vec![
                to("/set", v1)
                    .hdr("X-Header-Set", "some-other-value")
                    .seen_hdr("X-Header-Set", "set-overwrites-values"),
                to("/add", v1)
                    .hdr("X-Header-Add", "some-other-value")
                    .seen_hdr("X-Header-Add", "some-other-value,add-appends-values"),
                to("/remove", v1).hdr("X-Header-Remove", "val").absent("X-Header-Remove"),
            ],
        ),
        case(
            "HTTPRouteResponseHeaderModifier",
            &["httproute-response-header-modifier.yaml"],
            vec![
                to("/set", v1).resp_hdr("X-Header-Set", "set-overwrites-values"),
                to("/add", v1).resp_hdr("X-Header-Add", "add-appends-values"),
                to("/remove", v1).resp_absent("X-Header-Remove"),
                to("/multiple", v1)
                    .resp_hdr("X-Header-Set-1", "header-set-1")
                    .resp_hdr("X-Header-Set-2", "header-set-2")
                    .resp_hdr("X-Header-Add-1", "header-add-1")
                    .resp_hdr("X-Header-Add-2", "header-add-2")
                    .resp_hdr("X-Header-Add-3", "header-add-3"),
            ],
        ),
        case(
            "HTTPRouteRewritePath",
            &["httproute-rewrite-path.yaml"],
            vec![
                to("/prefix/one/two", v1).seen("/one/two"),
                to("/strip-prefix/three", v1).seen("/three"),
                to("/strip-prefix", v1).seen("/"),
                to("/full/one/two", v1).seen("/one"),
                to("/full/rewrite-path-and-modify-headers/test", v1)
                    .hdr("X-Header-Remove", "remove-val")
                    .hdr("X-Header-Add-Append", "append-val-1")
                    .hdr("X-Header-Set", "set-val")
                    .seen("/test")
                    .seen_hdr("X-Header-Add", "header-val-1")
                    .seen_hdr("X-Header-Add-Append", "append-val-1,header-val-2")
                    .seen_hdr("X-Header-Set", "set-overwrites-values")
                    .absent("X-Header-Remove"),
                to("/prefix/rewrite-path-and-modify-headers/one", v1).seen("/prefix/one"),
            ],
        ),
        case(
            "HTTPRouteBackendURLRewrite",
            &["httproute-backend-url-rewrite.yaml"],
            vec![to("/full/one", v1).seen("/rewritten-full"), to("/prefix/one", v1).seen("/rewritten-prefix/one")],
        ),
        case(
            "HTTPRouteBackendRequestRedirect",
            &["httproute-backend-request-redirect.yaml"],
            vec![
                status("/full/one", 302).location("http://conformance.example/redirected-full"),
                status("/prefix/one", 302).location("http://conformance.example/redirected-prefix/one"),
            ],
        ),
        case(
            "HTTPRouteRewriteHost",
            &["httproute-rewrite-host.yaml"],
            vec![
                to("/one", v1).host("rewrite.example").seen_hdr("host", "one.example.org"),
                to("/", v2).host("rewrite.example").seen_hdr("host", "example.org"),
            ],
        ),
        case(
            "HTTPRouteRedirectPath",
            &["httproute-redirect-path.yaml"],
            vec![
                status("/original-prefix/lemon", 302).location("http://conformance.example/replacement-prefix/lemon"),
                status("/full/path/original", 302).location("http://conformance.example/full-path-replacement"),
                status("/path-and-host", 302).location("http://example.org/replacement-prefix"),
                status("/path-and-status", 301).location("http://conformance.example/replacement-prefix"),
                status("/full-path-and-host", 302).location("http://example.org/replacement-full"),
                status("/full-path-and-status", 301).location("http://conformance.example/replacement-full"),
            ],
        ),
        case(
            "HTTPRoute303Redirect",
            &["httproute-303-redirect.yaml"],
            vec![status("/see-other", 303).location("http://conformance.example/see-other")],
        ),
        case(
            "HTTPRoute307Redirect",
            &["httproute-307-redirect.yaml"],
            vec![status("/temporary", 307).location("http://conformance.example/temporary")],
        ),
        case(
            "HTTPRoute308Redirect",
            &["httproute-308-redirect.yaml"],
            vec![status("/permanent", 308).location("http://conformance.example/permanent")],
        ),
        case(
            "HTTPRouteRedirectHostAndStatus",
            &["httproute-redirect-host-and-status.yaml"],
            vec![
                status("/hostname-redirect", 302).location("http://example.org/hostname-redirect"),
                status("/host-and-status", 301).location("http://example.org/host-and-status"),
            ],
        ),
        case(
            "HTTPRouteRedirectScheme",
            &["httproute-redirect-scheme.yaml"],
            vec![
                status("/scheme", 302).location("https://conformance.example/scheme"),
                status("/scheme-and-host", 302).location("https://example.org/scheme-and-host"),
                status("/scheme-and-status", 301).location("https://conformance.example/scheme-and-status"),
                status("/scheme-and-host-and-status", 302).location("https://example.org/scheme-and-host-and-status"),
            ],
        ),
        case(
            "HTTPRouteRedirectPort",
            &["httproute-redirect-port.yaml"],
            vec![
                status("/port", 302).location("http://conformance.example:8083/port"),
                status("/port-and-host", 302).location("http://example.org:8083/port-and-host"),
                status("/port-and-status", 301).location("http://conformance.example:8083/port-and-status"),
                status("/port-and-host-and-status", 302).location("http://example.org:8083/port-and-host-and-status"),
            ],
        ),
        Case {
            name: "HTTPRouteRedirectPortAndScheme",
            files: &["httproute-redirect-port-and-scheme.yaml"],
            ports: &[8080],
            reqs: vec![
                status("/scheme-nil-and-port-nil", 302).location("http://example.org/scheme-nil-and-port-nil"),
                status("/scheme-nil-and-port-80", 302).location("http://example.org/scheme-nil-and-port-80"),
                status("/scheme-nil-and-port-8080", 302).location("http://example.org:8080/scheme-nil-and-port-8080"),
                status("/scheme-https-and-port-nil", 302).location("https://example.org/scheme-https-and-port-nil"),
                status("/scheme-https-and-port-443", 302).location("https://example.org/scheme-https-and-port-443"),
                status("/scheme-https-and-port-8443", 302)
                    .location("https://example.org:8443/scheme-https-and-port-8443"),
                status("/scheme-nil-and-port-nil", 302)
                    .port(8080)
                    .location("http://example.org:8080/scheme-nil-and-port-nil"),
                status("/scheme-nil-and-port-80", 302).port(8080).location("http://example.org/scheme-nil-and-port-80"),
                status("/scheme-https-and-port-nil", 302)
                    .port(8080)
                    .location("https://example.org/scheme-https-and-port-nil"),
            ],
        },
        case(
            "HTTPRouteHostnameIntersection",
            &["httproute-hostname-intersection.yaml"],
            vec![
                to("/s1", v1).host("very.specific.com"),
                status("/s1", 404).host("non.matching.com"),
                status("/s1", 404).host("foo.nonmatchingwildcard.io"),
                status("/s1", 404).host("foo.wildcard.io"),
                to("/s2", v2).host("foo.wildcard.io"),
                to("/s2", v2).host("bar.wildcard.io"),
                to("/s2", v2).host("foo.bar.wildcard.io"),
                status("/s2", 404).host("non.matching.com"),
                status("/s2", 404).host("wildcard.io"),
                to("/s3", v3).host("very.specific.com"),
                status("/s3", 404).host("foo.specific.com"),
                to("/s4", v1).host("foo.anotherwildcard.io"),
                to("/s4", v1).host("foo.bar.anotherwildcard.io"),
                status("/s4", 404).host("anotherwildcard.io"),
                status("/s5", 404).host("specific.but.wrong.com"),
                status("/s5", 404).host("wildcard.io"),
                to("/", v2).host("first.com"),
                to("/", v2).host("sub.second.com"),
            ],
        ),
        case(
            "HTTPRouteListenerHostnameMatching",
            &["httproute-listener-hostname-matching.yaml"],
            vec![
                to("/", v1).host("bar.com"),
                to("/", v2).host("foo.bar.com"),
                to("/", v3).host("baz.bar.com"),
                to("/", v3).host("boo.bar.com"),
                to("/", v3).host("multiple.prefixes.bar.com"),
                to("/", v3).host("multiple.prefixes.foo.com"),
                to("/", v3).host("foo.foo.com"),
                to("/", v3).host("bar.foo.com"),
                status("/", 404).host("foo.com"),
                status("/", 404).host("no.matching.host"),
            ],
        ),
        case("HTTPRouteCrossNamespace", &["httproute-cross-namespace.yaml"], vec![to("/", "web-backend").port(8002)]),
        case("HTTPRouteReferenceGrant", &["httproute-reference-grant.yaml"], vec![to("/", "web-backend")]),
        case(
            "HTTPRouteInvalidCrossNamespaceBackendRef",
            &["httproute-invalid-cross-namespace-backend-ref.yaml"],
            vec![status("/", 500)],
        ),
        case(
            "HTTPRouteInvalidNonExistentBackendRef",
            &["httproute-invalid-nonexistent-backendref.yaml"],
            vec![status("/", 500)],
        ),
        case(
            "HTTPRouteInvalidBackendRefUnknownKind",
            &["httproute-invalid-backendref-unknown-kind.yaml"],
            vec![status("/", 500)],
        ),
        case("HTTPRouteInvalidReferenceGrant", &["httproute-invalid-reference-grant.yaml"], vec![status("/", 500)]),
        case(
            "HTTPRouteInvalidCrossNamespaceParentRef",
            &["httproute-invalid-cross-namespace-parent-ref.yaml"],
            vec![status("/", 404)],
        ),
        case(
            "HTTPRouteDisallowedKind",
            &["httproute-disallowed-kind.yaml"],
            vec![status("/", 404).host("disallowed-kind.example")],
        ),
        // Weights 70/30/0 over 200 requests: checked after the loop.
        case("HTTPRouteWeight", &["httproute-weight.yaml"], (0..200).map(|_| status("/", 200)).collect()),
        Case {
            name: "HTTPRouteListenerPortMatching",
            files: &["httproute-listener-port-matching.yaml"],
            ports: &[8080, 8090],
            reqs: vec![
                to("/", v1).host("foo.com"),
                to("/", v2).host("foo.com").port(8080),
                to("/", v2).host("bar.com").port(8080),
                to("/", v3).host("foo.com").port(8090),
                status("/", 404).host("bar.com").port(8090),
            ],
        },
        case(
            "GatewayHTTPListenerIsolation",
            &["gateway-http-listener-isolation.yaml"],
            vec![
                to("/empty-hostname", v1).host("bar.com"),
                status("/wildcard-example-com", 404).host("bar.com"),
                status("/wildcard-foo-example-com", 404).host("bar.com"),
                status("/abc-foo-example-com", 404).host("bar.com"),
                to("/wildcard-example-com", v1).host("bar.example.com"),
                status("/empty-hostname", 404).host("bar.example.com"),
                status("/wildcard-foo-example-com", 404).host("bar.example.com"),
                status("/abc-foo-example-com", 404).host("bar.example.com"),
                to("/wildcard-foo-example-com", v1).host("bar.foo.example.com"),
                status("/empty-hostname", 404).host("bar.foo.example.com"),
                status("/wildcard-example-com", 404).host("bar.foo.example.com"),
                status("/abc-foo-example-com", 404).host("bar.foo.example.com"),
                to("/abc-foo-example-com", v1).host("abc.foo.example.com"),
                status("/empty-hostname", 404).host("abc.foo.example.com"),
                status("/wildcard-example-com", 404).host("abc.foo.example.com"),
                status("/wildcard-foo-example-com", 404).host("abc.foo.example.com"),
            ],
        ),
        case(
            "HTTPRouteCORS (preflight, allowed origins)",
            &["httproute-cors.yaml"],
            vec![
                status("/cors-1", 200)
                    .method("OPTIONS")
                    .hdr("Origin", "https://www.foo.com")
                    .hdr("Access-Control-Request-Method", "GET")
                    .resp_hdr("access-control-allow-origin", "https://www.foo.com"),
                status("/cors-1", 200)
                    .method("OPTIONS")
                    .hdr("Origin", "https://api.bar.com")
                    .hdr("Access-Control-Request-Method", "GET")
                    .resp_hdr("access-control-allow-origin", "https://api.bar.com"),
                to("/cors-1", v1)
                    .hdr("Origin", "https://www.foo.com")
                    .resp_hdr("access-control-allow-origin", "https://www.foo.com"),
                to("/cors-1", v1).hdr("Origin", "https://evil.com").resp_absent("access-control-allow-origin"),
            ],
        ),
        case(
            "HTTPRouteOmittedBackendRefs",
            &["httproute-omitted-backendrefs.yaml"],
            vec![status("/omitted-no-forward", 500), status("/empty-no-forward", 500), to("/", v1)],
        ),
        case(
            "HTTPRouteMultipleGateways",
            &["httproute-multiple-gateways.yaml"],
            vec![to("/shared", v1), to("/shared", v1).port(8001), to("/", v2), to("/", v3).port(8001)],
        ),
        case(
            "HTTPRouteTimeoutRequest",
            &["httproute-timeout-request.yaml"],
            vec![status("/request-timeout?delay_ms=1500", 504), to("/disable-request-timeout?delay_ms=700", v1)],
        ),
        case(
            "HTTPRouteTimeoutBackendRequest",
            &["httproute-timeout-backend-request.yaml"],
            vec![status("/backend-timeout?delay_ms=1500", 504), to("/disable-backend-timeout?delay_ms=700", v1)],
        ),
        case(
            "HTTPRouteRequestMirror",
            &["httproute-request-mirror.yaml"],
            vec![
                to("/mirror", v1),
                to("/mirror-and-modify-headers", v1).seen_hdr("X-Header-Set", "set-overwrites-values"),
            ],
        ),
    ]
}

#[test]
fn conformance_httproute_core() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: Gateway API conformance skipped");
        return;
    };
    let tests = root.join("conformance/tests");
    let backends = backends();
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for c in cases() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
        std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{}", backends.entries)).unwrap();
        for f in c.files {
            // The suite's template: the class under test.
            let text = std::fs::read_to_string(tests.join(f)).unwrap().replace("{GATEWAY_CLASS_NAME}", "portico");
            std::fs::write(dir.path().join(f), text).unwrap();
        }
        let mut maps = Vec::new();
        let mut local = std::collections::HashMap::new();
        for p in [8001u16, 8002].iter().chain(c.ports) {
            let l = free_port();
            local.insert(*p, l);
            maps.push("--port-map".to_string());
            maps.push(format!("{p}={l}"));
        }
        let args: Vec<&str> = maps.iter().map(String::as_str).collect();
        let gw = start_gateway(dir.path(), &args);
        let mut bad = Vec::new();
        let mut weights = std::collections::BTreeMap::<String, usize>::new();
        for r in &c.reqs {
            let port = if r.port == 0 || r.port == 80 { gw.http_port } else { local[&r.port] };
            wait_port(port);
            match send(port, r) {
                Ok(resp) => {
                    if c.name == "HTTPRouteWeight" {
                        *weights.entry(resp.header("x-backend").unwrap_or("-").to_string()).or_default() += 1;
                    }
                    if let Err(e) = check(r, &resp) {
                        bad.push(format!(
                            "{} {}{} host {}: {e}",
                            if r.method.is_empty() { "GET" } else { r.method },
                            r.path,
                            "",
                            r.host
                        ));
                    }
                }
                Err(e) => bad.push(format!("{}: {e}", r.path)),
            }
        }
        if c.name == "HTTPRouteWeight" {
            // 70/30/0 of 200: v1 mean 140, sd ≈ 6.5; 110..=170 is over 4.5 sd either way.
            let v1n = weights.get("infra-backend-v1").copied().unwrap_or(0);
            let v2n = weights.get("infra-backend-v2").copied().unwrap_or(0);
            if v1n + v2n != 200 || !(110..=170).contains(&v1n) {
                bad.push(format!("weights 70/30/0 answered {weights:?}"));
            }
        }
        table.push(format!("{:<45} {}", c.name, if bad.is_empty() { "pass" } else { "FAIL" }));
        for b in bad {
            failures.push(format!("{}: {b}", c.name));
        }
    }
    eprintln!("Gateway API conformance (HTTPRoute):\n  {}", table.join("\n  "));
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// Every invalid example of the Gateway API is rejected, with the field and the reason.
#[test]
fn invalid_examples_are_rejected_with_field_and_reason() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: invalid examples skipped");
        return;
    };
    let mut files = Vec::new();
    collect(&root.join("hack/invalid-examples"), &mut files);
    assert!(files.len() >= 30, "corpus looks incomplete: {files:?}");
    let mut failures = Vec::new();
    for f in &files {
        let out = Command::new(env!("CARGO_BIN_EXE_portico")).arg("validate").arg(f).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error ")).collect();
        // FILE:LINE:COL: error CODE Kind/ns/name: spec.path…: reason
        let with_field = errors
            .iter()
            .any(|l| l.split(": ").nth(2).is_some_and(|m| m.starts_with("spec") || m.starts_with("metadata")));
        if out.status.code() != Some(1) || errors.is_empty() || !with_field {
            failures.push(format!("{}: exit {:?}, {text}", f.display(), out.status.code()));
        }
    }
    assert!(failures.is_empty(), "accepted (or rejected without a field):\n{}", failures.join("\n"));
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

/// Status conditions with the spec's reasons, as `portico routes` and `/config_dump` show them.
#[test]
fn status_conditions_are_reported() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: status test skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), base).unwrap();
    for f in [
        "httproute-disallowed-kind.yaml",
        "gateway-invalid-route-kind.yaml",
        "httproute-invalid-reference-grant.yaml",
        "httproute-invalid-parentref-not-matching-section-name.yaml",
    ] {
        let text = std::fs::read_to_string(root.join("conformance/tests").join(f))
            .unwrap()
            .replace("{GATEWAY_CLASS_NAME}", "portico");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_portico")).args(["routes", "--config"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "GatewayClass//portico Accepted=True Accepted",
        "HTTPRoute/gateway-conformance-infra/disallowed-kind parent gateway-conformance-infra/tlsroutes-only Accepted=False NotAllowedByListeners",
        "Gateway/gateway-conformance-infra/gateway-only-invalid-route-kind listener http (attachedRoutes 0) ResolvedRefs=False InvalidRouteKinds",
        "HTTPRoute/gateway-conformance-infra/reference-grant parent gateway-conformance-infra/same-namespace ResolvedRefs=False RefNotPermitted",
        "Gateway/gateway-conformance-infra/same-namespace listener http (attachedRoutes 1) Programmed=True Programmed",
        "Accepted=False NoMatchingParent",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }

    // The same in /config_dump.
    let gw = start_gateway(
        dir.path(),
        &["--port-map", &format!("8001={}", free_port()), "--port-map", &format!("8002={}", free_port())],
    );
    let dump = get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    let statuses = v["snapshot"]["gateway_api"].as_array().expect("gateway_api status in /config_dump");
    let route =
        statuses.iter().find(|s| s["kind"] == "HTTPRoute" && s["name"] == "disallowed-kind").expect("route status");
    let accepted = &route["parents"][0]["conditions"][0];
    assert_eq!(
        (accepted["type"].as_str(), accepted["status"].as_str(), accepted["reason"].as_str()),
        (Some("Accepted"), Some("False"), Some("NotAllowedByListeners"))
    );
}

/// GRPCRoute method matching (gRPC over h2c, curl as the client) and TCPRoute weights, from
/// the suite's manifests.
#[test]
fn grpc_and_tcp_routes_are_routed() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: GRPCRoute/TCPRoute skipped");
        return;
    };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let mut procs = Vec::new();
    let mut entries = String::new();
    for (name, svc_port, proto) in [
        ("grpc-infra-backend-v1", 8080, "GRPC"),
        ("grpc-infra-backend-v2", 8080, "GRPC"),
        ("tcp-backend-v1", 3000, "TCP"),
        ("tcp-backend-v2", 3000, "TCP"),
        ("tcp-backend-v3", 3000, "TCP"),
    ] {
        let port = free_port();
        procs.push(echo_backend(port, name));
        wait_port(port);
        entries.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {INFRA}}}\n\
             spec:\n  hosts: [{name}.{INFRA}.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
             \x20 ports: [{{number: {svc_port}, name: p, protocol: {proto}}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{entries}")).unwrap();
    for f in ["grpcroute-exact-method-matching.yaml", "tcproute-weighted-routing.yaml"] {
        let text = std::fs::read_to_string(root.join("conformance/tests").join(f))
            .unwrap()
            .replace("{GATEWAY_CLASS_NAME}", "portico");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let tcp = free_port();
    let gw = start_gateway(
        dir.path(),
        &[
            "--port-map",
            &format!("9300={tcp}"),
            "--port-map",
            &format!("8001={}", free_port()),
            "--port-map",
            &format!("8002={}", free_port()),
        ],
    );
    let grpc = |method: &str| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "POST"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", ""])
            .arg(format!(
                "http://127.0.0.1:{}/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/{method}",
                gw.http_port
            ))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        head.lines().find_map(|l| l.strip_prefix("x-backend: ")).unwrap_or("-").trim().to_string()
    };
    assert_eq!(grpc("Echo"), "grpc-infra-backend-v1");
    assert_eq!(grpc("EchoTwo"), "grpc-infra-backend-v2");
    assert_eq!(grpc("EchoThree"), "-", "no rule matches: no backend answers");

    // Header matching, on its own (its rules would share the host with the method rules).
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join("base.yaml"), format!("{base}\n{entries}")).unwrap();
    let text = std::fs::read_to_string(root.join("conformance/tests/grpcroute-header-matching.yaml")).unwrap();
    std::fs::write(dir2.path().join("grpc.yaml"), text).unwrap();
    let gw2 = start_gateway(
        dir2.path(),
        &["--port-map", &format!("8001={}", free_port()), "--port-map", &format!("8002={}", free_port())],
    );
    let grpc_h = |headers: &[&str]| -> String {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "POST"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", ""]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .arg(format!(
                "http://127.0.0.1:{}/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo",
                gw2.http_port
            ))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        head.lines().find_map(|l| l.strip_prefix("x-backend: ")).unwrap_or("-").trim().to_string()
    };
    assert_eq!(grpc_h(&["version: one"]), "grpc-infra-backend-v1");
    assert_eq!(grpc_h(&["version: two"]), "grpc-infra-backend-v2");
    assert_eq!(grpc_h(&["version: two", "color: orange"]), "grpc-infra-backend-v1");
    assert_eq!(grpc_h(&["color: green"]), "grpc-infra-backend-v1");
    assert_eq!(grpc_h(&["color: yellow"]), "grpc-infra-backend-v2");
    assert_eq!(grpc_h(&["version: three"]), "-");
    drop(gw2);

    // TCPRoute 70/30/0 over 100 connections: v1 mean 70, sd ≈ 4.6; 50..=90 is over 4 sd.
    wait_port(tcp);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let r = get(tcp, "tcp.example", "/", &[]).unwrap();
        *seen.entry(r.header("x-backend").unwrap_or("-").to_string()).or_default() += 1;
    }
    let v1 = seen.get("tcp-backend-v1").copied().unwrap_or(0);
    let v2 = seen.get("tcp-backend-v2").copied().unwrap_or(0);
    assert!(v1 + v2 == 100 && (50..=90).contains(&v1), "TCPRoute 70/30/0 answered {seen:?}");
}

/// A ClientHello for `sni`, as a real TLS client sends it.
fn client_hello(sni: &str) -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// TLSRoute passthrough: the connection is relayed by SNI, untouched, to the route's backend.
#[test]
fn tlsroute_passthrough_relays_by_sni() {
    use std::io::{Read, Write};
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: TLSRoute skipped");
        return;
    };
    // The backend: answers a connection that starts with a TLS handshake record by its name.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(3) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() && buf[0] == 0x16 {
                let _ = s.write_all(b"tcp-backend saw a ClientHello");
            }
        }
    });
    let entry = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-backend, namespace: {INFRA}}}\n\
         spec:\n  hosts: [tcp-backend.{INFRA}.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
         \x20 ports: [{{number: 8443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {backend_port}}}}}]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{entry}")).unwrap();
    let text = std::fs::read_to_string(root.join("conformance/tests/tlsroute-simple-same-namespace.yaml"))
        .unwrap()
        .replace("{GATEWAY_CLASS_NAME}", "portico");
    std::fs::write(dir.path().join("tlsroute.yaml"), text).unwrap();
    let tls = free_port();
    let _gw = start_gateway(
        dir.path(),
        &[
            "--port-map",
            &format!("443={tls}"),
            "--port-map",
            &format!("8001={}", free_port()),
            "--port-map",
            &format!("8002={}", free_port()),
        ],
    );
    wait_port(tls);
    let exchange = |sni: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tls)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(&client_hello(sni)).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    assert_eq!(exchange("abc.example.com"), "tcp-backend saw a ClientHello");
    // A name the route does not list (though the listener's `*.example.com` would take it).
    assert!(!exchange("other.example.com").contains("tcp-backend"));
}

/// HTTPRoute on HTTPS listeners (`httproute-https-listener`): TLS terminated with the
/// certificateRefs Secret, routes bound by hostname and sectionName; curl as the client.
#[test]
fn https_listener_routes() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: HTTPS listener skipped");
        return;
    };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let backends = backends();
    let cert = rcgen::generate_simple_self_signed(vec!["example.org".into(), "second-example.org".into()]).unwrap();
    let indent = |p: String| p.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    let gateway = format!(
        r#"---
apiVersion: v1
kind: Secret
metadata: {{name: tls-validity-checks-certificate, namespace: {INFRA}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}
  tls.key: |
{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace-with-https-listener, namespace: {INFRA}}}
spec:
  gatewayClassName: portico
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {{namespaces: {{from: Same}}}}
    tls: {{certificateRefs: [{{kind: Secret, group: "", name: tls-validity-checks-certificate}}]}}
  - name: https-with-hostname
    port: 443
    protocol: HTTPS
    hostname: second-example.org
    allowedRoutes: {{namespaces: {{from: Same}}}}
    tls: {{certificateRefs: [{{kind: Secret, group: "", name: tls-validity-checks-certificate}}]}}
"#,
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    );
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{}\n{gateway}", backends.entries)).unwrap();
    let text = std::fs::read_to_string(root.join("conformance/tests/httproute-https-listener.yaml")).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), text).unwrap();
    let https = free_port();
    let _gw = start_gateway(
        dir.path(),
        &[
            "--port-map",
            &format!("443={https}"),
            "--port-map",
            &format!("8001={}", free_port()),
            "--port-map",
            &format!("8002={}", free_port()),
        ],
    );
    wait_port(https);
    let call = |host: &str| -> String {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "10", "-o", "/dev/null", "-D", "-", "--resolve"])
            .arg(format!("{host}:{https}:127.0.0.1"))
            .arg(format!("https://{host}:{https}/"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let status = head.lines().next().unwrap_or("").split(' ').nth(1).unwrap_or("-").to_string();
        let backend = head.lines().find_map(|l| l.strip_prefix("x-backend: ")).unwrap_or("-").trim().to_string();
        format!("{status} {backend}")
    };
    assert_eq!(call("example.org"), "200 infra-backend-v1");
    assert_eq!(call("second-example.org"), "200 infra-backend-v2");
    assert_eq!(call("unknown-example.org"), "404 -");
}

/// Only Gateways of `--gateway-class` are served.
#[test]
fn gateway_class_flag_selects_the_gateways_served() {
    let base = repo("crates/portico/tests/fixtures/gateway-api/base.yaml");
    let routes = |class: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["routes", "--gateway-class", class, "--config"])
            .arg(&base)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ours = routes("portico");
    assert!(
        ours.contains("port 8001 (HTTP)")
            && ours.contains("Gateway/gateway-conformance-infra/all-namespaces Accepted=True"),
        "{ours}"
    );
    let other = routes("someone-else");
    assert!(!other.contains("port 8001") && !other.contains("gateway api status"), "{other}");
}

/// Header values of a HTTPRoute are literal text, not Envoy `%VAR%` templates.
#[test]
fn header_modifier_values_are_literal() {
    let backends = backends();
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    let route = format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: literal, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Pct, value: "100%"}}, {{name: X-Var, value: "%HOSTNAME%"}}]}}
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#
    );
    std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{}\n{route}", backends.entries)).unwrap();
    let gw = start_gateway(
        dir.path(),
        &["--port-map", &format!("8001={}", free_port()), "--port-map", &format!("8002={}", free_port())],
    );
    let r = get(gw.http_port, "literal.example", "/?echo", &[]).unwrap();
    assert!(r.body.contains("x-pct: 100%\n") && r.body.contains("x-var: %HOSTNAME%\n"), "{}", r.body);
}

/// TLSRoute on a `Terminate` listener (`tlsroute-terminate-simple-same-namespace`): TLS ends at
/// the gateway with the listener's certificate and the plain stream goes to the backend.
#[test]
fn tlsroute_terminate_forwards_the_plain_stream() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/gateway-api not found: TLSRoute terminate skipped");
        return;
    };
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let port = free_port();
    let _backend = echo_backend(port, "tcp-backend");
    wait_port(port);
    let cert = rcgen::generate_simple_self_signed(vec!["tls.example.com".into()]).unwrap();
    let indent = |p: String| p.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    let extra = format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tcp-backend, namespace: {INFRA}}}\n\
         spec:\n  hosts: [tcp-backend.{INFRA}.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
         \x20 ports: [{{number: 3000, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {port}}}}}]\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls-terminate-checks-certificate, namespace: {INFRA}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    );
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo("crates/portico/tests/fixtures/gateway-api/base.yaml")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), format!("{base}\n{extra}")).unwrap();
    let text = std::fs::read_to_string(root.join("conformance/tests/tlsroute-terminate-simple-same-namespace.yaml"))
        .unwrap()
        .replace("{GATEWAY_CLASS_NAME}", "portico");
    std::fs::write(dir.path().join("tlsroute.yaml"), text).unwrap();
    let tls = free_port();
    let _gw = start_gateway(
        dir.path(),
        &[
            "--port-map",
            &format!("8443={tls}"),
            "--port-map",
            &format!("8001={}", free_port()),
            "--port-map",
            &format!("8002={}", free_port()),
        ],
    );
    wait_port(tls);
    let out = Command::new("curl")
        .args(["-sS", "-k", "--http1.1", "--max-time", "10", "-o", "/dev/null", "-D", "-", "--resolve"])
        .arg(format!("tls.example.com:{tls}:127.0.0.1"))
        .arg(format!("https://tls.example.com:{tls}/"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("x-backend: tcp-backend"), "{head} {}", String::from_utf8_lossy(&out.stderr));
}
