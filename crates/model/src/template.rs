//! Header value templates: Envoy's `%VAR%` substitutions in `headers.*.set/add` values, parsed
//! once at compile time so the data plane only fills them in.
//!
//! Supported: `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`,
//! `%DOWNSTREAM_LOCAL_ADDRESS%`, `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`, `%REQ(name)%`
//! (`%REQ(a?b)%`: `a`, else `b`), `%START_TIME%` / `%START_TIME(format)%`, `%UPSTREAM_HOST%`,
//! `%HOSTNAME%`, `%PROTOCOL%`, and `%%` for a literal `%`. Anything else stays literal text and
//! [`HeaderValueTemplate::unknown`] names it (the compiler warns).

use serde::{Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    /// Header names to try in order (`REQ(a?b)`), lowercased.
    Req(Vec<String>),
    /// `START_TIME` with an optional strftime-style format.
    StartTime(Option<String>),
    UpstreamHost,
    Hostname,
    Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderValueTemplate {
    pub raw: String,
    pub parts: Vec<Part>,
    /// `%NAME%` variables we do not know (kept as literal text).
    pub unknown: Vec<String>,
}

impl Serialize for HeaderValueTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl From<&str> for HeaderValueTemplate {
    fn from(s: &str) -> Self {
        HeaderValueTemplate::parse(s)
    }
}

impl From<String> for HeaderValueTemplate {
    fn from(s: String) -> Self {
        HeaderValueTemplate::parse(&s)
    }
}

impl HeaderValueTemplate {
    /// No variable: the value is `raw` as is.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Reads request headers (so a response-side rule needs them kept).
    pub fn uses_request(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Req(_)))
    }

    pub fn parse(raw: &str) -> HeaderValueTemplate {
        let mut parts = Vec::new();
        let mut unknown = Vec::new();
        let mut lit = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            // A variable runs to the next `%` that is not inside parentheses.
            let mut depth = 0usize;
            let end = after.char_indices().find_map(|(j, c)| match c {
                '(' => {
                    depth += 1;
                    None
                }
                ')' => {
                    depth = depth.saturating_sub(1);
                    None
                }
                '%' if depth == 0 => Some(j),
                _ => None,
            });
            let Some(end) = end else {
                // A lone `%`: literal.
                lit.push('%');
                rest = after;
                continue;
            };
            let var = &after[..end];
            match variable(var) {
                Some(p) => {
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(p);
                }
                None => {
                    unknown.push(var.to_string());
                    lit.push('%');
                    lit.push_str(var);
                    lit.push('%');
                }
            }
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        HeaderValueTemplate { raw: raw.to_string(), parts, unknown }
    }
}

fn variable(v: &str) -> Option<Part> {
    let (name, arg) = match v.find('(') {
        Some(i) if v.ends_with(')') => (&v[..i], Some(&v[i + 1..v.len() - 1])),
        Some(_) => return None,
        None => (v, None),
    };
    Some(match (name, arg) {
        ("DOWNSTREAM_REMOTE_ADDRESS", None) => Part::DownstreamRemoteAddress,
        ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", None) => Part::DownstreamRemoteAddressWithoutPort,
        ("DOWNSTREAM_LOCAL_ADDRESS", None) => Part::DownstreamLocalAddress,
        ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", None) => Part::DownstreamLocalAddressWithoutPort,
        ("REQ", Some(a)) if !a.is_empty() => Part::Req(a.split('?').map(|h| h.trim().to_ascii_lowercase()).collect()),
        ("START_TIME", a) => Part::StartTime(a.filter(|f| !f.is_empty()).map(str::to_string)),
        ("UPSTREAM_HOST", None) => Part::UpstreamHost,
        ("HOSTNAME", None) => Part::Hostname,
        ("PROTOCOL", None) => Part::Protocol,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variables_escapes_and_unknowns() {
        let t = HeaderValueTemplate::parse("ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% %REQ(X-A?x-b)%");
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("ip=".into()),
                Part::DownstreamRemoteAddressWithoutPort,
                Part::Literal(" 100% ".into()),
                Part::Req(vec!["x-a".into(), "x-b".into()]),
            ]
        );
        assert!(t.uses_request() && !t.is_literal());
        let t = HeaderValueTemplate::parse("%START_TIME(%Y-%m-%d)%");
        assert_eq!(t.parts, vec![Part::StartTime(Some("%Y-%m-%d".into()))]);
        let t = HeaderValueTemplate::parse("%NOPE% and 5%");
        assert_eq!(t.parts, vec![Part::Literal("%NOPE% and 5%".into())]);
        assert_eq!(t.unknown, vec!["NOPE".to_string()]);
        assert!(HeaderValueTemplate::parse("plain").is_literal());
        assert_eq!(HeaderValueTemplate::parse("%%").parts, vec![Part::Literal("%".into())]);
    }
}
