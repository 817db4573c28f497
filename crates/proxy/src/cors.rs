//! CORS (VirtualService `corsPolicy`), as Envoy's CORS filter: preflights from an allowed origin
//! are answered here; actual requests from an allowed origin get the CORS response headers.
//! A preflight from an origin that is not allowed is forwarded (`unmatchedPreflights: FORWARD`,
//! the default) or answered 200 without CORS headers (`IGNORE`).

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use portico_model::snapshot::CorsPolicy;

pub(crate) enum Verdict {
    /// Not a CORS request for this policy: nothing to do.
    None,
    /// Answer the preflight here with these headers (status 200).
    Preflight(HeaderMap),
    /// Forward, adding these headers to the response.
    Actual(HeaderMap),
}

fn is_preflight(method: &Method, req: &HeaderMap) -> bool {
    method == Method::OPTIONS && req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

pub(crate) fn check(policy: &CorsPolicy, method: &Method, req: &HeaderMap) -> Verdict {
    let Some(origin) = req.get(header::ORIGIN) else { return Verdict::None };
    let Ok(origin_str) = origin.to_str() else { return Verdict::None };
    let allowed = policy.allow_origins.iter().any(|m| m.matches(origin_str));
    let preflight = is_preflight(method, req);
    if !allowed {
        return if preflight && policy.ignore_unmatched_preflights {
            Verdict::Preflight(HeaderMap::new())
        } else {
            Verdict::None
        };
    }
    let mut h = HeaderMap::new();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if policy.allow_credentials {
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    if preflight {
        if let Some(v) = policy.allow_methods.clone() {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(v) = policy.allow_headers.clone() {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(age) = policy.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age.as_secs()));
        }
        Verdict::Preflight(h)
    } else {
        if let Some(v) = policy.expose_headers.clone() {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        Verdict::Actual(h)
    }
}
