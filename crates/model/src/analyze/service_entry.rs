//! ServiceEntries: TCP ports need addresses (IST0134); one host and port, one protocol (IST0177).

use super::Ctx;
use portico_api::diag::code;
use portico_api::{Diagnostic, Spec};

/// IST0134, Istio's `ProtocolAddressesAnalyzer`: without `addresses`, a TCP (or protocol-less)
/// port can only be told apart by destination port, so every such entry on that port collides.
/// (Istio skips this when the mesh auto-allocates addresses; a file config has no mesh config.)
pub(super) fn addresses(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in cx.of_kind(portico_api::Kind::ServiceEntry) {
        let Spec::ServiceEntry(se) = &*res.spec else { continue };
        if !se.addresses.is_empty() {
            continue;
        }
        for (i, p) in se.ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("");
            if proto.is_empty() || proto.eq_ignore_ascii_case("TCP") {
                out.push(Diagnostic::warning(
                    res.origin.locate(&format!("spec.ports[{i}]")),
                    code::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                    res.key(),
                    "ServiceEntry addresses are required for this protocol.",
                ));
            }
        }
    }
}

/// IST0177 ConflictingServiceEntryProtocol: ServiceEntries visible in the same namespace give
/// one host (as written) and port different protocols; only one protocol can serve that port.
/// Visibility as Istio groups it: each `exportTo` namespace (`.` is the entry's own), and
/// entries exported everywhere (no `exportTo`, or `*`) join every namespace's group. An unset
/// protocol counts as a protocol of its own, as in Istio. Each entry is reported once, for the
/// first conflict in (namespace, host, port) order.
pub(super) fn conflicting_protocols(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    use std::collections::{BTreeMap, BTreeSet};
    const ALL: &str = "*";
    // (scope, host, port) → (upper-cased protocol, entry)
    type Group<'r> = Vec<(String, &'r portico_api::Resource)>;
    let mut index: BTreeMap<(String, String, u32), Group<'_>> = BTreeMap::new();
    for res in cx.of_kind(portico_api::Kind::ServiceEntry) {
        let Spec::ServiceEntry(se) = &*res.spec else { continue };
        let scopes: BTreeSet<String> = if se.export_to.is_empty() || se.export_to.iter().any(|e| e == ALL) {
            [ALL.to_string()].into()
        } else {
            se.export_to.iter().map(|e| if e == "." { res.namespace().to_string() } else { e.clone() }).collect()
        };
        for scope in &scopes {
            for h in &se.hosts {
                for p in &se.ports {
                    let proto = p.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
                    index.entry((scope.clone(), h.clone(), p.number)).or_default().push((proto, res));
                }
            }
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for ((scope, host, port), entries) in &index {
        let mut all: Group<'_> = entries.clone();
        if scope != ALL {
            if let Some(everywhere) = index.get(&(ALL.to_string(), host.clone(), *port)) {
                all.extend(everywhere.iter().cloned());
            }
        }
        let protocols: BTreeSet<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = all.iter().map(|(_, r)| super::full_name(r)).collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (_, res) in &all {
            if !reported.insert(res.key()) {
                continue;
            }
            out.push(Diagnostic::warning(
                res.origin.locate("metadata.name"),
                code::CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                res.key(),
                format!(
                    "Multiple ServiceEntries ({names}) define the same host {host:?} and port {port} with conflicting \
                     protocols ({protocols})."
                ),
            ));
        }
    }
}
