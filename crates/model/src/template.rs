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
    /// `START_TIME`, its strftime-style format compiled into items.
    StartTime(Vec<TimeItem>),
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
        ("START_TIME", a) => Part::StartTime(time_format(a.filter(|f| !f.is_empty()).unwrap_or(DEFAULT_TIME_FORMAT))),
        ("UPSTREAM_HOST", None) => Part::UpstreamHost,
        ("HOSTNAME", None) => Part::Hostname,
        ("PROTOCOL", None) => Part::Protocol,
        _ => return None,
    })
}

/// One piece of a compiled `%START_TIME(…)%` format (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeItem {
    Literal(String),
    /// `%Y`: four digits.
    Year,
    /// `%m`.
    Month,
    /// `%d`.
    Day,
    /// `%H`.
    Hour,
    /// `%M`.
    Minute,
    /// `%S`, or `%E<n>S` for an `n` other than 3, 6, 9.
    Second,
    /// `%E3S`, `%E6S`, `%E9S`: seconds with that many fractional digits.
    SecondWithFraction(u8),
    /// `%s`: seconds since the epoch.
    EpochSeconds,
}

/// Envoy's default `%START_TIME%` format.
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

/// Envoy's `START_TIME` specifiers `%Y %m %d %H %M %S %s %E3S %E6S %E9S %%`; any other
/// character, and an unknown specifier, is copied as it is.
pub fn time_format(fmt: &str) -> Vec<TimeItem> {
    let mut items = Vec::new();
    let mut lit = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        let item = match chars.next() {
            Some('Y') => TimeItem::Year,
            Some('m') => TimeItem::Month,
            Some('d') => TimeItem::Day,
            Some('H') => TimeItem::Hour,
            Some('M') => TimeItem::Minute,
            Some('S') => TimeItem::Second,
            Some('s') => TimeItem::EpochSeconds,
            Some('E') => {
                let digits: String = chars.by_ref().take_while(|c| *c != 'S').collect();
                match digits.as_str() {
                    "3" => TimeItem::SecondWithFraction(3),
                    "6" => TimeItem::SecondWithFraction(6),
                    "9" => TimeItem::SecondWithFraction(9),
                    _ => TimeItem::Second,
                }
            }
            Some('%') | None => {
                lit.push('%');
                continue;
            }
            Some(other) => {
                lit.push('%');
                lit.push(other);
                continue;
            }
        };
        if !lit.is_empty() {
            items.push(TimeItem::Literal(std::mem::take(&mut lit)));
        }
        items.push(item);
    }
    if !lit.is_empty() {
        items.push(TimeItem::Literal(lit));
    }
    items
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
        use TimeItem::*;
        assert_eq!(t.parts, vec![Part::StartTime(vec![Year, Literal("-".into()), Month, Literal("-".into()), Day])]);
        let t = HeaderValueTemplate::parse("%START_TIME%");
        assert_eq!(t.parts, vec![Part::StartTime(time_format(DEFAULT_TIME_FORMAT))]);
        assert_eq!(
            time_format("%E6S|%E2S|%q|%%|%s"),
            vec![SecondWithFraction(6), Literal("|".into()), Second, Literal("|%q|%|".into()), EpochSeconds]
        );
        let t = HeaderValueTemplate::parse("%NOPE% and 5%");
        assert_eq!(t.parts, vec![Part::Literal("%NOPE% and 5%".into())]);
        assert_eq!(t.unknown, vec!["NOPE".to_string()]);
        assert!(HeaderValueTemplate::parse("plain").is_literal());
        assert_eq!(HeaderValueTemplate::parse("%%").parts, vec![Part::Literal("%".into())]);
    }
}
