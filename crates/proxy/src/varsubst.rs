//! Filling in header value templates (`%VAR%`, parsed by the model at compile time) with the
//! request's values. Literal values take the fast path (no formatting).

use http::header::{HeaderMap, HeaderValue};
use http::Version;
use portico_model::template::{HeaderValueTemplate, Part, TimeItem};
use portico_telemetry::format::{push_padded, UtcTime};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

/// What templates may refer to.
pub(crate) struct Vars<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub start: SystemTime,
    pub protocol: Version,
    pub upstream: Option<SocketAddr>,
    /// The request's headers (for `%REQ(…)%`), when available.
    pub request: Option<&'a HeaderMap>,
}

/// The per-request part of [`Vars`] known before routing.
#[derive(Clone, Copy)]
pub(crate) struct VarsBase {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub start: SystemTime,
    pub protocol: Version,
}

impl VarsBase {
    pub(crate) fn with(self, request: Option<&HeaderMap>, upstream: Option<SocketAddr>) -> Vars<'_> {
        Vars { peer: self.peer, local: self.local, start: self.start, protocol: self.protocol, upstream, request }
    }
}

fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
            .unwrap_or_default()
    })
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The value for `t`; `None` when the result is not a valid header value.
pub(crate) fn render(t: &HeaderValueTemplate, vars: &Vars<'_>) -> Option<HeaderValue> {
    if t.is_literal() {
        let text = match t.parts.first() {
            Some(Part::Literal(s)) => s.as_str(),
            _ => "",
        };
        return HeaderValue::from_str(text).ok();
    }
    let mut out = String::new();
    for p in &t.parts {
        match p {
            Part::Literal(s) => out.push_str(s),
            Part::DownstreamRemoteAddress => {
                let _ = write!(out, "{}", vars.peer);
            }
            Part::DownstreamRemoteAddressWithoutPort => {
                let _ = write!(out, "{}", vars.peer.ip());
            }
            Part::DownstreamLocalAddress => {
                let _ = write!(out, "{}", vars.local);
            }
            Part::DownstreamLocalAddressWithoutPort => {
                let _ = write!(out, "{}", vars.local.ip());
            }
            Part::Req(names) => {
                if let Some(v) = vars.request.and_then(|h| names.iter().find_map(|n| h.get(n.as_str()))) {
                    out.push_str(v.to_str().unwrap_or(""));
                }
            }
            Part::StartTime(items) => format_time(&mut out, vars.start, items),
            Part::UpstreamHost => {
                if let Some(u) = vars.upstream {
                    let _ = write!(out, "{u}");
                }
            }
            Part::Hostname => out.push_str(hostname()),
            Part::Protocol => out.push_str(protocol(vars.protocol)),
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// A compiled `START_TIME` format, filled in (UTC).
fn format_time(out: &mut String, t: SystemTime, items: &[TimeItem]) {
    let u = UtcTime::from(t);
    for item in items {
        match item {
            TimeItem::Literal(l) => out.push_str(l),
            TimeItem::Year => push_padded(out, u.year, 4),
            TimeItem::Month => push_padded(out, u64::from(u.month), 2),
            TimeItem::Day => push_padded(out, u64::from(u.day), 2),
            TimeItem::Hour => push_padded(out, u64::from(u.hour), 2),
            TimeItem::Minute => push_padded(out, u64::from(u.minute), 2),
            TimeItem::Second => push_padded(out, u64::from(u.second), 2),
            TimeItem::SecondWithFraction(digits) => {
                push_padded(out, u64::from(u.second), 2);
                out.push('.');
                let (value, width) = match digits {
                    3 => (u.nanos / 1_000_000, 3),
                    6 => (u.nanos / 1_000, 6),
                    _ => (u.nanos, 9),
                };
                push_padded(out, u64::from(value), width);
            }
            TimeItem::EpochSeconds => push_padded(out, u.epoch_seconds, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn renders() {
        let mut req = HeaderMap::new();
        req.insert("x-b", HeaderValue::from_static("bee"));
        let vars = Vars {
            peer: "10.1.2.3:4567".parse().unwrap(),
            local: "127.0.0.1:80".parse().unwrap(),
            start: UNIX_EPOCH + Duration::from_millis(1_764_109_845_123),
            protocol: Version::HTTP_2,
            upstream: Some("10.0.0.9:8080".parse().unwrap()),
            request: Some(&req),
        };
        let r = |s: &str| render(&HeaderValueTemplate::parse(s), &vars).unwrap().to_str().unwrap().to_string();
        assert_eq!(r("%DOWNSTREAM_REMOTE_ADDRESS%"), "10.1.2.3:4567");
        assert_eq!(r("ip %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"), "ip 10.1.2.3");
        assert_eq!(r("%REQ(x-a?x-b)%/%REQ(nope)%"), "bee/");
        assert_eq!(r("%START_TIME%"), "2025-11-25T22:30:45.123Z");
        assert_eq!(r("%START_TIME(%s)%"), "1764109845");
        assert_eq!(r("%START_TIME(%Y%m%d %H:%M:%E6S %q)%"), "20251125 22:30:45.123000 %q");
        assert_eq!(r("%UPSTREAM_HOST% %PROTOCOL% 100%%"), "10.0.0.9:8080 HTTP/2 100%");
        assert_eq!(r("plain"), "plain");
    }
}
