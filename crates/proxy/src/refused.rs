//! Requests refused below hyper (by [`crate::guard`]) reach the access log and the request
//! metrics like any other: a user graphing 4xx sees smuggling attempts and oversized heads.
//! Envoy logs such a request with its local reply's code and the `DPE` (downstream protocol
//! error) flag, and a head too slow to arrive with 408 and no flag. This module is the one
//! place that builds their [`RequestRecord`].

use crate::downstream::ConnInfo;
use crate::guard::Reject;
use crate::log::{AccessLogSink, RequestRecord};
use crate::ResponseFlags;
use http::{HeaderValue, Method, Uri, Version};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a refused request is logged with: the sink and its connection's facts.
pub(crate) struct Refusals {
    sink: Arc<dyn AccessLogSink>,
    conn: Arc<ConnInfo>,
}

/// What could be read of a refused head (its request line and a few headers), for the log only.
#[derive(Default)]
struct HeadFacts<'a> {
    method: Option<&'a [u8]>,
    target: Option<&'a [u8]>,
    http10: bool,
    host: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    request_id: Option<&'a [u8]>,
}

/// Read what can be read of `head` (possibly cut short, possibly malformed).
fn facts(head: &[u8]) -> HeadFacts<'_> {
    let mut f = HeadFacts::default();
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut parts = lines.next().unwrap_or_default().splitn(3, |&b| b == b' ');
    f.method = parts.next().filter(|m| !m.is_empty());
    f.target = parts.next().filter(|t| !t.is_empty());
    f.http10 = parts.next() == Some(b"HTTP/1.0");
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let slot = if name.eq_ignore_ascii_case(b"host") {
            &mut f.host
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            &mut f.user_agent
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            &mut f.request_id
        } else {
            continue;
        };
        slot.get_or_insert(value);
    }
    f
}

impl Reject {
    /// The status the refusal is answered with.
    pub(crate) fn status(self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::UriTooLong => 414,
            Reject::HeadersTooLarge => 431,
            Reject::HeadTimeout => 408,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for it (HTTP/1 codec errors).
    fn details(self) -> &'static str {
        match self {
            Reject::BadRequest(_) => "http1.codec_error",
            Reject::UriTooLong => "http1.uri_too_long",
            Reject::HeadersTooLarge => "http1.headers_too_large",
            Reject::HeadTimeout => "request_header_timeout",
        }
    }

    /// A slow client broke no protocol rule: Envoy's local reply for it carries no flag.
    fn flags(self) -> ResponseFlags {
        match self {
            Reject::HeadTimeout => ResponseFlags::NONE,
            _ => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        }
    }
}

impl Refusals {
    pub(crate) fn new(sink: Arc<dyn AccessLogSink>, conn: Arc<ConnInfo>) -> Refusals {
        Refusals { sink, conn }
    }

    /// Log one refused request: `head` is what was read of it, `sent` the answer's body bytes
    /// written (0 if the client was gone first, which also sets `DC`), `took` from the refusal
    /// to the end of the answer.
    pub(crate) fn log(&self, reject: Reject, head: &[u8], sent: u64, took: Duration) {
        let f = facts(head);
        let value = |v: Option<&[u8]>| v.and_then(|v| HeaderValue::from_bytes(v).ok());
        let mut flags = reject.flags();
        if sent == 0 {
            flags.insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        let record = RequestRecord {
            start_time: SystemTime::now().checked_sub(took).unwrap_or_else(SystemTime::now),
            duration: took,
            downstream_remote: self.conn.peer,
            downstream_local: self.conn.local,
            gateway_port: self.conn.gateway_port,
            // Envoy logs `-` for what it could not parse; `-` is a valid method token.
            method: f.method.and_then(|m| Method::from_bytes(m).ok()).unwrap_or_else(dash),
            // A URI too long is not repeated in full; one that does not parse is logged as `/`.
            uri: f
                .target
                .filter(|_| reject != Reject::UriTooLong)
                .and_then(|t| Uri::try_from(t).ok())
                .unwrap_or_else(|| Uri::from_static("/")),
            authority: value(f.host),
            protocol: if f.http10 { Version::HTTP_10 } else { Version::HTTP_11 },
            status: reject.status(),
            flags,
            details: reject.details(),
            sni: self.conn.tls.as_ref().and_then(|t| t.sni.clone()),
            request_id: value(f.request_id),
            bytes_sent: sent,
            user_agent: value(f.user_agent),
            ..RequestRecord::default()
        };
        self.sink.log(&record);
    }
}

fn dash() -> Method {
    Method::from_bytes(b"-").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_cut_or_malformed_head() {
        let f = facts(b"POST /a?b HTTP/1.0\r\nHost: h\r\nUser-Agent: curl\r\nTransfer-Encoding: xchunked\r\n\r\n");
        assert_eq!((f.method, f.target, f.http10), (Some(&b"POST"[..]), Some(&b"/a?b"[..]), true));
        assert_eq!((f.host, f.user_agent), (Some(&b"h"[..]), Some(&b"curl"[..])));
        let f = facts(b"GET /aaaa");
        assert_eq!((f.method, f.target, f.host), (Some(&b"GET"[..]), Some(&b"/aaaa"[..]), None));
        assert!(facts(b"").method.is_none());
        assert_eq!(dash().as_str(), "-");
    }
}
