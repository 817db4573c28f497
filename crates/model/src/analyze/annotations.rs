//! Istio annotations: unknown ones (IST0108) and ones on a kind they do not apply to (IST0107),
//! as Istio's annotation analyzer reads `istio/api`'s annotation list.

use super::Ctx;
use portico_api::diag::code;
use portico_api::Diagnostic;

const POD: &[&str] = &["Pod"];
const SERVICE: &[&str] = &["Service"];
const ANY: &[&str] = &["Any"];

/// Istio's annotations and the kinds each applies to (`istio/api` `annotation/annotations.yaml`).
const KNOWN: &[(&str, &[&str])] = &[
    ("galley.istio.io/analyze-suppress", ANY),
    ("install.operator.istio.io/chart-owner", ANY),
    ("install.operator.istio.io/owner-generation", ANY),
    ("install.operator.istio.io/version", ANY),
    ("istio.io/dry-run", &["AuthorizationPolicy"]),
    ("istio.io/autoRegistrationGroup", &["WorkloadEntry"]),
    ("istio.io/workloadController", &["WorkloadEntry"]),
    ("istio.io/connectedAt", &["WorkloadEntry"]),
    ("istio.io/disconnectedAt", &["WorkloadEntry"]),
    ("istio.io/rev", &["Pod", "Namespace"]),
    ("networking.istio.io/exportTo", SERVICE),
    ("networking.istio.io/traffic-distribution", &["Service", "ServiceEntry"]),
    ("networking.istio.io/service-type", &["Gateway"]),
    ("networking.istio.io/address-type", &["Gateway"]),
    ("gateway.istio.io/controller-version", &["Gateway"]),
    ("gateway.istio.io/service-account", &["Gateway"]),
    ("gateway.istio.io/name-override", &["Gateway"]),
    ("alpha.istio.io/kubernetes-serviceaccounts", SERVICE),
    ("alpha.istio.io/canonical-serviceaccounts", SERVICE),
    ("alpha.istio.io/identity", POD),
    ("ambient.istio.io/redirection", POD),
    ("prometheus.istio.io/merge-metrics", POD),
    ("proxy.istio.io/config", POD),
    ("proxy.istio.io/overrides", POD),
    ("inject.istio.io/templates", POD),
    ("sidecar.istio.io/inject", POD),
    ("sidecar.istio.io/status", POD),
    ("sidecar.istio.io/rewriteAppHTTPProbers", POD),
    ("sidecar.istio.io/controlPlaneAuthPolicy", POD),
    ("sidecar.istio.io/discoveryAddress", POD),
    ("sidecar.istio.io/proxyImage", POD),
    ("sidecar.istio.io/proxyImageType", POD),
    ("sidecar.istio.io/proxyCPU", POD),
    ("sidecar.istio.io/proxyCPULimit", POD),
    ("sidecar.istio.io/proxyMemory", POD),
    ("sidecar.istio.io/proxyMemoryLimit", POD),
    ("sidecar.istio.io/interceptionMode", POD),
    ("sidecar.istio.io/bootstrapOverride", POD),
    ("sidecar.istio.io/statsInclusionPrefixes", POD),
    ("sidecar.istio.io/statsInclusionSuffixes", POD),
    ("sidecar.istio.io/statsInclusionRegexps", POD),
    ("sidecar.istio.io/statsHistogramBuckets", POD),
    ("sidecar.istio.io/userVolume", POD),
    ("sidecar.istio.io/userVolumeMount", POD),
    ("sidecar.istio.io/enableCoreDump", POD),
    ("sidecar.istio.io/logLevel", POD),
    ("sidecar.istio.io/componentLogLevel", POD),
    ("sidecar.istio.io/agentLogLevel", POD),
    ("sidecar.istio.io/extraStatTags", POD),
    ("status.sidecar.istio.io/port", POD),
    ("readiness.status.sidecar.istio.io/initialDelaySeconds", POD),
    ("readiness.status.sidecar.istio.io/periodSeconds", POD),
    ("readiness.status.sidecar.istio.io/failureThreshold", POD),
    ("readiness.status.sidecar.istio.io/applicationPorts", POD),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", POD),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", POD),
    ("traffic.sidecar.istio.io/includeInboundPorts", POD),
    ("traffic.sidecar.istio.io/excludeInboundPorts", POD),
    ("traffic.sidecar.istio.io/includeOutboundPorts", POD),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", POD),
    ("traffic.sidecar.istio.io/excludeInterfaces", POD),
    ("traffic.sidecar.istio.io/kubevirtInterfaces", POD),
];

/// An annotation Istio claims: its key's prefix is `istio.io` or a subdomain of it.
/// `internal.istio.io/` keys are Istio's own bookkeeping and not checked (as istioctl).
fn is_istio(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else { return false };
    (domain == "istio.io" || domain.ends_with(".istio.io")) && domain != "internal.istio.io"
}

pub(super) fn analyze(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in &cx.resources {
        let kind = res.kind().as_str();
        for key in res.meta.annotations.keys() {
            if !is_istio(key) {
                continue;
            }
            let loc = res.origin.locate(&format!("metadata.annotations.{key}"));
            match KNOWN.iter().find(|(k, _)| k == key) {
                None => out.push(Diagnostic::warning(
                    loc,
                    code::UNKNOWN_ANNOTATION,
                    res.key(),
                    format!("Unknown annotation: {key}"),
                )),
                Some((_, kinds)) if !kinds.contains(&"Any") && !kinds.contains(&kind) => {
                    // The webhook already refuses `istio.io/dry-run` outside AuthorizationPolicy.
                    if key == "istio.io/dry-run" {
                        continue;
                    }
                    out.push(Diagnostic::warning(
                        loc,
                        code::MISPLACED_ANNOTATION,
                        res.key(),
                        format!("Misplaced annotation: {key} can only be applied to {}", kinds.join(", ")),
                    ))
                }
                Some(_) => {}
            }
        }
    }
}
