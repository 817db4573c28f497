#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Istio's own validation data (see `shared/conformance/README.md`) must parse: every object
//! Istio accepts decodes into Portico's types with no error. Objects Istio rejects are checked by
//! `model`'s validation; here we only count how many the loader already rejects.

use portico_api::{parse_text, Diagnostic};
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/istio-validation");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("note: {} is absent; skipping the conformance corpus", dir.display());
        None
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn errors(diags: &[Diagnostic]) -> Vec<String> {
    diags.iter().filter(|d| d.is_error()).map(ToString::to_string).collect()
}

#[test]
fn accepted_dataset_parses_cleanly() {
    let Some(root) = corpus() else { return };
    let files = yaml_files(&root.join("dataset_istio-86c9f01"));
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in &files {
        let p = parse_text(&path.display().to_string(), &read(path), "default");
        failures.extend(errors(&p.diagnostics));
        if p.resources.is_empty() {
            failures.push(format!("{}: no resources", path.display()));
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn valid_half_of_dataset_with_invalid_parses_cleanly() {
    let Some(root) = corpus() else { return };
    let files = yaml_files(&root.join("dataset-with-invalid_istio-26b6a59"));
    let (mut failures, mut invalid, mut rejected) = (Vec::new(), 0, 0);
    for path in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let p = parse_text(&path.display().to_string(), &read(path), "default");
        if name.ends_with("-valid.yaml") {
            failures.extend(errors(&p.diagnostics));
            if p.resources.is_empty() {
                failures.push(format!("{}: no resources", path.display()));
            }
        } else {
            invalid += 1;
            if !errors(&p.diagnostics).is_empty() {
                rejected += 1;
            }
        }
    }
    eprintln!("dataset-with-invalid: the loader alone already rejects {rejected} of {invalid} invalid files");
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// Splits a multi-document file; documents with a top-level `_err` have that line turned into a
/// comment (keeping line numbers) and are returned with `true`.
fn cel_documents(text: &str) -> Vec<(bool, String)> {
    let mut docs = vec![(false, String::new())];
    for line in text.lines() {
        if line == "---" {
            docs.push((false, String::new()));
            continue;
        }
        let Some(doc) = docs.last_mut() else { continue };
        if line.starts_with("_err:") {
            doc.0 = true;
            doc.1.push('#');
        }
        doc.1.push_str(line);
        doc.1.push('\n');
    }
    docs.retain(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

#[test]
fn crd_cel_documents_without_err_parse_cleanly() {
    let Some(root) = corpus() else { return };
    let files = yaml_files(&root.join("crd-cel_istio-86c9f01"));
    let (mut failures, mut with_err, mut rejected, mut accepted) = (Vec::new(), 0, 0, 0);
    for path in &files {
        for (i, (has_err, doc)) in cel_documents(&read(path)).into_iter().enumerate() {
            let file = format!("{}#{i}", path.display());
            let p = parse_text(&file, &doc, "default");
            if has_err {
                with_err += 1;
                if !errors(&p.diagnostics).is_empty() {
                    rejected += 1;
                }
            } else {
                accepted += 1;
                failures.extend(errors(&p.diagnostics));
                if p.resources.len() != 1 {
                    failures.push(format!("{file}: {} resources", p.resources.len()));
                }
            }
        }
    }
    assert!(accepted > 0);
    eprintln!("crd-cel: the loader alone already rejects {rejected} of {with_err} `_err` documents");
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
