//! The file source: reads `--config` files and directories (recursively, `*.yaml`, `*.yml`,
//! `*.json`) and keeps each file's last good parse, so a broken edit never loses config.

use portico_api::diag::code;
use portico_api::{Diagnostic, Location, Resource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The resources of every file, by path, as last parsed without a syntax error.
#[derive(Default)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    default_namespace: String,
    /// Last good parse per file: (file text, resources, diagnostics of that parse).
    good: BTreeMap<PathBuf, (String, Vec<Resource>, Vec<Diagnostic>)>,
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
                        resources.extend(prev.1.iter().cloned());
                        next_good.insert(f, prev);
                    }
                    continue;
                }
            };
            std::hash::Hash::hash(&f, &mut hasher);
            std::hash::Hash::hash(&text, &mut hasher);
            if let Some(prev) = self.good.remove(&f) {
                if prev.0 == text {
                    resources.extend(prev.1.iter().cloned());
                    diagnostics.extend(prev.2.iter().cloned());
                    next_good.insert(f, prev);
                    continue;
                }
                self.good.insert(f.clone(), prev);
            }
            let parsed = portico_api::parse_text(&name, &text, &self.default_namespace);
            let syntax_failed = parsed.diagnostics.iter().any(|d| d.code == code::SYNTAX);
            diagnostics.extend(parsed.diagnostics.iter().cloned());
            if syntax_failed {
                failed = true;
                if let Some(prev) = self.good.remove(&f) {
                    kept.push(f.clone());
                    resources.extend(prev.1.iter().cloned());
                    next_good.insert(f, prev);
                }
                continue;
            }
            resources.extend(parsed.resources.iter().cloned());
            next_good.insert(f, (text, parsed.resources, parsed.diagnostics));
        }
        self.good = next_good;
        let fingerprint = std::hash::Hasher::finish(&hasher);
        Load { resources, diagnostics, kept_last_good: kept, failed, fingerprint }
    }
}
