//! Circuit breaking (Envoy's per-cluster resource limits, from DestinationRule
//! `connectionPool`): counters of open connections, pending requests, active requests and
//! active retries. Plain atomics: a request that would pass a limit is refused at once (503 `UO`).
//!
//! The counters live in the cluster's pool, so they survive a reload that leaves the cluster
//! unchanged (the pool is kept), as Envoy keeps a cluster's circuit breakers.

use portico_model::snapshot::Limits;
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
    fn counter(&self, r: Resource) -> &AtomicU32 {
        match r {
            Resource::Connection => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Request => &self.requests,
            Resource::Retry => &self.retries,
        }
    }

    /// Take one unit of `r` if under `max`; `None` = overflow.
    pub(crate) fn try_acquire(self: &Arc<Self>, r: Resource, limits: &Limits) -> Option<Slot> {
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
                Ok(_) => return Some(Slot { breaker: self.clone(), resource: r }),
                Err(now) => cur = now,
            }
        }
    }
}

/// One unit of a limited resource, given back on drop.
pub(crate) struct Slot {
    breaker: Arc<Breaker>,
    resource: Resource,
}

impl Drop for Slot {
    fn drop(&mut self) {
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
}
