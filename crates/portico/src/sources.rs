//! The config sources of `portico run`: files (`--config`), the Kubernetes API
//! (`--kubernetes`), or both (files add to what the API has).

use crate::files::FileSource;
use portico_api::{Diagnostic, Resource};
use portico_kube::KubeSource;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

pub struct Sources {
    pub files: Option<FileSource>,
    pub kube: Option<KubeSource>,
}

/// One load of every source.
pub struct Load {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    pub kept_last_good: Vec<PathBuf>,
    pub failed: bool,
    /// Equal fingerprints mean nothing changed.
    pub fingerprint: u64,
    /// Every source had its first full view when this was loaded (the Kubernetes watchers
    /// have listed once): the config may be called ready.
    pub complete: bool,
}

impl Sources {
    /// Hand the compiler's Gateway API status to the Kubernetes source (its lease holder writes
    /// it back). Only a complete view is published: a status computed before every watcher
    /// listed would mark routes unresolved that are not.
    pub fn publish_status(&self, complete: bool, snapshot: &portico_model::snapshot::Snapshot) {
        if let (true, Some(k)) = (complete, &self.kube) {
            k.publish_status(&snapshot.gateway_api);
        }
    }

    pub fn load(&mut self) -> Load {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut out = Load {
            resources: Vec::new(),
            diagnostics: Vec::new(),
            kept_last_good: Vec::new(),
            failed: false,
            fingerprint: 0,
            complete: true,
        };
        if let Some(k) = &self.kube {
            // Read `synced` before the objects: a watcher that syncs in between only makes this
            // load more complete than it claims, never less.
            let synced = k.synced();
            out.complete = synced;
            // Until every watcher has listed, the API's view is partial (a VirtualService
            // without its Service yet would be served as 503s): none of it is used.
            if synced {
                let l = k.load();
                l.generation.hash(&mut hasher);
                out.resources.extend(l.resources);
                out.diagnostics.extend(l.diagnostics);
            }
            synced.hash(&mut hasher);
        }
        if let Some(f) = &mut self.files {
            let l = f.load();
            l.fingerprint.hash(&mut hasher);
            out.resources.extend(l.resources);
            out.diagnostics.extend(l.diagnostics);
            out.kept_last_good = l.kept_last_good;
            out.failed = l.failed;
        }
        out.fingerprint = hasher.finish();
        out
    }
}
