//! ServiceEntries: TCP ports need addresses (IST0134).

use super::Ctx;
use portico_api::diag::code;
use portico_api::{Diagnostic, Spec};

/// IST0134, Istio's `ProtocolAddressesAnalyzer`: without `addresses`, a TCP (or protocol-less)
/// port can only be told apart by destination port, so every such entry on that port collides.
/// (Istio skips this when the mesh auto-allocates addresses; a file config has no mesh config.)
pub(super) fn addresses(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for res in cx.of_kind(portico_api::Kind::ServiceEntry) {
        let Spec::ServiceEntry(se) = &res.spec else { continue };
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
