//! Access-log lines in Istio's formats.
//!
//! Text: Istio's default (`EnvoyTextLogFormat`, `pilot/pkg/model/telemetry_logging.go`):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n
//! ```
//! (one line), with `-` for every absent or empty value, as Envoy prints them.
//!
//! JSON: the keys of Istio's `EnvoyJSONLogFormatIstio`, in the order Istio declares them, with
//! Envoy's typed values: `response_code`, `bytes_received`, `bytes_sent`, `duration` are numbers,
//! `upstream_service_time` is a string (it is a header value), absent values are `null`.
//!
//! Envoy writes text values raw; here control characters (which hyper never lets into a header or
//! path, but a record could carry) are written as `\xNN`, so a line is always one line.

use crate::flags::ResponseFlags;
use crate::record::{header_text, RequestRecord, TcpRecord};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// Append one text line (with its `\n`) for an HTTP request.
pub fn text_request(out: &mut String, r: &RequestRecord) {
    out.push('[');
    push_time(out, r.start_time);
    out.push_str("] \"");
    text(out, Some(r.method.as_str()));
    out.push(' ');
    text(out, Some(r.path()));
    out.push(' ');
    out.push_str(r.protocol_name());
    out.push_str("\" ");
    out.push_str(itoa::Buffer::new().format(r.status));
    out.push(' ');
    r.flags.write_to(out);
    out.push(' ');
    token(out, Some(r.details));
    out.push(' ');
    token(out, r.connection_termination_details.as_deref());
    out.push_str(" \"");
    text(out, r.upstream_transport_failure_reason.as_deref());
    out.push_str("\" ");
    out.push_str(itoa::Buffer::new().format(r.bytes_received));
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(r.bytes_sent));
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(millis(r.duration)));
    out.push(' ');
    match r.upstream_service_time {
        Some(d) => out.push_str(itoa::Buffer::new().format(millis(d))),
        None => out.push('-'),
    }
    for v in [&r.x_forwarded_for, &r.user_agent, &r.request_id, &r.authority] {
        out.push_str(" \"");
        text(out, header_text(v.as_ref()));
        out.push('"');
    }
    text_upstream_and_downstream(
        out,
        r.upstream_host,
        r.upstream_cluster.as_deref(),
        r.upstream_local,
        r.downstream_local,
        r.downstream_remote,
        r.sni.as_deref(),
        r.route_name.as_deref(),
    );
}

/// Append one text line for a TCP connection: the HTTP fields are absent (`"- - -" 0`).
pub fn text_tcp(out: &mut String, r: &TcpRecord) {
    out.push('[');
    push_time(out, r.start_time);
    out.push_str("] \"- - -\" 0 ");
    r.flags.write_to(out);
    out.push_str(" - ");
    token(out, r.connection_termination_details.as_deref());
    out.push_str(" \"");
    text(out, r.upstream_transport_failure_reason.as_deref());
    out.push_str("\" ");
    out.push_str(itoa::Buffer::new().format(r.bytes_received));
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(r.bytes_sent));
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(millis(r.duration)));
    out.push_str(" - \"-\" \"-\" \"-\" \"-\"");
    text_upstream_and_downstream(
        out,
        r.upstream_host,
        r.upstream_cluster.as_deref(),
        r.upstream_local,
        r.downstream_local,
        r.downstream_remote,
        r.sni.as_deref(),
        r.route_name.as_deref(),
    );
}

#[allow(clippy::too_many_arguments)]
fn text_upstream_and_downstream(
    out: &mut String,
    upstream_host: Option<SocketAddr>,
    upstream_cluster: Option<&str>,
    upstream_local: Option<SocketAddr>,
    downstream_local: SocketAddr,
    downstream_remote: SocketAddr,
    sni: Option<&str>,
    route: Option<&str>,
) {
    out.push_str(" \"");
    push_addr(out, upstream_host);
    out.push_str("\" ");
    token(out, upstream_cluster);
    for a in [upstream_local, Some(downstream_local), Some(downstream_remote)] {
        out.push(' ');
        push_addr(out, a);
    }
    out.push(' ');
    token(out, sni);
    out.push(' ');
    token(out, route);
    out.push('\n');
}

/// Append one JSON line (with its `\n`) for an HTTP request.
pub fn json_request(out: &mut String, r: &RequestRecord) {
    let mut j = Json::new(out);
    j.time("start_time", r.start_time);
    j.str("route_name", r.route_name.as_deref());
    j.str("method", Some(r.method.as_str()));
    j.str("path", Some(r.path()));
    j.str("protocol", Some(r.protocol_name()));
    j.num("response_code", u64::from(r.status));
    j.flags(r.flags);
    j.str("response_code_details", Some(r.details));
    j.str("connection_termination_details", r.connection_termination_details.as_deref());
    j.num("bytes_received", r.bytes_received);
    j.num("bytes_sent", r.bytes_sent);
    j.num("duration", millis(r.duration));
    match r.upstream_service_time {
        Some(d) => j.str("upstream_service_time", Some(itoa::Buffer::new().format(millis(d)))),
        None => j.str("upstream_service_time", None),
    }
    j.str("x_forwarded_for", header_text(r.x_forwarded_for.as_ref()));
    j.str("user_agent", header_text(r.user_agent.as_ref()));
    j.str("request_id", header_text(r.request_id.as_ref()));
    j.str("authority", header_text(r.authority.as_ref()));
    j.addr("upstream_host", r.upstream_host);
    j.str("upstream_cluster", r.upstream_cluster.as_deref());
    j.addr("upstream_local_address", r.upstream_local);
    j.addr("downstream_local_address", Some(r.downstream_local));
    j.addr("downstream_remote_address", Some(r.downstream_remote));
    j.str("requested_server_name", r.sni.as_deref());
    j.str("upstream_transport_failure_reason", r.upstream_transport_failure_reason.as_deref());
    j.end();
}

/// Append one JSON line for a TCP connection (HTTP-only keys are `null`, `response_code` 0).
pub fn json_tcp(out: &mut String, r: &TcpRecord) {
    let mut j = Json::new(out);
    j.time("start_time", r.start_time);
    j.str("route_name", r.route_name.as_deref());
    j.str("method", None);
    j.str("path", None);
    j.str("protocol", None);
    j.num("response_code", 0);
    j.flags(r.flags);
    j.str("response_code_details", None);
    j.str("connection_termination_details", r.connection_termination_details.as_deref());
    j.num("bytes_received", r.bytes_received);
    j.num("bytes_sent", r.bytes_sent);
    j.num("duration", millis(r.duration));
    for k in ["upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority"] {
        j.str(k, None);
    }
    j.addr("upstream_host", r.upstream_host);
    j.str("upstream_cluster", r.upstream_cluster.as_deref());
    j.addr("upstream_local_address", r.upstream_local);
    j.addr("downstream_local_address", Some(r.downstream_local));
    j.addr("downstream_remote_address", Some(r.downstream_remote));
    j.str("requested_server_name", r.sni.as_deref());
    j.str("upstream_transport_failure_reason", r.upstream_transport_failure_reason.as_deref());
    j.end();
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A text value: `-` when absent or empty, control characters escaped.
fn text(out: &mut String, v: Option<&str>) {
    match v {
        None | Some("") => out.push('-'),
        Some(s) if !s.bytes().any(|b| b < 0x20 || b == 0x7f) => out.push_str(s),
        Some(s) => {
            for c in s.chars() {
                if c.is_ascii_control() {
                    push_hex_escape(out, "\\x", c as u32, 2);
                } else {
                    out.push(c);
                }
            }
        }
    }
}

/// An unquoted text value: like [`text`], and spaces become `_` (as Envoy does for response code
/// details) so the line keeps its columns.
fn token(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) if s.contains(' ') => text(out, Some(&s.replace(' ', "_"))),
        v => text(out, v),
    }
}

fn push_hex_escape(out: &mut String, prefix: &str, v: u32, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str(prefix);
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (i * 4)) & 0xf) as usize]));
    }
}

/// `ip:port` (`[v6]:port`) or `-`.
fn push_addr(out: &mut String, a: Option<SocketAddr>) {
    match a {
        None => out.push('-'),
        Some(addr) => match addr.ip() {
            IpAddr::V4(ip) => {
                let mut buf = itoa::Buffer::new();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(buf.format(octet));
                }
                out.push(':');
                out.push_str(buf.format(addr.port()));
            }
            IpAddr::V6(_) => {
                use std::fmt::Write;
                let _ = write!(out, "{addr}");
            }
        },
    }
}

/// `2024-01-02T03:04:05.678Z`: Envoy's default `%START_TIME%` (UTC, milliseconds). Times before
/// the epoch print as the epoch.
pub fn push_time(out: &mut String, t: SystemTime) {
    let u = UtcTime::from(t);
    push_padded(out, u.year, 4);
    out.push('-');
    push_padded(out, u64::from(u.month), 2);
    out.push('-');
    push_padded(out, u64::from(u.day), 2);
    out.push('T');
    push_padded(out, u64::from(u.hour), 2);
    out.push(':');
    push_padded(out, u64::from(u.minute), 2);
    out.push(':');
    push_padded(out, u64::from(u.second), 2);
    out.push('.');
    push_padded(out, u64::from(u.nanos / 1_000_000), 3);
    out.push('Z');
}

/// A time broken down in UTC: the one calendar conversion of the workspace (the access log's
/// `%START_TIME%` and header values' `%START_TIME(…)%`). Times before the epoch are the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: u64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Seconds since the epoch.
    pub epoch_seconds: u64,
}

impl From<SystemTime> for UtcTime {
    fn from(t: SystemTime) -> UtcTime {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (year, month, day) = civil_from_days(secs / 86_400);
        let rem = u32::try_from(secs % 86_400).unwrap_or(0);
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            nanos: d.subsec_nanos(),
            epoch_seconds: secs,
        }
    }
}

/// `v` in decimal, zero-padded to `width` digits.
pub fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let s = buf.format(v);
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(s);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A flat JSON object written straight into a line.
struct Json<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Json<'o> {
    fn new(out: &'o mut String) -> Json<'o> {
        out.push('{');
        Json { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    fn str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        match v {
            None | Some("") => self.out.push_str("null"),
            Some(s) => json_string(self.out, s),
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
    }

    fn time(&mut self, k: &str, t: SystemTime) {
        self.key(k);
        self.out.push('"');
        push_time(self.out, t);
        self.out.push('"');
    }

    fn addr(&mut self, k: &str, a: Option<SocketAddr>) {
        self.key(k);
        match a {
            None => self.out.push_str("null"),
            Some(_) => {
                self.out.push('"');
                push_addr(self.out, a);
                self.out.push('"');
            }
        }
    }

    fn flags(&mut self, flags: ResponseFlags) {
        self.key("response_flags");
        self.out.push('"');
        flags.write_to(self.out);
        self.out.push('"');
    }

    fn end(self) {
        self.out.push_str("}\n");
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => push_hex_escape(out, "\\u", c as u32, 4),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: u64, ms: u64) -> String {
        let mut s = String::new();
        push_time(&mut s, SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms));
        s
    }

    #[test]
    fn start_time_like_envoy() {
        assert_eq!(time(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(1_704_164_645, 678), "2024-01-02T03:04:05.678Z");
        assert_eq!(time(951_782_400, 1), "2000-02-29T00:00:00.001Z"); // leap day
        assert_eq!(time(1_606_339_578, 409), "2020-11-25T21:26:18.409Z"); // Istio's doc example
        assert_eq!(time(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
        // Every day of 1999–2001 against a naive day walk.
        let mut days = 10_592u64; // 1999-01-01
        for year in 1999..=2001u64 {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let lengths = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            for (m, len) in lengths.iter().enumerate() {
                for d in 1..=*len {
                    assert_eq!(civil_from_days(days), (year, m as u32 + 1, d));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn values_are_escaped() {
        let mut s = String::new();
        text(&mut s, Some("a\nb\u{7f}"));
        assert_eq!(s, "a\\x0ab\\x7f");
        s.clear();
        token(&mut s, Some("a b\tc"));
        assert_eq!(s, "a_b\\x09c");
        s.clear();
        json_string(&mut s, "q\"b\\\u{1}é");
        assert_eq!(s, "\"q\\\"b\\\\\\u0001é\"");
        s.clear();
        push_addr(&mut s, Some("[::1]:8080".parse().unwrap_or_else(|_| unreachable!())));
        assert_eq!(s, "[::1]:8080");
    }
}
