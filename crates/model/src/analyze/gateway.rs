//! Gateways: the workloads a selector picks (IST0101), servers colliding with another
//! Gateway's (IST0145), one certificate on several Gateways (IST0138).

use super::{full_name, go_list, selector_string, Ctx};
use portico_api::diag::code;
use portico_api::istio::ServerTlsSettings;
use portico_api::Diagnostic;
use std::collections::BTreeMap;

/// IST0101 `Referenced selector not found`: Istio reports a Gateway whose selector matches no
/// pod. Offline the only workload known is this instance, so a selector that is not a subset of
/// `--labels` selects nothing here.
pub(super) fn selectors(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (res, gw) in cx.gateways() {
        if gw.selector.iter().all(|(k, v)| cx.opts.labels.get(k) == Some(v)) {
            continue;
        }
        let sel = selector_string(&gw.selector);
        let first = gw.selector.keys().next().map(|k| format!("spec.selector.{k}")).unwrap_or("spec.selector".into());
        out.push(Diagnostic::error(
            res.origin.locate(&first),
            code::REFERENCED_RESOURCE_NOT_FOUND,
            res.key(),
            format!(
                "Referenced selector not found: {sel:?}; this instance's labels are {:?} (--labels), so the Gateway \
                 does not apply here",
                selector_string(&cx.opts.labels)
            ),
        ));
    }
}

/// IST0145, as Istio's `ConflictingGatewayAnalyzer`: Gateways for the same workloads (the
/// same selector, or selectors of which one contains the other and that both select this
/// instance) with a server on the same port repeating a host (the same text and `bind`, as
/// Istio's `CheckDuplicates`: `*.example.com` and `a.example.com` do not conflict). Each side of
/// the conflict is reported.
pub(super) fn conflicts(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    // (selector, port) → gateway full name → host → bind, of its (last) server on that port.
    type HostsBind<'h> = BTreeMap<&'h str, &'h str>;
    let mut groups: BTreeMap<(String, u32), BTreeMap<String, HostsBind<'_>>> = BTreeMap::new();
    for (res, gw) in cx.gateways() {
        let sel = selector_string(&gw.selector);
        for s in &gw.servers {
            let Some(p) = &s.port else { continue };
            let bind = s.bind.as_deref().unwrap_or("");
            let hosts = s.hosts.iter().map(|h| (h.as_str(), bind)).collect();
            groups.entry((sel.clone(), p.number)).or_default().insert(full_name(res), hosts);
        }
    }
    let here = |sel: &str| {
        sel.split(',').filter(|kv| !kv.is_empty()).all(|kv| match kv.split_once('=') {
            Some((k, v)) => cx.opts.labels.get(k).is_some_and(|l| l == v),
            None => false,
        })
    };
    for (res, gw) in cx.gateways() {
        let sel = selector_string(&gw.selector);
        let me = full_name(res);
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(p) = &s.port else { continue };
            let bind = s.bind.as_deref().unwrap_or("");
            let mut others: Vec<&String> = Vec::new();
            for ((gsel, port), members) in &groups {
                let same_workloads = *gsel == sel
                    || ((gsel.contains(sel.as_str()) || sel.contains(gsel.as_str())) && here(gsel) && here(&sel));
                if *port != p.number || !same_workloads {
                    continue;
                }
                for (name, hosts) in members {
                    let dup = s.hosts.iter().any(|h| hosts.get(h.as_str()).is_some_and(|b| *b == bind));
                    if *name != me && dup && !others.contains(&name) {
                        others.push(name);
                    }
                }
            }
            if others.is_empty() {
                continue;
            }
            others.sort();
            out.push(Diagnostic::error(
                res.origin.locate(&format!("spec.servers[{i}].hosts")),
                code::CONFLICTING_GATEWAYS,
                res.key(),
                format!(
                    "Conflict with gateways {} (workload selector {sel}, port {}, hosts {}).",
                    others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                    p.number,
                    s.hosts.join(",")
                ),
            ));
        }
    }
}

/// Istio's `haveSameCertificate`: the same `credentialName`, or the same certificate and key files.
fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    fn set(o: &Option<String>) -> Option<&str> {
        o.as_deref().filter(|s| !s.is_empty())
    }
    match (set(&a.credential_name), set(&b.credential_name)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (set(&a.server_certificate), set(&b.server_certificate)) {
            (Some(x), Some(y)) if x == y => {
                matches!((set(&a.private_key), set(&b.private_key)), (Some(k1), Some(k2)) if k1 == k2)
            }
            _ => false,
        },
        _ => false,
    }
}

/// IST0138: a certificate served by several Gateways that can select the same workload (this
/// Gateway's selector is a subset of the other's). Browsers reuse an HTTP/2 connection for
/// every name the certificate covers, and land on the wrong server block (404).
pub(super) fn duplicate_certificates(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (res, gw) in cx.gateways() {
        for (other, ogw) in cx.gateways() {
            if std::ptr::eq(res, other) {
                continue;
            }
            if !gw.selector.iter().all(|(k, v)| ogw.selector.get(k) == Some(v)) {
                continue;
            }
            let shared = gw.servers.iter().any(|s| {
                ogw.servers.iter().any(|o| match (&s.tls, &o.tls) {
                    (Some(a), Some(b)) => same_certificate(a, b),
                    _ => false,
                })
            });
            if shared {
                out.push(Diagnostic::warning(
                    res.origin.locate("metadata.name"),
                    code::GATEWAY_DUPLICATE_CERTIFICATE,
                    res.key(),
                    format!(
                        "Duplicate certificate in multiple gateways {} may cause 404s if clients re-use HTTP2 \
                         connections.",
                        go_list(&[full_name(res), full_name(other)])
                    ),
                ));
            }
        }
    }
}

/// IST0162 GatewayPortNotDefinedOnService, as Istio's `IngressGatewayPortAnalyzer`: a server
/// port of a Gateway selecting the gateway's pods must be the target port (the port the pods
/// listen on; `port` when `targetPort` is unset) of a TCP port of some Service in the pods'
/// namespace whose selector matches them. Offline the pods are this instance (`--labels` in
/// `--gateway-namespace`). Only when the input has Services at all: without any, the
/// gateway's Service is unknown, not missing (istioctl would flag every port).
pub(super) fn ports_on_service(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let services: Vec<&portico_api::k8s::Service> = cx
        .resources
        .iter()
        .filter_map(|r| match &*r.spec {
            portico_api::Spec::Service(s) => Some((r, s)),
            _ => None,
        })
        .filter(|(r, _)| r.namespace() == cx.opts.gateway_namespace)
        .filter(|(_, s)| s.selector.iter().all(|(k, v)| cx.opts.labels.get(k) == Some(v)))
        .map(|(_, s)| s)
        .collect();
    if !cx.resources.iter().any(|r| r.kind() == portico_api::Kind::Service) {
        return;
    }
    let target_ports: std::collections::BTreeSet<u32> = services
        .iter()
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.protocol.as_deref().is_none_or(|pr| pr.eq_ignore_ascii_case("TCP")))
        .map(|p| p.target_number())
        .collect();
    for (res, gw) in cx.gateways() {
        if !gw.selector.iter().all(|(k, v)| cx.opts.labels.get(k) == Some(v)) {
            continue;
        }
        let sel = selector_string(&gw.selector);
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(p) = &s.port else { continue };
            if target_ports.contains(&p.number) {
                continue;
            }
            out.push(Diagnostic::warning(
                res.origin.locate(&format!("spec.servers[{i}].port.number")),
                code::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                res.key(),
                format!(
                    "The gateway is listening on a target port (port {}) that is not defined in the Service \
                     associated with its workload instances (Pod selector {sel}). If you need to access the gateway \
                     port through the gateway Service, it will not be available. (Target ports of the Services \
                     selecting this instance in `{}`: {})",
                    p.number,
                    cx.opts.gateway_namespace,
                    go_list(&target_ports.iter().map(u32::to_string).collect::<Vec<_>>())
                ),
            ));
        }
    }
}

/// IST0161, the part the compiler cannot see: Istio's `SecretAnalyzer` also rejects a
/// `credentialName` certificate that is not valid now (`ValidateCertificate`: expired, or not
/// yet valid) or that does not parse as X.509. The missing / not-PEM cases are reported where
/// the server's TLS is built (`tls.rs`). Judged at `Options::now` only: without a clock the
/// dates are not checked. Envoy still serves such a certificate, so traffic is unchanged; the
/// finding is for the operator (clients reject the handshake).
pub(super) fn credential_validity(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let Some(now) = cx.opts.now else { return };
    for (res, gw) in cx.gateways() {
        if !gw.selector.iter().all(|(k, v)| cx.opts.labels.get(k) == Some(v)) {
            continue;
        }
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(t) = &s.tls else { continue };
            let proto = s.port.as_ref().map(|p| p.protocol.to_ascii_uppercase()).unwrap_or_default();
            let terminated = matches!(
                t.mode,
                portico_api::istio::ServerTlsMode::Simple
                    | portico_api::istio::ServerTlsMode::Mutual
                    | portico_api::istio::ServerTlsMode::OptionalMutual
            );
            if !terminated || !matches!(proto.as_str(), "HTTPS" | "TLS") {
                continue;
            }
            let names: Vec<(String, &String)> = match &t.credential_name {
                Some(n) => vec![("credentialName".to_string(), n)],
                None => {
                    t.credential_names.iter().enumerate().map(|(j, n)| (format!("credentialNames[{j}]"), n)).collect()
                }
            };
            for (field, name) in names {
                let secret = cx
                    .secrets
                    .get(&format!("{}/{name}", cx.opts.gateway_namespace))
                    .or_else(|| cx.secrets.get(&format!("{}/{name}", res.namespace())));
                let Some(pem) = secret.and_then(|s| s.data.get("tls.crt").or_else(|| s.data.get("cert"))) else {
                    continue;
                };
                let Some(problem) = certificate_problem(pem, now) else { continue };
                let path = format!("spec.servers[{i}].tls.{field}");
                out.push(Diagnostic::error(
                    res.origin.locate(&path),
                    code::INVALID_GATEWAY_CREDENTIAL,
                    res.key(),
                    format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the \
                         traffic not to work as expected. ({path}: the certificate in secret `{name}` {problem})",
                        res.name(),
                        res.namespace(),
                    ),
                ));
            }
        }
    }
}

/// What is wrong with the first certificate of a PEM bundle at `now` (Unix seconds), if
/// anything. Text without a PEM certificate block is left to `tls.rs` (it says so already).
fn certificate_problem(pem: &[u8], now: i64) -> Option<String> {
    let text = String::from_utf8_lossy(pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return None;
    }
    let block = match x509_parser::pem::parse_x509_pem(pem) {
        Ok((_, block)) => block,
        Err(e) => return Some(format!("is not valid PEM: {e}")),
    };
    let cert = match block.parse_x509() {
        Ok(c) => c,
        Err(e) => return Some(format!("does not parse as X.509: {e}")),
    };
    let validity = cert.validity();
    let (from, until) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if now > until {
        Some(format!("expired at {} (now {})", rfc3339(until), rfc3339(now)))
    } else if now < from {
        Some(format!("is not valid before {} (now {})", rfc3339(from), rfc3339(now)))
    } else {
        None
    }
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Days since 1970-01-01 → civil date (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
pub(super) fn rfc3339_for_tests(t: i64) -> String {
    rfc3339(t)
}
