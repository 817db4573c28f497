//! State shared by the reload loop (`run.rs`, the writer) and the admin server (`admin.rs`, the
//! reader): what is in service, what the last reload found, and the log-level switch.

use portico_api::Diagnostic;
use portico_model::Snapshot;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Changes the log filter at run time (`/logging?level=…`): takes `EnvFilter` directives.
pub type LogControl = Box<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

/// What `/config_dump` shows: the snapshot in service and what the last reload found.
#[derive(Default)]
pub struct ConfigState {
    pub generation: u64,
    pub snapshot: Option<Arc<Snapshot>>,
    pub diagnostics: Vec<Diagnostic>,
    pub last_reload_ok: bool,
    pub last_reload_error: Option<String>,
    pub last_good_unix: u64,
    pub kept_last_good: Vec<String>,
    /// The config in service was loaded after every source's first full view.
    pub source_ready: bool,
}

pub type SharedState = Arc<Mutex<ConfigState>>;

/// A fresh, empty state (nothing in service yet).
pub fn shared() -> SharedState {
    Arc::new(Mutex::new(ConfigState::default()))
}

/// Lock the state; a panicked writer leaves plain data behind, still worth showing.
pub fn lock(state: &SharedState) -> MutexGuard<'_, ConfigState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the epoch (0 if the clock is before it), for `last_good_unix`.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
