//! YAML text → a small positioned node tree, built from `granit-parser` events (the parser
//! serde-saphyr uses). Building is iterative (an explicit stack), so nesting is bounded by
//! [`MAX_DEPTH`], not by the thread's stack; aliases share their anchor's node (`Rc`) and their
//! expanded size (nodes plus string bytes) is bounded by [`MAX_ALIAS_COST`] (billion laughs).
//!
//! Scalars resolve as Kubernetes reads YAML (YAML 1.2 core schema): plain `null`/`~`/empty,
//! `true`/`false`, integers (decimal, `0o`, `0x`) and floats are typed; quoted and block scalars
//! are strings. Duplicate keys are errors; merge keys (`<<`) are expanded, explicit keys winning.

use granit_parser::{ErrorKind, Event, Parser, ScalarStyle, ScanError, Span, StructureStyle, Tag};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Deepest nesting of collections accepted (a document root counts as level 1).
pub(crate) const MAX_DEPTH: usize = 100;
/// Most that aliases and merge keys may add by expansion, over the whole text, counted as
/// nodes plus bytes of strings (so about 16 MB of expanded text).
pub(crate) const MAX_ALIAS_COST: u64 = 16_000_000;

#[derive(Debug)]
pub(crate) struct Node {
    /// 1-based position of the node's start (for a block mapping: its first key).
    pub line: u32,
    pub col: u32,
    /// Levels of nesting of this node (a scalar is 1).
    pub height: u32,
    /// Cost of the node with aliases expanded: nodes plus bytes of keys and strings.
    pub size: u64,
    pub value: Value,
}

#[derive(Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(String),
    Seq(Vec<Item>),
    Map(Vec<Entry>),
}

/// A sequence item, with the position where it is written (an alias's own position).
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub line: u32,
    pub col: u32,
    pub node: Rc<Node>,
}

/// A mapping entry, with the position of its key.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub line: u32,
    pub col: u32,
    pub value: Rc<Node>,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl SyntaxError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        let (line, col) = pos(span);
        SyntaxError { line, col, message: message.into() }
    }

    fn from_scan(e: &ScanError) -> Self {
        let m = e.marker();
        let message = match e.kind() {
            ErrorKind::RecursionLimitExceeded => format!("nesting deeper than {MAX_DEPTH} levels"),
            _ => {
                let info = e.info();
                if info.is_empty() {
                    "invalid YAML".to_string()
                } else {
                    info
                }
            }
        };
        SyntaxError { line: to_u32(m.line()), col: to_u32(m.col().saturating_add(1)), message }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn pos(span: &Span) -> (u32, u32) {
    (to_u32(span.start.line()), to_u32(span.start.col().saturating_add(1)))
}

/// Parse every document of `text`. Empty documents come back as `Null` nodes.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Rc<Node>>, SyntaxError> {
    let mut options = granit_parser::Options::default();
    options.set_emit_comments(false);
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    let parser = Parser::new_from_str_with_options(text, options);
    let mut b = Builder { text, stack: Vec::new(), anchors: HashMap::new(), docs: Vec::new(), alias_nodes: 0 };
    for ev in parser {
        let (event, span) = ev.map_err(|e| SyntaxError::from_scan(&e))?;
        b.event(event, &span)?;
    }
    Ok(b.docs)
}

struct PendingKey {
    text: String,
    line: u32,
    col: u32,
    merge: bool,
}

enum FrameKind {
    Seq(Vec<Item>),
    Map { entries: Vec<Entry>, key: Option<PendingKey>, merges: Vec<(Rc<Node>, u32, u32)> },
}

struct Frame {
    line: u32,
    col: u32,
    anchor: usize,
    kind: FrameKind,
    /// For a single-pair flow mapping written without braces (`[a: b]`), what is needed to
    /// read `[x:]` / `[::1:, y]` the way go-yaml (Kubernetes) does: as the plain scalar `x:`.
    /// YAML 1.2 ends a plain scalar at a `:` followed by a flow indicator; go-yaml ends it only
    /// at a `:` followed by a blank, so an IPv6 address like `2001:db8::` in a flow list stays one
    /// string there (Istio's own test data relies on it).
    pair: Option<FlowPair>,
}

#[derive(Default)]
struct FlowPair {
    /// Byte offset where the plain key ends.
    key_end: Option<usize>,
    /// The value is the empty scalar, right at the key's end (no blank before `:`).
    adjacent_empty_value: bool,
}

struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Rc<Node>>,
    docs: Vec<Rc<Node>>,
    alias_nodes: u64,
}

impl Builder<'_> {
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { kind: FrameKind::Map { key: None, .. }, .. }))
    }

    fn set_key(&mut self, key: PendingKey) {
        if let Some(Frame { kind: FrameKind::Map { key: slot, .. }, .. }) = self.stack.last_mut() {
            *slot = Some(key);
        }
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let (line, col) = pos(span);
        match event {
            Event::DocumentEnd => {
                self.anchors.clear();
                self.stack.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.expects_key() {
                    if let Some(pair) = self.stack.last_mut().and_then(|f| f.pair.as_mut()) {
                        if style == ScalarStyle::Plain && tag.is_none() && anchor == 0 {
                            pair.key_end = span.end.byte_offset();
                        }
                    }
                    let merge = style == ScalarStyle::Plain && text == "<<" && tag.is_none();
                    let text =
                        if style == ScalarStyle::Plain && text.is_empty() { "~".into() } else { text.into_owned() };
                    if anchor != 0 {
                        let node = Rc::new(leaf(line, col, Value::Str(text.clone())));
                        self.anchors.insert(anchor, node);
                    }
                    self.set_key(PendingKey { text, line, col, merge });
                } else {
                    if let Some(pair) = self.stack.last_mut().and_then(|f| f.pair.as_mut()) {
                        let zero_width = span.start.byte_offset() == span.end.byte_offset();
                        pair.adjacent_empty_value = style == ScalarStyle::Plain
                            && text == "~"
                            && zero_width
                            && pair.key_end.is_some()
                            && span.start.byte_offset() == pair.key_end;
                    }
                    let value = resolve_scalar(&text, style, tag.as_deref()).map_err(|m| SyntaxError::at(span, m))?;
                    self.complete(Rc::new(leaf(line, col, value)), anchor, line, col)?;
                }
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(SyntaxError::at(span, "alias refers to an anchor that is not defined before it"));
                };
                if self.expects_key() {
                    let text = match &node.value {
                        Value::Null => "null".to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::Str(s) => s.clone(),
                        Value::Seq(_) | Value::Map(_) => return Err(complex_key(span)),
                    };
                    self.count_alias(node.size, span)?;
                    self.set_key(PendingKey { text, line, col, merge: false });
                } else {
                    self.count_alias(node.size, span)?;
                    self.complete(node, 0, line, col)?;
                }
            }
            Event::SequenceStart(_, anchor, _) => {
                self.open(span, anchor, FrameKind::Seq(Vec::new()), false)?;
            }
            Event::MappingStart(style, anchor, _) => {
                let implicit_pair = style == StructureStyle::Flow && span.start.byte_offset() == span.end.byte_offset();
                self.open(
                    span,
                    anchor,
                    FrameKind::Map { entries: Vec::new(), key: None, merges: Vec::new() },
                    implicit_pair,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(SyntaxError::at(span, "unbalanced collection end"));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { mut entries, merges, .. } => {
                        if self.is_go_yaml_plain_scalar(frame.pair.as_ref(), &entries, &merges) {
                            let mut s = entries.pop().map(|e| e.key).unwrap_or_default();
                            s.push(':');
                            Value::Str(s)
                        } else {
                            Value::Map(self.finish_map(entries, merges)?)
                        }
                    }
                };
                let node = collection(frame.line, frame.col, value);
                self.complete(Rc::new(node), frame.anchor, frame.line, frame.col)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// See [`Frame::pair`]: whether this implicit pair is really go-yaml's plain scalar `key:`.
    fn is_go_yaml_plain_scalar(
        &self,
        pair: Option<&FlowPair>,
        entries: &[Entry],
        merges: &[(Rc<Node>, u32, u32)],
    ) -> bool {
        let Some(FlowPair { key_end: Some(key_end), adjacent_empty_value }) = pair else {
            return false;
        };
        let (key_end, bytes) = (*key_end, self.text.as_bytes());
        *adjacent_empty_value
            && entries.len() == 1
            && merges.is_empty()
            && bytes.get(key_end) == Some(&b':')
            && matches!(bytes.get(key_end.saturating_add(1)), Some(b',' | b']' | b'}'))
    }

    fn open(&mut self, span: &Span, anchor: usize, kind: FrameKind, implicit_pair: bool) -> Result<(), SyntaxError> {
        if self.expects_key() {
            return Err(complex_key(span));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::at(span, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let (line, col) = pos(span);
        let pair = implicit_pair.then(FlowPair::default);
        self.stack.push(Frame { line, col, anchor, kind, pair });
        Ok(())
    }

    fn count_alias(&mut self, size: u64, span: &Span) -> Result<(), SyntaxError> {
        self.alias_nodes = self.alias_nodes.saturating_add(size);
        if self.alias_nodes > MAX_ALIAS_COST {
            return Err(SyntaxError::at(
                span,
                format!("aliases expand to more than {MAX_ALIAS_COST} nodes and bytes (is this an alias bomb?)"),
            ));
        }
        Ok(())
    }

    /// Attach a finished node to its parent (or make it a document root).
    fn complete(&mut self, node: Rc<Node>, anchor: usize, line: u32, col: u32) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let depth = self.stack.len().saturating_add(node.height as usize);
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                line,
                col,
                message: format!("nesting deeper than {MAX_DEPTH} levels (through aliases)"),
            });
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame { kind: FrameKind::Seq(items), .. }) => items.push(Item { line, col, node }),
            Some(Frame { kind: FrameKind::Map { entries, key, merges }, .. }) => match key.take() {
                Some(k) if k.merge => merges.push((node, k.line, k.col)),
                Some(k) => entries.push(Entry { key: k.text, line: k.line, col: k.col, value: node }),
                // Unreachable: a scalar or alias in key position becomes the pending key.
                None => return Err(SyntaxError { line, col, message: "mapping value without a key".into() }),
            },
        }
        Ok(())
    }

    /// Reject duplicate keys, then expand merge keys (explicit keys win; earlier sources win).
    fn finish_map(
        &mut self,
        mut entries: Vec<Entry>,
        merges: Vec<(Rc<Node>, u32, u32)>,
    ) -> Result<Vec<Entry>, SyntaxError> {
        if entries.len() > 1 {
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by(|&a, &b| entries[a].key.cmp(&entries[b].key).then(a.cmp(&b)));
            for w in order.windows(2) {
                let (first, dup) = (&entries[w[0]], &entries[w[1]]);
                if first.key == dup.key {
                    return Err(SyntaxError {
                        line: dup.line,
                        col: dup.col,
                        message: format!("duplicate key `{}` (first at line {})", dup.key, first.line),
                    });
                }
            }
        }
        if merges.is_empty() {
            return Ok(entries);
        }
        let mut seen: HashSet<String> = entries.iter().map(|e| e.key.clone()).collect();
        for (source, line, col) in merges {
            let bad = || SyntaxError {
                line,
                col,
                message: "the value of a merge key `<<` must be a mapping or a list of mappings".into(),
            };
            let maps: Vec<&Node> = match &source.value {
                Value::Map(_) => vec![&source],
                Value::Seq(items) => items.iter().map(|i| &*i.node).collect(),
                _ => return Err(bad()),
            };
            for m in maps {
                let Value::Map(src) = &m.value else {
                    return Err(bad());
                };
                for e in src {
                    if seen.insert(e.key.clone()) {
                        self.alias_nodes =
                            self.alias_nodes.saturating_add(e.value.size).saturating_add(e.key.len() as u64);
                        if self.alias_nodes > MAX_ALIAS_COST {
                            return Err(SyntaxError {
                                line,
                                col,
                                message: format!("merge keys expand to more than {MAX_ALIAS_COST} nodes and bytes"),
                            });
                        }
                        entries.push(e.clone());
                    }
                }
            }
        }
        Ok(entries)
    }
}

fn complex_key(span: &Span) -> SyntaxError {
    SyntaxError::at(span, "mapping keys must be scalars (a list or mapping cannot be a key)")
}

fn leaf(line: u32, col: u32, value: Value) -> Node {
    let size = match &value {
        Value::Str(s) => 1 + s.len() as u64,
        _ => 1,
    };
    Node { line, col, height: 1, size, value }
}

fn collection(line: u32, col: u32, value: Value) -> Node {
    let (mut height, mut size) = (0u32, 1u64);
    let mut add = |n: &Node, key_len: usize| {
        height = height.max(n.height);
        size = size.saturating_add(n.size).saturating_add(key_len as u64);
    };
    match &value {
        Value::Seq(items) => items.iter().for_each(|i| add(&i.node, 0)),
        Value::Map(entries) => entries.iter().for_each(|e| add(&e.value, e.key.len())),
        Value::Str(s) => size = size.saturating_add(s.len() as u64),
        _ => {}
    }
    Node { line, col, height: height.saturating_add(1), size, value }
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        let wanted = match tag.core_suffix() {
            Some("str" | "binary") => return Ok(Value::Str(text.to_string())),
            Some("null") => return Ok(Value::Null),
            Some(t @ ("bool" | "int" | "float")) => t,
            Some(other) => return Err(format!("a scalar cannot have the tag `!!{other}`")),
            // The non-specific tag `!` makes a string; other (application) tags are ignored.
            None if tag.parts() == ("!", "") => return Ok(Value::Str(text.to_string())),
            None => "",
        };
        if !wanted.is_empty() {
            let v = resolve_plain(text);
            let ok = match (&v, wanted) {
                (Value::Bool(_), "bool") => true,
                (Value::Number(n), "int") => n.is_i64() || n.is_u64(),
                (Value::Number(_), "float") => true,
                _ => false,
            };
            return if ok { Ok(v) } else { Err(format!("`{text}` is not a valid !!{wanted}")) };
        }
    }
    if style == ScalarStyle::Plain {
        Ok(resolve_plain(text))
    } else {
        Ok(Value::Str(text.to_string()))
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let Some(first) = s.bytes().next() else {
        return Value::Null;
    };
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::Str(s.to_string());
    }
    if let Some(n) = resolve_number(s) {
        return Value::Number(n);
    }
    Value::Str(s.to_string())
}

fn resolve_number(s: &str) -> Option<serde_json::Number> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Some(i.into());
        }
        if let Ok(u) = s.parse::<u64>() {
            return Some(u.into());
        }
        return s.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
    }
    let radix = if s.starts_with("0x") {
        16
    } else if s.starts_with("0o") {
        8
    } else if is_float(digits) {
        return s.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
    } else {
        return None;
    };
    let body = &s[2..];
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    u64::from_str_radix(body, radix).ok().map(Into::into)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}
