//! Circuit breaking (Envoy's per-cluster resource limits, from DestinationRule
//! `connectionPool`): counters of open connections, pending requests, active requests and
//! active retries. Plain atomics: a request that would pass a limit is refused at once (503 `UO`).
//!
//! The counters live in the cluster's pool, so they survive a reload that leaves the cluster
//! unchanged (the pool is kept), as Envoy keeps a cluster's circuit breakers.
//!
//! The breaker also carries the cluster's metrics handle (supplied by the embedder through
//! `ProxyOptions::telemetry`): it lives exactly as long as the pool, and overflows are counted
//! where they are decided. Counting is one relaxed atomic add; no lookup on the request path.

use portico_model::snapshot::Limits;
use portico_telemetry::{BreakerResource, ClusterStats};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Breaker {
    pub(crate) connections: AtomicU32,
    pub(crate) pending: AtomicU32,
    pub(crate) requests: AtomicU32,
    pub(crate) retries: AtomicU32,
    /// Signalled when a connection goes idle or closes: wakes requests pending for one. Only
    /// requests over `maxConnections` ever wait here; the normal path never touches it.
    pub(crate) freed: Notify,
    /// The cluster's `portico_upstream_*` handle; `None` counts nothing.
    pub(crate) stats: Option<Arc<ClusterStats>>,
}

/// Which counter a [`Slot`] holds.
#[derive(Clone, Copy)]
pub(crate) enum Resource {
    Connection,
    Pending,
    Request,
    Retry,
}

impl Breaker {
    pub(crate) fn new(stats: Option<Arc<ClusterStats>>) -> Breaker {
        Breaker { stats, ..Breaker::default() }
    }

    fn counter(&self, r: Resource) -> &AtomicU32 {
        match r {
            Resource::Connection => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Request => &self.requests,
            Resource::Retry => &self.retries,
        }
    }

    /// Take one unit of `r` if under `max`; `None` = overflow (counted).
    pub(crate) fn try_acquire(self: &Arc<Self>, r: Resource, limits: &Limits) -> Option<Slot> {
        let slot = self.try_acquire_quiet(r, limits);
        if slot.is_none() {
            if let Some(s) = &self.stats {
                s.overflow(match r {
                    Resource::Connection => BreakerResource::Connections,
                    Resource::Pending => BreakerResource::Pending,
                    Resource::Request => BreakerResource::Requests,
                    Resource::Retry => BreakerResource::Retries,
                });
            }
        }
        slot
    }

    /// As [`try_acquire`](Self::try_acquire), without counting an overflow: for a request that
    /// already overflowed once and is pending, so each wake-up is not another overflow.
    pub(crate) fn try_acquire_quiet(self: &Arc<Self>, r: Resource, limits: &Limits) -> Option<Slot> {
        let max = match r {
            Resource::Connection => limits.max_connections,
            Resource::Pending => limits.max_pending_requests,
            Resource::Request => limits.max_requests,
            Resource::Retry => limits.max_retries,
        };
        let c = self.counter(r);
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match c.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if let (Resource::Connection, Some(s)) = (r, &self.stats) {
                        // Envoy's upstream_cx_total counts a connection when it is started.
                        s.connections_total.inc();
                    }
                    return Some(Slot { breaker: self.clone(), resource: r, endpoint: None });
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// One unit of a limited resource, given back on drop.
pub(crate) struct Slot {
    breaker: Arc<Breaker>,
    resource: Resource,
    /// A per-endpoint count this slot also holds (open connections of an endpoint, `/clusters`).
    endpoint: Option<Arc<AtomicU32>>,
}

impl Slot {
    /// Also count this slot in `counter` (for as long as it is held).
    pub(crate) fn also_in(mut self, counter: &Arc<AtomicU32>) -> Slot {
        counter.fetch_add(1, Ordering::Relaxed);
        self.endpoint = Some(counter.clone());
        self
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.endpoint {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.breaker.counter(self.resource).fetch_sub(1, Ordering::AcqRel);
        if matches!(self.resource, Resource::Connection) {
            self.breaker.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let b = Arc::new(Breaker::default());
        let limits = Limits { max_requests: 2, ..Limits::default() };
        let a = b.try_acquire(Resource::Request, &limits);
        let c = b.try_acquire(Resource::Request, &limits);
        assert!(a.is_some() && c.is_some());
        assert!(b.try_acquire(Resource::Request, &limits).is_none());
        drop(a);
        assert!(b.try_acquire(Resource::Request, &limits).is_some());
        // Other resources are unlimited by default (Istio sets 2^32-1).
        assert!(b.try_acquire(Resource::Retry, &limits).is_some());
    }

    #[test]
    fn overflows_are_counted_per_resource() {
        let m = portico_telemetry::Metrics::new(Default::default());
        let stats = m.cluster("c");
        let b = Arc::new(Breaker::new(Some(stats.clone())));
        let limits = Limits { max_connections: 1, max_retries: 0, ..Limits::default() };
        let open = Arc::new(AtomicU32::new(0));
        let held = b.try_acquire(Resource::Connection, &limits).map(|s| s.also_in(&open));
        assert!(held.is_some());
        assert_eq!(open.load(Ordering::Relaxed), 1);
        assert!(b.try_acquire(Resource::Connection, &limits).is_none());
        assert!(b.try_acquire_quiet(Resource::Connection, &limits).is_none());
        assert!(b.try_acquire(Resource::Retry, &limits).is_none());
        assert_eq!(stats.overflows(BreakerResource::Connections), 1, "the quiet retry is not another overflow");
        assert_eq!(stats.overflows(BreakerResource::Retries), 1);
        assert_eq!(stats.overflows(BreakerResource::Requests), 0);
        assert_eq!(stats.connections_total.get(), 1);
        drop(held);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
