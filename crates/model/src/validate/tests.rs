//! Table tests: for each rule family, YAML that Istio accepts and YAML it rejects (or warns about).

use super::*;
use portico_api::parse_text;

#[derive(Clone, Copy, Debug)]
enum Want {
    /// No error (warnings allowed).
    Accept,
    /// At least one error whose message contains the text.
    Reject(&'static str),
    /// No error, and a warning whose message contains the text.
    Warn(&'static str),
}
use Want::*;

fn doc(kind: &str, name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{body}")
}

fn run_text(text: &str) -> Vec<Diagnostic> {
    let parsed = parse_text("test.yaml", text, "default");
    let mut out = parsed.diagnostics;
    assert!(!parsed.resources.is_empty() || !out.is_empty(), "nothing parsed from:\n{text}");
    for r in &parsed.resources {
        out.extend(validate(r));
    }
    out
}

fn judge(label: &str, text: &str, want: Want) -> Option<String> {
    let diags = run_text(text);
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    let ok = match want {
        Accept => errors.is_empty(),
        Reject(s) => errors.iter().any(|d| d.message.contains(s)),
        Warn(s) => errors.is_empty() && diags.iter().any(|d| !d.is_error() && d.message.contains(s)),
    };
    if ok {
        if std::env::var_os("PORTICO_VALIDATE_VERBOSE").is_some() {
            for d in &diags {
                eprintln!("{label}: {d}");
            }
        }
        return None;
    }
    let mut m = format!("{label}: want {want:?}, got:");
    if diags.is_empty() {
        m.push_str(" no diagnostics");
    }
    for d in &diags {
        m.push_str(&format!("\n    {d}"));
    }
    Some(m)
}

fn table(kind: &str, cases: &[(&str, &str, Want)]) {
    let failures: Vec<String> =
        cases.iter().filter_map(|(label, spec, want)| judge(label, &doc(kind, "x", spec), *want)).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

const GW_HTTP: &str = "selector: {istio: ingressgateway}\nservers:\n- port: {number: 80, name: http, protocol: HTTP}\n";

fn gw(server_extra: &str) -> String {
    format!("{GW_HTTP}{server_extra}")
}

#[test]
fn gateway_rules() {
    let https = |tls: &str| {
        format!("servers:\n- port: {{number: 443, name: https, protocol: HTTPS}}\n  hosts: [\"*.example.com\"]\n  tls: {tls}\n")
    };
    let cases: Vec<(String, String, Want)> = vec![
        ("basic".into(), gw("  hosts: [example.com]"), Accept),
        ("no servers".into(), "selector: {istio: ingressgateway}".into(), Reject("at least one server")),
        ("servers empty list".into(), "servers: []".into(), Reject("at least one server")),
        (
            "port out of range".into(),
            "servers:\n- port: {number: 70000, name: http, protocol: HTTP}\n  hosts: [a.com]".into(),
            Reject("range 1..65535"),
        ),
        (
            "port zero".into(),
            "servers:\n- port: {number: 0, name: http, protocol: HTTP}\n  hosts: [a.com]".into(),
            Reject("range 1..65535"),
        ),
        (
            "protocol case-insensitive".into(),
            "servers:\n- port: {number: 80, name: http, protocol: http}\n  hosts: [a.com]".into(),
            Accept,
        ),
        (
            "protocol unknown".into(),
            "servers:\n- port: {number: 80, name: http, protocol: FTP}\n  hosts: [a.com]".into(),
            Reject("invalid protocol \"FTP\""),
        ),
        (
            "port name required".into(),
            "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: [a.com]".into(),
            Reject("port name must be set"),
        ),
        (
            "port names unique".into(),
            "servers:\n- port: {number: 80, name: web, protocol: HTTP}\n  hosts: [a.com]\n- port: {number: 8080, name: web, protocol: HTTP}\n  hosts: [b.com]".into(),
            Reject("port names must be unique"),
        ),
        (
            "different port names".into(),
            "servers:\n- port: {number: 80, name: web, protocol: HTTP}\n  hosts: [a.com]\n- port: {number: 8080, name: web2, protocol: HTTP}\n  hosts: [b.com]".into(),
            Accept,
        ),
        (
            "targetPort refused".into(),
            "servers:\n- port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}\n  hosts: [a.com]".into(),
            Reject("targetPort has no impact"),
        ),
        ("hosts required".into(), gw("  hosts: []"), Reject("at least one host")),
        ("wildcard host".into(), gw("  hosts: [\"*.example.com\"]"), Accept),
        ("bare star".into(), gw("  hosts: [\"*\"]"), Accept),
        ("ns/star".into(), gw("  hosts: [\"prod/*\", \"./a.example.com\", \"*/b.example.com\"]"), Accept),
        ("partial wildcard".into(), gw("  hosts: [\"foo*.example.com\"]"), Reject("whole left-most label")),
        ("prefix wildcard".into(), gw("  hosts: [\"*foo.example.com\"]"), Reject("partial wildcard")),
        ("wildcard not first".into(), gw("  hosts: [\"a.*.example.com\"]"), Reject("whole left-most label")),
        ("short name".into(), gw("  hosts: [reviews]"), Reject("short name")),
        ("bad namespace".into(), gw("  hosts: [\"Bad_NS/a.example.com\"]"), Reject("invalid namespace")),
        ("empty namespace".into(), gw("  hosts: [\"/a.example.com\"]"), Reject("cannot be empty")),
        ("double slash".into(), gw("  hosts: [\"a/b/c.example.com\"]"), Reject("invalid domain name")),
        ("ip host".into(), gw("  hosts: [\"10.0.0.1\"]"), Accept),
        ("label too long".into(), gw(&format!("  hosts: [\"{}.example.com\"]", "a".repeat(64))), Reject("longer than 63")),
        ("bad char".into(), gw("  hosts: [\"a_b.example.com\"]"), Reject("invalid domain name")),
        (
            "https needs tls".into(),
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.com]".into(),
            Reject("must have TLS settings"),
        ),
        ("simple credentialName".into(), https("{mode: SIMPLE, credentialName: cert}"), Accept),
        ("simple without cert".into(), https("{mode: SIMPLE}"), Reject("requires a server certificate")),
        ("simple files".into(), https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"), Accept),
        ("simple files no key".into(), https("{mode: SIMPLE, serverCertificate: /c.pem}"), Reject("requires a private key")),
        (
            "mutual files need ca".into(),
            https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"),
            Reject("client CA bundle"),
        ),
        (
            "mutual files with ca".into(),
            https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}"),
            Accept,
        ),
        ("mutual credentialName".into(), https("{mode: MUTUAL, credentialName: cert}"), Accept),
        (
            "two certificate sources".into(),
            https("{mode: SIMPLE, credentialName: cert, serverCertificate: /c.pem, privateKey: /k.pem}"),
            Reject("only one certificate source"),
        ),
        ("credentialNames".into(), https("{mode: SIMPLE, credentialNames: [rsa, ecdsa]}"), Accept),
        ("credentialNames too many".into(), https("{mode: SIMPLE, credentialNames: [a, b, c]}"), Reject("at most 2")),
        (
            "credentialName and credentialNames".into(),
            https("{mode: SIMPLE, credentialName: a, credentialNames: [b]}"),
            Reject("only one certificate source"),
        ),
        (
            "tlsCertificates".into(),
            https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem}]}"),
            Accept,
        ),
        (
            "tlsCertificates incomplete".into(),
            https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem}]}"),
            Reject("requires a privateKey"),
        ),
        ("simple with crl".into(), https("{mode: SIMPLE, credentialName: c, caCrl: /crl.pem}"), Reject("caCrl")),
        ("istio mutual with cert".into(), https("{mode: ISTIO_MUTUAL, credentialName: c}"), Reject("ISTIO_MUTUAL")),
        (
            "passthrough ignores certs".into(),
            "servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [a.com]\n  tls: {mode: PASSTHROUGH, credentialName: c}".into(),
            Warn("does not use certificates"),
        ),
        (
            "min above max".into(),
            https("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}"),
            Reject("is above maxProtocolVersion"),
        ),
        (
            "min equals max".into(),
            https("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_3}"),
            Accept,
        ),
        (
            "old TLS without ciphers".into(),
            https("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}"),
            Warn("compatible cipherSuites"),
        ),
        (
            "invalid cipher".into(),
            https("{mode: SIMPLE, credentialName: c, cipherSuites: [NOPE-CIPHER]}"),
            Warn("invalid cipher suite"),
        ),
        ("http redirect".into(), gw("  hosts: [a.com]\n  tls: {httpsRedirect: true}"), Accept),
        ("http with simple tls".into(), gw("  hosts: [a.com]\n  tls: {mode: SIMPLE, credentialName: c}"), Reject("plain-text")),
        (
            "tcp with tls".into(),
            "servers:\n- port: {number: 31400, name: tcp, protocol: TCP}\n  hosts: [a.com]\n  tls: {httpsRedirect: true}".into(),
            Reject("cannot have TLS settings"),
        ),
        ("httpsRedirect on https".into(), https("{mode: SIMPLE, credentialName: c, httpsRedirect: true}"), Warn("httpsRedirect")),
        ("bind ip".into(), gw("  hosts: [a.com]\n  bind: 127.0.0.1"), Accept),
        ("bind bad".into(), gw("  hosts: [a.com]\n  bind: localhost"), Reject("not a valid IP")),
        (
            "bind unix".into(),
            "servers:\n- port: {number: 0, name: uds, protocol: HTTP}\n  hosts: [a.com]\n  bind: unix:///var/run/gw.sock".into(),
            Accept,
        ),
        (
            "udp accepted with a warning".into(),
            "servers:\n- port: {number: 53, name: dns, protocol: UDP}\n  hosts: [a.com]".into(),
            Warn("does not serve it"),
        ),
    ];
    let cases: Vec<(&str, &str, Want)> = cases.iter().map(|(l, s, w)| (l.as_str(), s.as_str(), *w)).collect();
    table("Gateway", &cases);
}

const VS: &str = "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n";

fn vs_http(route: &str) -> String {
    format!("hosts: [reviews]\nhttp:\n- {route}")
}

#[test]
fn virtual_service_hosts_and_gateways() {
    table(
        "VirtualService",
        &[
            ("basic", VS, Accept),
            ("ip host", "hosts: [10.0.0.1]\nhttp:\n- route:\n  - destination: {host: a}", Accept),
            ("no routes", "hosts: [reviews]", Reject("at least one of `http`, `tcp` or `tls`")),
            ("delegate without hosts", "http:\n- route:\n  - destination: {host: a}", Accept),
            (
                "delegate with gateways",
                "gateways: [gw]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("must not specify gateways"),
            ),
            ("delegate with tcp", "tcp:\n- route:\n  - destination: {host: a}", Reject("must not have tcp routes")),
            ("star on mesh", "hosts: [\"*\"]\nhttp:\n- route:\n  - destination: {host: a}", Reject("mesh")),
            (
                "star on gateway",
                "hosts: [\"*\"]\ngateways: [istio-system/gw]\nhttp:\n- route:\n  - destination: {host: a}",
                Accept,
            ),
            (
                "star with mesh listed",
                "hosts: [\"*\"]\ngateways: [gw, mesh]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("mesh"),
            ),
            (
                "bad wildcard",
                "hosts: [\"a*.example.com\"]\ngateways: [gw]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("whole left-most label"),
            ),
            (
                "duplicate hosts",
                "hosts: [\"*.example.com\", a.example.com]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("duplicate hosts"),
            ),
            (
                "gateway ns/name",
                "hosts: [a.com]\ngateways: [istio-system/my-gw]\nhttp:\n- route:\n  - destination: {host: a}",
                Accept,
            ),
            (
                "gateway bad ns",
                "hosts: [a.com]\ngateways: [\"Istio_System/my-gw\"]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("invalid namespace"),
            ),
            (
                "gateway empty name",
                "hosts: [a.com]\ngateways: [\"istio-system/\"]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("cannot be empty"),
            ),
            (
                "legacy gateway name",
                "hosts: [a.com]\ngateways: [my-gw.istio-system]\nhttp:\n- route:\n  - destination: {host: a}",
                Warn("legacy gateway name"),
            ),
            (
                "exportTo duplicates",
                "hosts: [a.com]\nexportTo: [., default]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("duplicate entr"),
            ),
            (
                "exportTo star and more",
                "hosts: [a.com]\nexportTo: [\"*\", prod]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("both public"),
            ),
            (
                "exportTo none on vs",
                "hosts: [a.com]\nexportTo: [\"~\"]\nhttp:\n- route:\n  - destination: {host: a}",
                Reject("only allowed on ServiceEntries"),
            ),
        ],
    );
}

#[test]
fn virtual_service_route_actions() {
    table(
        "VirtualService",
        &[
            ("nothing to do", &vs_http("name: empty"), Reject("one of `route`, `redirect` or `directResponse`")),
            ("redirect", &vs_http("redirect: {uri: /new}"), Accept),
            (
                "route and redirect",
                &vs_http("redirect: {uri: /new}\n  route:\n  - destination: {host: a}"),
                Reject("both `route` and `redirect`"),
            ),
            ("redirect and fault", &vs_http("redirect: {uri: /n}\n  fault: {abort: {httpStatus: 500}}"), Reject("both `fault`")),
            ("redirect and rewrite", &vs_http("redirect: {uri: /n}\n  rewrite: {uri: /m}"), Reject("both `rewrite`")),
            ("empty redirect", &vs_http("redirect: {redirectCode: 301}"), Reject("at least one of `uri`")),
            ("redirect code 308", &vs_http("redirect: {uri: /n, redirectCode: 308}"), Accept),
            ("redirect code 200", &vs_http("redirect: {uri: /n, redirectCode: 200}"), Reject("must be 3xx")),
            ("redirect code 305", &vs_http("redirect: {uri: /n, redirectCode: 305}"), Warn("not supported by Envoy")),
            (
                "redirect port and derivePort",
                &vs_http("redirect: {port: 8443, derivePort: FROM_REQUEST_PORT}"),
                Reject("only one of `port` or `derivePort`"),
            ),
            ("redirect derivePort", &vs_http("redirect: {derivePort: FROM_PROTOCOL_DEFAULT, scheme: https}"), Accept),
            ("redirect scheme", &vs_http("redirect: {scheme: ftp}"), Reject("must be \"http\" or \"https\"")),
            ("redirect port range", &vs_http("redirect: {port: 70000}"), Reject("range 1..65535")),
            ("direct response", &vs_http("directResponse: {status: 503, body: {string: unavailable}}"), Accept),
            ("direct response bytes", &vs_http("directResponse: {status: 200, body: {bytes: aGVsbG8=}}"), Accept),
            ("direct response bad base64", &vs_http("directResponse: {status: 200, body: {bytes: \"!!\"}}"), Reject("base64")),
            (
                "direct response string and bytes",
                &vs_http("directResponse: {status: 200, body: {string: a, bytes: aGVsbG8=}}"),
                Reject("only one of `string` or `bytes`"),
            ),
            ("direct response status", &vs_http("directResponse: {status: 600}"), Reject("200-599")),
            ("direct response status missing", &vs_http("directResponse: {body: {string: a}}"), Reject("200-599")),
            (
                "direct response and route",
                &vs_http("directResponse: {status: 200}\n  route:\n  - destination: {host: a}"),
                Reject("both `route` and `directResponse`"),
            ),
            (
                "direct response and redirect",
                &vs_http("directResponse: {status: 200}\n  redirect: {uri: /x}"),
                Reject("both `directResponse` and `redirect`"),
            ),
            (
                "large direct response",
                &vs_http(&format!("directResponse: {{status: 200, body: {{string: \"{}\"}}}}", "x".repeat(200 * 1024))),
                Warn("large direct response"),
            ),
            ("delegate", &vs_http("delegate: {name: reviews-delegate, namespace: prod}"), Accept),
            (
                "delegate with route",
                &vs_http("delegate: {name: d}\n  route:\n  - destination: {host: a}"),
                Reject("with `delegate` must not specify `route`"),
            ),
            (
                "delegate in delegate",
                "http:\n- delegate: {name: d}",
                Reject("cannot delegate again"),
            ),
            (
                "mirror and mirrors",
                &vs_http("route:\n  - destination: {host: a}\n  mirror: {host: b}\n  mirrors:\n  - destination: {host: c}"),
                Reject("both `mirror` and `mirrors`"),
            ),
            (
                "mirrors",
                &vs_http("route:\n  - destination: {host: a}\n  mirrors:\n  - destination: {host: c}\n    percentage: {value: 10}"),
                Accept,
            ),
            (
                "mirrors percentage",
                &vs_http("route:\n  - destination: {host: a}\n  mirrors:\n  - destination: {host: c}\n    percentage: {value: 110}"),
                Reject("within 0..100"),
            ),
            (
                "mirrorPercentage",
                &vs_http("route:\n  - destination: {host: a}\n  mirror: {host: b}\n  mirrorPercentage: {value: 120}"),
                Reject("within 0..100"),
            ),
            (
                "mirrorPercent deprecated",
                &vs_http("route:\n  - destination: {host: a}\n  mirror: {host: b}\n  mirrorPercent: 50"),
                Warn("deprecated"),
            ),
            (
                "mirror destination",
                &vs_http("route:\n  - destination: {host: a}\n  mirror: {host: \"*\"}"),
                Reject("invalid destination host"),
            ),
        ],
    );
}

#[test]
fn virtual_service_destinations_and_weights() {
    table(
        "VirtualService",
        &[
            (
                "weights need not sum to 100",
                &vs_http(
                    "route:\n  - destination: {host: a}\n    weight: 30\n  - destination: {host: b}\n    weight: 30",
                ),
                Accept,
            ),
            (
                "negative weight",
                &vs_http(
                    "route:\n  - destination: {host: a}\n    weight: 110\n  - destination: {host: b}\n    weight: -10",
                ),
                Reject("must not be negative"),
            ),
            (
                "zero total",
                &vs_http(
                    "route:\n  - destination: {host: a}\n    weight: 0\n  - destination: {host: b}\n    weight: 0",
                ),
                Reject("add up to 0"),
            ),
            ("single zero weight", &vs_http("route:\n  - destination: {host: a}\n    weight: 0"), Accept),
            (
                "star destination",
                &vs_http("route:\n  - destination: {host: \"*\"}"),
                Reject("invalid destination host"),
            ),
            (
                "empty destination",
                &vs_http("route:\n  - destination: {subset: v1}"),
                Reject("destination host is required"),
            ),
            ("bad subset", &vs_http("route:\n  - destination: {host: a, subset: V_1}"), Reject("invalid subset name")),
            ("port zero", &vs_http("route:\n  - destination: {host: a, port: {number: 0}}"), Reject("range 1..65535")),
            ("port ok", &vs_http("route:\n  - destination: {host: a, port: {number: 9080}}"), Accept),
            (
                "destination headers",
                &vs_http("route:\n  - destination: {host: a}\n    headers: {response: {set: {\":status\": \"200\"}}}"),
                Reject("cannot start with ':'"),
            ),
        ],
    );
}

#[test]
fn virtual_service_matches() {
    let m = |matcher: &str| vs_http(&format!("match:\n  - {matcher}\n  route:\n  - destination: {{host: a}}"));
    table(
        "VirtualService",
        &[
            ("uri prefix", &m("uri: {prefix: /api}"), Accept),
            ("uri empty prefix", &m("uri: {prefix: \"\"}"), Accept),
            ("uri regex", &m("uri: {regex: \"/v[0-9]+/.*\"}"), Accept),
            ("uri look-ahead", &m("uri: {regex: \"^(?!/admin).*\"}"), Reject("look-around")),
            ("uri back-reference", &m("uri: {regex: \"(a)\\\\1\"}"), Reject("invalid regex")),
            ("regex too long", &m(&format!("uri: {{regex: \"{}\"}}", "a".repeat(1025))), Reject("max")),
            ("empty regex", &m("uri: {regex: \"\"}"), Reject("regex must not be empty")),
            ("two match types", &m("uri: {exact: /a, prefix: /b}"), Reject("only one of `exact`, `prefix` or `regex`")),
            ("header presence", &m("headers: {x-user: {}}"), Accept),
            ("header exact", &m("headers: {X-User: {exact: bob}}"), Accept),
            ("header empty prefix", &m("headers: {x-user: {prefix: \"\"}}"), Reject("prefix match must not be empty")),
            ("header name", &m("headers: {\"x user\": {exact: a}}"), Reject("not a valid header name")),
            ("pseudo header match", &m("headers: {\":path\": {exact: /a}}"), Reject("not a valid header name")),
            ("header regex", &m("headers: {x-user: {regex: \"(?<=a)b\"}}"), Reject("look-around")),
            ("withoutHeaders star", &m("withoutHeaders: {x-user: {regex: \"*\"}}"), Accept),
            ("method empty prefix", &m("method: {prefix: \"\"}"), Reject("prefix match must not be empty")),
            ("authority regex", &m("authority: {regex: \"[\"}"), Reject("invalid regex")),
            ("query params", &m("queryParams: {v: {exact: \"1\"}}"), Accept),
            ("match port", &m("port: 8080"), Accept),
            ("match port range", &m("port: 70000"), Reject("range 1..65535")),
            ("source namespace", &m("sourceNamespace: Not_Valid"), Reject("sourceNamespace")),
            ("source labels", &m("sourceLabels: {\"app\": \"a b\"}"), Reject("invalid label value")),
            ("match gateways", &m("gateways: [\"bad_ns/name\"]"), Reject("invalid namespace")),
            (
                "jwt claim on mesh",
                &m("headers: {\"@request.auth.claims.group\": {exact: admin}}"),
                Reject("only supported on gateways"),
            ),
            (
                "jwt claim on gateway",
                "hosts: [a.com]\ngateways: [gw]\nhttp:\n- match:\n  - headers: {\"@request.auth.claims[group]\": {exact: admin}}\n  route:\n  - destination: {host: a}",
                Accept,
            ),
        ],
    );
}

#[test]
fn virtual_service_policies() {
    let r = |extra: &str| vs_http(&format!("route:\n  - destination: {{host: a}}\n  {extra}"));
    table(
        "VirtualService",
        &[
            ("timeout", &r("timeout: 10s"), Accept),
            ("timeout go syntax", &r("timeout: 1m30s"), Accept),
            ("timeout zero", &r("timeout: 0s"), Reject("at least 1ms")),
            ("timeout sub-ms", &r("timeout: 1500us"), Reject("millisecond precision")),
            ("timeout no unit", &r("timeout: \"10\""), Reject("missing unit")),
            ("retries", &r("retries: {attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,reset,connect-failure,503\"}"), Accept),
            ("retries grpc", &r("retries: {attempts: 2, retryOn: \"cancelled,unavailable,deadline-exceeded\"}"), Accept),
            ("retries negative", &r("retries: {attempts: -1}"), Reject("cannot be negative")),
            ("retryOn space", &r("retries: {attempts: 3, retryOn: \"5xx, reset\"}"), Reject("\" reset\" is not a valid retryOn")),
            ("retryOn unknown", &r("retries: {attempts: 3, retryOn: \"server-error\"}"), Reject("not a valid retryOn")),
            ("retryOn unknown code", &r("retries: {attempts: 3, retryOn: \"599\"}"), Reject("not a valid retryOn")),
            ("retries zero attempts", &r("retries: {retryOn: 5xx}"), Reject("attempts is 0")),
            ("retries disabled", &r("retries: {attempts: 0}"), Accept),
            ("perTryTimeout", &r("retries: {attempts: 2, perTryTimeout: 0s}"), Reject("at least 1ms")),
            ("fault abort", &r("fault: {abort: {httpStatus: 503, percentage: {value: 50}}}"), Accept),
            ("fault small percentage", &r("fault: {abort: {httpStatus: 503, percentage: {value: 0.00001}}}"), Reject("percentage")),
            ("fault percentage", &r("fault: {abort: {httpStatus: 503, percentage: {value: 150}}}"), Reject("percentage 150")),
            ("fault status", &r("fault: {abort: {httpStatus: 700}}"), Reject("200-599")),
            ("fault grpc", &r("fault: {abort: {grpcStatus: UNAVAILABLE}}"), Accept),
            ("fault grpc bad", &r("fault: {abort: {grpcStatus: \"14\"}}"), Reject("gRPC status")),
            ("fault http2", &r("fault: {abort: {http2Error: PROTOCOL_ERROR}}"), Reject("not supported")),
            ("fault two kinds", &r("fault: {abort: {httpStatus: 500, grpcStatus: INTERNAL}}"), Reject("only one of")),
            ("fault abort no type", &r("fault: {abort: {percentage: {value: 10}}}"), Warn("no error type")),
            ("fault empty", &r("fault: {}"), Reject("`abort` and/or a `delay`")),
            ("fault delay", &r("fault: {delay: {fixedDelay: 5s, percentage: {value: 10}}}"), Accept),
            ("fault delay zero", &r("fault: {delay: {fixedDelay: 0s}}"), Reject("at least 1ms")),
            ("fault delay exponential", &r("fault: {delay: {exponentialDelay: 5s}}"), Reject("exponentialDelay is not supported")),
            ("fault delay percent", &r("fault: {delay: {fixedDelay: 1s, percent: 120}}"), Reject("0..100")),
            ("fault delay percent deprecated", &r("fault: {delay: {fixedDelay: 1s, percent: 20}}"), Warn("deprecated")),
            ("rewrite", &r("rewrite: {uri: /v2, authority: b.com}"), Accept),
            ("rewrite empty", &r("rewrite: {}"), Reject("at least one of")),
            ("rewrite both", &r("rewrite: {uri: /v2, uriRegexRewrite: {match: \"^/a\", rewrite: /b}}"), Reject("only one of `uri`")),
            ("rewrite regex", &r("rewrite: {uriRegexRewrite: {match: \"^/a/(.*)\", rewrite: \"/b/\\\\1\"}}"), Accept),
            ("rewrite regex incomplete", &r("rewrite: {uriRegexRewrite: {match: \"^/a\"}}"), Reject("both `match` and `rewrite`")),
            ("rewrite regex bad", &r("rewrite: {uriRegexRewrite: {match: \"(\", rewrite: /b}}"), Reject("invalid regex")),
            (
                "authority twice",
                &r("rewrite: {authority: b.com}\n  headers: {request: {set: {host: c.com}}}"),
                Reject("authority cannot be set more than once"),
            ),
            ("request set host", &r("headers: {request: {set: {host: c.com, x-a: b}}}"), Accept),
            ("request set pseudo", &r("headers: {request: {set: {\":path\": /x}}}"), Reject("cannot start with ':'")),
            ("request remove host", &r("headers: {request: {remove: [host]}}"), Reject("Host header")),
            ("response set host", &r("headers: {response: {set: {Host: x}}}"), Reject("Host header")),
            ("header value variable", &r("headers: {response: {add: {x-node: \"%HOSTNAME%\", x-pct: \"100%%\"}}}"), Accept),
            ("header value stray percent", &r("headers: {response: {add: {x-pct: \"100%\"}}}"), Reject("'%'")),
            ("header value control", &r("headers: {response: {add: {x-a: \"a\\u0001b\"}}}"), Reject("control characters")),
            (
                "cors",
                &r("corsPolicy: {allowOrigins: [{exact: \"https://a.com\"}, {regex: \"https://.*\\\\.b\\\\.com\"}], allowMethods: [GET, POST], allowHeaders: [\"*\", x-a], maxAge: 24h}"),
                Accept,
            ),
            ("cors empty origin", &r("corsPolicy: {allowOrigins: [{}]}"), Reject("allowOrigins entry")),
            ("cors method", &r("corsPolicy: {allowMethods: [get]}"), Reject("not a supported HTTP method")),
            ("cors header", &r("corsPolicy: {exposeHeaders: [\"x a\"]}"), Reject("not a valid header name")),
            ("cors maxAge fraction", &r("corsPolicy: {maxAge: 1.5s}"), Reject("whole seconds")),
            ("cors maxAge zero", &r("corsPolicy: {maxAge: 0s}"), Reject("at least 1ms")),
            ("cors allowOrigin deprecated", &r("corsPolicy: {allowOrigin: [\"https://a.com\"]}"), Warn("deprecated")),
        ],
    );
}

#[test]
fn virtual_service_tls_and_tcp() {
    table(
        "VirtualService",
        &[
            (
                "tls route",
                "hosts: [\"*.example.com\"]\ngateways: [gw]\ntls:\n- match:\n  - sniHosts: [a.example.com]\n  route:\n  - destination: {host: a, port: {number: 443}}",
                Accept,
            ),
            (
                "tls sni outside hosts",
                "hosts: [a.example.com]\ngateways: [gw]\ntls:\n- match:\n  - sniHosts: [b.example.com]\n  route:\n  - destination: {host: a}",
                Reject("not a compatible subset"),
            ),
            (
                "tls no match",
                "hosts: [a.example.com]\ngateways: [gw]\ntls:\n- route:\n  - destination: {host: a}",
                Reject("at least one match"),
            ),
            (
                "tls no sni",
                "hosts: [a.example.com]\ngateways: [gw]\ntls:\n- match:\n  - port: 443\n  route:\n  - destination: {host: a}",
                Reject("at least one SNI host"),
            ),
            (
                "tls no route",
                "hosts: [a.example.com]\ngateways: [gw]\ntls:\n- match:\n  - sniHosts: [a.example.com]",
                Reject("at least one destination"),
            ),
            (
                "tcp route",
                "hosts: [db.example.com]\ngateways: [gw]\ntcp:\n- match:\n  - port: 31400\n    destinationSubnets: [10.0.0.0/8]\n  route:\n  - destination: {host: db, port: {number: 5432}}",
                Accept,
            ),
            (
                "tcp no route",
                "hosts: [db.example.com]\ngateways: [gw]\ntcp:\n- match:\n  - port: 31400",
                Reject("at least one destination"),
            ),
            (
                "tcp bad subnet",
                "hosts: [db.example.com]\ngateways: [gw]\ntcp:\n- match:\n  - destinationSubnets: [10.0.0.0/33]\n  route:\n  - destination: {host: db}",
                Reject("not a valid CIDR"),
            ),
            (
                "tcp weights",
                "hosts: [db.example.com]\ngateways: [gw]\ntcp:\n- route:\n  - destination: {host: a}\n    weight: 0\n  - destination: {host: b}",
                Reject("add up to 0"),
            ),
        ],
    );
}

const DR: &str = "host: reviews.prod.svc.cluster.local\n";

fn dr(tp: &str) -> String {
    format!("{DR}trafficPolicy:\n  {tp}")
}

#[test]
fn destination_rule_rules() {
    table(
        "DestinationRule",
        &[
            ("basic", DR, Accept),
            ("host required", "subsets: [{name: v1, labels: {version: v1}}]", Reject("host is required")),
            ("host star", "host: \"*\"", Accept),
            ("host bad", "host: \"a..b\"", Reject("invalid domain name")),
            ("subsets", &format!("{DR}subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2}}]"), Accept),
            ("subset duplicate", &format!("{DR}subsets: [{{name: v1}}, {{name: v1}}]"), Reject("duplicate subset name")),
            ("subset name", &format!("{DR}subsets: [{{name: V.1}}]"), Reject("invalid subset name")),
            ("subset name empty", &format!("{DR}subsets: [{{labels: {{a: b}}}}]"), Reject("subset name cannot be empty")),
            ("subset labels", &format!("{DR}subsets: [{{name: v1, labels: {{\"bad key!\": v}}}}]"), Reject("invalid label key")),
            ("prefixed label", &format!("{DR}subsets: [{{name: v1, labels: {{\"app.kubernetes.io/version\": v1}}}}]"), Accept),
            ("empty traffic policy", &format!("{DR}trafficPolicy: {{}}"), Reject("at least one field")),
            ("lb simple", &dr("loadBalancer: {simple: LEAST_REQUEST}"), Accept),
            (
                "lb simple and hash",
                &dr("loadBalancer: {simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}"),
                Reject("only one of `simple` or `consistentHash`"),
            ),
            ("hash two keys", &dr("loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}"), Reject("only one hash key")),
            ("hash no key", &dr("loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 1024}}}"), Warn("no hash key")),
            ("hash cookie", &dr("loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}"), Accept),
            ("hash cookie name", &dr("loadBalancer: {consistentHash: {httpCookie: {ttl: 10s}}}"), Reject("name is required")),
            (
                "ringHash and maglev",
                &dr("loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {}, maglev: {tableSize: 65537}}}"),
                Reject("only one of `ringHash` or `maglev`"),
            ),
            ("maglev prime", &dr("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}"), Accept),
            ("maglev not prime", &dr("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}"), Reject("prime")),
            ("maglev unset", &dr("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {}}}"), Reject("must be set")),
            ("maglev too big", &dr("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}"), Reject("less than")),
            ("minimumRingSize", &dr("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024}}"), Warn("deprecated")),
            (
                "minimumRingSize with ringHash",
                &dr("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024, ringHash: {}}}"),
                Reject("only one of `minimumRingSize`"),
            ),
            ("warmup", &dr("loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 10, aggression: 2}}"), Accept),
            ("warmup no duration", &dr("loadBalancer: {warmup: {aggression: 2}}"), Reject("duration is required")),
            ("warmup percent", &dr("loadBalancer: {warmup: {duration: 60s, minimumPercent: 101}}"), Reject("0..100")),
            ("warmup aggression", &dr("loadBalancer: {warmup: {duration: 60s, aggression: -1}}"), Reject("negative")),
            ("warmupDurationSecs", &dr("loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0s}"), Reject("at least 1ms")),
            (
                "locality distribute",
                &dr("loadBalancer: {localityLbSetting: {distribute: [{from: \"us-west/zone1/*\", to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 20}}]}}"),
                Accept,
            ),
            (
                "locality total",
                &dr("loadBalancer: {localityLbSetting: {distribute: [{from: us-west, to: {us-west: 80, us-east: 10}}]}}"),
                Reject("add up to 90"),
            ),
            (
                "locality both",
                &dr("loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {a: 100}}], failover: [{from: a, to: b}]}}"),
                Reject("both `distribute` and `failover`"),
            ),
            (
                "locality failover same",
                &dr("loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}\n  outlierDetection: {consecutive5xxErrors: 5}"),
                Reject("different one"),
            ),
            (
                "locality failover without outlier",
                &dr("loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}"),
                Warn("outlier detection"),
            ),
            (
                "locality wildcard",
                &dr("loadBalancer: {localityLbSetting: {distribute: [{from: \"us-*/a\", to: {a: 100}}]}}"),
                Reject("only at the end"),
            ),
            ("pool", &dr("connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}, http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, idleTimeout: 1h}}"), Accept),
            ("pool empty", &dr("connectionPool: {}"), Reject("at least one of `tcp` or `http`")),
            ("pool negative", &dr("connectionPool: {tcp: {maxConnections: -1}}"), Reject("non-negative")),
            ("pool http negative", &dr("connectionPool: {http: {http1MaxPendingRequests: -5}}"), Reject("non-negative")),
            ("pool connect timeout", &dr("connectionPool: {tcp: {connectTimeout: 0s}}"), Reject("at least 1ms")),
            ("pool keepalive", &dr("connectionPool: {tcp: {tcpKeepalive: {interval: 0.5ms}}}"), Reject("at least 1ms")),
            (
                "pool upgrade and client protocol",
                &dr("connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}"),
                Reject("useClientProtocol"),
            ),
            ("pool h2 keepalive", &dr("connectionPool: {http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}"), Accept),
            ("outlier", &dr("outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100}"), Accept),
            ("outlier percent", &dr("outlierDetection: {maxEjectionPercent: 150}"), Reject("0..100")),
            ("outlier min health", &dr("outlierDetection: {minHealthPercent: -1}"), Reject("0..100")),
            ("outlier interval", &dr("outlierDetection: {interval: 0s}"), Reject("at least 1ms")),
            ("outlier deprecated", &dr("outlierDetection: {consecutiveErrors: 5}"), Warn("deprecated")),
            (
                "outlier local origin",
                &dr("outlierDetection: {consecutiveLocalOriginFailures: 5}"),
                Reject("splitExternalLocalOriginErrors"),
            ),
            (
                "outlier local origin split",
                &dr("outlierDetection: {consecutiveLocalOriginFailures: 5, splitExternalLocalOriginErrors: true}"),
                Accept,
            ),
            ("tls simple", &dr("tls: {mode: SIMPLE, sni: a.example.com}"), Accept),
            ("tls mutual files", &dr("tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}"), Accept),
            ("tls mutual missing", &dr("tls: {mode: MUTUAL}"), Reject("requires a client certificate")),
            ("tls mutual credential", &dr("tls: {mode: MUTUAL, credentialName: client-cert}"), Accept),
            (
                "tls credential and files",
                &dr("tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}"),
                Reject("when credentialName is set"),
            ),
            (
                "tls insecure with ca",
                &dr("tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}"),
                Reject("insecureSkipVerify"),
            ),
            ("port level", &dr("portLevelSettings:\n  - port: {number: 80}\n    loadBalancer: {simple: RANDOM}"), Accept),
            ("port level no port", &dr("portLevelSettings:\n  - loadBalancer: {simple: RANDOM}"), Reject("must have a port")),
            ("port level only port", &dr("portLevelSettings:\n  - port: {number: 80}"), Reject("at least one field besides")),
            ("port level range", &dr("portLevelSettings:\n  - port: {number: 0}\n    tls: {mode: SIMPLE}"), Reject("range 1..65535")),
            (
                "port level duplicate",
                &dr("portLevelSettings:\n  - port: {number: 80}\n    tls: {mode: SIMPLE}\n  - port: {number: 80}\n    tls: {mode: DISABLE}"),
                Warn("the first entry applies"),
            ),
            (
                "port level nested",
                &dr("portLevelSettings:\n  - port: {number: 80}\n    connectionPool: {tcp: {maxConnections: -1}}"),
                Reject("non-negative"),
            ),
            ("tunnel", &dr("tunnel: {protocol: CONNECT, targetHost: egress.example.com, targetPort: 8443}"), Accept),
            ("tunnel protocol", &dr("tunnel: {protocol: GET, targetHost: 10.0.0.1, targetPort: 8443}"), Reject("CONNECT")),
            ("tunnel port", &dr("tunnel: {targetHost: a.com, targetPort: 0}"), Reject("range 1..65535")),
            ("tunnel host", &dr("tunnel: {targetHost: \"bad host\", targetPort: 80}"), Reject("FQDN or an IP")),
            ("proxy protocol", &dr("proxyProtocol: {version: V2}"), Accept),
            ("proxy protocol version", &dr("proxyProtocol: {version: V3}"), Reject("V1 or V2")),
            (
                "tunnel and proxy protocol",
                &dr("proxyProtocol: {version: V1}\n  tunnel: {targetHost: a.com, targetPort: 80}"),
                Reject("must not be set together"),
            ),
            ("workload selector", &format!("{DR}workloadSelector: {{matchLabels: {{app: a}}}}"), Accept),
            ("workload selector wildcard", &format!("{DR}workloadSelector: {{matchLabels: {{app: \"a*\"}}}}"), Reject("wildcard")),
            ("workload selector empty", &format!("{DR}workloadSelector: {{}}"), Warn("without labels")),
            (
                "selector exported",
                &format!("{DR}workloadSelector: {{matchLabels: {{app: a}}}}\nexportTo: [\"*\"]"),
                Reject("beyond its own namespace"),
            ),
            ("selector exported here", &format!("{DR}workloadSelector: {{matchLabels: {{app: a}}}}\nexportTo: [\".\"]"), Accept),
        ],
    );
}

const SE: &str = "hosts: [api.example.com]\nports: [{number: 443, name: https, protocol: TLS}]\nresolution: DNS\n";

#[test]
fn service_entry_rules() {
    table(
        "ServiceEntry",
        &[
            ("basic", SE, Accept),
            ("hosts required", "ports: [{number: 80, name: http}]", Reject("at least one host")),
            ("star host", "hosts: [\"*\"]", Reject("cannot be the wildcard")),
            ("wildcard host none", "hosts: [\"*.example.com\"]\nresolution: NONE", Accept),
            (
                "wildcard host dns",
                "hosts: [\"*.example.com\"]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
                Reject("fully qualified"),
            ),
            ("partial wildcard", "hosts: [\"*x.example.com\"]", Warn("partial wildcard")),
            ("bad host", "hosts: [\"a_b.example.com\"]", Reject("invalid domain name")),
            ("addresses", "hosts: [a.com]\naddresses: [10.0.0.1, \"2001:db8::1\", 10.1.0.0/16]\nresolution: STATIC\nendpoints: [{address: 10.1.0.1}]", Accept),
            ("bad address", "hosts: [a.com]\naddresses: [10.0.0.300]", Reject("not a valid IP")),
            ("bad cidr", "hosts: [a.com]\naddresses: [10.0.0.0/40]", Reject("not a valid CIDR")),
            ("cidr with dns", "hosts: [a.com]\naddresses: [10.0.0.0/24]\nresolution: DNS", Reject("CIDR addresses")),
            ("port name", "hosts: [a.com]\nports: [{number: 80, name: http_1}]", Reject("invalid port name")),
            ("port name missing", "hosts: [a.com]\nports: [{number: 80}]", Reject("invalid port name")),
            ("port protocol", "hosts: [a.com]\nports: [{number: 80, name: http, protocol: SMTP}]", Reject("unsupported protocol")),
            ("port protocol case", "hosts: [a.com]\nports: [{number: 80, name: http, protocol: http}]", Accept),
            ("port range", "hosts: [a.com]\nports: [{number: 0, name: http}]", Reject("range 1..65535")),
            ("duplicate port name", "hosts: [a.com]\nports: [{number: 80, name: a}, {number: 81, name: a}]", Reject("duplicate port name")),
            ("duplicate port number", "hosts: [a.com]\nports: [{number: 80, name: a}, {number: 80, name: b}]", Reject("cannot be duplicated")),
            ("target port", "hosts: [a.com]\nports: [{number: 80, name: a, targetPort: 8080}]\nresolution: DNS", Accept),
            ("target port range", "hosts: [a.com]\nports: [{number: 80, name: a, targetPort: 70000}]\nresolution: DNS", Reject("range")),
            (
                "static endpoints",
                "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints:\n- address: 10.0.0.1\n  ports: {http: 8080}\n  labels: {version: v1}",
                Accept,
            ),
            (
                "static hostname",
                "hosts: [a.com]\nresolution: STATIC\nendpoints: [{address: backend.example.com}]",
                Reject("not a valid IP address"),
            ),
            ("static no address", "hosts: [a.com]\nresolution: STATIC\nendpoints: [{labels: {a: b}}]", Reject("address is required")),
            (
                "static unix",
                "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: \"unix:///var/run/a.sock\"}]",
                Accept,
            ),
            (
                "static unix relative",
                "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: \"unix://a.sock\"}]",
                Reject("absolute path"),
            ),
            (
                "static unix with ports",
                "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: \"unix:///a.sock\", ports: {http: 80}}]",
                Reject("must not include ports"),
            ),
            (
                "endpoint port not in service",
                "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: 10.0.0.1, ports: {grpc: 9000}}]",
                Reject("not defined by the service entry"),
            ),
            ("dns endpoint", &format!("{SE}endpoints: [{{address: backend.internal}}]"), Accept),
            ("dns endpoint bad", &format!("{SE}endpoints: [{{address: \"bad_host\"}}]"), Reject("not a valid FQDN")),
            ("dns endpoint empty", &format!("{SE}endpoints: [{{labels: {{a: b}}}}]"), Reject("not a valid FQDN")),
            (
                "dns rr endpoints",
                "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.internal}, {address: b.internal}]",
                Reject("at most one endpoint"),
            ),
            ("none with endpoints", "hosts: [a.com]\nendpoints: [{address: 10.0.0.1}]", Reject("resolution NONE cannot have endpoints")),
            (
                "selector and endpoints",
                "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 10.0.0.1}]",
                Reject("only one of `workloadSelector` or `endpoints`"),
            ),
            ("selector wildcard", "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: \"*\"}}", Reject("wildcard")),
            (
                "several hosts tcp",
                "hosts: [a.com, b.com]\nports: [{number: 5432, name: pg, protocol: TCP}]\nresolution: DNS",
                Reject("several hosts with a non-HTTP"),
            ),
            ("several hosts http", "hosts: [a.com, b.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS", Accept),
            ("several hosts none", "hosts: [a.com, b.com]\nports: [{number: 5432, name: pg, protocol: TCP}]", Accept),
            ("exportTo none", "hosts: [a.com]\nexportTo: [\"~\"]", Accept),
            ("exportTo none and more", "hosts: [a.com]\nexportTo: [\"~\", prod]", Reject("no one")),
            ("exportTo bad", "hosts: [a.com]\nexportTo: [\"Prod_NS\"]", Reject("invalid exportTo entry")),
        ],
    );
}

#[test]
fn metadata_rules() {
    let cases = [
        ("good name", doc("VirtualService", "reviews.v2", VS), Accept),
        ("uppercase name", doc("VirtualService", "Reviews", VS), Reject("lowercase RFC 1123 subdomain")),
        ("underscore name", doc("DestinationRule", "a_b", DR), Reject("lowercase RFC 1123 subdomain")),
        ("gateway dotted name", doc("Gateway", "my.gateway", &gw("  hosts: [a.com]")), Reject("invalid gateway name")),
        ("gateway name", doc("Gateway", "my-gateway", &gw("  hosts: [a.com]")), Accept),
        (
            "bad namespace",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n  namespace: Prod\nspec:\n  hosts: [a.com]\n"
                .to_string(),
            Reject("invalid namespace"),
        ),
        (
            "dry-run annotation",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n  annotations: {istio.io/dry-run: \"true\"}\nspec:\n  hosts: [a.com]\n"
                .to_string(),
            Reject("istio.io/dry-run"),
        ),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|(l, t, w)| judge(l, t, *w)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diagnostics_point_at_the_field() {
    let text = doc("VirtualService", "v", "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: a}\n    weight: 10\n  - destination: {host: b}\n    weight: -1\n");
    let diags = run_text(&text);
    let d = diags.iter().find(|d| d.is_error()).expect("an error");
    assert_eq!(d.code, "IST0106");
    assert_eq!(d.resource, "VirtualService/default/v");
    assert!(d.message.starts_with("spec.http[0].route[1].weight: "), "{}", d.message);
    assert_eq!((d.location.line, d.location.col), (12, 7), "{d}");

    let text = doc("Gateway", "g", &gw("  hosts: [a.com, \"foo*.example.com\"]"));
    let diags = run_text(&text);
    let d = diags.iter().find(|d| d.is_error()).expect("an error");
    assert_eq!(
        d.message,
        "spec.servers[0].hosts[1]: wildcard must be the whole left-most label (\"*.example.com\"), got \"foo*.example.com\""
    );
}

#[test]
fn helpers() {
    assert!(validate_wildcard_domain("*.example.com").is_ok());
    assert!(validate_wildcard_domain("*").is_ok());
    assert!(validate_wildcard_domain("*-foo.example.com").is_ok());
    assert!(validate_wildcard_domain("example.com.").is_ok());
    assert!(validate_wildcard_domain("example.123").is_err());
    assert!(validate_wildcard_domain("").is_err());
    assert!(validate_wildcard_domain(&format!("{}.com", "a.".repeat(130))).is_err());
    assert!(validate_fqdn("*.example.com").is_err());
    assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
    assert!(validate_ip_subnet("2001:db8::/32").is_ok());
    assert!(validate_ip_subnet("10.0.0.0/").is_err());
    assert!(validate_ip_subnet("10.0.0.0/8/8").is_err());
    assert!(validate_duration("1ms").is_ok());
    assert!(validate_duration("0.5ms").is_err());
    assert!(validate_header_value("prefix %HOSTNAME% suffix").is_ok());
    assert!(validate_header_value("%REQ(x-a)%").is_ok());
    assert!(validate_header_value("%START_TIME%%").is_err());
    assert!(validate_header_value("abc%123").is_err());
    assert!(is_jwt_claim_route("@request.auth.claims[a][b]"));
    assert!(!is_jwt_claim_route("@request.auth.claims[]"));
    assert!(!is_jwt_claim_route("@request.auth.claims"));
    assert!(validate_label("app", "").is_empty());
    assert!(!validate_label("a/b/c", "x").is_empty());
}
