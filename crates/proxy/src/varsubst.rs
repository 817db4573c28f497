//! Filling in header value templates (`%VAR%`, parsed by the model at compile time) with the
//! request's values. Literal values take the fast path (no formatting).

use http::header::{HeaderMap, HeaderValue};
use http::Version;
use portico_model::template::{HeaderValueTemplate, Part};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
            Part::StartTime(fmt) => format_time(&mut out, vars.start, fmt.as_deref()),
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

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Envoy's `START_TIME` formats (UTC): the default `%Y-%m-%dT%H:%M:%E3SZ`, and the specifiers
/// `%Y %m %d %H %M %S %s %E3S %E6S %E9S %%`; other characters are copied.
fn format_time(out: &mut String, t: SystemTime, fmt: Option<&str>) {
    let fmt = fmt.unwrap_or("%Y-%m-%dT%H:%M:%E3SZ");
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let nanos = since.subsec_nanos();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{y:04}"),
            Some('m') => write!(out, "{mo:02}"),
            Some('d') => write!(out, "{d:02}"),
            Some('H') => write!(out, "{h:02}"),
            Some('M') => write!(out, "{mi:02}"),
            Some('S') => write!(out, "{s:02}"),
            Some('s') => write!(out, "{secs}"),
            Some('%') => write!(out, "%"),
            Some('E') => {
                let digits: String = chars.by_ref().take_while(|c| *c != 'S').collect();
                match digits.as_str() {
                    "3" => write!(out, "{s:02}.{:03}", nanos / 1_000_000),
                    "6" => write!(out, "{s:02}.{:06}", nanos / 1_000),
                    "9" => write!(out, "{s:02}.{nanos:09}"),
                    _ => write!(out, "{s:02}"),
                }
            }
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert_eq!(r("%UPSTREAM_HOST% %PROTOCOL% 100%%"), "10.0.0.9:8080 HTTP/2 100%");
        assert_eq!(r("plain"), "plain");
    }
}
