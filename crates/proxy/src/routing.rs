//! Glue between a request and the snapshot's routing types: header lookup for matchers,
//! redirects, path/authority rewrites.

use http::HeaderMap;
use portico_model::matcher::{HeaderLookup, StrMatch};
use portico_model::snapshot::{strip_port, Redirect, Route};

/// Request headers as matchers see them: by lowercase name, several values joined with `,`
/// (Envoy), plus the pseudo-headers `:authority`, `:method`, `:path`, `:scheme`.
pub(crate) struct RequestHeaders<'a> {
    pub map: &'a HeaderMap,
    pub authority: &'a str,
    pub method: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub scheme: &'a str,
    /// Joined values of multi-valued headers; empty unless some header repeats.
    joined: Vec<(&'a str, String)>,
}

impl<'a> RequestHeaders<'a> {
    pub(crate) fn new(map: &'a HeaderMap, authority: &'a str, method: &'a str, path: &'a str) -> Self {
        let mut joined = Vec::new();
        if map.len() != map.keys_len() {
            for name in map.keys() {
                let mut values = map.get_all(name).iter();
                if let (Some(first), Some(_)) = (values.next(), values.next()) {
                    let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
                    for v in map.get_all(name).iter().skip(1) {
                        s.push(',');
                        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    }
                    joined.push((name.as_str(), s));
                }
            }
        }
        RequestHeaders { map, authority, method, path, scheme: "http", joined }
    }
}

impl HeaderLookup for RequestHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        if let Some(pseudo) = name.strip_prefix(':') {
            return match pseudo {
                "authority" => Some(self.authority),
                "method" => Some(self.method),
                "path" => Some(self.path),
                "scheme" => Some(self.scheme),
                _ => None,
            };
        }
        if !self.joined.is_empty() {
            if let Some((_, v)) = self.joined.iter().find(|(n, _)| *n == name) {
                return Some(v.as_str());
            }
        }
        self.map.get(name).and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }
}

/// `host:port` → (`host`, `Some(port)`).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host = strip_port(authority);
    let port = authority.get(host.len() + 1..).filter(|p| !p.is_empty());
    (host, port)
}

fn default_port(scheme: &str) -> Option<&'static str> {
    if scheme.eq_ignore_ascii_case("http") {
        Some("80")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some("443")
    } else {
        None
    }
}

/// The `Location` of an Istio `HTTPRedirect` (Envoy's redirect action): scheme, authority, port
/// and path replaced as configured; the query is kept unless the new path carries its own.
/// A port that is the default of the new scheme is left out.
pub(crate) fn redirect_location(
    r: &Redirect,
    scheme: &str,
    authority: &str,
    path: &str,
    query: Option<&str>,
    gateway_port: u32,
) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (req_host, req_port) = split_port(authority);
    let (host, mut port): (&str, Option<String>) = match &r.authority {
        Some(a) => {
            let (h, p) = split_port(a);
            (h, p.map(str::to_string))
        }
        None => (req_host, req_port.map(str::to_string)),
    };
    if let Some(p) = r.port {
        port = Some(p.to_string());
    } else if r.port_from_request {
        port = Some(req_port.map_or_else(|| gateway_port.to_string(), str::to_string));
    } else if !new_scheme.eq_ignore_ascii_case(scheme) && port.as_deref() == default_port(scheme) {
        // Scheme changed (e.g. http → https): the old scheme's default port no longer applies.
        port = None;
    }
    if port.is_some() && port.as_deref() == default_port(new_scheme) {
        port = None;
    }
    // `%PREFIX(N)%/new/`: replace the first N bytes of the path (the matched prefix), the way
    // Istio carries a Gateway API `ReplacePrefixMatch` redirect.
    let prefixed: Option<String> = r.uri.as_deref().and_then(|u| {
        let rest = u.strip_prefix("%PREFIX(")?;
        let (n, repl) = rest.split_once(")%")?;
        let n: usize = n.parse().ok()?;
        let tail = path.get(n.min(path.len())..).unwrap_or("");
        Some(format!("{repl}{tail}"))
    });
    let (new_path, new_query) = match (&prefixed, &r.uri) {
        (Some(p), _) => (p.as_str(), query),
        (None, Some(u)) => match u.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (u.as_str(), query),
        },
        (None, None) => (path, query),
    };
    let mut s = String::with_capacity(new_scheme.len() + host.len() + new_path.len() + 16);
    s.push_str(new_scheme);
    s.push_str("://");
    s.push_str(host);
    if let Some(p) = port {
        s.push(':');
        s.push_str(&p);
    }
    s.push_str(new_path);
    if let Some(q) = new_query.filter(|q| !q.is_empty()) {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// The forwarded path after `rewrite.uri` / `rewrite.uriRegexRewrite`, or `None` to keep it.
/// `uri` replaces the matched prefix for prefix matches and the whole path for exact and regex
/// matches (Envoy `prefix_rewrite`); a route without a uri match counts as prefix `/`.
pub(crate) fn rewrite_path(route: &Route, match_index: Option<usize>, path: &str) -> Option<String> {
    let rw = route.rewrite.as_ref()?;
    if let Some(uri) = &rw.uri {
        let m = match_index.and_then(|i| route.matches.get(i)).and_then(|m| m.uri.as_ref());
        let prefix_len = match m {
            Some(StrMatch::Prefix(p)) => p.len(),
            Some(StrMatch::Exact(_)) | Some(StrMatch::Regex(_)) => path.len(),
            Some(StrMatch::Present) | None => 1,
        };
        let rest = path.get(prefix_len.min(path.len())..).unwrap_or("");
        let mut s = String::with_capacity(uri.len() + rest.len());
        s.push_str(uri);
        s.push_str(rest);
        if s.is_empty() {
            s.push('/');
        }
        return Some(s);
    }
    if let Some((re, sub)) = &rw.uri_regex {
        // Envoy/RE2 substitutions use `\1`; the regex crate uses `${1}`.
        let sub = regex_substitution(sub);
        let out = re.regex.replace_all(path, sub.as_str()).into_owned();
        return Some(if out.starts_with('/') { out } else { format!("/{out}") });
    }
    None
}

fn regex_substitution(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len() + 4);
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(uri: Option<&str>, authority: Option<&str>, scheme: Option<&str>, port: Option<u16>) -> Redirect {
        Redirect {
            uri: uri.map(Into::into),
            authority: authority.map(Into::into),
            port,
            port_from_request: false,
            scheme: scheme.map(Into::into),
            code: 301,
        }
    }

    #[test]
    fn redirects() {
        let r = redirect(None, None, Some("https"), None);
        assert_eq!(redirect_location(&r, "http", "a.com", "/x", Some("q=1"), 80), "https://a.com/x?q=1");
        assert_eq!(redirect_location(&r, "http", "a.com:80", "/x", None, 80), "https://a.com/x");
        assert_eq!(redirect_location(&r, "http", "a.com:8080", "/x", None, 80), "https://a.com:8080/x");
        let r = redirect(Some("/new"), Some("b.com"), None, None);
        assert_eq!(redirect_location(&r, "http", "a.com:8080", "/old", Some("k=v"), 80), "http://b.com/new?k=v");
        let r = redirect(Some("/new?z=1"), None, None, Some(9000));
        assert_eq!(redirect_location(&r, "http", "a.com", "/old", Some("k=v"), 80), "http://a.com:9000/new?z=1");
        let mut r = redirect(None, Some("b.com"), None, None);
        r.port_from_request = true;
        assert_eq!(redirect_location(&r, "http", "a.com", "/", None, 8080), "http://b.com:8080/");
        let r = redirect(Some("%PREFIX(5)%/new/"), None, None, None);
        assert_eq!(redirect_location(&r, "http", "a.com", "/old/x/y", Some("q"), 80), "http://a.com/new/x/y?q");
    }

    #[test]
    fn substitutions() {
        assert_eq!(regex_substitution(r"/v2/\1/\12"), "/v2/${1}/${12}");
        assert_eq!(regex_substitution("/a$b"), "/a$$b");
    }
}
