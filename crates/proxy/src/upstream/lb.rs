//! Load balancing over a cluster's endpoints (Envoy's policies; Istio defaults to LEAST_REQUEST).

use super::EndpointState;
use crate::rng::FastRng;
use portico_model::snapshot::LbPolicy;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(super) fn pick<'a>(
    eps: &'a [Arc<EndpointState>],
    lb: &LbPolicy,
    rng: &FastRng,
    rr: &AtomicUsize,
) -> Option<&'a Arc<EndpointState>> {
    let n = eps.len();
    if n <= 1 {
        return eps.first();
    }
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    match lb {
        LbPolicy::RoundRobin => eps.get(rr.fetch_add(1, Ordering::Relaxed) % n),
        // A consistent-hash request without its key goes to a random endpoint, as Envoy does.
        LbPolicy::Random | LbPolicy::ConsistentHash(..) => eps.get(rng.below(n32) as usize),
        LbPolicy::LeastRequest => {
            // Power of two choices over active requests (Envoy's default choice_count = 2),
            // two distinct candidates.
            let a = rng.below(n32) as usize;
            let mut b = rng.below(n32 - 1) as usize;
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (eps.get(a)?, eps.get(b)?);
            if eb.active() < ea.active() {
                Some(eb)
            } else {
                Some(ea)
            }
        }
    }
}
