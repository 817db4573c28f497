//! Upstream clusters: endpoints (static or DNS-resolved), load balancing, pooled connections.
//!
//! Pools are keyed by cluster name and survive snapshot swaps: a cluster whose definition is
//! unchanged keeps its pool as is; a changed one gets a new pool that still takes over the
//! connections of endpoints it shares with the old one (same address, protocol and TLS).

pub(crate) mod breaker;
mod conn;
mod dns;
pub(crate) mod h1;
pub(crate) mod hash;
mod lb;
pub(crate) mod outlier;
pub(crate) mod tls;

pub(crate) use conn::{connect_timeout, request_protocol, tune_socket, EndpointState, Head, Lease, SendError};

use crate::rng::FastRng;
use arc_swap::ArcSwap;
use breaker::Breaker;
use portico_model::snapshot::{Cluster, Discovery, Snapshot};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Settings the pools take from `ProxyOptions`.
#[derive(Clone)]
pub(crate) struct UpstreamConfig {
    pub max_idle_per_endpoint: usize,
    pub dns_refresh: Duration,
    /// Flips to `true` on shutdown: background DNS tasks stop.
    pub stop: watch::Receiver<bool>,
    /// Where each cluster's `portico_upstream_*` handle comes from (`ProxyOptions::telemetry`).
    pub telemetry: Option<portico_telemetry::Telemetry>,
}

/// All cluster pools of one snapshot.
#[derive(Default)]
pub(crate) struct Upstreams {
    /// Looked up once per request by cluster name. The names come from the config, not from
    /// clients, so a fast hash without flood resistance is fine (SipHash was 300 instructions
    /// per request).
    by_name: rustc_hash::FxHashMap<Arc<str>, Arc<ClusterPool>>,
}

impl Upstreams {
    /// Pools for `snapshot`'s clusters, reusing `prev`'s where possible. Must run on a tokio runtime
    /// (DNS clusters spawn their resolver).
    pub(crate) fn build(prev: &Upstreams, snapshot: &Snapshot, cfg: &UpstreamConfig) -> Upstreams {
        let mut by_name = rustc_hash::FxHashMap::with_capacity_and_hasher(snapshot.clusters.len(), Default::default());
        for (name, def) in &snapshot.clusters {
            let old = prev.by_name.get(name);
            let pool = match old {
                Some(old) if same_definition(&old.def, def) => old.clone(),
                _ => ClusterPool::new(def.clone(), old.map(|o| &**o), cfg),
            };
            by_name.insert(name.clone(), pool);
        }
        Upstreams { by_name }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<ClusterPool>> {
        self.by_name.get(name)
    }

    /// Every cluster pool (admin `/clusters`, pool gauges): control plane only.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ClusterPool>> {
        self.by_name.values()
    }
}

/// Everything that affects how we talk to a cluster (names and metric labels do not).
fn same_definition(a: &Cluster, b: &Cluster) -> bool {
    a.protocol == b.protocol
        && a.discovery == b.discovery
        && a.endpoints == b.endpoints
        && a.lb == b.lb
        && a.connect_timeout == b.connect_timeout
        && a.idle_timeout == b.idle_timeout
        && a.tcp_idle_timeout == b.tcp_idle_timeout
        && a.limits == b.limits
        && a.outlier == b.outlier
        && a.tls == b.tls
        && a.warmup == b.warmup
        && a.conn == b.conn
}

/// Endpoints can carry connections over from an old pool when they speak the same way (and
/// their sockets and HTTP/2 settings were made the same way).
fn compatible(a: &Cluster, b: &Cluster) -> bool {
    a.protocol == b.protocol && a.tls == b.tls && a.conn == b.conn
}

/// One cluster: its endpoints (with their connections) and load-balancing state.
pub(crate) struct ClusterPool {
    pub(crate) def: Arc<Cluster>,
    /// The endpoints and everything precomputed over them, replaced whole when they change.
    balancer: ArcSwap<lb::Balancer>,
    /// Circuit-breaker counters (kept with the pool across reloads of an unchanged cluster).
    pub(crate) breaker: Arc<Breaker>,
    /// Client TLS toward the endpoints (DestinationRule `tls`), built once per pool.
    pub(crate) tls: Option<Arc<tls::Connector>>,
    rr: AtomicUsize,
    resolved_once: AtomicBool,
    resolved: watch::Sender<bool>,
    max_idle: usize,
}

impl ClusterPool {
    fn new(def: Arc<Cluster>, prev: Option<&ClusterPool>, cfg: &UpstreamConfig) -> Arc<ClusterPool> {
        let prev = prev.filter(|p| compatible(&p.def, &def));
        let mut statics = Vec::new();
        let mut names = Vec::new();
        for ep in &def.endpoints {
            let meta = lb::Meta::of(ep);
            match ep.address.parse::<IpAddr>() {
                Ok(ip) if def.discovery == Discovery::Static => statics.push((SocketAddr::new(ip, ep.port), meta)),
                // DNS clusters may still list literal IPs; lookup_host passes them through. Each
                // address a name resolves to is an endpoint with the name's weight.
                _ => names.push((ep.address.clone(), ep.port, meta)),
            }
        }
        let needs_dns = !names.is_empty();
        let tls_connector = match def.tls.as_ref().map(tls::Connector::new) {
            None => None,
            Some(Ok(c)) => Some(Arc::new(c)),
            Some(Err(e)) => {
                // Requests then fail to connect (503 UF) rather than going out in plaintext.
                tracing::warn!(cluster = %def.name, error = %e, "upstream TLS settings unusable");
                Some(Arc::new(tls::Connector::broken()))
            }
        };
        let stats = cfg.telemetry.as_ref().map(|t| t.metrics().cluster(&def.name));
        let pool = Arc::new(ClusterPool {
            def,
            balancer: ArcSwap::from_pointee(lb::Balancer::default()),
            breaker: Arc::new(Breaker::new(stats)),
            tls: tls_connector,
            rr: AtomicUsize::new(0),
            resolved_once: AtomicBool::new(false),
            resolved: watch::Sender::new(false),
            max_idle: cfg.max_idle_per_endpoint,
        });
        if needs_dns {
            // Start from what the old pool resolved, so a reload leaves no gap.
            if let Some(p) = prev.filter(|p| p.resolved_once.load(Ordering::Acquire)) {
                let mut addrs = p.balancer.load().members();
                addrs.extend(statics.iter().cloned());
                pool.set_endpoints(addrs, Some(p));
                pool.mark_resolved();
            }
            dns::spawn(Arc::downgrade(&pool), statics, names, cfg.dns_refresh, cfg.stop.clone());
        } else {
            pool.set_endpoints(statics, prev);
            pool.mark_resolved();
        }
        pool
    }

    /// Replace the endpoint list, keeping the state (connections, counters) of addresses that
    /// stay, taken from this pool or from `carry`. An address listed twice (two DNS names
    /// resolving to it) counts once with the sum of the weights.
    fn set_endpoints(&self, mut addrs: Vec<(SocketAddr, lb::Meta)>, carry: Option<&ClusterPool>) {
        addrs.sort_by_key(|(a, _)| *a);
        addrs.dedup_by(|(a, m), (b, keep)| {
            if a == b {
                keep.weight = keep.weight.saturating_add(m.weight);
            }
            a == b
        });
        let current = self.balancer.load();
        let carried = carry.map(|c| c.balancer.load_full());
        // Envoy's slow start is for endpoints added to an existing cluster: the endpoints a
        // cluster starts with (first snapshot, a new cluster, a DNS cluster's first answer) are
        // not warmed up.
        let initial = carry.is_none() && !self.resolved_once.load(Ordering::Acquire);
        let joined = if initial { None } else { Some(tokio::time::Instant::now()) };
        let list: Vec<(Arc<EndpointState>, lb::Meta)> = addrs
            .into_iter()
            .map(|(a, meta)| {
                let state = current
                    .eps
                    .iter()
                    .chain(carried.iter().flat_map(|c| c.eps.iter()))
                    .find(|e| e.addr == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(a, self.max_idle, joined)));
                (state, meta)
            })
            .collect();
        self.balancer.store(Arc::new(lb::Balancer::new(&self.def, list)));
    }

    /// The endpoints in service now with their load-balancing weights (admin `/clusters`; a DNS
    /// name's weight is each of its addresses').
    pub(crate) fn endpoint_list(&self) -> Vec<(Arc<EndpointState>, u32)> {
        let b = self.balancer.load();
        b.eps.iter().cloned().zip(b.metas.iter().map(|m| m.weight)).collect()
    }

    fn mark_resolved(&self) {
        self.resolved_once.store(true, Ordering::Release);
        self.resolved.send_replace(true);
    }

    /// Choose an endpoint per the cluster's load-balancing policy; `None` when there is none
    /// (503 `UH`). Waits (bounded by the connect timeout) only for a DNS cluster's first resolution.
    /// `hash`: the request's consistent-hash key, if the policy has one and the request carries
    /// it. `avoid`: endpoints already tried (retries prefer another one, as Istio configures
    /// Envoy's `previous_hosts` predicate with 5 selection attempts).
    pub(crate) async fn pick(
        &self,
        rng: &FastRng,
        hash: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Option<Arc<EndpointState>> {
        if !self.resolved_once.load(Ordering::Acquire) {
            // Rare (a DNS cluster's first resolution): boxed, out of every request's future.
            let mut rx = self.resolved.subscribe();
            let wait = tokio::time::timeout(conn::connect_timeout(&self.def), async move {
                let _ = rx.wait_for(|r| *r).await;
            });
            let _ = Box::pin(wait).await;
        }
        let b = self.balancer.load();
        let cands = b.candidates(self.def.outlier.as_ref(), rng);
        let cands = cands.as_deref().unwrap_or(&b.all);
        let mut chosen = None;
        for attempt in 0u64..5 {
            let i = match hash {
                Some(h) if b.table.is_some() => {
                    // Later attempts probe other points of the table, deterministically.
                    let h = h.wrapping_add(attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    match b.table.as_ref().and_then(|t| t.lookup(h)) {
                        Some(i) if cands.contains(&(i as u32)) => Some(i),
                        // Not in service (ejected, or not in the chosen priority): a candidate
                        // still chosen by the key.
                        _ if cands.is_empty() => None,
                        _ => cands.get((h % cands.len() as u64) as usize).map(|i| *i as usize),
                    }
                }
                _ => lb::pick(&b, cands, &self.def.lb, rng, &self.rr),
            };
            let ep = b.eps.get(i?)?;
            chosen = Some(ep.clone());
            if !avoid.contains(&ep.addr) || cands.len() <= 1 {
                break;
            }
        }
        chosen
    }

    /// Tell outlier detection how a try at `ep` went.
    pub(crate) fn report(&self, ep: &EndpointState, outcome: outlier::Outcome) {
        if let Some(p) = &self.def.outlier {
            if outlier::report(p, &self.balancer.load().eps, ep, outcome) {
                if let Some(s) = &self.breaker.stats {
                    s.outlier_ejections_total.inc();
                }
            }
        }
    }
}

/// Counts a request against an endpoint (least-request load balancing) while it is alive, and
/// holds its circuit-breaker slot (`http2MaxRequests`) and its HTTP/2 stream
/// (`maxConcurrentStreams`) until the response is done.
pub(crate) struct ActiveRequest(Arc<EndpointState>, Option<breaker::Slot>, Option<Lease>);

impl ActiveRequest {
    pub(crate) fn new(ep: Arc<EndpointState>) -> ActiveRequest {
        ep.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(ep, None, None)
    }

    pub(crate) fn with_slot(mut self, slot: Option<breaker::Slot>) -> ActiveRequest {
        self.1 = slot;
        self
    }

    pub(crate) fn set_lease(&mut self, lease: Option<Lease>) {
        self.2 = lease;
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
