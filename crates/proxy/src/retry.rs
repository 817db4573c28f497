//! Upstream attempts: the first try, per-try timeouts and retries (VirtualService `retries`, or
//! Istio's default policy), as Envoy's router does them.
//!
//! * `retry_on` tokens: `5xx`, `gateway-error`, `reset`, `reset-before-request`,
//!   `connect-failure`, `retriable-4xx` (409), `refused-stream`, `retriable-status-codes` (the
//!   numeric codes of `retryOn`), and the gRPC ones (`cancelled`, `deadline-exceeded`,
//!   `internal`, `resource-exhausted`, `unavailable`) read from a trailers-only `grpc-status`.
//!   A per-try timeout counts as a reset (retried on `5xx`, `gateway-error`, `reset`).
//!   `refused-stream` is the h2 `REFUSED_STREAM` reason code found in the error's source chain;
//!   connect failures count as `reset-before-request` (no byte went out).
//! * Backoff: Envoy's jittered exponential backoff, 25 ms base, 250 ms cap: before retry n, a
//!   random wait in `[0, (2^n − 1) × 25 ms)`, on tokio's clock.
//! * Another endpoint is preferred (Istio's `previous_hosts` predicate).
//! * The body is replayed from the copy kept by [`UpstreamBody`] (≤ 64 KiB); a larger body is
//!   never retried: the result of the try stands.
//! * Retries count against the cluster's `maxRetries` (active retries): over it, no retry, the
//!   result stands with `UO` (as Envoy's retry overflow).
//! * When a retry was wanted and no attempt was left: `URX` on the result.

use crate::body::{Leftover, UpstreamBody};
use crate::reply::LocalReply;
use crate::rng::FastRng;
use crate::upstream::breaker::{Resource, Slot};
use crate::upstream::outlier::Outcome;
use crate::upstream::{ActiveRequest, ClusterPool, EndpointState, Head, SendError};
use crate::ResponseFlags;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use portico_model::snapshot::{RetryOn, RetryPolicy};
use portico_telemetry::{RequestTrace, Tracer};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Whether a response asks for a retry under `on`. As Envoy: never one an upstream marked
/// `x-envoy-overloaded`; one marked `x-envoy-ratelimited` only under `envoy-ratelimited`,
/// whatever its status. Both are looked for only when they could change the answer.
fn retry_on_status(on: RetryOn, status: StatusCode, headers: &HeaderMap, codes: &[u16]) -> bool {
    let wanted = retry_on_status_alone(on, status, headers, codes);
    if !wanted && !on.contains(RetryOn::ENVOY_RATELIMITED) {
        return false;
    }
    if headers.contains_key(&crate::headers::X_ENVOY_OVERLOADED) {
        return false;
    }
    if headers.contains_key(&crate::headers::X_ENVOY_RATELIMITED) {
        return on.contains(RetryOn::ENVOY_RATELIMITED);
    }
    wanted
}

fn retry_on_status_alone(on: RetryOn, status: StatusCode, headers: &HeaderMap, codes: &[u16]) -> bool {
    let s = status.as_u16();
    if (on.contains(RetryOn::FIVE_XX) && s >= 500)
        || (on.contains(RetryOn::GATEWAY_ERROR) && (502..=504).contains(&s))
        || (on.contains(RetryOn::RETRIABLE_4XX) && s == 409)
        || (on.contains(RetryOn::RETRIABLE_STATUS_CODES) && codes.contains(&s))
    {
        return true;
    }
    match crate::body::grpc_status(headers) {
        Some(1) => on.contains(RetryOn::GRPC_CANCELLED),
        Some(4) => on.contains(RetryOn::GRPC_DEADLINE_EXCEEDED),
        Some(13) => on.contains(RetryOn::GRPC_INTERNAL),
        Some(8) => on.contains(RetryOn::GRPC_RESOURCE_EXHAUSTED),
        Some(14) => on.contains(RetryOn::GRPC_UNAVAILABLE),
        _ => false,
    }
}

/// Whether a failed try asks for a retry under `on`.
fn retry_on_error(on: RetryOn, e: &SendError) -> bool {
    if matches!(e, SendError::Overflow) {
        return false;
    }
    if on.intersects(RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET) {
        return true;
    }
    if e.is_connect_failure() && on.intersects(RetryOn::CONNECT_FAILURE | RetryOn::RESET_BEFORE_REQUEST) {
        return true;
    }
    on.contains(RetryOn::REFUSED_STREAM) && e.is_refused_stream()
}

/// A per-try timeout counts as a reset.
fn retry_on_timeout(on: RetryOn) -> bool {
    on.intersects(RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET)
}

/// Envoy's jittered exponential backoff before retry `n` (1-based).
fn backoff(rng: &FastRng, n: u32) -> Duration {
    let factor = (1u32 << n.min(16)) - 1;
    let ceiling = BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX);
    let micros = u32::try_from(ceiling.as_micros()).unwrap_or(u32::MAX);
    Duration::from_micros(u64::from(rng.below(micros)))
}

/// What the attempts came to.
pub(crate) struct Done {
    pub(crate) result: Result<Response<crate::body::Received>, LocalReply>,
    /// The endpoint of the last try, and its least-request/breaker accounting (to keep alive
    /// with the response body).
    pub(crate) endpoint: Arc<EndpointState>,
    pub(crate) active: ActiveRequest,
    /// URX / UO added by the retry logic.
    pub(crate) flags: ResponseFlags,
    /// Local address of the upstream connection of the last response.
    pub(crate) upstream_local: Option<SocketAddr>,
}

/// Everything the attempts need.
pub(crate) struct Attempts<'a> {
    pub(crate) pool: &'a ClusterPool,
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) rng: &'a FastRng,
    pub(crate) hash: Option<u64>,
    pub(crate) upgrade: bool,
    pub(crate) received: Arc<AtomicU64>,
    /// The request (its body is sent separately), lent by the request's phase.
    pub(crate) parts: &'a mut http::request::Parts,
    /// The request's circuit-breaker slot, kept with the final response.
    pub(crate) slot: Option<Slot>,
    /// A sampled request's trace: each try opens a client span and carries its context.
    pub(crate) trace: Option<(&'a Tracer, &'a mut RequestTrace)>,
}

/// What a retry sends as the request's body.
pub(crate) enum Replay {
    /// Not retried.
    Off,
    /// The request had no body: a retry sends an empty one (nothing was kept).
    Empty,
    /// The body's kept copy, back here once a try let go of it.
    Kept(oneshot::Receiver<Option<Leftover>>),
}

/// Whether this request may be retried at all (so its body must be kept).
pub(crate) fn may_retry(policy: &RetryPolicy, upgrade: bool) -> bool {
    policy.attempts > 0 && !upgrade && !policy.retry_on.is_empty()
}

impl Attempts<'_> {
    /// Run the tries, starting at `first` with `body`; `replay` says what a retry sends.
    pub(crate) async fn run(self, first: Arc<EndpointState>, body: UpstreamBody, mut replay: Replay) -> Done {
        let Attempts { pool, policy, rng, hash, upgrade, received, parts, mut slot, mut trace } = self;
        let mut attach = move |active: ActiveRequest| active.with_slot(slot.take());
        let on = policy.retry_on;
        let retry_enabled = !matches!(replay, Replay::Off);
        let mut ep = first;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retries = 0u32;
        let mut flags = ResponseFlags::empty();
        let mut upstream_local = None;
        let mut _retry_slot: Option<Slot> = None;
        let mut body = Some(body);
        loop {
            let mut active = ActiveRequest::new(ep.clone());
            // Istio turns on Envoy's `include_request_attempt_count` for its virtual hosts.
            parts
                .headers
                .insert(crate::headers::X_ENVOY_ATTEMPT_COUNT.clone(), crate::headers::number(u64::from(retries + 1)));
            if let Some((tracer, t)) = &mut trace {
                tracer.start_try(t, &mut parts.headers, Some(ep.addr));
            }
            let try_body = body.take().unwrap_or_else(|| UpstreamBody::from_bytes(bytes::Bytes::new(), None));
            let head = Head { parts: &mut *parts, last: !retry_enabled };
            // Pinned in place: the send future is not moved into a timeout wrapper.
            let outcome = {
                let sent = ep.send(pool, head, try_body, upgrade);
                tokio::pin!(sent);
                match policy.per_try_timeout.filter(|t| !t.is_zero()) {
                    Some(t) => tokio::time::timeout(t, &mut sent).await.map_err(|_| ()),
                    None => Ok((&mut sent).await),
                }
            };
            let (wants_retry, result) = match outcome {
                Ok(Ok((resp, local, stream))) => {
                    upstream_local = local;
                    active.set_lease(stream);
                    pool.report(&ep, Outcome::Status(resp.status().as_u16()));
                    let want = retry_on_status(on, resp.status(), resp.headers(), &policy.retriable_status_codes);
                    (want, Ok(resp))
                }
                Ok(Err(e)) => {
                    if !matches!(e, SendError::Overflow) {
                        pool.report(&ep, Outcome::LocalFailure);
                    }
                    tracing::debug!(upstream = %ep.addr, error = %e, "upstream try failed");
                    (retry_on_error(on, &e), Err(LocalReply::from(&e)))
                }
                Err(()) => {
                    pool.report(&ep, Outcome::LocalFailure);
                    (retry_on_timeout(on), Err(LocalReply::PerTryTimeout))
                }
            };
            if let Some((_, t)) = &mut trace {
                match &result {
                    // The last try's span lasts as long as its response streams.
                    Ok(_) if !wants_retry || !retry_enabled || retries >= policy.attempts => {}
                    Ok(resp) => Tracer::end_try(t, resp.status().as_u16()),
                    Err(f) => Tracer::end_try(t, f.status().as_u16()),
                }
            }
            let finish = move |result, flags, active, ep| Done { result, endpoint: ep, active, flags, upstream_local };
            if !wants_retry || !retry_enabled {
                if retries > 0 && result.is_ok() {
                    // Envoy's upstream_rq_retry_success: a retry brought an acceptable response.
                    if let Some(s) = &pool.breaker.stats {
                        s.retry_successes.inc();
                    }
                }
                return finish(result, flags, attach(active), ep);
            }
            if retries >= policy.attempts {
                flags.insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
                return finish(result, flags, attach(active), ep);
            }
            // The body's kept copy: back once the try let go of it.
            let left = match std::mem::replace(&mut replay, Replay::Off) {
                Replay::Kept(mut rx) => {
                    let got = match rx.try_recv() {
                        // Known too large to replay: the try's result stands.
                        Ok(None) => return finish(result, flags, attach(active), ep),
                        Ok(Some(l)) => {
                            drop(result);
                            Some(l)
                        }
                        Err(_) => {
                            // Let hyper finish with (and drop) the body of a response we will
                            // not use; the copy comes back then.
                            drop(result);
                            rx.await.ok().flatten()
                        }
                    };
                    match got {
                        Some(l) if l.replayable() => Some(l),
                        // Too large to replay after all (the try's result is gone): a local
                        // 503 marked URX.
                        _ => return finish(Err(LocalReply::BodyTooLargeToRetry), flags, attach(active), ep),
                    }
                }
                Replay::Empty => {
                    drop(result);
                    None
                }
                Replay::Off => return finish(result, flags, attach(active), ep),
            };
            let Some(slot) = pool.breaker.try_acquire(Resource::Retry, &pool.def.limits) else {
                // Retry overflow: Envoy passes the try's result through with UO; ours was
                // dropped for the body, so a local 503 with UO.
                return finish(Err(LocalReply::RetryOverflow), flags, attach(active), ep);
            };
            _retry_slot = Some(slot);
            if let Some(s) = &pool.breaker.stats {
                s.retries.inc();
            }
            drop(active);
            tried.push(ep.addr);
            retries += 1;
            tokio::time::sleep(backoff(rng, retries)).await;
            body = Some(match left {
                Some(left) => {
                    let (tx, rx) = oneshot::channel();
                    replay = Replay::Kept(rx);
                    UpstreamBody::resume(left, received.clone(), Some(tx))
                }
                None => {
                    replay = Replay::Empty;
                    UpstreamBody::from_bytes(bytes::Bytes::new(), None)
                }
            });
            if let Some(next) = pool.pick(rng, hash, &tried).await {
                ep = next;
            }
        }
    }
}

/// `grpc-timeout` (`1..8` digits and a unit `H M S m u n`), which Istio lets bound the request
/// (`maxStreamDuration.grpcTimeoutHeaderMax: 0`, i.e. no cap).
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&crate::headers::GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `ms` as a `grpc-timeout` value: milliseconds, or the first coarser unit that fits the eight
/// digits the header allows (capped at 99999999 hours).
pub(crate) fn grpc_timeout_value(ms: u64) -> HeaderValue {
    const MAX: u64 = 99_999_999;
    let (n, unit) = if ms <= MAX {
        (ms, 'm')
    } else if ms / 1000 <= MAX {
        (ms / 1000, 'S')
    } else if ms / 60_000 <= MAX {
        (ms / 60_000, 'M')
    } else {
        ((ms / 3_600_000).min(MAX), 'H')
    };
    HeaderValue::from_str(&format!("{n}{unit}")).unwrap_or(HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_fit_eight_digits() {
        for (ms, want) in
            [(1500, "1500m"), (99_999_999, "99999999m"), (100_000_000, "100000S"), (u64::MAX, "99999999H")]
        {
            let v = grpc_timeout_value(ms);
            assert_eq!(v, want);
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v);
            assert!(grpc_timeout(&h).is_some(), "{want} parses back");
        }
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(2)));
        h.insert("grpc-timeout", "123456789S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    #[test]
    fn tokens() {
        let on = RetryOn::GATEWAY_ERROR | RetryOn::GRPC_UNAVAILABLE;
        let h = HeaderMap::new();
        assert!(retry_on_status(on, StatusCode::BAD_GATEWAY, &h, &[]));
        assert!(!retry_on_status(on, StatusCode::INTERNAL_SERVER_ERROR, &h, &[]));
        let mut g = HeaderMap::new();
        g.insert("grpc-status", "14".parse().unwrap());
        assert!(retry_on_status(on, StatusCode::OK, &g, &[]));
        let codes = RetryOn::RETRIABLE_STATUS_CODES;
        assert!(retry_on_status(codes, StatusCode::CONFLICT, &h, &[409]));
        assert!(!retry_on_status(codes, StatusCode::CONFLICT, &h, &[]));
    }

    #[test]
    fn backoff_is_capped() {
        let rng = FastRng::new(Some(3));
        for n in 1..20 {
            assert!(backoff(&rng, n) < BACKOFF_MAX);
        }
        assert!(backoff(&rng, 1) < BACKOFF_BASE);
    }
}
