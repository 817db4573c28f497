//! Load balancing over a cluster's endpoints (Envoy's policies; Istio defaults to LEAST_REQUEST).
//!
//! A `Balancer` is built whenever the endpoint list changes (reload, DNS refresh), never per
//! request: the endpoints with their weights, a weighted round-robin schedule and the
//! consistent-hash table. A request only reads it.
//!
//! Weights (ServiceEntry endpoint `weight`) as Envoy uses them:
//! * ROUND_ROBIN: plain rotation when all weights are equal; otherwise a precomputed smooth
//!   weighted schedule (each endpoint appears `weight` times per cycle, interleaved — the same
//!   order an EDF scheduler over static weights yields).
//! * RANDOM: picks in proportion to weight.
//! * LEAST_REQUEST: power of two choices when all weights are equal; otherwise Envoy weighs each
//!   endpoint `weight / (active_requests + 1)^bias` (bias 1.0). Envoy draws from an EDF scheduler
//!   over those dynamic weights; we draw at random in proportion to them, which needs no shared
//!   mutable scheduler (no lock) and gives the same expected shares.
//!
//! Slow start (DestinationRule `warmup`, ROUND_ROBIN and LEAST_REQUEST only, as in Envoy): an
//! endpoint that joined less than `duration` ago has its weight scaled by
//! `max(minimumPercent, (t / duration)^(1/aggression))` (t at least 1 s, as Envoy counts). While
//! any endpoint is warming up, round robin draws in proportion to the scaled weights too (the
//! weights change continuously, so no fixed cycle fits them).

use super::EndpointState;
use crate::rng::FastRng;
use portico_model::snapshot::{Cluster, Endpoint, LbPolicy, Warmup};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the cluster definition says about one endpoint (each address a DNS name resolves to
/// gets its name's).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Meta {
    pub weight: u32,
}

impl Meta {
    pub(crate) fn of(ep: &Endpoint) -> Meta {
        Meta { weight: ep.weight.max(1) }
    }
}

/// Longest weighted round-robin cycle kept; longer ones are scaled down (shares stay within
/// 1/`MAX_SCHEDULE` of the configured ones).
const MAX_SCHEDULE: u64 = 4096;

#[derive(Default)]
pub(crate) struct Balancer {
    /// Sorted by address.
    pub(crate) eps: Vec<Arc<EndpointState>>,
    pub(crate) metas: Vec<Meta>,
    /// `0..eps.len()`: the candidate list when every endpoint is in service.
    pub(crate) all: Vec<u32>,
    /// All weights are equal: the unweighted algorithms apply.
    uniform: bool,
    /// Weighted round-robin cycle (indexes into `eps`); empty when `uniform`.
    schedule: Vec<u32>,
    /// Consistent-hash table over `eps` (same order), for consistent-hash clusters.
    pub(crate) table: Option<super::hash::Table>,
    /// The cluster's slow start and when the last endpoint's window ends.
    warmup: Option<(Warmup, Instant)>,
}

impl Balancer {
    pub(crate) fn new(def: &Cluster, list: Vec<(Arc<EndpointState>, Meta)>) -> Balancer {
        let (eps, metas): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        let weights: Vec<u32> = metas.iter().map(|m: &Meta| m.weight).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let schedule = if uniform { Vec::new() } else { smooth_schedule(&weights) };
        let table = match &def.lb {
            LbPolicy::ConsistentHash(_, kind) => {
                let addrs: Vec<_> = eps.iter().map(|e: &Arc<EndpointState>| e.addr).collect();
                super::hash::Table::build(kind, &addrs, &weights)
            }
            _ => None,
        };
        let warmup = match (&def.warmup, &def.lb) {
            (Some(w), LbPolicy::RoundRobin | LbPolicy::LeastRequest) => eps
                .iter()
                .filter_map(|e: &Arc<EndpointState>| e.joined)
                .max()
                .map(|last| (w.clone(), last + w.duration)),
            _ => None,
        };
        Balancer { all: (0..eps.len() as u32).collect(), eps, metas, uniform, schedule, table, warmup }
    }

    /// The slow-start settings while some endpoint is still warming up.
    fn warming(&self) -> Option<&Warmup> {
        self.warmup.as_ref().filter(|(_, until)| Instant::now() < *until).map(|(w, _)| w)
    }

    /// The endpoints with their definitions (to carry over to a new pool).
    pub(crate) fn members(&self) -> Vec<(std::net::SocketAddr, Meta)> {
        self.eps.iter().zip(&self.metas).map(|(e, m)| (e.addr, m.clone())).collect()
    }

    /// The endpoints to balance over now: all but the ejected ones, unless fewer than
    /// `minHealthPercent` remain healthy (Envoy's panic mode: then all of them). `None` = every
    /// endpoint (no allocation on the common path).
    pub(crate) fn candidates(
        &self,
        outlier: Option<&portico_model::snapshot::OutlierPolicy>,
        _rng: &FastRng,
    ) -> Option<Vec<u32>> {
        let p = outlier?;
        if !self.eps.iter().any(|e| e.outlier.is_ejected()) {
            return None;
        }
        let healthy: Vec<u32> =
            self.all.iter().copied().filter(|i| !self.eps[*i as usize].outlier.is_ejected()).collect();
        if healthy.len() * 100 < self.eps.len() * p.min_health_percent as usize {
            return None;
        }
        Some(healthy)
    }

    fn weight(&self, i: u32) -> f64 {
        self.metas.get(i as usize).map_or(1.0, |m| f64::from(m.weight))
    }

    /// `weight(i)` scaled by slow start (`w`), at `now`.
    fn warm_weight(&self, i: u32, w: &Warmup, now: Instant) -> f64 {
        let base = self.weight(i);
        let Some(joined) = self.eps.get(i as usize).and_then(|e| e.joined) else { return base };
        let t = now.saturating_duration_since(joined).max(Duration::from_secs(1));
        if t >= w.duration {
            return base;
        }
        let factor = (t.as_secs_f64() / w.duration.as_secs_f64()).powf(1.0 / w.aggression);
        base * factor.max(w.minimum_percent / 100.0)
    }
}

/// Smooth weighted round robin over `weights` (each endpoint `w` times per cycle, spread out):
/// every step adds each weight to its credit and takes the endpoint with the most credit,
/// which then pays the total.
fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w))).max(1);
    let scaled: Vec<i64> = weights
        .iter()
        .map(|w| {
            let w = u64::from(*w) / g;
            let w = if total / g > MAX_SCHEDULE { (w * MAX_SCHEDULE / (total / g)).max(1) } else { w };
            i64::try_from(w).unwrap_or(i64::MAX)
        })
        .collect();
    let sum: i64 = scaled.iter().sum();
    let mut credit = vec![0i64; scaled.len()];
    let mut out = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for _ in 0..sum {
        for (c, w) in credit.iter_mut().zip(&scaled) {
            *c += w;
        }
        let (best, _) = credit.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))).unwrap_or((0, &0));
        credit[best] -= sum;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One of `cands` (indexes into `b.eps`) per `lb`, or `None` when there is none.
pub(super) fn pick(b: &Balancer, cands: &[u32], lb: &LbPolicy, rng: &FastRng, rr: &AtomicUsize) -> Option<usize> {
    let n = cands.len();
    if n <= 1 {
        return cands.first().map(|i| *i as usize);
    }
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    if let Some(w) = b.warming() {
        let now = Instant::now();
        let lr = matches!(lb, LbPolicy::LeastRequest);
        return weighted_random(cands, rng, |i| {
            let active = if lr { b.eps[i as usize].active() as f64 } else { 0.0 };
            b.warm_weight(i, w, now) / (active + 1.0)
        })
        .map(|i| i as usize);
    }
    let i = match lb {
        LbPolicy::RoundRobin if b.uniform => cands.get(rr.fetch_add(1, Ordering::Relaxed) % n).copied(),
        LbPolicy::RoundRobin => {
            // Walk the cycle; endpoints out of service (ejected) are skipped, which keeps the
            // others' proportions.
            let len = b.schedule.len();
            (0..len)
                .map(|_| b.schedule[rr.fetch_add(1, Ordering::Relaxed) % len])
                .find(|i| cands.contains(i))
                .or_else(|| weighted_random(cands, rng, |i| b.weight(i)))
        }
        LbPolicy::Random if !b.uniform => weighted_random(cands, rng, |i| b.weight(i)),
        // A consistent-hash request without its key goes to a random endpoint, as Envoy does.
        LbPolicy::Random | LbPolicy::ConsistentHash(..) => cands.get(rng.below(n32) as usize).copied(),
        LbPolicy::LeastRequest if b.uniform => {
            // Power of two choices over active requests (Envoy's default choice_count = 2),
            // two distinct candidates.
            let a = rng.below(n32) as usize;
            let mut c = rng.below(n32 - 1) as usize;
            if c >= a {
                c += 1;
            }
            let (ia, ic) = (*cands.get(a)?, *cands.get(c)?);
            if b.eps[ic as usize].active() < b.eps[ia as usize].active() {
                Some(ic)
            } else {
                Some(ia)
            }
        }
        LbPolicy::LeastRequest => weighted_random(cands, rng, |i| {
            // Envoy's active_request_bias defaults to 1.0: weight / (active + 1).
            b.weight(i) / (b.eps[i as usize].active() as f64 + 1.0)
        }),
    };
    i.map(|i| i as usize)
}

/// One of `cands`, each with probability proportional to `weight`.
fn weighted_random(cands: &[u32], rng: &FastRng, weight: impl Fn(u32) -> f64) -> Option<u32> {
    let total: f64 = cands.iter().map(|i| weight(*i)).sum();
    if total.is_nan() || total <= 0.0 {
        return cands.get(rng.below(u32::try_from(cands.len()).unwrap_or(u32::MAX)) as usize).copied();
    }
    // 53 random bits → uniform in [0, 1).
    let mut r = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for i in cands {
        let w = weight(*i);
        if r < w {
            return Some(*i);
        }
        r -= w;
    }
    cands.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_interleaves_in_proportion() {
        assert_eq!(smooth_schedule(&[3, 1]), [0, 0, 1, 0]);
        assert_eq!(smooth_schedule(&[6, 2]), [0, 0, 1, 0], "reduced by the gcd");
        let s = smooth_schedule(&[1, 2, 3]);
        assert_eq!(s.len(), 6);
        for (i, w) in [1, 2, 3].iter().enumerate() {
            assert_eq!(s.iter().filter(|x| **x == i as u32).count(), *w);
        }
        // Huge weights are scaled to a bounded cycle.
        let s = smooth_schedule(&[3_000_000, 1_000_000, 7]);
        assert!(s.len() <= MAX_SCHEDULE as usize + 3, "{}", s.len());
        let a = s.iter().filter(|x| **x == 0).count() as f64 / s.len() as f64;
        assert!((a - 0.75).abs() < 0.01, "{a}");
    }
}
