//! `Gateway`: Istio's `ValidateGateway`, `validateServer`, `validateServerPort`,
//! `validateServerBind` and `validateTLSOptions`.

use super::{
    dot, dot_ix, idx, is_dns1123_label, is_ip, partial_wildcard, set, validate_port, validate_unix_address,
    validate_wildcard_domain, Cx, Proto, PROTOCOLS,
};
use portico_api::istio::{Gateway, Port, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use std::collections::HashMap;
use std::fmt;

pub(super) fn validate(cx: &mut Cx<'_>, g: &Gateway) {
    if g.servers.is_empty() {
        cx.error(&"spec.servers", "a Gateway must have at least one server");
    }
    let mut port_names: HashMap<&str, usize> = HashMap::new();
    for (i, s) in g.servers.iter().enumerate() {
        let path = idx(&"spec.servers", i);
        server(cx, &path, s);
        if let Some(port) = &s.port {
            if let Some(first) = port_names.get(port.name.as_str()) {
                cx.error(
                    &dot(&path, "port.name"),
                    format!(
                        "port names must be unique within a Gateway: {:?} is also the name of spec.servers[{first}]",
                        port.name
                    ),
                );
            } else {
                port_names.insert(port.name.as_str(), i);
            }
            let https_redirect = s.tls.as_ref().is_some_and(|t| t.https_redirect);
            if https_redirect && !Proto::parse(&port.protocol).is_some_and(Proto::is_http) {
                cx.warning(&dot(&path, "tls.httpsRedirect"), "httpsRedirect should only be used with HTTP servers");
            }
        }
    }
}

fn server(cx: &mut Cx<'_>, path: &dyn fmt::Display, s: &Server) {
    if s.hosts.is_empty() {
        cx.error(&dot(&path, "hosts"), "a server must have at least one host");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        let p = dot_ix(&path, "hosts", i);
        for e in server_host(h) {
            cx.error(&p, e);
        }
    }
    let bind = s.bind.as_deref().unwrap_or("");
    let port_ok = server_port(cx, path, s.port.as_ref(), bind);
    server_bind(cx, path, s.port.as_ref(), bind);
    if let Some(tls) = &s.tls {
        tls_options(cx, &dot(&path, "tls"), tls);
    }
    // HTTPS/TLS servers need TLS settings; plain-text HTTP servers may only carry `httpsRedirect`.
    if let (true, Some(port)) = (port_ok, &s.port) {
        let Some(p) = Proto::parse(&port.protocol) else { return };
        match &s.tls {
            None if p.is_tls() => cx.error(
                &dot(&path, "tls"),
                format!("a {} server must have TLS settings (`tls.mode` and a certificate)", port.protocol),
            ),
            Some(tls) if !p.is_tls() => {
                let passthrough = matches!(tls.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough);
                if !p.is_http() {
                    cx.error(
                        &dot(&path, "tls"),
                        format!("a {} server cannot have TLS settings: use protocol TLS or HTTPS", port.protocol),
                    );
                } else if !passthrough
                    || set(&tls.ca_certificates)
                    || set(&tls.private_key)
                    || set(&tls.server_certificate)
                {
                    cx.error(
                        &dot(&path, "tls"),
                        format!(
                            "a plain-text {} server cannot have TLS settings other than `httpsRedirect`: use protocol \
                             HTTPS to terminate TLS",
                            port.protocol
                        ),
                    );
                }
            }
            _ => {}
        }
        if matches!(p, Proto::Udp | Proto::HttpProxy) {
            cx.warning(
                &dot(&path, "port.protocol"),
                format!(
                    "protocol {} is accepted by Istio but Portico does not serve it: this server is ignored",
                    port.protocol
                ),
            );
        }
    }
}

/// A Gateway server host: `[namespace/]dnsName`, where namespace is `*`, `.` or a DNS-1123
/// label and dnsName is `*`, an FQDN with an optional `*.` prefix, or an IP (Istio's
/// `ValidateNamespaceSlashWildcardHostname` for gateways).
fn server_host(host: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let dns_name = match host.split_once('/') {
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                errs.push(format!(
                    "invalid host {host:?}: namespace and dnsName in `namespace/dnsName` cannot be empty"
                ));
            }
            if ns != "*" && ns != "." && !is_dns1123_label(ns) {
                errs.push(format!(
                    "invalid namespace {ns:?} in host {host:?}: use `*` (any namespace), `.` (the Gateway's own) or a \
                     namespace name"
                ));
            }
            name
        }
        None => host,
    };
    if dns_name.is_empty() {
        return errs;
    }
    if dns_name != "*" && !dns_name.contains('.') {
        errs.push(format!(
            "short name {dns_name:?} is not allowed in a Gateway host: use a fully qualified name (e.g. \
             \"{dns_name}.example.com\") or \"*\""
        ));
    }
    if let Err(e) = validate_wildcard_domain(dns_name) {
        if !is_ip(dns_name) {
            errs.push(e);
        }
    } else if let Err(e) = partial_wildcard(dns_name) {
        errs.push(e);
    }
    errs
}

/// Returns whether the port is valid (Istio checks the protocol/TLS pairing only then).
fn server_port(cx: &mut Cx<'_>, path: &dyn fmt::Display, port: Option<&Port>, bind: &str) -> bool {
    let Some(port) = port else {
        cx.error(&dot(&path, "port"), "port is required");
        return false;
    };
    let mut ok = true;
    if Proto::parse(&port.protocol).is_none() {
        ok = false;
        cx.error(
            &dot(&path, "port.protocol"),
            format!("invalid protocol {:?}: supported protocols are {PROTOCOLS}", port.protocol),
        );
    }
    if port.number > 0 || !bind.starts_with("unix://") {
        if let Err(e) = validate_port(i64::from(port.number)) {
            ok = false;
            cx.error(&dot(&path, "port.number"), e);
        }
    }
    if port.target_port.is_some_and(|t| t > 0) {
        ok = false;
        cx.error(
            &dot(&path, "port.targetPort"),
            "targetPort has no impact on Gateways: remove it (map ports with --port-map instead)",
        );
    }
    if port.name.is_empty() {
        ok = false;
        cx.error(&dot(&path, "port.name"), "port name must be set");
    }
    ok
}

fn server_bind(cx: &mut Cx<'_>, path: &dyn fmt::Display, port: Option<&Port>, bind: &str) {
    let p = dot(&path, "bind");
    if let Some(uds) = bind.strip_prefix("unix://") {
        cx.check(&p, validate_unix_address(uds));
        if port.is_some_and(|p| p.number != 0) {
            cx.error(&p, "port number must be 0 for a unix domain socket bind");
        }
    } else if !bind.is_empty() && !is_ip(bind) {
        cx.error(&p, format!("{bind:?} is not a valid IP address"));
    }
}

fn version_name(v: TlsProtocol) -> &'static str {
    match v {
        TlsProtocol::Auto => "TLS_AUTO",
        TlsProtocol::V1_0 => "TLSV1_0",
        TlsProtocol::V1_1 => "TLSV1_1",
        TlsProtocol::V1_2 => "TLSV1_2",
        TlsProtocol::V1_3 => "TLSV1_3",
    }
}

fn mode_name(m: ServerTlsMode) -> &'static str {
    match m {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

/// Istio's `validateTLSOptions`, extended to `credentialNames` and `tlsCertificates`.
fn tls_options(cx: &mut Cx<'_>, path: &dyn fmt::Display, tls: &ServerTlsSettings) {
    let (min, max) = (tls.min_protocol_version, tls.max_protocol_version);
    if matches!(min, TlsProtocol::V1_0 | TlsProtocol::V1_1) && tls.cipher_suites.is_empty() {
        cx.warning(
            &dot(&path, "minProtocolVersion"),
            "TLS versions below TLSV1_2 need compatible cipherSuites: the defaults no longer include any",
        );
    }
    // Istio accepts min > max, but Envoy then rejects the listener: refuse it here.
    if min != TlsProtocol::Auto && max != TlsProtocol::Auto && min > max {
        cx.error(
            &dot(&path, "minProtocolVersion"),
            format!("minProtocolVersion {} is above maxProtocolVersion {}", version_name(min), version_name(max)),
        );
    }
    let mut seen = Vec::new();
    for (i, cs) in tls.cipher_suites.iter().enumerate() {
        let p = dot_ix(&path, "cipherSuites", i);
        if !is_valid_cipher_suite(cs) {
            cx.warning(&p, format!("ignoring invalid cipher suite {cs:?}"));
        } else if seen.contains(cs) {
            cx.warning(&p, format!("ignoring duplicate cipher suite {cs:?}"));
        } else {
            seen.push(cs.clone());
        }
    }

    let file_cert = set(&tls.server_certificate) || set(&tls.private_key);
    let sources: Vec<&str> = [
        (set(&tls.credential_name), "credentialName"),
        (!tls.credential_names.is_empty(), "credentialNames"),
        (!tls.tls_certificates.is_empty(), "tlsCertificates"),
        (file_cert, "serverCertificate/privateKey"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();

    if tls.mode == ServerTlsMode::IstioMutual {
        // Istio's own workload certificates: any other certificate field is a mistake.
        for (on, field) in [
            (set(&tls.server_certificate), "serverCertificate"),
            (set(&tls.private_key), "privateKey"),
            (set(&tls.ca_certificates), "caCertificates"),
            (set(&tls.credential_name), "credentialName"),
            (!tls.credential_names.is_empty(), "credentialNames"),
            (!tls.tls_certificates.is_empty(), "tlsCertificates"),
        ] {
            if on {
                cx.error(&dot(&path, field), format!("ISTIO_MUTUAL TLS cannot have an associated {field}"));
            }
        }
        return;
    }
    let terminating = matches!(tls.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    // Istio documents the sources as exclusive but only picks one silently; refuse the ambiguity
    // where a certificate is actually used (passthrough modes ignore them, with a warning below).
    if terminating && sources.len() > 1 {
        cx.error(
            path,
            format!("set only one certificate source: found {} (they are mutually exclusive)", sources.join(" and ")),
        );
    }
    if tls.credential_names.len() > 2 {
        cx.error(
            &dot(&path, "credentialNames"),
            "at most 2 credentialNames (one RSA and one ECDSA certificate) may be set",
        );
    }
    if tls.tls_certificates.len() > 2 {
        cx.error(
            &dot(&path, "tlsCertificates"),
            "at most 2 tlsCertificates (one RSA and one ECDSA certificate) may be set",
        );
    }
    for (i, c) in tls.tls_certificates.iter().enumerate() {
        let p = dot_ix(&path, "tlsCertificates", i);
        if !set(&c.server_certificate) {
            cx.error(&dot(&p, "serverCertificate"), "each tlsCertificates entry requires a serverCertificate");
        }
        if !set(&c.private_key) {
            cx.error(&dot(&p, "privateKey"), "each tlsCertificates entry requires a privateKey");
        }
    }

    let passthrough = matches!(tls.mode, ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough);
    if passthrough
        && (set(&tls.ca_crl)
            || set(&tls.server_certificate)
            || set(&tls.private_key)
            || set(&tls.ca_certificates)
            || !sources.is_empty())
    {
        cx.warning(
            &dot(&path, "mode"),
            format!("{} mode does not use certificates: they will be ignored", mode_name(tls.mode)),
        );
    }

    let remote = set(&tls.credential_name) || !tls.credential_names.is_empty();
    if terminating && remote {
        // Certificates (and the client CA) come from the secret(s).
        if set(&tls.ca_crl) {
            cx.error(
                &dot(&path, "caCrl"),
                "caCrl is not supported with credentialName: put the CRL in the credential (`ca.crl`)",
            );
        }
        return;
    }
    let mode = mode_name(tls.mode);
    if terminating && tls.tls_certificates.is_empty() {
        if !set(&tls.server_certificate) {
            cx.error(
                &dot(&path, "serverCertificate"),
                format!(
                    "{mode} TLS requires a server certificate: set credentialName, or serverCertificate and privateKey"
                ),
            );
        }
        if !set(&tls.private_key) {
            cx.error(
                &dot(&path, "privateKey"),
                format!("{mode} TLS requires a private key: set credentialName, or serverCertificate and privateKey"),
            );
        }
    }
    if matches!(tls.mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        && !set(&tls.ca_certificates)
        && !tls.tls_certificates.iter().any(|c| set(&c.ca_certificates))
    {
        cx.error(
            &dot(&path, "caCertificates"),
            format!("{mode} TLS requires a client CA bundle: set caCertificates (or use credentialName)"),
        );
    }
    if set(&tls.ca_crl) && tls.mode == ServerTlsMode::Simple {
        cx.error(&dot(&path, "caCrl"), "CRL is not supported with SIMPLE TLS (no client certificates to check)");
    }
}

/// Istio's `security.IsValidCipherSuite`: Envoy/BoringSSL cipher names; anything starting with
/// a non-alphanumeric character (cipher groups `[A|B]`, `-X`, `!X`) is passed through.
fn is_valid_cipher_suite(cs: &str) -> bool {
    const VALID: &[&str] = &[
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-PSK-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-PSK-AES128-CBC-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "ECDHE-PSK-AES256-CBC-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "PSK-AES128-CBC-SHA",
        "AES256-SHA",
        "PSK-AES256-CBC-SHA",
        "DES-CBC3-SHA",
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    ];
    match cs.chars().next() {
        None => true,
        Some(c) if !c.is_alphanumeric() => true,
        Some(_) => cs == "ALL" || VALID.contains(&cs),
    }
}
