//! Cross-resource analysis: what `istioctl analyze` reports about Gateways, VirtualServices,
//! DestinationRules, ServiceEntries and Secrets, with Istio's codes, levels and message
//! templates (`pkg/config/analysis/msg/messages.yaml`). Portico adds a hint after Istio's text
//! where it knows more (file:line, the namespace a bare name means, what happens at run time).
//!
//! The analyzers see the resources the user wrote (not those translated from Ingresses, which
//! istioctl never sees either), in Istio's precedence order. Offline, "the workloads" are this
//! gateway instance: `--labels` and `--gateway-namespace` stand in for Istio's pods.

mod annotations;
mod destination_rule;
mod gateway;
mod service_entry;
mod status;
mod virtual_service;

#[cfg(test)]
mod tests;

use crate::registry::Registry;
use crate::Options;
use portico_api::istio::ServiceEntry;
use portico_api::{Diagnostic, Resource, Spec};
use std::collections::BTreeMap;

/// What the analyzers look at.
pub(crate) struct Ctx<'a> {
    /// The user's resources that passed validation, oldest first.
    pub resources: Vec<&'a Resource>,
    /// VirtualServices translated from Ingresses: only their destinations are checked (a
    /// backend Portico does not know is worth saying even though istioctl never sees these).
    pub translated: Vec<&'a Resource>,
    pub opts: &'a Options,
    pub registry: &'a Registry<'a>,
    /// DestinationRules, oldest first.
    pub drs: &'a [&'a Resource],
    /// Decoded Secrets by `namespace/name`.
    pub secrets: &'a BTreeMap<String, std::sync::Arc<crate::snapshot::SecretData>>,
}

impl<'a> Ctx<'a> {
    /// The ServiceEntry a host refers to as seen from `namespace` (Istio's
    /// `util.GetDestinationHost`): entries exported there or everywhere, exact host first, then
    /// a wildcard entry covering it.
    pub(crate) fn service_entry(&self, host: &str, namespace: &str) -> Option<(&'a Resource, &'a ServiceEntry)> {
        let fqdn = crate::host::resolve_short_name(host, namespace, &self.opts.domain_suffix);
        let mut wildcard = None;
        for res in self.of_kind(portico_api::Kind::ServiceEntry) {
            let Spec::ServiceEntry(se) = &*res.spec else { continue };
            let visible = se.export_to.is_empty()
                || se
                    .export_to
                    .iter()
                    .any(|e| e == "*" || e == namespace || (e == "." && res.namespace() == namespace));
            if !visible {
                continue;
            }
            for h in &se.hosts {
                let seh = crate::host::resolve_short_name(h, res.namespace(), &self.opts.domain_suffix);
                if seh == fqdn {
                    return Some((res, se));
                }
                if wildcard.is_none() {
                    if let Some(suffix) = seh.strip_prefix('*') {
                        if fqdn.strip_prefix('*').unwrap_or(&fqdn).ends_with(suffix) {
                            wildcard = Some((res, se));
                        }
                    }
                }
            }
        }
        wildcard
    }

    fn of_kind(&self, kind: portico_api::Kind) -> impl Iterator<Item = &'a Resource> + '_ {
        self.resources.iter().copied().filter(move |r| r.kind() == kind)
    }

    fn gateways(&self) -> impl Iterator<Item = (&'a Resource, &'a portico_api::istio::Gateway)> + '_ {
        self.resources.iter().filter_map(|r| match &*r.spec {
            Spec::Gateway(g) => Some((*r, g)),
            _ => None,
        })
    }

    fn virtual_services(&self) -> impl Iterator<Item = (&'a Resource, &'a portico_api::istio::VirtualService)> + '_ {
        self.resources.iter().filter_map(|r| match &*r.spec {
            Spec::VirtualService(v) => Some((*r, v)),
            _ => None,
        })
    }
}

/// Every analyzer, in the order istioctl lists them.
pub(crate) fn run(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    annotations::analyze(cx, out);
    gateway::selectors(cx, out);
    gateway::conflicts(cx, out);
    gateway::duplicate_certificates(cx, out);
    gateway::credential_validity(cx, out);
    gateway::ports_on_service(cx, out);
    virtual_service::gateway_refs(cx, out);
    virtual_service::destinations(cx, out);
    virtual_service::subsets(cx, out);
    virtual_service::delegates(cx, out);
    virtual_service::mesh_host_conflicts(cx, out);
    virtual_service::ingress_subsets(cx, out);
    virtual_service::reachability(cx, out);
    virtual_service::deprecated_fields(cx, out);
    virtual_service::jwt_claim_routes(cx, out);
    destination_rule::ca_certificates(cx, out);
    destination_rule::unknown_hosts(cx, out);
    service_entry::addresses(cx, out);
    service_entry::conflicting_protocols(cx, out);
    status::negative_conditions(cx, out);
}

/// The annotation istioctl reads to silence codes on one resource
/// (`galley.istio.io/analyze-suppress: IST0101,IST0132`, or `*` for every code).
pub const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

/// Drop the findings a resource's `galley.istio.io/analyze-suppress` annotation silences.
pub(crate) fn apply_suppress_annotations(resources: &[Resource], diags: &mut Vec<Diagnostic>) {
    let mut silenced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources {
        if let Some(v) = r.meta.annotations.get(SUPPRESS_ANNOTATION) {
            let codes = v.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
            silenced.insert(r.key(), codes);
        }
    }
    if silenced.is_empty() {
        return;
    }
    diags.retain(|d| silenced.get(&d.resource).is_none_or(|codes| !codes.iter().any(|c| c == "*" || c == d.code)));
}

/// `k1=v1,k2=v2`, sorted by key: how Kubernetes prints a label selector (istioctl's messages).
pub(crate) fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Go's `%v` of a string slice: `[a b c]`.
pub(crate) fn go_list<S: AsRef<str>>(items: &[S]) -> String {
    format!("[{}]", items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" "))
}

/// `namespace/name`, Istio's `FullName.String()`.
pub(crate) fn full_name(r: &Resource) -> String {
    format!("{}/{}", r.namespace(), r.name())
}
