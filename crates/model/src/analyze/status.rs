//! IST0171 NegativeConditionStatus, as Istio's `ConditionAnalyzer`: a status condition that a
//! controller set to its negative value on a ServiceEntry, a Gateway API Gateway or a route.
//! The conditions are those given in the files (or read from the API server); only the
//! condition types Istio lists are judged, so a controller's own extra types stay quiet.

use super::Ctx;
use portico_api::diag::code;
use portico_api::{Diagnostic, Kind};

/// The condition types whose `False` Istio reports, by kind.
fn negative_types(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::ServiceEntry => &["istio.io/WaypointBound"],
        Kind::KubeGateway | Kind::HttpRoute | Kind::GrpcRoute => &["Accepted", "Programmed", "ResolvedRefs"],
        _ => &[],
    }
}

pub(super) fn negative_conditions(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in &cx.resources {
        let types = negative_types(res.kind());
        for c in &res.meta.status_conditions {
            if c.status != "False" || !types.contains(&c.type_.as_str()) {
                continue;
            }
            out.push(Diagnostic::warning(
                res.origin.locate("status"),
                code::NEGATIVE_CONDITION_STATUS,
                res.key(),
                format!(
                    "A condition with a negative status is present: type={}, reason={}, message={}.",
                    c.type_, c.reason, c.message
                ),
            ));
        }
    }
}
