//! Each watcher's state, for readiness, logs, `/config_dump` and the `portico_source_*` metrics.

use crate::store::Store;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WatcherStatus {
    pub kind: &'static str,
    /// Listed at least once: readiness waits for every watcher's first list.
    pub synced: bool,
    /// The last call to the API server worked.
    pub connected: bool,
    pub errors: u64,
    pub events: u64,
    /// Watches that resumed too late (410 Gone) and relisted.
    pub relists: u64,
    pub objects: usize,
    /// Objects that came with an error diagnostic (dropped, the rest served).
    pub rejected: usize,
    pub last_error: Option<String>,
}

/// A per-watcher metric: name, type, help, value.
type Series = (&'static str, &'static str, &'static str, fn(&WatcherStatus) -> u64);

#[derive(Default)]
pub struct Status {
    watchers: Mutex<BTreeMap<String, WatcherStatus>>,
    /// A call failed and the API server has not answered since (a watch that resumes quietly
    /// yields no event to tell).
    disconnected: Mutex<bool>,
    /// Status write-back: this replica holds the lease; status writes done.
    leader: std::sync::atomic::AtomicBool,
    status_writes: std::sync::atomic::AtomicU64,
}

impl Status {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, WatcherStatus>) -> R) -> R {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    pub(crate) fn register(&self, id: &str, kind: &'static str) {
        self.with(|w| {
            w.insert(id.to_string(), WatcherStatus { kind, ..WatcherStatus::default() });
        });
    }

    pub(crate) fn synced(&self, id: &str) {
        let first = self.with(|w| {
            let s = w.entry(id.to_string()).or_default();
            let first = !s.synced;
            s.synced = true;
            first
        });
        if first {
            tracing::info!("kubernetes: {id} synced");
        }
    }

    pub(crate) fn is_synced(&self, id: &str) -> bool {
        self.with(|w| w.get(id).is_some_and(|s| s.synced))
    }

    pub(crate) fn ok(&self, id: &str) {
        self.with(|w| {
            let s = w.entry(id.to_string()).or_default();
            s.events += 1;
            s.connected = true;
        });
    }

    pub(crate) fn expired(&self, id: &str) {
        self.with(|w| w.entry(id.to_string()).or_default().relists += 1);
    }

    /// The API server answered a probe: every watcher that failed is retrying against a
    /// server that is there again.
    pub(crate) fn reachable(&self) {
        let was_down = std::mem::replace(&mut *self.disconnected.lock().unwrap_or_else(|e| e.into_inner()), false);
        if was_down {
            self.with(|w| w.values_mut().for_each(|s| s.connected = true));
            tracing::info!("kubernetes: the API server answers again; watches resume (relisting where needed)");
        }
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        *self.disconnected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An error from the API server. The first after a good spell is a warning; the retries
    /// that follow (with backoff) are debug, so an outage does not flood the log.
    pub(crate) fn error(&self, id: &str, e: &str) {
        let (was_connected, first) = self.with(|w| {
            let s = w.entry(id.to_string()).or_default();
            let was = s.connected;
            let first = s.errors == 0;
            s.connected = false;
            s.errors += 1;
            s.last_error = Some(e.to_string());
            (was, first)
        });
        *self.disconnected.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if was_connected || first {
            tracing::warn!("kubernetes: {id} watch failed ({e}); serving the last good config, retrying with backoff");
        } else {
            tracing::debug!("kubernetes: {id} watch still failing: {e}");
        }
    }

    pub(crate) fn set_counts(&self, st: &Store) {
        self.with(|w| {
            for (id, s) in w.iter_mut() {
                s.objects = st.count(id);
                s.rejected = st.rejected(id);
            }
        });
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.store(leader, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn status_written(&self) {
        self.status_writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// This replica holds the status lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn all_synced(&self) -> bool {
        self.with(|w| w.values().all(|s| s.synced))
    }

    pub fn snapshot(&self) -> BTreeMap<String, WatcherStatus> {
        self.with(|w| w.clone())
    }

    /// Prometheus text (0.0.4) of the source's state.
    pub fn render(&self) -> String {
        let w = self.snapshot();
        let mut out = String::new();
        let all_synced = w.values().all(|s| s.synced);
        let all_connected = !self.is_disconnected();
        let _ = writeln!(out, "# HELP portico_source_synced 1 when every Kubernetes watcher has listed once.");
        let _ = writeln!(out, "# TYPE portico_source_synced gauge");
        let _ = writeln!(out, "portico_source_synced{{source=\"kubernetes\"}} {}", u8::from(all_synced));
        let _ = writeln!(
            out,
            "# HELP portico_source_connected 0 from a failed call to the API server until it answers again."
        );
        let _ = writeln!(out, "# TYPE portico_source_connected gauge");
        let _ = writeln!(out, "portico_source_connected{{source=\"kubernetes\"}} {}", u8::from(all_connected));
        let _ = writeln!(
            out,
            "# HELP portico_status_leader 1 while this replica holds the status lease (writes Gateway API status)."
        );
        let _ = writeln!(out, "# TYPE portico_status_leader gauge");
        let _ = writeln!(out, "portico_status_leader{{source=\"kubernetes\"}} {}", u8::from(self.is_leader()));
        let _ = writeln!(
            out,
            "# HELP portico_status_writes_total Gateway API status writes to the API server by this replica."
        );
        let _ = writeln!(out, "# TYPE portico_status_writes_total counter");
        let _ = writeln!(
            out,
            "portico_status_writes_total{{source=\"kubernetes\"}} {}",
            self.status_writes.load(std::sync::atomic::Ordering::Relaxed)
        );
        let series: [Series; 5] = [
            ("portico_source_relists_total", "counter", "Relists after a 410 Gone, per watcher.", |s| s.relists),
            ("portico_source_watch_errors_total", "counter", "Failed list/watch calls, per watcher.", |s| s.errors),
            ("portico_source_events_total", "counter", "Watch events received, per watcher.", |s| s.events),
            ("portico_source_objects", "gauge", "Objects held, per watcher.", |s| s.objects as u64),
            (
                "portico_source_rejected_objects",
                "gauge",
                "Objects dropped with an error diagnostic, per watcher.",
                |s| s.rejected as u64,
            ),
        ];
        for (name, ty, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {ty}");
            for (id, s) in &w {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"kubernetes\",watcher=\"{}\",kind=\"{}\"}} {}",
                    id.replace('\\', "\\\\").replace('"', "\\\""),
                    s.kind,
                    get(s)
                );
            }
        }
        out
    }
}
