//! Precompiled request matchers (Istio's `HTTPMatchRequest`, `StringMatch`).

use regex::Regex;
use serde::{Serialize, Serializer};
use std::fmt;

/// A regex compiled as Istio/Envoy use RE2: anchored, full match (`^(?:…)$`).
#[derive(Clone)]
pub struct Re {
    pub source: String,
    pub regex: Regex,
}

impl Re {
    /// Compile with RE2's limits: Rust `regex` has no look-around or back-references, like RE2.
    pub fn new(source: &str) -> Result<Re, regex::Error> {
        let regex =
            regex::RegexBuilder::new(&format!("^(?:{source})$")).size_limit(1 << 20).dfa_size_limit(1 << 20).build()?;
        Ok(Re { source: source.to_string(), regex })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl fmt::Debug for Re {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Re({:?})", self.source)
    }
}

impl Serialize for Re {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(Re),
    /// The value only has to be present (Istio: an empty `StringMatch`, or an empty prefix).
    Present,
}

impl StrMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == e,
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(value),
            StrMatch::Present => true,
        }
    }

    /// ASCII case-insensitive for exact and prefix (Envoy's `ignore_case`); regexes as written.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => {
                value.len() >= p.len() && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            other => other.matches(value),
        }
    }
}

/// Read access to request headers, by lowercase name. Multiple values are joined with `,`
/// by the implementor when it has them (Envoy's behaviour for header matching).
pub trait HeaderLookup {
    fn header(&self, name: &str) -> Option<&str>;
}

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// `Host` / `:authority` as sent.
    pub authority: &'a str,
    /// Normalized path without the query.
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    /// The Gateway port the request arrived on.
    pub port: u32,
    pub headers: &'a dyn HeaderLookup,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestMatch {
    pub name: Option<String>,
    pub uri: Option<StrMatch>,
    pub ignore_uri_case: bool,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    /// Lowercase header name → match; all must match.
    pub headers: Vec<(String, StrMatch)>,
    /// All must NOT match; a missing header counts as not matching (so it passes).
    pub without_headers: Vec<(String, StrMatch)>,
    pub query_params: Vec<(String, StrMatch)>,
    pub port: Option<u32>,
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(p) = self.port {
            if p != req.port {
                return false;
            }
        }
        if let Some(m) = &self.uri {
            let ok = if self.ignore_uri_case { m.matches_ignore_case(req.path) } else { m.matches(req.path) };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        for (name, m) in &self.headers {
            match req.headers.header(name) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        for (name, m) in &self.without_headers {
            if let Some(v) = req.headers.header(name) {
                if m.matches(v) {
                    return false;
                }
            }
        }
        for (name, m) in &self.query_params {
            match query_param(req.query, name) {
                Some(v) if m.matches(v) => {}
                _ => return false,
            }
        }
        true
    }

    /// True when this match accepts every request (no conditions).
    pub fn is_catch_all(&self) -> bool {
        let uri_all = match &self.uri {
            None => true,
            Some(StrMatch::Prefix(p)) => p == "/" || p.is_empty(),
            Some(StrMatch::Regex(r)) => r.source == ".*",
            _ => false,
        };
        uri_all
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }
}

/// The first value of query parameter `name` (no percent-decoding, as Envoy matches raw values).
/// A parameter without `=` has the empty value.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct H(HashMap<&'static str, &'static str>);
    impl HeaderLookup for H {
        fn header(&self, name: &str) -> Option<&str> {
            self.0.get(name).copied()
        }
    }

    fn view<'a>(path: &'a str, query: Option<&'a str>, h: &'a H) -> RequestView<'a> {
        RequestView { method: "GET", scheme: "http", authority: "a.example.com", path, query, port: 80, headers: h }
    }

    #[test]
    fn regex_is_full_match() {
        let r = Re::new("/api/v[0-9]+").unwrap();
        assert!(r.is_match("/api/v12"));
        assert!(!r.is_match("/api/v12/x"));
        assert!(!r.is_match("x/api/v1"));
        assert!(Re::new("(?=x)").is_err(), "look-ahead is not RE2");
    }

    #[test]
    fn without_headers_missing_header_passes() {
        let m = RequestMatch {
            without_headers: vec![("x-canary".into(), StrMatch::Exact("1".into()))],
            ..Default::default()
        };
        let none = H(HashMap::new());
        assert!(m.matches(&view("/", None, &none)));
        let yes = H(HashMap::from([("x-canary", "1")]));
        assert!(!m.matches(&view("/", None, &yes)));
        let other = H(HashMap::from([("x-canary", "2")]));
        assert!(m.matches(&view("/", None, &other)));
    }

    #[test]
    fn headers_presence_and_ignore_case() {
        let m = RequestMatch {
            uri: Some(StrMatch::Prefix("/Reviews".into())),
            ignore_uri_case: true,
            headers: vec![("x-user".into(), StrMatch::Present)],
            ..Default::default()
        };
        let h = H(HashMap::from([("x-user", "")]));
        assert!(m.matches(&view("/reviews/1", None, &h)));
        assert!(!m.matches(&view("/ratings", None, &h)));
        let none = H(HashMap::new());
        assert!(!m.matches(&view("/reviews", None, &none)));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&b=&c"), "b"), Some(""));
        assert_eq!(query_param(Some("a=1&b=&c"), "c"), Some(""));
        assert_eq!(query_param(Some("a=1&b=&c"), "a"), Some("1"));
        assert_eq!(query_param(Some("a=1"), "z"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
