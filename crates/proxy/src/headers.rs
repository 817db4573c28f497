//! Proxy headers for an edge gateway (Envoy with `use_remote_address: true`, no trusted hops):
//! hop-by-hop headers removed, `x-forwarded-for` appended with the client address,
//! `x-forwarded-proto` overwritten, `x-request-id` generated when absent, internal `x-envoy-*`
//! headers from clients dropped; plus the route's header operations.

use crate::rng::FastRng;
use crate::varsubst::{self, Vars};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_model::snapshot::HeaderOps;
use std::net::IpAddr;

// Named once: a `&str` name is parsed and hashed again at every lookup.
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
static X_ENVOY_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");
pub(crate) static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub(crate) static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
pub(crate) static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub(crate) static X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
pub(crate) static X_ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");
pub(crate) static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub(crate) static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub(crate) static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// A number as a header value; below 100 (attempt counts, most upstream service times in ms)
/// a static one, so no allocation per request.
pub(crate) fn number(n: u64) -> HeaderValue {
    const SMALL: [&str; 100] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19",
        "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32", "33", "34", "35", "36", "37",
        "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48", "49", "50", "51", "52", "53", "54", "55",
        "56", "57", "58", "59", "60", "61", "62", "63", "64", "65", "66", "67", "68", "69", "70", "71", "72", "73",
        "74", "75", "76", "77", "78", "79", "80", "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91",
        "92", "93", "94", "95", "96", "97", "98", "99",
    ];
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Is `token` one of the comma-separated values of header `name` (case-insensitive)?
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        std::str::from_utf8(v.as_bytes()).is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The `Upgrade` value of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade: x`).
pub(crate) fn upgrade_of(headers: &HeaderMap, present: Present) -> Option<HeaderValue> {
    if !(present.connection && present.upgrade && has_token(headers, &header::CONNECTION, "upgrade")) {
        return None;
    }
    headers.get(header::UPGRADE).cloned()
}

/// Which of the names a proxy rewrites are present: one pass over the names, so the common
/// request, which has none of them, costs no lookup per name.
#[derive(Clone, Copy, Default)]
pub(crate) struct Present {
    connection: bool,
    upgrade: bool,
    /// `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`.
    fixed_hop: bool,
    te: bool,
    expect: bool,
    envoy: bool,
    /// `x-forwarded-client-cert`.
    pub(crate) xfcc: bool,
}

impl Present {
    pub(crate) fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        // One match on each name's text (lowercase, as every `HeaderName` is): comparing names one
        // by one compared each custom name's bytes again for every name it was held against.
        for k in headers.keys() {
            match k.as_str() {
                "connection" => p.connection = true,
                "te" => p.te = true,
                "expect" => p.expect = true,
                "upgrade" => {
                    p.upgrade = true;
                    p.fixed_hop = true;
                }
                "transfer-encoding" | "keep-alive" | "proxy-connection" => p.fixed_hop = true,
                "x-forwarded-client-cert" => p.xfcc = true,
                name if name.starts_with("x-envoy-") => p.envoy = true,
                _ => {}
            }
        }
        p
    }
}

/// Remove hop-by-hop headers: the fixed set and any named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap, present: Present) {
    if present.connection {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            let Ok(s) = std::str::from_utf8(v.as_bytes()) else { continue };
            for t in s.split(',').map(str::trim) {
                if t.is_empty() || t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    // Never let a client strip what we set ourselves below.
                    if n != header::HOST && !n.as_str().starts_with("x-forwarded-") && n != X_REQUEST_ID {
                        named.push(n);
                    }
                }
            }
        }
        for n in named {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    if present.fixed_hop {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
    }
}

/// The request's `x-request-id`: an internal client's when it sent one, else a new UUID put into
/// the headers (Envoy does not trust an external client's, `preserve_external_request_id: false`).
/// Taken as the request arrives (as Envoy's connection manager does), so local replies are
/// logged with one too.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap, client: &ClientIp, rng: &FastRng) -> HeaderValue {
    use http::header::Entry;
    // One lookup through the entry (a lookup hashes the name).
    let entry = headers.entry(X_REQUEST_ID.clone());
    if let Entry::Occupied(given) = &entry {
        if !given.get().is_empty() && is_internal(client.addr) {
            return given.get().clone();
        }
    }
    let id = new_request_id(rng);
    match entry {
        Entry::Occupied(mut given) => drop(given.insert(id.clone())),
        Entry::Vacant(absent) => drop(absent.insert(id.clone())),
    }
    id
}

/// Headers of a request going upstream; `present` was scanned from them as they are.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    present: Present,
    client: &ClientIp,
    upgrade: Option<&HeaderValue>,
) {
    let te_trailers = present.te && has_token(headers, &header::TE, "trailers");
    strip_hop_by_hop(headers, present);
    if present.te {
        headers.remove(header::TE);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }
    // `Expect: 100-continue` is answered by us (hyper sends 100 when the body is read).
    if present.expect {
        headers.remove(header::EXPECT);
    }

    // Internal headers are not trusted from the outside (Envoy strips its x-envoy-* set for
    // external requests; we strip the whole prefix).
    if present.envoy {
        let internal: Vec<HeaderName> =
            headers.keys().filter(|k| k.as_str().starts_with("x-envoy-")).cloned().collect();
        for n in internal {
            headers.remove(n);
        }
    }

    let ip = client.value();
    append_xff(headers, &ip);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    // Envoy's verdict on where the client is (with `use_remote_address`, no trusted hops).
    if is_internal(client.addr) {
        headers.insert(X_ENVOY_INTERNAL.clone(), HeaderValue::from_static("true"));
    } else {
        headers.insert(X_ENVOY_EXTERNAL_ADDRESS.clone(), ip);
    }
}

/// A client address with its text kept inline: formatted once per connection, made a header
/// value per request. (A header value kept per connection is one more small long-lived allocation
/// among each connection's transient buffers: measured, about 0.3 KiB more per idle connection
/// from the heap's fragmentation, for 300 instructions saved per request.)
pub(crate) struct ClientIp {
    addr: IpAddr,
    len: u8,
    buf: [u8; 46],
}

impl ClientIp {
    pub(crate) fn new(ip: IpAddr) -> ClientIp {
        use std::io::Write as _;
        let mut buf = [0u8; 46];
        let mut w = &mut buf[..];
        // IPv6 text is at most 45 bytes: this does not fail; if it did, the value is "-".
        let len = match write!(w, "{}", ip.to_canonical()) {
            Ok(()) => 46 - w.len(),
            Err(_) => 0,
        };
        ClientIp { addr: ip, len: u8::try_from(len).unwrap_or(0), buf }
    }

    pub(crate) fn value(&self) -> HeaderValue {
        self.buf
            .get(..usize::from(self.len))
            .filter(|b| !b.is_empty())
            .and_then(|b| HeaderValue::from_bytes(b).ok())
            .unwrap_or_else(|| HeaderValue::from_static("-"))
    }
}

/// Envoy's internal addresses: RFC 1918, loopback, IPv6 unique local (`fd00::/8`).
fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.octets()[0] == 0xfd,
    }
}

fn append_xff(headers: &mut HeaderMap, ip: &HeaderValue) {
    // One lookup through the entry (a lookup hashes the name).
    let mut entry = match headers.entry(X_FORWARDED_FOR.clone()) {
        http::header::Entry::Vacant(v) => {
            v.insert(ip.clone());
            return;
        }
        http::header::Entry::Occupied(o) => o,
    };
    let mut value = String::new();
    for v in entry.iter() {
        if let Ok(s) = std::str::from_utf8(v.as_bytes()) {
            let s = s.trim();
            if !s.is_empty() {
                value.push_str(s);
                value.push_str(", ");
            }
        }
    }
    value.push_str(ip.to_str().unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&value) {
        entry.insert(v);
    }
}

/// A UUID v4 from our (seedable) random source.
pub(crate) fn new_request_id(rng: &FastRng) -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rng.bytes16()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Headers of an upstream response going back to the client.
pub(crate) fn prepare_response(headers: &mut HeaderMap, upgraded: bool) {
    if upgraded {
        headers.remove(&KEEP_ALIVE);
        headers.remove(&PROXY_CONNECTION);
        headers.remove(header::TRANSFER_ENCODING);
        return;
    }
    let present = Present::scan(headers);
    strip_hop_by_hop(headers, present);
    if present.te {
        headers.remove(header::TE);
    }
}

/// Istio `headers.{request,response}`: remove, then set (overwrite), then add (append). Values
/// are templates filled from `vars`; `%REQ(…)%` of request-side rules reads `vars.request` (the
/// headers as they were before these rules).
pub(crate) fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps, vars: &Vars<'_>) {
    if ops.is_empty() {
        return;
    }
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, v) in &ops.set {
        if let Some(v) = varsubst::render(v, vars) {
            headers.insert(name, v);
        }
    }
    for (name, v) in &ops.add {
        if let Some(v) = varsubst::render(v, vars) {
            headers.append(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_the_same_static_or_not() {
        for n in [0u64, 1, 9, 10, 42, 99, 100, 101, 1234, u64::MAX] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn internal_addresses_as_envoy_sees_them() {
        for ip in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1", "fd00::1", "::ffff:10.0.0.1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.9", "172.32.0.1", "8.8.8.8", "2001:db8::1", "fe80::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn client_address_value() {
        for (ip, text) in [
            ("10.1.2.3", "10.1.2.3"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("2001:db8::1", "2001:db8::1"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ] {
            assert_eq!(ClientIp::new(ip.parse().unwrap()).value(), text);
        }
    }

    #[test]
    fn request_id_of_an_external_client_is_replaced() {
        let rng = FastRng::new(Some(1));
        for (ip, kept) in [("10.0.0.7", true), ("127.0.0.1", true), ("fd00::1", true), ("203.0.113.9", false)] {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_static("client-chosen"));
            let id = ensure_request_id(&mut h, &ClientIp::new(ip.parse().unwrap()), &rng);
            assert_eq!(id == "client-chosen", kept, "{ip}");
            assert_eq!(h.get("x-request-id"), Some(&id), "{ip}");
        }
    }

    #[test]
    fn request_headers() {
        let rng = FastRng::new(Some(1));
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-envoy-retry-on", HeaderValue::from_static("5xx"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let client = ClientIp::new("127.0.0.1".parse().unwrap());
        let id = ensure_request_id(&mut h, &client, &rng);
        let present = Present::scan(&h);
        prepare_request(&mut h, present, &client, None);
        assert_eq!(h.get("x-request-id"), Some(&id));
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("x-envoy-retry-on").is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(id.len(), 36);
        assert_eq!(id.to_str().unwrap().as_bytes()[14], b'4');
    }

    #[test]
    fn ops_order() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("1"));
        h.insert("b", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![(HeaderName::from_static("a"), "2".into())],
            add: vec![(HeaderName::from_static("a"), "3".into()), (HeaderName::from_static("c"), "x".into())],
            remove: vec![HeaderName::from_static("b")],
        };
        let vars = Vars {
            peer: "1.2.3.4:5".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            start: std::time::SystemTime::now(),
            protocol: http::Version::HTTP_11,
            upstream: None,
            request: None,
        };
        apply_ops(&mut h, &ops, &vars);
        let a: Vec<_> = h.get_all("a").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(a, ["2", "3"]);
        assert!(h.get("b").is_none());
        assert_eq!(h.get("c").unwrap(), "x");
    }
}
