//! DestinationRules: TLS toward a backend that verifies nothing (IST0128, IST0129) and hosts
//! that match no service (IST0174).

use super::{full_name, Ctx};
use portico_api::diag::code;
use portico_api::istio::{ClientTlsMode, ClientTlsSettings};
use portico_api::{Diagnostic, Spec};

/// SIMPLE or MUTUAL without a CA: the backend's certificate is not verified. A `credentialName`
/// secret brings its own `ca.crt`, and `insecureSkipVerify` says so on purpose.
fn unverified(tls: Option<&ClientTlsSettings>) -> Option<&'static str> {
    let t = tls?;
    let mode = match t.mode {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        _ => return None,
    };
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if set(&t.ca_certificates) || set(&t.credential_name) || t.insecure_skip_verify == Some(true) {
        return None;
    }
    Some(mode)
}

/// IST0128 (traffic policy) and IST0129 (port level), Istio's `CaCertificateAnalyzer`.
pub(super) fn ca_certificates(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in cx.of_kind(portico_api::Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &*res.spec else { continue };
        let Some(tp) = &dr.traffic_policy else { continue };
        if let Some(mode) = unverified(tp.tls.as_ref()) {
            out.push(Diagnostic::warning(
                res.origin.locate("spec.trafficPolicy.tls.mode"),
                code::NO_SERVER_CERT_VERIFICATION_DESTINATION,
                res.key(),
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to \
                     validate server identity for host: {}",
                    full_name(res),
                    res.namespace(),
                    dr.host
                ),
            ));
        }
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            let Some(mode) = unverified(p.tls.as_ref()) else { continue };
            let port = p.port.as_ref().map(|p| p.number).unwrap_or(0);
            out.push(Diagnostic::warning(
                res.origin.locate(&format!("spec.trafficPolicy.portLevelSettings[{i}].tls.mode")),
                code::NO_SERVER_CERT_VERIFICATION_PORT,
                res.key(),
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {mode} but no caCertificates are set to \
                     validate server identity for host: {} at port number:{port}",
                    full_name(res),
                    res.namespace(),
                    dr.host
                ),
            ));
        }
    }
}

/// IST0174: the host matches no ServiceEntry host visible from the rule's namespace (Istio's
/// `GetDestinationHost`), so the rule applies to nothing.
pub(super) fn unknown_hosts(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in cx.of_kind(portico_api::Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &*res.spec else { continue };
        if cx.service_entry(&dr.host, res.namespace()).is_some() {
            continue;
        }
        out.push(Diagnostic::warning(
            res.origin.locate("spec.host"),
            code::UNKNOWN_DESTINATION_RULE_HOST,
            res.key(),
            format!("The host {} defined in the DestinationRule does not match any services in the mesh.", dr.host),
        ));
    }
}
