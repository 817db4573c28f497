//! Parsing of YAML/JSON text into typed resources, with `file:line:col` diagnostics.
//!
//! The text may hold several documents (`---`), JSON, or `kind: List` objects. A syntax error
//! anywhere yields one diagnostic and no resources (the caller keeps the file's last good
//! version). Otherwise each object is checked (`apiVersion`, `kind`, `metadata.name`, known
//! top-level keys), and its spec decoded into the Istio/Kubernetes type for its kind; an object
//! that does not decode is dropped with one diagnostic pointing at the offending field.

mod tree;

use crate::diag::{code, Diagnostic, Location};
use crate::istio::{DestinationRule, Gateway, ServiceEntry, VirtualService};
use crate::k8s::{Ingress, ObjectMeta, Secret};
use crate::resource::{FieldIndex, Kind, Origin, Resource, Spec};
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use std::sync::Arc;
use tree::{Node, Value};

/// What one text yielded: the resources that decoded, and every finding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse `text` (the contents of `file`). Objects without a namespace get `default_namespace`.
/// Never panics; nesting and alias expansion are bounded.
pub fn parse_text(file: &str, text: &str, default_namespace: &str) -> Parsed {
    parse_part(file, text, 1, default_namespace, index_budget(text.len(), text.len()))
}

/// [`parse_text`] for part of a file (documents from [`split_documents`]): `text` starts at line
/// `first_line` of `file` (1-based), and every position is reported as in the whole file. The
/// part's share of the field-index budget is its share of the file's bytes.
pub fn parse_document(file: &str, text: &str, first_line: u32, file_len: usize, default_namespace: &str) -> Parsed {
    parse_part(file, text, first_line, default_namespace, index_budget(text.len(), file_len))
}

fn index_budget(part: usize, file: usize) -> usize {
    let share = u128::try_from(INDEX_BUDGET).unwrap_or(u128::MAX) * part as u128 / (file.max(1) as u128);
    usize::try_from(share).unwrap_or(usize::MAX).saturating_add(part.saturating_mul(8))
}

fn parse_part(file: &str, text: &str, first_line: u32, default_namespace: &str, index_budget: usize) -> Parsed {
    let mut cx = Ctx {
        file: Arc::from(file),
        default_namespace,
        out: Parsed::default(),
        index_budget,
        line_offset: first_line.saturating_sub(1),
    };
    match tree::parse_documents(text) {
        Ok(docs) => {
            for doc in &docs {
                cx.document(doc);
            }
        }
        Err(e) => {
            let location = cx.loc(e.line, e.col);
            cx.out.diagnostics.push(Diagnostic::error(
                location,
                code::SYNTAX,
                "-",
                format!("YAML syntax error: {}", e.message),
            ));
        }
    }
    cx.out
}

/// The documents of a YAML stream, each with the line it starts on (1-based) and its bytes, split before
/// every `---` marker line. A marker ends any scalar or collection before it (YAML forbids
/// the marker inside content), so each part parses as it would in the stream. `None` when
/// the text has a directive (`%YAML`, `%TAG`), which belongs to the document after it.
pub fn split_documents(text: &str) -> Option<Vec<(u32, std::ops::Range<usize>)>> {
    let mut parts = Vec::new();
    let (mut start, mut start_line, mut line, mut at) = (0, 1u32, 1u32, 0);
    while at < text.len() {
        let rest = &text[at..];
        if rest.starts_with('%') {
            return None;
        }
        let marker = rest.strip_prefix("---").is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t', '\r', '\n']));
        if marker && at > start {
            parts.push((start_line, start..at));
            (start, start_line) = (at, line);
        }
        match rest.find('\n') {
            Some(end) => {
                at += end + 1;
                line = line.saturating_add(1);
            }
            None => at = text.len(),
        }
    }
    if start < text.len() || parts.is_empty() {
        parts.push((start_line, start..text.len()));
    }
    Some(parts)
}

/// The candidate closest to `unknown` by edit distance (case-insensitive), if it is close enough
/// to be a likely typo: at most `max(2, len/3)` edits.
pub fn did_you_mean<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let u: Vec<char> = unknown.chars().flat_map(char::to_lowercase).collect();
    let threshold = (u.len() / 3).max(2);
    let mut best: Option<(usize, &'a str)> = None;
    for &c in candidates {
        let cv: Vec<char> = c.chars().flat_map(char::to_lowercase).collect();
        if cv.len().abs_diff(u.len()) > threshold {
            continue;
        }
        let d = levenshtein(&u, &cv);
        if d <= threshold && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Top-level keys every object may have (`status` is ignored).
const COMMON_KEYS: [&str; 4] = ["apiVersion", "kind", "metadata", "status"];
/// A Secret's payload keys, in place of `spec`.
const SECRET_KEYS: [&str; 4] = ["data", "stringData", "type", "immutable"];

/// Bytes of field paths the indexes of one text may hold beyond 8 per byte of text: deep paths
/// repeated by many leaves (or by aliases) would otherwise grow quadratically.
const INDEX_BUDGET: usize = 32 << 20;

struct Ctx<'a> {
    file: Arc<str>,
    default_namespace: &'a str,
    out: Parsed,
    /// What is left of the field-path budget; fields past it locate to their nearest indexed parent.
    index_budget: usize,
    /// Lines before the text parsed (a document of a larger file).
    line_offset: u32,
}

impl Ctx<'_> {
    fn loc(&self, line: u32, col: u32) -> Location {
        Location { file: self.file.clone(), line: line.saturating_add(self.line_offset), col }
    }

    fn error(&mut self, location: Location, code: &'static str, resource: &str, message: String) {
        self.out.diagnostics.push(Diagnostic::error(location, code, resource, message));
    }

    fn document(&mut self, doc: &Node) {
        match &doc.value {
            Value::Null => {}
            Value::Map(_) if is_list(doc) => {
                let Some(items) = doc.get("items") else {
                    return;
                };
                match &items.value.value {
                    Value::Null => {}
                    Value::Seq(list) => {
                        for item in list {
                            if !matches!(item.node.value, Value::Null) {
                                self.object(&item.node, item.line, item.col);
                            }
                        }
                    }
                    _ => {
                        let location = self.loc(items.line, items.col);
                        let found = items.value.type_name();
                        self.error(
                            location,
                            code::BAD_OBJECT,
                            "-",
                            format!("`items` of a List must be a list, found {found}"),
                        );
                    }
                }
            }
            _ => self.object(doc, doc.line, doc.col),
        }
    }

    fn object(&mut self, node: &Node, line: u32, col: u32) {
        let at = self.loc(line, col);
        if !matches!(node.value, Value::Map(_)) {
            let found = node.type_name();
            let msg =
                format!("expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found {found}");
            self.error(at, code::BAD_OBJECT, "-", msg);
            return;
        }
        let str_field = |key: &str| node.get(key).and_then(|e| e.value.as_str()).filter(|s| !s.is_empty());
        let (Some(api_version), Some(kind_name)) = (str_field("apiVersion"), str_field("kind")) else {
            let missing = if str_field("apiVersion").is_none() { "apiVersion" } else { "kind" };
            self.error(
                at,
                code::BAD_OBJECT,
                "-",
                format!("not a Kubernetes object: `{missing}` is missing or not a string"),
            );
            return;
        };
        let meta = node.get("metadata");
        let meta_str =
            |key: &str| meta.and_then(|m| m.value.get(key)).and_then(|e| e.value.as_str()).filter(|s| !s.is_empty());
        let name = meta_str("name");
        let namespace = meta_str("namespace").unwrap_or(self.default_namespace);
        let resource = format!("{kind_name}/{namespace}/{}", name.unwrap_or("-"));

        let Some(kind) = Kind::from_type(api_version, kind_name) else {
            let msg = format!("unsupported kind `{kind_name}` (apiVersion {api_version}): skipped");
            self.out.diagnostics.push(Diagnostic::warning(at, code::UNSUPPORTED_KIND, resource, msg));
            return;
        };
        let Some(name) = name else {
            self.error(
                at,
                code::BAD_OBJECT,
                &resource,
                format!("{kind_name} has no `metadata.name` (a non-empty string)"),
            );
            return;
        };
        let resource = format!("{kind}/{namespace}/{name}");

        let mut fields = FieldIndex::default();
        index_fields(node, &mut String::new(), &mut fields, &mut self.index_budget);
        if self.line_offset > 0 {
            fields.shift_lines(self.line_offset);
        }
        let origin = Origin {
            file: self.file.clone(),
            line: line.saturating_add(self.line_offset),
            col,
            fields: Arc::new(fields),
        };

        // Top-level keys.
        let extra: &[&str] = if kind == Kind::Secret { &SECRET_KEYS } else { &["spec"] };
        let mut ok = true;
        if let Value::Map(entries) = &node.value {
            for e in entries {
                if COMMON_KEYS.contains(&e.key.as_str()) || extra.contains(&e.key.as_str()) {
                    continue;
                }
                let candidates: Vec<&str> = COMMON_KEYS.iter().chain(extra).copied().collect();
                let msg = unknown_field_message(&e.key, did_you_mean(&e.key, &candidates));
                self.error(self.loc(e.line, e.col), code::UNKNOWN_FIELD, &resource, msg);
                ok = false;
            }
        }
        if !ok {
            return;
        }

        // Metadata: lenient (unknown fields ignored), nulls dropped as Kubernetes prunes them.
        let meta_json = meta.map_or(serde_json::Value::Object(Default::default()), |m| to_json(&m.value));
        let mut meta: ObjectMeta = match decode(meta_json, "metadata") {
            Ok(m) => m,
            Err(e) => return self.decode_error(&origin, &resource, e),
        };
        if meta.namespace.is_empty() {
            meta.namespace = self.default_namespace.to_string();
        }
        if let Some(status) = node.get("status") {
            meta.status_conditions = status_conditions(kind, &to_json(&status.value));
        }

        let spec = match kind {
            Kind::Secret => {
                let mut obj = serde_json::Map::new();
                if let Value::Map(entries) = &node.value {
                    for e in entries.iter().filter(|e| SECRET_KEYS.contains(&e.key.as_str())) {
                        if !matches!(e.value.value, Value::Null) {
                            obj.insert(e.key.clone(), to_json(&e.value));
                        }
                    }
                }
                decode::<Secret>(serde_json::Value::Object(obj), "").map(Spec::Secret)
            }
            _ => {
                let spec = node.get("spec").map(|e| to_json(&e.value));
                let spec = match spec {
                    None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
                    Some(v) => v,
                };
                match kind {
                    Kind::Gateway => decode::<Gateway>(spec, "spec").map(Spec::Gateway),
                    Kind::VirtualService => decode::<VirtualService>(spec, "spec").map(Spec::VirtualService),
                    Kind::DestinationRule => decode::<DestinationRule>(spec, "spec").map(Spec::DestinationRule),
                    Kind::ServiceEntry => decode::<ServiceEntry>(spec, "spec").map(Spec::ServiceEntry),
                    Kind::Ingress => decode::<Ingress>(spec, "spec").map(Spec::Ingress),
                    Kind::Secret => decode::<Secret>(spec, "spec").map(Spec::Secret),
                    Kind::GatewayClass => decode(spec, "spec").map(Spec::GatewayClass),
                    Kind::KubeGateway => decode(spec, "spec").map(Spec::KubeGateway),
                    Kind::HttpRoute => decode(spec, "spec").map(Spec::HttpRoute),
                    Kind::GrpcRoute => decode(spec, "spec").map(Spec::GrpcRoute),
                    Kind::TlsRoute => decode(spec, "spec").map(Spec::TlsRoute),
                    Kind::TcpRoute => decode(spec, "spec").map(Spec::TcpRoute),
                    Kind::ReferenceGrant => decode(spec, "spec").map(Spec::ReferenceGrant),
                    // Only the labels matter (Gateway API namespace selectors); the spec is the
                    // cluster's business.
                    Kind::Namespace => Ok(Spec::Namespace),
                    Kind::Service => decode(spec, "spec").map(Spec::Service),
                }
            }
        };
        match spec {
            Ok(spec) => self.out.resources.push(Resource {
                api_version: api_version.to_string(),
                meta,
                origin,
                spec: Arc::new(spec),
            }),
            Err(e) => self.decode_error(&origin, &resource, e),
        }
    }

    fn decode_error(&mut self, origin: &Origin, resource: &str, e: DecodeError) {
        let location = origin.locate(&e.path);
        let (code, message) = describe_decode_error(&e);
        self.error(location, code, resource, message);
    }
}

/// A `kind: List` (or `FooList`) with `items`.
fn is_list(doc: &Node) -> bool {
    doc.get("kind").and_then(|e| e.value.as_str()).is_some_and(|k| k.ends_with("List")) && doc.get("items").is_some()
}

struct DecodeError {
    /// Field path relative to the object root (`spec.servers[0].port.number`).
    path: String,
    message: String,
}

fn decode<T: DeserializeOwned>(value: serde_json::Value, prefix: &str) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = prefix.to_string();
        let inner = e.path().to_string();
        if inner != "." {
            if !path.is_empty() && !inner.starts_with('[') {
                path.push('.');
            }
            path.push_str(&inner);
        }
        DecodeError { path, message: e.into_inner().to_string() }
    })
}

fn describe_decode_error(e: &DecodeError) -> (&'static str, String) {
    let path = if e.path.is_empty() { "." } else { &e.path };
    if let Some((unknown, expected)) = split_unknown(&e.message, "unknown field `") {
        let hint = did_you_mean(unknown, &backticked(expected));
        // The path ends with the unknown key itself.
        return (code::UNKNOWN_FIELD, unknown_field_message(path, hint));
    }
    if let Some((unknown, expected)) = split_unknown(&e.message, "unknown variant `") {
        let mut msg = format!("{path}: {}", e.message);
        if let Some(h) = did_you_mean(unknown, &backticked(expected)) {
            let _ = write!(msg, "; did you mean `{h}`?");
        }
        return (code::BAD_VALUE, msg);
    }
    (code::BAD_VALUE, format!("{path}: {}", e.message))
}

fn unknown_field_message(path: &str, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("unknown field `{path}`; did you mean `{h}`?"),
        None => format!("unknown field `{path}`"),
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into (`x`, "expected …").
fn split_unknown<'m>(message: &'m str, prefix: &str) -> Option<(&'m str, &'m str)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find("`, ").or_else(|| rest.rfind('`'))?;
    Some((&rest[..end], rest.get(end + 1..).unwrap_or("")))
}

/// The names quoted in backticks in `s`.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Records the position of every key (and sequence item) under `node`, by path, while
/// `budget` (bytes of paths) lasts.
fn index_fields(node: &Node, path: &mut String, out: &mut FieldIndex, budget: &mut usize) {
    match &node.value {
        Value::Map(entries) => {
            for e in entries {
                let len = path.len();
                if len > 0 {
                    path.push('.');
                }
                path.push_str(&e.key);
                if !record(path, (e.line, e.col), out, budget) {
                    return;
                }
                index_fields(&e.value, path, out, budget);
                path.truncate(len);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                push_index(path, i);
                if !record(path, (item.line, item.col), out, budget) {
                    return;
                }
                index_fields(&item.node, path, out, budget);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn record(path: &str, pos: (u32, u32), out: &mut FieldIndex, budget: &mut usize) -> bool {
    match budget.checked_sub(path.len()) {
        Some(left) => {
            *budget = left;
            out.push(path, pos);
            true
        }
        None => false,
    }
}

/// `[i]` on `path`, without the formatting machinery (it runs for every sequence item).
fn push_index(path: &mut String, i: usize) {
    path.push('[');
    path.push_str(itoa::Buffer::new().format(i));
    path.push(']');
}

/// The JSON value of a node. Mapping entries whose value is null are dropped, as Kubernetes
/// prunes nulls of non-nullable fields, so `field: ~` means "not set".
/// The conditions of a `status`: `status.conditions`, and for routes each parent's. Lenient:
/// status is written by controllers, not users, and is never rejected.
fn status_conditions(kind: Kind, status: &serde_json::Value) -> Vec<crate::k8s::Condition> {
    let list = |v: Option<&serde_json::Value>| -> Vec<crate::k8s::Condition> {
        let text = |c: &serde_json::Value, k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|c| crate::k8s::Condition {
                        type_: text(c, "type"),
                        status: text(c, "status"),
                        reason: text(c, "reason"),
                        message: text(c, "message"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = list(status.get("conditions"));
    if matches!(kind, Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute) {
        for p in status.get("parents").and_then(|p| p.as_array()).into_iter().flatten() {
            out.extend(list(p.get("conditions")));
        }
    }
    out
}

fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::Value::Number(n.clone()),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(|i| to_json(&i.node)).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .filter(|e| !matches!(e.value.value, Value::Null))
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
