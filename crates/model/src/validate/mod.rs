//! Istio's admission-webhook validation, one resource at a time.
//!
//! The rules follow Istio's `pkg/config/validation` (the webhook) plus the CEL/OpenAPI rules of
//! Istio's CRDs (what the Kubernetes API server rejects before the webhook runs). An error here
//! means Istio would refuse the object, so the compiler drops it; a warning is what Istio's
//! webhook returns as a warning (the object is kept). Where Istio accepts something that Envoy
//! then rejects, we say so in a comment and follow what the proxy can actually serve.
//!
//! Cross-resource analysis (missing gateways, hosts, subsets…) is not here: see `analyze/`.

mod destination_rule;
mod gateway;
mod service_entry;
mod virtual_service;

#[cfg(test)]
mod tests;

use crate::matcher::Re;
use portico_api::diag::code;
use portico_api::istio::{HeaderOperations, Headers, StringMatch};
use portico_api::{Diagnostic, Resource, Spec};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Every problem Istio's webhook would reject (errors) or warn about (warnings).
pub fn validate(res: &Resource) -> Vec<Diagnostic> {
    let mut cx = Cx { res, key: res.key(), out: Vec::new() };
    metadata(&mut cx);
    match &*res.spec {
        Spec::Gateway(g) => gateway::validate(&mut cx, g),
        Spec::VirtualService(vs) => virtual_service::validate(&mut cx, vs),
        Spec::DestinationRule(dr) => destination_rule::validate(&mut cx, dr),
        Spec::ServiceEntry(se) => service_entry::validate(&mut cx, se),
        Spec::Secret(_) | Spec::Ingress(_) | Spec::Namespace | Spec::Service(_) => {}
        // The Gateway API kinds: their CRDs' rules live with their translation.
        _ => cx.out.extend(crate::gateway_api::validate::validate(res)),
    }
    cx.out
}

/// A field path under construction: its text is written only when a diagnostic prints it, so
/// validating a valid object allocates no paths (thousands of VirtualServices are checked at
/// every reload).
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    parent: &'a dyn fmt::Display,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    FieldIndex(&'a str, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parent.fmt(f)?;
        match self.seg {
            Seg::Field(name) => write!(f, ".{name}"),
            Seg::Index(i) => write!(f, "[{i}]"),
            Seg::FieldIndex(name, i) => write!(f, ".{name}[{i}]"),
        }
    }
}

/// `path.name`
pub(super) fn dot<'a>(path: &'a dyn fmt::Display, name: &'a str) -> At<'a> {
    At { parent: path, seg: Seg::Field(name) }
}

/// `path[i]`
pub(super) fn idx(path: &dyn fmt::Display, i: usize) -> At<'_> {
    At { parent: path, seg: Seg::Index(i) }
}

/// `path.name[i]`
pub(super) fn dot_ix<'a>(path: &'a dyn fmt::Display, name: &'a str, i: usize) -> At<'a> {
    At { parent: path, seg: Seg::FieldIndex(name, i) }
}

/// Collects the findings about one resource. Paths are relative to the object root
/// (`spec.http[0].route[1].weight`), as the loader's field index records them.
pub(super) struct Cx<'r> {
    res: &'r Resource,
    key: String,
    out: Vec<Diagnostic>,
}

impl Cx<'_> {
    pub(super) fn namespace(&self) -> &str {
        self.res.namespace()
    }

    pub(super) fn error(&mut self, path: &dyn fmt::Display, msg: impl fmt::Display) {
        let path = path.to_string();
        let d =
            Diagnostic::error(self.res.origin.locate(&path), code::SCHEMA, self.key.clone(), format!("{path}: {msg}"));
        self.out.push(d);
    }

    pub(super) fn warning(&mut self, path: &dyn fmt::Display, msg: impl fmt::Display) {
        let path = path.to_string();
        let d = Diagnostic::warning(
            self.res.origin.locate(&path),
            code::SCHEMA_WARNING,
            self.key.clone(),
            format!("{path}: {msg}"),
        );
        self.out.push(d);
    }

    /// Report `r`'s error, if any, at `path`.
    pub(super) fn check(&mut self, path: &dyn fmt::Display, r: Result<(), String>) {
        if let Err(e) = r {
            self.error(path, e);
        }
    }

    /// An optional duration: when set, it must parse and be ≥ 1ms with millisecond precision.
    pub(super) fn duration(&mut self, path: &dyn fmt::Display, value: &Option<String>) {
        if let Some(v) = value {
            self.check(path, validate_duration(v).map(|_| ()));
        }
    }

    pub(super) fn port(&mut self, path: &dyn fmt::Display, number: u32) {
        self.check(path, validate_port(i64::from(number)));
    }

    pub(super) fn labels(&mut self, path: &dyn fmt::Display, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            for e in validate_label(k, v) {
                self.error(&dot(&path, k), e);
            }
        }
    }

    /// Istio's `validateStringMatch`: one match type; `prefix` non-empty unless `empty_prefix_ok`
    /// (Envoy allows an empty prefix only on paths); regexes compile as RE2 and are ≤ 1024 bytes.
    pub(super) fn string_match(&mut self, path: &dyn fmt::Display, sm: &StringMatch, empty_prefix_ok: bool) {
        let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()].iter().filter(|b| **b).count();
        if set > 1 {
            self.error(path, "set only one of `exact`, `prefix` or `regex`");
        }
        if !empty_prefix_ok && sm.prefix.as_deref() == Some("") {
            self.error(&dot(&path, "prefix"), "prefix match must not be empty (an empty match `{}` matches any value)");
        }
        if let Some(re) = &sm.regex {
            let checked = validate_regex(re);
            if let Err(problem) = &checked {
                self.invalid_regexp(path, re, problem);
            }
            self.check(&dot(&path, "regex"), checked);
        }
    }

    /// IST0122, Istio's `RegexAnalyzer` (VirtualServices only): said beside the schema error,
    /// as istioctl reports both.
    fn invalid_regexp(&mut self, path: &dyn fmt::Display, re: &str, problem: &str) {
        if self.res.kind() != portico_api::Kind::VirtualService {
            return;
        }
        let path = path.to_string();
        let field = if path.contains(".corsPolicy.allowOrigins") {
            "corsPolicy.allowOrigins"
        } else {
            let after = path.rsplit_once("].").map(|(_, a)| a).unwrap_or(&path);
            after.split('.').next().unwrap_or(after)
        };
        let d = Diagnostic::warning(
            self.res.origin.locate(&format!("{path}.regex")),
            code::INVALID_REGEXP,
            self.key.clone(),
            format!("Field {field:?} regular expression invalid: {re:?} ({problem})"),
        );
        self.out.push(d);
    }

    /// Header manipulation (Istio's `ValidateHTTPHeader*OperationName` and `ValidateHTTPHeaderValue`).
    pub(super) fn headers(&mut self, path: &dyn fmt::Display, headers: &Option<Headers>) {
        let Some(h) = headers else { return };
        if let Some(req) = &h.request {
            self.header_ops(&dot(&path, "request"), req, true);
        }
        if let Some(resp) = &h.response {
            self.header_ops(&dot(&path, "response"), resp, false);
        }
    }

    fn header_ops(&mut self, path: &dyn fmt::Display, ops: &HeaderOperations, request: bool) {
        for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let p = format!("{path}.{field}.{name}");
                let name_ok = if request { header_op_name_allowing_authority(name) } else { header_op_name(name) };
                self.check(&p, name_ok);
                self.check(&p, validate_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            self.check(&dot_ix(&path, "remove", i), header_op_name(name));
        }
    }
}

/// `metadata`: Kubernetes names (a DNS-1123 subdomain; Istio's Gateway additionally a label),
/// namespaces (a DNS-1123 label) and Istio's annotation checks.
fn metadata(cx: &mut Cx<'_>) {
    let name = cx.res.meta.name.clone();
    if !name.is_empty() && !is_k8s_subdomain(&name) {
        cx.error(
            &"metadata.name",
            format!(
                "invalid name {name:?}: must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and \
                 '.', starting and ending with a letter or digit, at most 253 characters)"
            ),
        );
    } else if cx.res.kind() == portico_api::Kind::Gateway && !is_dns1123_label(&name) && !name.is_empty() {
        cx.error(
            &"metadata.name",
            format!("invalid gateway name {name:?}: Istio requires a DNS-1123 label (no dots, at most 63 characters)"),
        );
    }
    let ns = cx.res.meta.namespace.clone();
    let ns_ok = is_dns1123_label(&ns) && ns.bytes().all(|b| !b.is_ascii_uppercase());
    if !ns.is_empty() && !ns_ok {
        cx.error(
            &"metadata.namespace",
            format!("invalid namespace {ns:?}: must be a lowercase RFC 1123 label (at most 63 characters)"),
        );
    }
    if cx.res.meta.annotations.contains_key("istio.io/dry-run") {
        cx.error(
            &"metadata.annotations.istio.io/dry-run",
            "unsupported annotation `istio.io/dry-run` (only AuthorizationPolicy supports it): remove it",
        );
    }
}

// ───────────────────────────── names and hosts ─────────────────────────────

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters (Istio's `IsDNS1123Label`,
/// which, unlike Kubernetes, accepts upper case).
pub(super) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Istio's `IsWildcardDNS1123Label`: `*`, or a label optionally prefixed by `*` or `*-`.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

/// Kubernetes object names: a lowercase DNS-1123 subdomain, at most 253 characters.
fn is_k8s_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns1123_label(l) && l.bytes().all(|b| !b.is_ascii_uppercase()))
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} is too long ({} characters, max 255)", name.len()));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn label_problem(domain: &str, label: &str) -> String {
    if label.contains('*') {
        format!("wildcard must be the whole left-most label (\"*.example.com\"), got {domain:?}")
    } else if label.is_empty() {
        format!("invalid domain name {domain:?}: empty label (two dots in a row, or a leading dot)")
    } else if label.len() > 63 {
        format!("invalid domain name {domain:?}: label {label:?} is longer than 63 characters")
    } else {
        format!(
            "invalid domain name {domain:?}: label {label:?} must consist of letters, digits and '-', starting and \
             ending with a letter or digit"
        )
    }
}

/// Istio's `ValidateDNS1123Labels` on `part` (the whole of `domain`, or what follows its first
/// label): every label valid, the top-level one not all-numeric, a trailing dot allowed.
fn dns1123_labels(domain: &str, part: &str) -> Result<(), String> {
    let parts: Vec<&str> = part.split('.').collect();
    let tld = parts.last().copied().unwrap_or("");
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid domain name {domain:?}: the top-level label {tld:?} cannot be all-numeric"));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(label_problem(domain, label));
        }
    }
    Ok(())
}

/// A fully-qualified domain name, no wildcards (Istio's `ValidateFQDN`).
pub(super) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    dns1123_preconditions(fqdn)?;
    dns1123_labels(fqdn, fqdn)
}

/// A domain name whose first label may be a wildcard (Istio's `ValidateWildcardDomain`).
pub(super) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(label_problem(domain, first));
    }
    match rest {
        Some(r) => dns1123_labels(domain, r),
        None => Ok(()),
    }
}

/// Istio's `ValidatePartialWildCard`: `*` anywhere but as a whole left-most label.
pub(super) fn partial_wildcard(host: &str) -> Result<(), String> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(format!(
            "partial wildcard {host:?}: a wildcard must be the whole left-most label (\"*.example.com\")"
        ));
    }
    Ok(())
}

pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or a CIDR block (Istio's `ValidateIPSubnet`).
pub(super) fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        let (addr, bits) = s.split_once('/').unwrap_or((s, ""));
        let max = match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return Err(format!("{s:?} is not a valid CIDR block")),
        };
        let ok = !bits.is_empty()
            && bits.bytes().all(|b| b.is_ascii_digit())
            && !(bits.len() > 1 && bits.starts_with('0'))
            && bits.parse::<u32>().is_ok_and(|n| n <= max);
        return if ok { Ok(()) } else { Err(format!("{s:?} is not a valid CIDR block")) };
    }
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid IP address"))
    }
}

pub(super) fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// A unix domain socket path (after `unix://`): absolute, not a directory, or `@abstract`.
pub(super) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr:?} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istio's `ValidateDuration`: parses (Go or protobuf syntax), at least 1ms, millisecond precision.
pub(super) fn validate_duration(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration `{s}` is too short: it must be at least 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("duration `{s}` is finer than 1ms: only millisecond precision is supported"));
    }
    Ok(d)
}

/// An RE2 regex as Istio accepts it: at most 1024 bytes (Envoy's program-size limit, approximated
/// by length as Istio does) and valid RE2 syntax (Rust's `regex` rejects look-around like RE2).
pub(super) fn validate_regex(re: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err("regex must not be empty".into());
    }
    if re.len() > 1024 {
        return Err(format!("regex is too large ({} bytes): the maximum is 1024", re.len()));
    }
    Re::new(re).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let detail = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let detail = detail.strip_prefix("error: ").unwrap_or(detail);
        format!("invalid regex {re:?}: {detail}; Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax)")
    })
}

/// Istio's `validatePercentage`: 0, or within [0.0001, 100].
pub(super) fn validate_percentage(value: f64) -> Result<(), String> {
    if value.is_nan() || !(0.0..=100.0).contains(&value) || (value > 0.0 && value < 0.0001) {
        return Err(format!("percentage {value} must be 0 or within [0.0001, 100]"));
    }
    Ok(())
}

pub(super) fn validate_percent_int(value: i64) -> Result<(), String> {
    if (0..=100).contains(&value) {
        Ok(())
    } else {
        Err(format!("percentage {value} is not in range 0..100"))
    }
}

// ───────────────────────────── labels ─────────────────────────────

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, Kubernetes' qualified name.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Istio's `labels.Instance.Validate` for one entry: key `[prefix/]name` (prefix a DNS name of
/// ≤ 253 characters, name a qualified name of ≤ 63); value empty or a qualified name.
pub(super) fn validate_label(key: &str, value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns1123_label));
    if !prefix_ok || !is_qualified_name(name) || name.len() > 63 {
        errs.push(format!(
            "invalid label key {key:?}: must be an optional DNS prefix and '/', then at most 63 letters, digits, \
             '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if !value.is_empty() && !is_qualified_name(value) {
        errs.push(format!(
            "invalid label value {value:?}: must be empty or letters, digits, '-', '_' or '.', starting and ending \
             with a letter or digit"
        ));
    }
    errs
}

// ───────────────────────────── headers ─────────────────────────────

/// `^[-_A-Za-z0-9]+$` (Istio's `ValidateHTTPHeaderName`).
pub(super) fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("{name:?} is not a valid header name (letters, digits, '-' and '_' only)"));
    }
    Ok(())
}

/// `@request.auth.claims.<name>` or `@request.auth.claims[<a>][<b>]`: Istio's JWT claim routing.
pub(super) fn is_jwt_claim_route(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("@request.auth.claims") else { return false };
    if let Some(claim) = rest.strip_prefix('.') {
        return !claim.is_empty();
    }
    let mut r = rest;
    let mut parts = 0;
    while let Some(after) = r.strip_prefix('[') {
        let Some(end) = after.find(']') else { return false };
        if end == 0 {
            return false;
        }
        parts += 1;
        r = &after[end + 1..];
    }
    parts > 0 && r.is_empty()
}

pub(super) fn validate_header_name_or_claim(name: &str) -> Result<(), String> {
    if is_jwt_claim_route(name) {
        return Ok(());
    }
    validate_header_name(name)
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Request `set`/`add`: pseudo-headers are refused, except the authority (`:authority`, `Host`).
fn header_op_name_allowing_authority(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.starts_with(':') && !is_authority_header(name) {
        return Err(format!("invalid header {name:?}: header names cannot start with ':'"));
    }
    Ok(())
}

/// Request `remove` and every response operation: no pseudo-headers, no `Host`.
fn header_op_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: the Host header cannot be changed here"));
    }
    if name.starts_with(':') {
        return Err(format!("invalid header {name:?}: header names cannot start with ':'"));
    }
    Ok(())
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters (tab allowed), and `%` only as
/// `%%` or around an Envoy `%VARIABLE%` / `%VARIABLE(args)%` (a port of Envoy's header parser).
pub(super) fn validate_header_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("header value {value:?} contains control characters"));
    }
    #[derive(PartialEq)]
    enum St {
        Literal,
        VarName,
        ExpectArray,
        ExpectString,
        Str,
        ExpectDelimOrEnd,
        ExpectArgsEnd,
        ExpectVarEnd,
    }
    let b = value.as_bytes();
    let mut st = St::Literal;
    let mut pos = 0;
    let bad = |why: &str| Err(format!("invalid header value {value:?}: {why} (write a literal '%' as '%%')"));
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match st {
            St::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return bad("un-escaped '%'");
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        st = St::VarName;
                    }
                }
            }
            St::VarName => {
                if ch == b'%' {
                    st = St::Literal;
                } else if ch == b'(' {
                    st = St::ExpectArray;
                }
            }
            St::ExpectArray => {
                if ch == b'[' {
                    st = St::ExpectString;
                } else if ch != b' ' {
                    st = St::Str;
                }
            }
            St::ExpectDelimOrEnd => {
                if ch == b',' {
                    st = St::ExpectString;
                } else if ch == b']' {
                    st = St::ExpectArgsEnd;
                } else if ch != b' ' {
                    return bad("expected ',', ']' or a space");
                }
            }
            St::ExpectString => {
                if ch == b'"' {
                    st = St::Str;
                } else if ch != b' ' {
                    return bad("expected '\"'");
                }
            }
            St::Str => {
                if ch == b'\\' {
                    if !has_next {
                        return bad("un-terminated backslash in a JSON string");
                    }
                    pos += 1;
                } else if ch == b')' {
                    st = St::ExpectVarEnd;
                } else if ch == b'"' {
                    st = St::ExpectDelimOrEnd;
                }
            }
            St::ExpectArgsEnd => {
                if ch == b')' {
                    st = St::ExpectVarEnd;
                } else if ch != b' ' {
                    return bad("expected ')'");
                }
            }
            St::ExpectVarEnd => {
                if ch == b'%' {
                    st = St::Literal;
                } else if ch != b' ' {
                    return bad("expected '%' to close the variable");
                }
            }
        }
        pos += 1;
    }
    if st != St::Literal {
        return bad("un-terminated variable expression");
    }
    Ok(())
}

// ───────────────────────────── protocols ─────────────────────────────

/// Istio's `protocol.Instance`, as far as validation needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Proto {
    Http,
    HttpProxy,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Proto {
    /// Case-insensitive, like Istio's `protocol.Parse`.
    pub(super) fn parse(s: &str) -> Option<Proto> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Proto::Http,
            "http_proxy" => Proto::HttpProxy,
            "http2" => Proto::Http2,
            "grpc" => Proto::Grpc,
            "grpc-web" => Proto::GrpcWeb,
            "https" => Proto::Https,
            "tls" => Proto::Tls,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "mongo" => Proto::Mongo,
            "redis" => Proto::Redis,
            "mysql" => Proto::Mysql,
            _ => return None,
        })
    }

    pub(super) fn is_http(self) -> bool {
        matches!(self, Proto::Http | Proto::HttpProxy | Proto::Http2 | Proto::Grpc | Proto::GrpcWeb)
    }

    pub(super) fn is_tls(self) -> bool {
        matches!(self, Proto::Https | Proto::Tls)
    }

    pub(super) fn is_tcp(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Https | Proto::Tls | Proto::Mongo | Proto::Redis | Proto::Mysql)
    }
}

pub(super) const PROTOCOLS: &str = "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, MONGO, REDIS, MYSQL";

// ───────────────────────────── exportTo, selectors ─────────────────────────────

/// Istio's `validateExportTo`.
pub(super) fn export_to(
    cx: &mut Cx<'_>,
    path: &dyn fmt::Display,
    export_to: &[String],
    is_se: bool,
    dr_with_selector: bool,
) {
    if export_to.is_empty() {
        return;
    }
    let ns = cx.namespace().to_string();
    let mut set: Vec<String> = Vec::new();
    for (i, e) in export_to.iter().enumerate() {
        let p = idx(&path, i);
        let key = if e == "." { ns.clone() } else { e.clone() };
        if set.contains(&key) {
            if key != *e {
                cx.error(&p, format!("duplicate entries in exportTo: `.` and the current namespace {ns:?}"));
            } else {
                cx.error(&p, format!("duplicate entry {e:?} in exportTo"));
            }
            continue;
        }
        let valid = match key.as_str() {
            "*" => true,
            "~" => is_se,
            k => is_dns1123_label(k),
        };
        if valid {
            set.push(key);
        } else if key == "~" {
            cx.error(&p, "exportTo `~` (no one) is only allowed on ServiceEntries");
        } else {
            cx.error(&p, format!("invalid exportTo entry {e:?}: use `.`, `*` or a namespace name (a DNS-1123 label)"));
        }
    }
    if dr_with_selector && !set.is_empty() {
        if set.contains(&ns) {
            if set.len() > 1 {
                cx.error(path, "a DestinationRule with a workloadSelector cannot have several exportTo entries");
            }
        } else {
            cx.error(path, "a DestinationRule with a workloadSelector cannot be exported beyond its own namespace");
        }
    }
    if set.iter().any(|s| s == "*") && export_to.len() > 1 {
        cx.error(path, "cannot have both public (`*`) and other exportTo entries");
    }
    if set.iter().any(|s| s == "~") && export_to.len() > 1 {
        cx.error(path, "cannot export a service entry to no one (`~`) and to someone");
    }
}

/// Workload selector labels: no empty keys, no wildcards; no labels at all is a warning.
pub(super) fn workload_selector(
    cx: &mut Cx<'_>,
    path: &dyn fmt::Display,
    labels: &BTreeMap<String, String>,
    what: &str,
) {
    for (k, v) in labels {
        if k.is_empty() {
            cx.error(&dot(&path, k), format!("empty key is not supported in selector: \"{k}={v}\""));
        }
        if k.contains('*') || v.contains('*') {
            cx.error(&dot(&path, k), format!("wildcard is not supported in selector: \"{k}={v}\""));
        }
    }
    if labels.is_empty() {
        cx.warning(path, format!("workload selector specified without labels: {what}"));
    }
}

/// A helper for "is this optional string set to something".
pub(super) fn set(o: &Option<String>) -> bool {
    o.as_deref().is_some_and(|s| !s.is_empty())
}

/// Duplicates among `items`, by key, as (index, key) of each repeat.
pub(super) fn duplicates<'a, T, K: std::hash::Hash + Eq>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<(usize, K)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let k = key(it);
        if seen.contains(&k) {
            out.push((i, k));
        } else {
            seen.insert(k);
        }
    }
    out
}
