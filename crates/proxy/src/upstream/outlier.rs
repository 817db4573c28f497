//! Outlier detection (DestinationRule `outlierDetection`, Envoy's consecutive-error detectors).
//!
//! Per endpoint, atomics only: consecutive 5xx / gateway-error / local-origin failure counters,
//! the time the current ejection ends and how many times the endpoint was ejected. Ejection is
//! decided at the failure that reaches a threshold (as Envoy's consecutive detectors do), for
//! `baseEjectionTime × times ejected` (capped by Envoy's default max_ejection_time, 300 s).
//! Envoy decrements the ejection multiplier once per `interval` while a host stays healthy; we
//! do the same lazily at the next ejection. Hosts come back when their time is up (Envoy lets
//! them back at the next interval tick; we let them back exactly at the end of the time).
//!
//! Time is tokio's (`tokio::time::Instant`), so tests drive it with a paused clock. The state is
//! part of the endpoint, which a reload carries over (see `ClusterPool::set_endpoints`).

use super::EndpointState;
use portico_model::snapshot::OutlierPolicy;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Envoy's default `max_ejection_time` (Istio does not set it).
const MAX_EJECTION: Duration = Duration::from_secs(300);

pub(crate) struct OutlierState {
    epoch: Instant,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Milliseconds since `epoch` when the current ejection ends; 0 = not ejected.
    ejected_until: AtomicU64,
    /// When the last ejection ended (ms since `epoch`), for the lazy multiplier decay.
    last_end: AtomicU64,
    times: AtomicU32,
}

/// What one try at an endpoint came to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// Connect failure, timeout or reset: a local-origin error.
    LocalFailure,
}

impl Default for OutlierState {
    fn default() -> Self {
        OutlierState {
            epoch: Instant::now(),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            times: AtomicU32::new(0),
        }
    }
}

impl OutlierState {
    fn now_ms(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// How many times the endpoint was ejected (the multiplier of its ejection time, as Envoy's
    /// `/clusters` reports it).
    pub(crate) fn times_ejected(&self) -> u32 {
        self.times.load(Ordering::Acquire)
    }

    /// How long the current ejection has left; `None` when not ejected.
    pub(crate) fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Acquire);
        let now = self.now_ms();
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// Count `outcome`; `true` when the endpoint reached a threshold and should be ejected.
    fn count(&self, outcome: Outcome, p: &OutlierPolicy) -> bool {
        let bump = |c: &AtomicU32| c.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let reached = |n: u32, limit: Option<u32>| limit.is_some_and(|l| n >= l);
        match outcome {
            Outcome::Status(s) => {
                if p.split_external_local_origin_errors {
                    // A response means the connection worked: the local-origin streak ends.
                    self.consecutive_local.store(0, Ordering::Release);
                }
                if s >= 500 {
                    let n5 = bump(&self.consecutive_5xx);
                    let ngw = if (502..=504).contains(&s) {
                        bump(&self.consecutive_gateway)
                    } else {
                        self.consecutive_gateway.store(0, Ordering::Release);
                        0
                    };
                    reached(n5, p.consecutive_5xx) || reached(ngw, p.consecutive_gateway_errors)
                } else {
                    self.consecutive_5xx.store(0, Ordering::Release);
                    self.consecutive_gateway.store(0, Ordering::Release);
                    false
                }
            }
            Outcome::LocalFailure if p.split_external_local_origin_errors => {
                reached(bump(&self.consecutive_local), p.consecutive_local_origin_failures)
            }
            // Not split: Envoy maps local-origin failures to 503 and counts them as both.
            Outcome::LocalFailure => {
                let n5 = bump(&self.consecutive_5xx);
                let ngw = bump(&self.consecutive_gateway);
                reached(n5, p.consecutive_5xx) || reached(ngw, p.consecutive_gateway_errors)
            }
        }
    }

    fn eject(&self, p: &OutlierPolicy) {
        let now = self.now_ms();
        let interval = u64::try_from(p.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let last_end = self.last_end.load(Ordering::Acquire);
        let healthy_intervals = u32::try_from(now.saturating_sub(last_end) / interval).unwrap_or(u32::MAX);
        let times = self.times.load(Ordering::Acquire).saturating_sub(healthy_intervals).saturating_add(1);
        self.times.store(times, Ordering::Release);
        let time = p.base_ejection_time.saturating_mul(times).min(MAX_EJECTION.max(p.base_ejection_time));
        let until = now.saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX)).max(1);
        self.last_end.store(until, Ordering::Release);
        self.ejected_until.store(until, Ordering::Release);
        for c in [&self.consecutive_5xx, &self.consecutive_gateway, &self.consecutive_local] {
            c.store(0, Ordering::Release);
        }
    }
}

/// Record `outcome` for `ep` (one of `all`), ejecting it when a threshold is reached and the
/// cluster's `maxEjectionPercent` allows (Envoy always allows at least one ejected host).
/// `true` when this outcome ejected the endpoint.
pub(crate) fn report(p: &OutlierPolicy, all: &[Arc<EndpointState>], ep: &EndpointState, outcome: Outcome) -> bool {
    if !ep.outlier.count(outcome, p) || ep.outlier.is_ejected() {
        return false;
    }
    let ejected = all.iter().filter(|e| e.outlier.is_ejected()).count();
    let allowed = ejected == 0 || (ejected + 1) * 100 <= all.len() * p.max_ejection_percent as usize;
    if allowed {
        tracing::debug!(endpoint = %ep.addr, "outlier detection: ejecting endpoint");
        ep.outlier.eject(p);
    }
    allowed
}
