//! The control surface the binary drives: apply snapshots, report addresses and readiness, drain.

use crate::error::ProxyError;
use crate::listener::{self, ListenerHandle};
use crate::options::ProxyOptions;
use crate::state::{Shared, State};
use crate::tls::TlsStore;
use crate::upstream::{UpstreamConfig, Upstreams};
use arc_swap::ArcSwap;
use portico_model::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// One cluster as `/clusters` shows it.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    pub name: Arc<str>,
    pub host: String,
    pub namespace: String,
    pub version: Option<String>,
    pub endpoints: Vec<EndpointInfo>,
    /// Connections open to the cluster (busy or idle), as its `maxConnections` breaker counts them.
    pub open_connections: u32,
    /// Circuit-breaker counters now: pending requests, active requests, active retries.
    pub pending_requests: u32,
    pub active_requests: u32,
    pub active_retries: u32,
    /// The cluster's connection-pool limits (`u32::MAX` = unlimited).
    pub limits: portico_model::snapshot::Limits,
}

/// One endpoint of a cluster, now.
#[derive(Clone, Debug)]
pub struct EndpointInfo {
    pub addr: SocketAddr,
    /// Requests in flight to it.
    pub active_requests: usize,
    /// Idle keep-alive connections pooled for it (HTTP/1).
    pub idle_connections: usize,
    /// Connections open to it (busy or idle).
    pub open_connections: u32,
    /// Its load-balancing weight (ServiceEntry endpoint `weight`; 1 when unset).
    pub weight: u32,
    /// Not ejected by outlier detection.
    pub healthy: bool,
    /// How many times outlier detection ejected it (the multiplier of its next ejection time;
    /// it decays while the endpoint stays healthy, as Envoy's does).
    pub times_ejected: u32,
    /// What is left of its current ejection (`None`: not ejected).
    pub ejected_for: Option<std::time::Duration>,
}

/// The data plane. Cheap to clone: clones share one proxy.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The runtime current at `Proxy::new`: listeners and background tasks run there, whichever
    /// runtime calls `apply`.
    runtime: Option<tokio::runtime::Handle>,
    control: tokio::sync::Mutex<Control>,
    addrs: ArcSwap<Vec<(u32, SocketAddr)>>,
    ready: AtomicBool,
    draining: AtomicBool,
}

#[derive(Default)]
struct Control {
    listeners: BTreeMap<u32, ListenerHandle>,
    /// Drains of removed ports still running.
    draining: Vec<JoinHandle<()>>,
    /// The periodic re-read of certificate files.
    tls_refresh: Option<JoinHandle<()>>,
}

/// Re-read certificate files every `tls_refresh_interval`: changed material gets a new config
/// for new handshakes; open connections keep theirs.
async fn refresh_tls(shared: std::sync::Weak<Shared>) {
    let Some(interval) = shared.upgrade().map(|s| s.opts.tls_refresh_interval) else { return };
    let mut stop = match shared.upgrade() {
        Some(s) => s.stop.subscribe(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(shared) = shared.upgrade() else { return };
        // File reads stay off the data-plane threads.
        let _ = tokio::task::spawn_blocking(move || reload_tls(&shared)).await;
    }
}

/// Rebuild the current state's TLS configs from the material as it is now.
fn reload_tls(shared: &Shared) {
    let state = shared.state.load_full();
    let (store, changed) = TlsStore::build(&state.snapshot, &state.tls.load(), &shared.crypto);
    if changed {
        state.tls.store(Arc::new(store));
    }
}

impl Proxy {
    /// A proxy with no configuration: no listener is open until [`Proxy::apply`].
    ///
    /// Call it inside the data-plane runtime (`Runtime::enter` or from a task): listeners and
    /// background tasks are spawned on the runtime current here, even when `apply` is awaited on
    /// another one. Without a current runtime they go to the runtime that calls `apply`.
    pub fn new(opts: ProxyOptions) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(opts)),
                runtime: tokio::runtime::Handle::try_current().ok(),
                control: tokio::sync::Mutex::new(Control::default()),
                addrs: ArcSwap::from_pointee(Vec::new()),
                ready: AtomicBool::new(false),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Serve `snapshot` from now on.
    ///
    /// Binds a listener for each new plaintext HTTP port (if any bind fails nothing changes: the
    /// error is returned and the previous configuration keeps serving), keeps the listeners of
    /// ports that stay (never rebound), swaps the snapshot atomically, then drains the listeners
    /// of removed ports in the background. Requests in flight finish on the snapshot they
    /// started with. Upstream pools of unchanged clusters are kept.
    ///
    /// TLS configs are built here (certificate files read now) and kept by content: unchanged
    /// material keeps its config. Files are re-read every `tls_refresh_interval` as well.
    pub async fn apply(&self, snapshot: Arc<Snapshot>) -> Result<(), ProxyError> {
        let inner = &self.inner;
        let shared = &inner.shared;
        let mut ctl = inner.control.lock().await;
        if inner.draining.load(Ordering::Acquire) {
            return Err(ProxyError::ShuttingDown);
        }
        let wanted: BTreeSet<u32> = snapshot.listeners.iter().map(|l| l.port).collect();
        let removed = {
            // No await in this block: sockets register with, and tasks spawn on, the data-plane
            // runtime.
            let _runtime = inner.runtime.as_ref().map(tokio::runtime::Handle::enter);
            let mut fresh = Vec::new();
            for &port in wanted.iter().filter(|p| !ctl.listeners.contains_key(p)) {
                let local = match shared.opts.port_map.get(&port) {
                    Some(&p) => p,
                    None => u16::try_from(port).map_err(|_| ProxyError::PortOutOfRange { port })?,
                };
                let addr = SocketAddr::new(shared.opts.bind, local);
                let bound = listener::bind(addr).and_then(|l| l.local_addr().map(|a| (l, a)));
                let (l, local_addr) = bound.map_err(|source| ProxyError::Bind { port, addr, source })?;
                fresh.push((port, l, local_addr));
            }

            let cfg = UpstreamConfig {
                max_idle_per_endpoint: shared.opts.max_idle_per_endpoint,
                dns_refresh: shared.opts.dns_refresh,
                stop: shared.stop.subscribe(),
                telemetry: shared.opts.telemetry.clone(),
            };
            let old = shared.state.load_full();
            let upstreams = Upstreams::build(&old.upstreams, &snapshot, &cfg);
            let (tls, _) = TlsStore::build(&snapshot, &old.tls.load(), &shared.crypto);
            let state = State::new(snapshot, upstreams);
            // Set before the state is published: a handshake never sees a state without its configs.
            state.tls.store(Arc::new(tls));
            shared.state.store(Arc::new(state));
            if ctl.tls_refresh.is_none() {
                ctl.tls_refresh = Some(tokio::spawn(refresh_tls(Arc::downgrade(shared))));
            }

            for (port, l, local_addr) in fresh {
                tracing::info!(port, %local_addr, "listening");
                ctl.listeners.insert(port, ListenerHandle::start(port, l, local_addr, shared.clone()));
            }
            let gone: Vec<u32> = ctl.listeners.keys().filter(|p| !wanted.contains(p)).copied().collect();
            gone.into_iter().filter_map(|p| ctl.listeners.remove(&p).map(|h| (p, h))).collect::<Vec<_>>()
        };
        for (port, mut h) in removed {
            tracing::info!(port, "draining removed listener");
            // Closed before returning, so a later apply can bind the port again.
            h.stop_accepting().await;
            let drain = h.drain(shared.opts.drain_timeout);
            ctl.draining.push(match &inner.runtime {
                Some(rt) => rt.spawn(drain),
                None => tokio::spawn(drain),
            });
        }
        ctl.draining.retain(|h| !h.is_finished());
        inner.addrs.store(Arc::new(ctl.listeners.iter().map(|(p, h)| (*p, h.local_addr)).collect()));
        inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Re-read certificate files now (as the periodic refresh does): new handshakes use changed
    /// certificates, open connections are untouched.
    pub fn reload_tls(&self) {
        reload_tls(&self.inner.shared);
    }

    /// The snapshot new requests are served from (an empty one before the first `apply`).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.shared.state.load().snapshot.clone()
    }

    /// The clusters in service and their endpoints, sorted by name (admin `/clusters`, pool
    /// gauges). Reads the pools' atomics: cheap, but meant for the control plane.
    pub fn clusters(&self) -> Vec<ClusterInfo> {
        let state = self.inner.shared.state.load_full();
        let mut out: Vec<ClusterInfo> = state
            .upstreams
            .iter()
            .map(|pool| {
                let b = &pool.breaker;
                ClusterInfo {
                    name: pool.def.name.clone(),
                    host: pool.def.host.clone(),
                    namespace: pool.def.namespace.clone(),
                    version: pool.def.version.clone(),
                    endpoints: pool
                        .endpoint_list()
                        .iter()
                        .map(|(e, weight)| {
                            let ejected_for = e.outlier.ejected_for();
                            EndpointInfo {
                                addr: e.addr,
                                active_requests: e.active(),
                                idle_connections: e.idle_connections(),
                                open_connections: e.open.load(Ordering::Relaxed),
                                weight: *weight,
                                healthy: ejected_for.is_none(),
                                times_ejected: e.outlier.times_ejected(),
                                ejected_for,
                            }
                        })
                        .collect(),
                    open_connections: b.connections.load(Ordering::Relaxed),
                    pending_requests: b.pending.load(Ordering::Relaxed),
                    active_requests: b.requests.load(Ordering::Relaxed),
                    active_retries: b.retries.load(Ordering::Relaxed),
                    limits: pool.def.limits.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The bound address of each Gateway port, sorted by port.
    pub fn local_addrs(&self) -> Vec<(u32, SocketAddr)> {
        self.inner.addrs.load().as_ref().clone()
    }

    /// HTTP/1 keep-alive connections idle long enough to be parked right now: they hold a
    /// socket and a few hundred bytes, none of hyper's buffers.
    pub fn parked_connections(&self) -> usize {
        // TLS connections wait in their own tasks (counted there), plaintext ones in the lot.
        self.inner.shared.parked.load(Ordering::Relaxed) + self.inner.shared.lot.len()
    }

    /// True once a snapshot has been applied and its listeners are bound; false once draining.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && !self.inner.draining.load(Ordering::Acquire)
    }

    /// Stop accepting (listening sockets close: new connections are refused), let in-flight
    /// requests finish (HTTP/1 responses carry `Connection: close`, HTTP/2 gets GOAWAY) for up to
    /// `drain_timeout`, then close what is left and return. Later `apply` calls fail.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::Release);
        let (listeners, drains) = {
            let mut ctl = inner.control.lock().await;
            if let Some(r) = ctl.tls_refresh.take() {
                r.abort();
            }
            (std::mem::take(&mut ctl.listeners), std::mem::take(&mut ctl.draining))
        };
        inner.addrs.store(Arc::new(Vec::new()));
        inner.shared.stop.send_replace(true);
        let timeout = inner.shared.opts.drain_timeout;
        futures_util::future::join_all(listeners.into_values().map(|h| h.drain(timeout))).await;
        for d in drains {
            let _ = d.await;
        }
    }
}
