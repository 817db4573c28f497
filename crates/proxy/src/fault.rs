//! Fault injection (VirtualService `fault`), as Envoy's fault filter that Istio configures:
//! the delay first, then the abort, each applied to `percentage` of requests (absent = 0 %,
//! as Istio documents; the model turns an absent percentage into 0).

use crate::rng::FastRng;
use portico_model::snapshot::{Fault, FaultAbortKind};

/// What the fault filter decided to do to a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Abort {
    Http(u16),
    /// gRPC status code: answered HTTP 200 with a trailers-only `grpc-status`.
    Grpc(u32),
}

/// `true` for `pct` percent (0..=100, fractions allowed) of calls.
pub(crate) fn roll(rng: &FastRng, pct: f64) -> bool {
    if pct <= 0.0 || pct.is_nan() {
        return false;
    }
    if pct >= 100.0 {
        return true;
    }
    // Millionths of a percent are finer than Envoy's FractionalPercent (per million).
    f64::from(rng.below(1_000_000)) < pct * 10_000.0
}

/// Apply the delay (sleeping on tokio's clock) and decide the abort. Returns whether a delay was
/// injected and the abort, if any.
pub(crate) async fn apply(fault: &Fault, rng: &FastRng) -> (bool, Option<Abort>) {
    let mut delayed = false;
    if let Some((delay, pct)) = fault.delay {
        if roll(rng, pct) {
            tokio::time::sleep(delay).await;
            delayed = true;
        }
    }
    let abort = match &fault.abort {
        Some((kind, pct)) if roll(rng, *pct) => match kind {
            FaultAbortKind::Http(code) => Some(Abort::Http(*code)),
            FaultAbortKind::Grpc(code) => Some(Abort::Grpc(code.0)),
        },
        _ => None,
    };
    (delayed, abort)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        let rng = FastRng::new(Some(1));
        assert!(!roll(&rng, 0.0));
        assert!(roll(&rng, 100.0));
        let hits = (0..10_000).filter(|_| roll(&rng, 25.0)).count();
        assert!((2200..2800).contains(&hits), "{hits}");
    }
}
