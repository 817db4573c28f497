#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Istio's own validation data (`../shared/conformance/istio-validation/`, see its README):
//! every object Istio accepts must be accepted, every one it rejects must be rejected.
//! "Rejected" = at least one error diagnostic from parsing or from `validate`.
//! When the corpus is absent (a fresh clone without `../shared`), the test says so and passes.
//! Set `PORTICO_CONFORMANCE_VERBOSE=1` to print every object's diagnostics.

use portico_api::{parse_text, Diagnostic};
use portico_model::validate::validate;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `PORTICO_CONFORMANCE_DIR` names the corpus when the clone is not beside `shared/` (a worktree).
fn corpus() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTICO_CONFORMANCE_DIR") {
        return Some(PathBuf::from(d)).filter(|d| d.is_dir());
    }
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/istio-validation"));
    dir.is_dir().then(|| dir.to_path_buf())
}

/// Parse and validate one text; returns every diagnostic.
fn check(file: &str, text: &str) -> Vec<Diagnostic> {
    let parsed = parse_text(file, text, "default");
    let mut diags = parsed.diagnostics;
    for r in &parsed.resources {
        diags.extend(validate(r));
    }
    diags
}

#[derive(Default)]
struct Report {
    checked: usize,
    accepted: usize,
    rejected: usize,
    mismatches: Vec<String>,
}

impl Report {
    fn expect(&mut self, what: &str, text: &str, want_accept: bool) {
        let diags = check(what, text);
        let rejected = diags.iter().any(Diagnostic::is_error);
        if std::env::var_os("PORTICO_CONFORMANCE_VERBOSE").is_some() {
            eprintln!("{what}: {}", if rejected { "rejected" } else { "accepted" });
            for d in &diags {
                eprintln!("    {d}");
            }
        }
        self.checked += 1;
        if rejected {
            self.rejected += 1;
        } else {
            self.accepted += 1;
        }
        if rejected == want_accept {
            let mut m = format!(
                "{what}: expected {}, got {}",
                if want_accept { "accepted" } else { "rejected" },
                if rejected { "rejected" } else { "accepted" }
            );
            if diags.is_empty() {
                m.push_str(" (no diagnostics)");
            }
            for d in &diags {
                let _ = write!(m, "\n    {d}");
            }
            self.mismatches.push(m);
        }
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Splits a multi-document file on `---` lines; for each document returns its index in the file,
/// whether it carries a top-level `_err:` line, and its text with those lines removed.
fn split_cel_documents(text: &str) -> Vec<(usize, bool, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut err = false;
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push((err, std::mem::take(&mut cur)));
            err = false;
            continue;
        }
        if line.starts_with("_err:") {
            err = true;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((err, cur));
    // Documents made only of comments and blank lines (commented-out cases) are not objects.
    docs.into_iter()
        .enumerate()
        .filter(|(_, (_, d))| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|(i, (err, d))| (i, err, d))
        .collect()
}

#[test]
fn istio_validation_corpus() {
    let Some(root) = corpus() else {
        eprintln!("note: ../shared/conformance/istio-validation not found: Istio conformance corpus skipped");
        return;
    };
    let mut report = Report::default();

    // 1. One valid object per file.
    for f in yaml_files(&root.join("dataset_istio-86c9f01")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        report.expect(&format!("dataset_istio-86c9f01/{}", name(&f)), &text, true);
    }

    // 2. `*-valid.yaml` / `*-invalid.yaml` pairs.
    for f in yaml_files(&root.join("dataset-with-invalid_istio-26b6a59")) {
        let n = name(&f);
        let want_accept = if n.ends_with("-invalid.yaml") {
            false
        } else if n.ends_with("-valid.yaml") {
            true
        } else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        report.expect(&format!("dataset-with-invalid_istio-26b6a59/{n}"), &text, want_accept);
    }

    // 3. CEL cases: documents with `_err` rejected, the others accepted.
    for f in yaml_files(&root.join("crd-cel_istio-86c9f01")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (i, err, doc) in split_cel_documents(&text) {
            report.expect(&format!("crd-cel_istio-86c9f01/{} doc #{i}", name(&f)), &doc, !err);
        }
    }

    eprintln!(
        "Istio conformance: {} objects checked, {} accepted, {} rejected, {} mismatches",
        report.checked,
        report.accepted,
        report.rejected,
        report.mismatches.len()
    );
    assert!(report.checked > 0, "the corpus at {} holds no YAML files", root.display());
    assert!(report.mismatches.is_empty(), "conformance mismatches:\n{}", report.mismatches.join("\n"));
}
