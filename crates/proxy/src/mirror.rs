//! Traffic mirroring (VirtualService `mirror` / `mirrors`): fire and forget, as Envoy's request
//! mirror policy. The mirrored request carries the forwarded request's method, path and headers,
//! its `Host` suffixed `-shadow` (before any port), and its body when the body is small enough
//! to keep (≤ [`REPLAY_LIMIT`], the copy the retry logic keeps anyway). A request whose body is
//! larger is not mirrored at all (a body-less copy of a POST would mislead the shadow service).
//!
//! Never delays or fails the main request: it runs in its own task, its response is read and
//! dropped, and at most [`MAX_IN_FLIGHT`] mirrors run at once (more are dropped, not queued).
//! A mirror without a route timeout is cut off after [`DEFAULT_TIMEOUT`], so it cannot hold
//! its in-flight slot for ever.
//!
//! [`REPLAY_LIMIT`]: crate::body::REPLAY_LIMIT

use crate::body::UpstreamBody;
use crate::rng::FastRng;
use crate::upstream::ClusterPool;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};
use http_body_util::BodyExt;
use portico_model::snapshot::UpstreamProtocol;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) const MAX_IN_FLIGHT: usize = 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The mirrored request's body.
pub(crate) enum MirrorBody {
    Empty,
    /// The main request's body, once read to its end (an error = too large, skip the mirror).
    Pending(oneshot::Receiver<(Bytes, Option<HeaderMap>)>),
}

/// The `-shadow` authority: `host:port` → `host-shadow:port`.
pub(crate) fn shadow_authority(authority: &str) -> Option<HeaderValue> {
    let host = portico_model::snapshot::strip_port(authority);
    let port = &authority[host.len()..];
    HeaderValue::from_str(&format!("{host}-shadow{port}")).ok()
}

pub(crate) struct Mirrored {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub authority: HeaderValue,
}

pub(crate) fn spawn(pool: Arc<ClusterPool>, rng: FastRng, req: Mirrored, body: MirrorBody, timeout: Option<Duration>) {
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(cluster = %pool.def.name, "mirror dropped: too many in flight");
        return;
    }
    let guard = InFlight;
    tokio::spawn(async move {
        let _guard = guard;
        let limit = timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT);
        let _ = tokio::time::timeout(limit, run(pool, rng, req, body)).await;
    });
}

async fn run(pool: Arc<ClusterPool>, rng: FastRng, req: Mirrored, body: MirrorBody) {
    let body = match body {
        MirrorBody::Empty => UpstreamBody::from_bytes(Bytes::new(), None),
        MirrorBody::Pending(rx) => match rx.await {
            Ok((bytes, trailers)) => UpstreamBody::from_bytes(bytes, trailers),
            Err(_) => {
                tracing::debug!(cluster = %pool.def.name, "mirror skipped: request body too large to copy");
                return;
            }
        },
    };
    let Some(ep) = pool.pick(&rng, None, &[]).await else { return };
    let Mirrored { method, uri, mut headers, authority } = req;
    let mut r = Request::new(body);
    *r.method_mut() = method;
    let pq = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if pool.def.protocol == UpstreamProtocol::Http2 {
        *r.version_mut() = Version::HTTP_2;
        headers.remove(header::HOST);
        let built = Uri::builder().scheme("http").authority(authority.as_bytes()).path_and_query(pq).build();
        let Ok(u) = built else { return };
        *r.uri_mut() = u;
    } else {
        *r.version_mut() = Version::HTTP_11;
        *r.uri_mut() = Uri::from(pq);
        headers.insert(header::HOST, authority);
    }
    *r.headers_mut() = headers;
    let (mut parts, body) = r.into_parts();
    match ep.send(&pool, crate::upstream::Head { parts: &mut parts, last: true }, body, false).await {
        Ok((resp, _, _stream)) => {
            let _ = resp.into_body().collect().await;
        }
        Err(e) => tracing::debug!(upstream = %ep.addr, error = %e, "mirror request failed"),
    }
}

/// The mirrors this request goes to (each rolls its own percentage), with their pools.
pub(crate) fn pick(
    route: &portico_model::snapshot::Route,
    state: &crate::state::State,
    rng: &FastRng,
) -> Vec<Arc<ClusterPool>> {
    if route.mirrors.is_empty() {
        return Vec::new();
    }
    route
        .mirrors
        .iter()
        .filter(|m| crate::fault::roll(rng, m.percentage))
        .filter_map(|m| state.upstreams.get(&m.cluster).cloned())
        .collect()
}

/// Fire the mirrors: a copy of the forwarded request (after rewrites and header rules), its
/// authority suffixed `-shadow`. They never hold up this request.
pub(crate) fn spawn_all(
    pools: Vec<Arc<ClusterPool>>,
    parts: &http::request::Parts,
    has_body: bool,
    body: Option<oneshot::Receiver<(Bytes, Option<HeaderMap>)>>,
    timeout: Option<Duration>,
    rng: &FastRng,
) {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or(""),
    };
    let Some(shadow) = shadow_authority(authority) else { return };
    // One body copy: it goes to the first mirror; further mirrors of a request with a body
    // are sent only when it had none (a rare configuration; documented limitation).
    let mut body = body;
    for pool in pools {
        let b = match body.take() {
            Some(rx) => MirrorBody::Pending(rx),
            None if has_body => continue,
            None => MirrorBody::Empty,
        };
        let req = Mirrored {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            authority: shadow.clone(),
        };
        spawn(pool, FastRng::new(Some(rng.next_u64())), req, b, timeout);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_host() {
        assert_eq!(super::shadow_authority("a.com").unwrap(), "a.com-shadow");
        assert_eq!(super::shadow_authority("a.com:8080").unwrap(), "a.com-shadow:8080");
    }
}
