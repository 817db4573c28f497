//! `portico validate` output: Portico's one line per finding, or `istioctl analyze -o json|yaml`'s
//! list of messages, and istioctl's `--suppress CODE=RESOURCE`.

use portico_api::{Diagnostic, Severity};
use std::collections::BTreeMap;

/// `text` (FILE:LINE:COL lines), `json` or `yaml` (istioctl's message objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// istioctl's message levels, for `--output-threshold` and `--failure-threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    #[value(name = "Info", alias = "info", alias = "INFO")]
    Info,
    #[value(name = "Warning", alias = "warning", alias = "WARNING")]
    Warning,
    #[value(name = "Error", alias = "error", alias = "ERROR")]
    Error,
}

impl Level {
    pub fn of(d: &Diagnostic) -> Level {
        match d.severity {
            Severity::Error => Level::Error,
            Severity::Warning => Level::Warning,
            Severity::Info => Level::Info,
        }
    }
}

/// One `--suppress CODE=RESOURCE`: the code and the resource as patterns (`*` matches any run
/// of characters). RESOURCE is istioctl's `Kind name.namespace` or Portico's `Kind/namespace/name`.
#[derive(Clone, Debug)]
pub struct Suppression {
    code: String,
    resource: String,
}

impl std::str::FromStr for Suppression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (code, resource) = s.split_once('=').ok_or_else(|| {
            format!("`{s}` is not CODE=RESOURCE (e.g. IST0102=Namespace frod, IST0101=VirtualService/default/*)")
        })?;
        let (code, resource) = (code.trim(), resource.trim());
        if code.is_empty() || resource.is_empty() {
            return Err(format!("`{s}` is not CODE=RESOURCE"));
        }
        Ok(Suppression { code: code.to_string(), resource: resource.to_string() })
    }
}

impl Suppression {
    fn silences(&self, d: &Diagnostic) -> bool {
        if !glob(&self.code, d.code) {
            return false;
        }
        let Some((kind, ns, name)) = split_key(&d.resource) else { return self.resource == "*" };
        [format!("{kind}/{ns}/{name}"), format!("{kind} {name}.{ns}"), format!("{kind} {ns}/{name}")]
            .iter()
            .any(|r| glob(&self.resource, r))
    }
}

/// `Kind/namespace/name` → its parts.
fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let mut it = key.splitn(3, '/');
    Some((it.next()?, it.next()?, it.next()?))
}

/// Shell-style `*` wildcards, whole-string match.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

pub fn suppress(diags: &mut Vec<Diagnostic>, rules: &[Suppression]) {
    diags.retain(|d| !rules.iter().any(|r| r.silences(d)));
}

/// A finding as `istioctl analyze -o json` writes one (keys in Go's sorted map order).
fn message(d: &Diagnostic) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert("code", d.code.to_string());
    m.insert(
        "level",
        match d.severity {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        }
        .to_string(),
    );
    m.insert("message", d.message.clone());
    if let Some((kind, ns, name)) = split_key(&d.resource) {
        m.insert("origin", format!("{kind} {ns}/{name}"));
    }
    m.insert("reference", format!("{}:{}", d.location.file, d.location.line));
    if d.code.starts_with("IST") {
        m.insert(
            "documentationUrl",
            format!("https://istio.io/latest/docs/reference/config/analysis/{}/", d.code.to_ascii_lowercase()),
        );
    }
    m
}

pub fn render(diags: &[Diagnostic], format: Format) -> String {
    match format {
        Format::Text => diags.iter().map(|d| format!("{d}\n")).collect(),
        Format::Json => {
            let list: Vec<_> = diags.iter().map(message).collect();
            let mut s = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        Format::Yaml => {
            if diags.is_empty() {
                return "[]\n".into();
            }
            // Flat string maps: every value as a JSON string, which YAML reads as a
            // double-quoted scalar.
            let mut s = String::new();
            for d in diags {
                for (i, (k, v)) in message(d).iter().enumerate() {
                    let lead = if i == 0 { "- " } else { "  " };
                    let v = serde_json::to_string(v).unwrap_or_default();
                    s.push_str(&format!("{lead}{k}: {v}\n"));
                }
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("VirtualService/default/*", "VirtualService/default/a"));
        assert!(glob("*", ""));
        assert!(glob("Gateway *.istio-system", "Gateway gw.istio-system"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c-b"));
        assert!(!glob("IST0101", "IST0132"));
    }
}
