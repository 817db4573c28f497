//! The file source: reads `--config` files and directories (recursively, `*.yaml`, `*.yml`,
//! `*.json`) and keeps each file's last good parse, so a broken edit never loses config.

use portico_api::diag::code;
use portico_api::{Diagnostic, Location, Parsed, Resource};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The resources of every file, by path, as last parsed without a syntax error.
#[derive(Default)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    default_namespace: String,
    /// Last good parse per file.
    good: BTreeMap<PathBuf, Good>,
}

/// A file as last parsed without a syntax error: its text and what each document yielded.
struct Good {
    text: String,
    docs: Vec<Doc>,
}

/// One document of a file: where it is (first line, bytes) and what it yielded.
struct Doc {
    first_line: u32,
    bytes: Range<usize>,
    parsed: Parsed,
}

impl Good {
    fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.docs.iter().flat_map(|d| &d.parsed.resources)
    }

    fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.docs.iter().flat_map(|d| &d.parsed.diagnostics)
    }
}

/// One document of a file about to be read again: the index of the last parse's document with
/// the same text and first line, or its new parse.
enum Part {
    Same(usize),
    New(Parsed),
}

/// Plan the parse of `text` document by document. A document whose text and first line are
/// what `prev` parsed is taken from it: a change to one object of a large file parses that
/// object only.
fn parse_parts(name: &str, text: &str, default_namespace: &str, prev: Option<&Good>) -> Vec<(u32, Range<usize>, Part)> {
    let parts = portico_api::split_documents(text).unwrap_or_else(|| vec![(1, 0..text.len())]);
    let known: HashMap<(u32, &str), usize> = prev
        .map(|g| g.docs.iter().enumerate().map(|(i, d)| ((d.first_line, &g.text[d.bytes.clone()]), i)).collect())
        .unwrap_or_default();
    parts
        .into_iter()
        .map(|(first_line, bytes)| {
            let part = &text[bytes.clone()];
            let parsed = match known.get(&(first_line, part)) {
                Some(&i) => Part::Same(i),
                None => Part::New(portico_api::parse_document(name, part, first_line, text.len(), default_namespace)),
            };
            (first_line, bytes, parsed)
        })
        .collect()
}

/// The planned documents, the unchanged ones moved out of `prev` rather than copied (each
/// document of the last parse is the same as at most one of this one: their first lines differ).
fn assemble(parts: Vec<(u32, Range<usize>, Part)>, prev: Option<Good>) -> Vec<Doc> {
    let mut prev_docs = prev.map(|g| g.docs).unwrap_or_default();
    parts
        .into_iter()
        .map(|(first_line, bytes, part)| {
            let parsed = match part {
                Part::New(p) => p,
                Part::Same(i) => prev_docs.get_mut(i).map(|d| std::mem::take(&mut d.parsed)).unwrap_or_default(),
            };
            Doc { first_line, bytes, parsed }
        })
        .collect()
}

/// One load: every resource in file order, and what was found on the way.
pub struct Load {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    /// Files that failed this time and are served from their last good version.
    pub kept_last_good: Vec<PathBuf>,
    /// True when any file failed to parse or read.
    pub failed: bool,
    /// Hash of every file's path and text: equal fingerprints mean nothing changed.
    pub fingerprint: u64,
}

fn is_config_file(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// Files under `path`, sorted, skipping hidden entries (`..data`, `..2024_…` ConfigMap internals
/// are reached through their visible symlinks).
fn collect(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<Diagnostic>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(io_error(path, &e));
            return;
        }
    };
    if meta.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push(io_error(path, &e));
            return;
        }
    };
    entries.sort();
    for p in entries {
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => collect(&p, out, errors),
            Ok(_) if is_config_file(&p) => out.push(p),
            _ => {}
        }
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        Location { file: Arc::from(path.display().to_string()), line: 0, col: 0 },
        code::SYNTAX,
        "-",
        format!("cannot read: {e}"),
    )
}

impl FileSource {
    pub fn new(paths: Vec<PathBuf>, default_namespace: &str) -> FileSource {
        FileSource { paths, default_namespace: default_namespace.to_string(), good: BTreeMap::new() }
    }

    /// Read everything again. A file with a syntax error keeps its last good version (if any).
    pub fn load(&mut self) -> Load {
        let mut files = Vec::new();
        let mut diagnostics = Vec::new();
        for p in &self.paths {
            collect(p, &mut files, &mut diagnostics);
        }
        let mut failed = !diagnostics.is_empty();
        let mut kept = Vec::new();
        let mut resources = Vec::new();
        let mut next_good = BTreeMap::new();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for f in files {
            let name = f.display().to_string();
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) => {
                    failed = true;
                    diagnostics.push(io_error(&f, &e));
                    if let Some(prev) = self.good.remove(&f) {
                        kept.push(f.clone());
                        resources.extend(prev.resources().cloned());
                        next_good.insert(f, prev);
                    }
                    continue;
                }
            };
            std::hash::Hash::hash(&f, &mut hasher);
            std::hash::Hash::hash(&text, &mut hasher);
            let prev = match self.good.remove(&f) {
                Some(prev) if prev.text == text => {
                    resources.extend(prev.resources().cloned());
                    diagnostics.extend(prev.diagnostics().cloned());
                    next_good.insert(f, prev);
                    continue;
                }
                prev => prev,
            };
            let parts = parse_parts(&name, &text, &self.default_namespace, prev.as_ref());
            let found = parts.iter().flat_map(|(_, _, part)| match part {
                Part::New(p) => p.diagnostics.as_slice(),
                Part::Same(i) => prev.as_ref().and_then(|g| g.docs.get(*i)).map_or(&[][..], |d| &d.parsed.diagnostics),
            });
            let syntax_failed = found.clone().any(|d| d.code == code::SYNTAX);
            diagnostics.extend(found.cloned());
            if syntax_failed {
                failed = true;
                if let Some(prev) = prev {
                    kept.push(f.clone());
                    resources.extend(prev.resources().cloned());
                    next_good.insert(f, prev);
                }
                continue;
            }
            let docs = assemble(parts, prev);
            resources.extend(docs.iter().flat_map(|d| &d.parsed.resources).cloned());
            next_good.insert(f, Good { text, docs });
        }
        self.good = next_good;
        let fingerprint = std::hash::Hasher::finish(&hasher);
        Load { resources, diagnostics, kept_last_good: kept, failed, fingerprint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(name: &str, host: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  hosts: [{host}]\n  http: [{{route: [{{destination: {{host: backend}}}}]}}]\n"
        )
    }

    /// A change to one document of a file parses that document again and takes the others
    /// from the last parse (the same field index, not a copy of a new one); every object keeps
    /// its own place in the file.
    #[test]
    fn a_changed_document_is_parsed_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.yaml");
        let write = |hosts: [&str; 3]| {
            let text = hosts.iter().enumerate().map(|(i, h)| vs(&format!("vs-{i}"), h)).collect::<Vec<_>>();
            std::fs::write(&file, text.join("---\n")).unwrap();
        };
        let mut source = FileSource::new(vec![dir.path().to_path_buf()], "default");
        write(["a.example.com", "b.example.com", "c.example.com"]);
        let first = source.load();
        write(["a.example.com", "changed.example.com", "c.example.com"]);
        let second = source.load();
        assert!(!second.failed && second.diagnostics.is_empty(), "{:?}", second.diagnostics);
        let hosts = |l: &Load| -> Vec<String> {
            l.resources
                .iter()
                .map(|r| match &*r.spec {
                    portico_api::Spec::VirtualService(v) => v.hosts.join(","),
                    _ => String::new(),
                })
                .collect()
        };
        assert_eq!(hosts(&second), ["a.example.com", "changed.example.com", "c.example.com"]);
        let reused: Vec<bool> = (0..3)
            .map(|i| Arc::ptr_eq(&first.resources[i].origin.fields, &second.resources[i].origin.fields))
            .collect();
        assert_eq!(reused, [true, false, true]);
        // And the same spec, shared rather than copied into each load.
        let shared: Vec<bool> =
            (0..3).map(|i| Arc::ptr_eq(&first.resources[i].spec, &second.resources[i].spec)).collect();
        assert_eq!(shared, [true, false, true]);
        assert_eq!(second.resources.iter().map(|r| r.origin.line).collect::<Vec<_>>(), [1, 8, 15]);
        // A syntax error in one document: the whole file keeps its last good version, and the
        // error is at its line in the file.
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("---\nkind: [\n");
        std::fs::write(&file, &text).unwrap();
        let third = source.load();
        assert!(third.failed);
        assert_eq!(hosts(&third), hosts(&second));
        let syntax = third.diagnostics.iter().find(|d| d.code == code::SYNTAX).unwrap();
        assert!(syntax.location.line >= 22, "{syntax:?}");
    }
}
