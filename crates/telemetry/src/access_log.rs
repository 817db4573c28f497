//! The access-log sink: formats a line on the calling thread (one `String`), hands it to a bounded
//! channel and returns. A writer thread drains the channel in batches (one `write_all` + `flush`
//! per batch), polling it so that logging a line never wakes a thread. When the channel is full the line is dropped and counted
//! (`portico_access_log_dropped_total`): the data path never waits for stdout.

use crate::format;
use crate::metrics::Counter;
use crate::record::{RequestRecord, TcpRecord};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines the buffer holds before it drops (the default of [`AccessLog::new`]'s `capacity`).
pub const DEFAULT_CAPACITY: usize = 8192;
/// Bytes gathered before the writer thread writes (it also writes as soon as the channel is empty).
const BATCH_BYTES: usize = 64 * 1024;

/// `--access-log`: `text` (Istio's default), `json`, or `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
    Off,
}

impl FromStr for AccessLogFormat {
    type Err = ParseFormatError;
    fn from_str(s: &str) -> Result<AccessLogFormat, ParseFormatError> {
        match s {
            "text" | "TEXT" => Ok(AccessLogFormat::Text),
            "json" | "JSON" => Ok(AccessLogFormat::Json),
            "off" | "OFF" | "none" => Ok(AccessLogFormat::Off),
            _ => Err(ParseFormatError(s.to_string())),
        }
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessLogFormat::Text => "text",
            AccessLogFormat::Json => "json",
            AccessLogFormat::Off => "off",
        })
    }
}

/// An access-log format name that is not `text`, `json` or `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFormatError(String);

impl fmt::Display for ParseFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown access log format {:?}: expected text, json or off", self.0)
    }
}

impl std::error::Error for ParseFormatError {}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

struct Shared {
    format: AccessLogFormat,
    tx: SyncSender<Msg>,
    dropped: Counter,
}

/// The access-log handle. Cheap to clone; `off` holds nothing and costs one branch per record.
/// The writer thread ends once every clone is dropped and the buffer is written out.
#[derive(Clone, Default)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog").field("format", &self.format()).finish()
    }
}

impl AccessLog {
    /// No access log.
    pub fn off() -> AccessLog {
        AccessLog { shared: None }
    }

    /// An access log to stdout (Istio's `/dev/stdout`).
    pub fn stdout(format: AccessLogFormat, dropped: Counter) -> io::Result<AccessLog> {
        AccessLog::new(format, Box::new(io::stdout()), DEFAULT_CAPACITY, dropped)
    }

    /// An access log to `writer`, buffering up to `capacity` lines; lines dropped when it is full
    /// (or lost to a write error) are added to `dropped`. `Off` starts no thread.
    pub fn new(
        format: AccessLogFormat,
        writer: Box<dyn Write + Send>,
        capacity: usize,
        dropped: Counter,
    ) -> io::Result<AccessLog> {
        if format == AccessLogFormat::Off {
            return Ok(AccessLog::off());
        }
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let thread_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&rx, writer, &thread_dropped))?;
        Ok(AccessLog { shared: Some(Arc::new(Shared { format, tx, dropped })) })
    }

    pub fn format(&self) -> AccessLogFormat {
        self.shared.as_ref().map_or(AccessLogFormat::Off, |s| s.format)
    }

    /// Log one HTTP request (never blocks).
    pub fn log_request(&self, r: &RequestRecord) {
        let Some(shared) = &self.shared else { return };
        let mut line = String::with_capacity(512);
        match shared.format {
            AccessLogFormat::Json => format::json_request(&mut line, r),
            _ => format::text_request(&mut line, r),
        }
        shared.send(line);
    }

    /// Log one TCP connection (never blocks).
    pub fn log_tcp(&self, r: &TcpRecord) {
        let Some(shared) = &self.shared else { return };
        let mut line = String::with_capacity(384);
        match shared.format {
            AccessLogFormat::Json => format::json_tcp(&mut line, r),
            _ => format::text_tcp(&mut line, r),
        }
        shared.send(line);
    }

    /// Wait until every line logged before this call is written (or `timeout` passes: false).
    /// For shutdown and tests; not for the data path.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(shared) = &self.shared else { return true };
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match shared.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

impl Shared {
    fn send(&self, line: String) {
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.inc();
        }
    }
}

struct Batch {
    bytes: Vec<u8>,
    lines: u64,
    waiters: Vec<SyncSender<()>>,
}

impl Batch {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Line(l) => {
                self.bytes.extend_from_slice(l.as_bytes());
                self.lines += 1;
            }
            Msg::Flush(done) => self.waiters.push(done),
        }
    }
}

/// How long the writer thread sleeps when it finds nothing to write. It polls rather than blocks
/// in `recv`: a blocked receiver would be woken (a futex call and a context switch) by every
/// request's line, which on a busy core costs more than the formatting. Lines reach stdout at most
/// this late.
const IDLE_POLL: Duration = Duration::from_millis(10);

fn write_loop(rx: &Receiver<Msg>, mut writer: Box<dyn Write + Send>, dropped: &Counter) {
    let mut batch = Batch { bytes: Vec::with_capacity(BATCH_BYTES), lines: 0, waiters: Vec::new() };
    loop {
        let mut closed = false;
        while batch.bytes.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(msg) => batch.take(msg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let idle = batch.bytes.is_empty() && batch.waiters.is_empty();
        if !batch.bytes.is_empty() && writer.write_all(&batch.bytes).and_then(|()| writer.flush()).is_err() {
            dropped.add(batch.lines);
        }
        batch.bytes.clear();
        if batch.bytes.capacity() > 4 * BATCH_BYTES {
            batch.bytes.shrink_to(BATCH_BYTES);
        }
        batch.lines = 0;
        for done in batch.waiters.drain(..) {
            let _ = done.try_send(());
        }
        if closed {
            break;
        }
        if idle {
            std::thread::sleep(IDLE_POLL);
        }
    }
    let _ = writer.flush();
}
