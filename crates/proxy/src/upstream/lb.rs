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
use portico_model::snapshot::{Cluster, Endpoint, LbPolicy, OutlierPolicy, Warmup};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the cluster definition says about one endpoint (each address a DNS name resolves to
/// gets its name's).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Meta {
    pub weight: u32,
    /// Locality failover priority (0 first).
    pub priority: u32,
    pub locality: Arc<str>,
    /// `distribute` weight of the locality.
    pub locality_weight: Option<u32>,
}

impl Meta {
    pub(crate) fn of(ep: &Endpoint) -> Meta {
        Meta {
            weight: ep.weight.max(1),
            priority: ep.priority,
            locality: Arc::from(ep.locality.as_deref().unwrap_or("")),
            locality_weight: ep.locality_weight,
        }
    }
}

/// Envoy's default overprovisioning factor (1.4): a priority or locality with 72 % of its
/// endpoints healthy still takes all of its traffic.
const OVERPROVISION: usize = 140;

/// The endpoints of one priority.
struct Level {
    members: Vec<u32>,
    /// `distribute` localities: (weight, members); empty when the cluster does not distribute.
    localities: Vec<(u32, Vec<u32>)>,
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
    /// By priority, ascending; only when there is more than one priority or localities are
    /// weighted (otherwise every endpoint is one set, the common case).
    levels: Vec<Level>,
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
        let mut priorities: Vec<u32> = metas.iter().map(|m| m.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let weighted_localities = metas.iter().any(|m| m.locality_weight.is_some());
        let levels = if priorities.len() > 1 || weighted_localities {
            priorities
                .iter()
                .map(|p| {
                    let members: Vec<u32> =
                        (0..metas.len() as u32).filter(|i| metas[*i as usize].priority == *p).collect();
                    let mut localities: Vec<(u32, Vec<u32>)> = Vec::new();
                    if weighted_localities {
                        let mut by_name: Vec<(&str, u32, Vec<u32>)> = Vec::new();
                        for i in &members {
                            let m = &metas[*i as usize];
                            match by_name.iter_mut().find(|(l, _, _)| *l == &*m.locality) {
                                Some((_, _, v)) => v.push(*i),
                                None => by_name.push((&m.locality, m.locality_weight.unwrap_or(0), vec![*i])),
                            }
                        }
                        localities = by_name.into_iter().map(|(_, w, v)| (w, v)).collect();
                    }
                    Level { members, localities }
                })
                .collect()
        } else {
            Vec::new()
        };
        Balancer { all: (0..eps.len() as u32).collect(), eps, metas, uniform, schedule, table, warmup, levels }
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
    /// `minHealthPercent` remain healthy (Envoy's panic mode: then all of them). With locality
    /// priorities or weights, first a priority (and a locality) is chosen as Envoy does. `None` =
    /// every endpoint (no allocation on the common path).
    pub(crate) fn candidates(&self, outlier: Option<&OutlierPolicy>, rng: &FastRng) -> Option<Vec<u32>> {
        if !self.levels.is_empty() {
            return Some(self.by_priority(outlier, rng));
        }
        let p = outlier?;
        if !self.eps.iter().any(|e| e.outlier.is_ejected()) {
            return None;
        }
        let healthy: Vec<u32> = self.all.iter().copied().filter(|i| self.healthy(*i)).collect();
        if healthy.len() * 100 < self.eps.len() * p.min_health_percent as usize {
            return None;
        }
        Some(healthy)
    }

    fn healthy(&self, i: u32) -> bool {
        !self.eps[i as usize].outlier.is_ejected()
    }

    /// Envoy's priority load: each priority's health is `min(100, 1.4 × healthy %)`; health
    /// values are normalized to 100 when they add up to less, then priorities take their
    /// health's worth of traffic in order, the rest spilling to the next. A priority is in
    /// panic (all its endpoints) when total health is short of 100 and its own healthy share is
    /// below `minHealthPercent`. Within a priority, `distribute` localities are chosen by weight ×
    /// their own (overprovisioned) health.
    fn by_priority(&self, outlier: Option<&OutlierPolicy>, rng: &FastRng) -> Vec<u32> {
        let threshold = outlier.map_or(0, |p| p.min_health_percent as usize);
        let counts: Vec<(usize, usize)> = self
            .levels
            .iter()
            .map(|l| (l.members.iter().filter(|i| self.healthy(**i)).count(), l.members.len()))
            .collect();
        let health: Vec<usize> = counts.iter().map(|(h, t)| (OVERPROVISION * h / (*t).max(1)).min(100)).collect();
        let total = health.iter().sum::<usize>().min(100);
        let level = if total == 0 {
            // Nothing healthy anywhere: priority 0, in panic if panic is enabled.
            0
        } else {
            let r = rng.below(100) as usize;
            let (mut acc, mut remaining) = (0usize, 100usize);
            let mut chosen = None;
            for (i, h) in health.iter().enumerate() {
                let load = (h * 100).checked_div(total).unwrap_or(0).min(remaining);
                remaining -= load;
                acc += load;
                if r < acc {
                    chosen = Some(i);
                    break;
                }
            }
            // Rounding leftovers go to the first priority with any health.
            chosen.unwrap_or_else(|| health.iter().position(|h| *h > 0).unwrap_or(0))
        };
        let Some(l) = self.levels.get(level) else { return Vec::new() };
        let (h, t) = counts[level];
        let panic = total < 100 && h * 100 < t * threshold;
        if total == 0 && threshold == 0 {
            return Vec::new();
        }
        let keep = |i: &u32| panic || self.healthy(*i);
        if l.localities.is_empty() {
            return l.members.iter().copied().filter(keep).collect();
        }
        let weight = |(w, members): &(u32, Vec<u32>)| -> f64 {
            let avail = if panic {
                1.0
            } else {
                let healthy = members.iter().filter(|i| self.healthy(**i)).count();
                ((OVERPROVISION * healthy) as f64 / (100 * members.len().max(1)) as f64).min(1.0)
            };
            f64::from(*w) * avail
        };
        let idx: Vec<u32> = (0..l.localities.len() as u32).collect();
        match weighted_random(&idx, rng, |i| weight(&l.localities[i as usize])) {
            Some(i) if weight(&l.localities[i as usize]) > 0.0 => {
                l.localities[i as usize].1.iter().copied().filter(keep).collect()
            }
            // No locality has healthy weight: the priority's endpoints as they are.
            _ => l.members.iter().copied().filter(keep).collect(),
        }
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
