//! TLS material for Gateway servers: where certificates come from (Secrets by
//! `credentialName`, or files), resolved at compile time. Pure: files are named, not read.

use crate::snapshot::SecretData;
use portico_api::diag::code;
use portico_api::istio::{Server, ServerTlsMode, TlsProtocol};
use portico_api::{Diagnostic, Resource};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// PEM bytes from a Secret, or a file path the data plane reads (and re-reads on change).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Material {
    #[serde(serialize_with = "redacted")]
    Pem(Arc<[u8]>),
    File(String),
}

fn redacted<S: serde::Serializer>(v: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("<{} bytes of PEM>", v.len()))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CertPair {
    pub cert: Material,
    pub key: Material,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    Simple,
    Mutual,
    OptionalMutual,
    Passthrough,
    AutoPassthrough,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    V1_2,
    #[serde(rename = "TLSv1.3")]
    V1_3,
}

/// A terminated or passed-through TLS server, everything resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServerTls {
    pub mode: TlsMode,
    /// One or more certificate/key pairs (e.g. RSA and ECDSA), chosen by the client's abilities.
    pub certificates: Vec<CertPair>,
    /// Client CA for MUTUAL / OPTIONAL_MUTUAL.
    pub client_ca: Option<Material>,
    pub crl: Option<Material>,
    pub subject_alt_names: Vec<String>,
    pub verify_certificate_spki: Vec<String>,
    pub verify_certificate_hash: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// Cipher suite names Portico supports, in the configured order (empty = defaults).
    pub cipher_suites: Vec<String>,
}

/// TLS 1.2 suites Portico (rustls) offers, by their OpenSSL/Envoy names. TLS 1.3 suites are
/// not configurable in Envoy either.
pub const SUPPORTED_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

pub struct TlsCtx<'a> {
    pub gw_res: &'a Resource,
    pub server_index: usize,
    pub secrets: &'a BTreeMap<String, Arc<SecretData>>,
    pub gateway_namespace: &'a str,
}

impl TlsCtx<'_> {
    fn path(&self, field: &str) -> String {
        format!("spec.servers[{}].tls.{field}", self.server_index)
    }

    /// Istio looks `credentialName` up in the gateway workload's namespace. A secret found only
    /// in the Gateway resource's own namespace is used with a warning, so a folder written
    /// without namespaces works.
    fn secret(&self, name: &str, field: &str, diags: &mut Vec<Diagnostic>) -> Option<Arc<SecretData>> {
        // A server generated from a Gateway API listener: `certificateRefs` live in the Gateway's
        // own namespace, as the Gateway API (and Istio for it) say.
        if self.gw_res.api_version.starts_with(portico_api::gateway_api::GATEWAY_API_GROUP) {
            if let Some(s) = self.secrets.get(&format!("{}/{name}", self.gw_res.namespace())) {
                return Some(s.clone());
            }
        }
        if let Some(s) = self.secrets.get(&format!("{}/{name}", self.gateway_namespace)) {
            return Some(s.clone());
        }
        let own = self
            .gw_res
            .meta
            .annotations
            .get(crate::ingress::SOURCE_NAMESPACE)
            .map(String::as_str)
            .unwrap_or(self.gw_res.namespace());
        if let Some(s) = self.secrets.get(&format!("{own}/{name}")) {
            diags.push(Diagnostic::warning(
                self.gw_res.origin.locate(&self.path(field)),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                self.gw_res.key(),
                format!(
                    "{}: secret `{name}` is not in the gateway's namespace `{}`; using {own}/{name} from the Gateway's own namespace (Istio would not)",
                    self.path(field),
                    self.gateway_namespace
                ),
            ));
            return Some(s.clone());
        }
        let looked = if own == self.gateway_namespace {
            format!("{own}/{name}")
        } else {
            format!("{}/{name} and {own}/{name}", self.gateway_namespace)
        };
        diags.push(Diagnostic::error(
            self.gw_res.origin.locate(&self.path(field)),
            code::REFERENCED_RESOURCE_NOT_FOUND,
            self.gw_res.key(),
            format!(
                "Referenced {field} not found: {name:?} ({}: looked for secret {looked}; this server refuses handshakes)",
                self.path(field)
            ),
        ));
        None
    }
}

fn pem(secret: &SecretData, keys: &[&str]) -> Option<Material> {
    keys.iter().find_map(|k| secret.data.get(*k)).map(|v| Material::Pem(Arc::from(v.as_slice())))
}

fn cert_pair_from_secret(
    ctx: &TlsCtx<'_>,
    s: &SecretData,
    name: &str,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<CertPair> {
    let has = |keys: &[&str], marker: &str| {
        keys.iter().find_map(|k| s.data.get(*k)).is_some_and(|v| String::from_utf8_lossy(v).contains(marker))
    };
    // IST0161 when the pair is missing or is not PEM. (Istio also rejects an expired
    // certificate; the model has no clock, the TLS layer reports that when it loads it.)
    let problem = if pem(s, &["tls.crt", "cert"]).is_none() || pem(s, &["tls.key", "key"]).is_none() {
        Some(format!("secret `{name}` has no `tls.crt`/`tls.key` (or `cert`/`key`) pair"))
    } else if !has(&["tls.crt", "cert"], "-----BEGIN CERTIFICATE-----") {
        Some(format!("`tls.crt` of secret `{name}` holds no PEM certificate"))
    } else if !has(&["tls.key", "key"], "PRIVATE KEY-----") {
        Some(format!("`tls.key` of secret `{name}` holds no PEM private key"))
    } else {
        None
    };
    match (pem(s, &["tls.crt", "cert"]), pem(s, &["tls.key", "key"]), problem) {
        (Some(cert), Some(key), None) => Some(CertPair { cert, key }),
        (_, _, problem) => {
            diags.push(Diagnostic::error(
                ctx.gw_res.origin.locate(&ctx.path(field)),
                code::INVALID_GATEWAY_CREDENTIAL,
                ctx.gw_res.key(),
                format!(
                    "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the \
                     traffic not to work as expected. ({}: {})",
                    ctx.gw_res.name(),
                    ctx.gw_res.namespace(),
                    ctx.path(field),
                    problem.unwrap_or_default()
                ),
            ));
            None
        }
    }
}

fn version(v: TlsProtocol, default: TlsVersion) -> TlsVersion {
    match v {
        TlsProtocol::V1_3 => TlsVersion::V1_3,
        TlsProtocol::Auto => default,
        _ => TlsVersion::V1_2,
    }
}

/// Resolve a server's TLS settings. `None` for a server without TLS (or `httpsRedirect` only),
/// or when its certificate cannot be found (the error is reported).
pub fn server_tls(ctx: &TlsCtx<'_>, server: &Server, diags: &mut Vec<Diagnostic>) -> Option<ServerTls> {
    let t = server.tls.as_ref()?;
    let proto = server.port.as_ref().map(|p| p.protocol.to_ascii_uppercase()).unwrap_or_default();
    if !matches!(proto.as_str(), "HTTPS" | "TLS") {
        return None;
    }
    let mode = match t.mode {
        ServerTlsMode::Simple => TlsMode::Simple,
        ServerTlsMode::Mutual => TlsMode::Mutual,
        ServerTlsMode::OptionalMutual => TlsMode::OptionalMutual,
        ServerTlsMode::Passthrough => TlsMode::Passthrough,
        ServerTlsMode::AutoPassthrough => TlsMode::AutoPassthrough,
        ServerTlsMode::IstioMutual => {
            diags.push(Diagnostic::warning(
                ctx.gw_res.origin.locate(&ctx.path("mode")),
                code::NOT_SUPPORTED,
                ctx.gw_res.key(),
                format!("{}: ISTIO_MUTUAL needs the mesh's certificates; not supported", ctx.path("mode")),
            ));
            return None;
        }
    };
    let terminated = matches!(mode, TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual);
    let mut certificates = Vec::new();
    let mut client_ca = None;
    let mut crl = None;
    if terminated {
        if let Some(name) = &t.credential_name {
            let s = ctx.secret(name, "credentialName", diags)?;
            certificates.push(cert_pair_from_secret(ctx, &s, name, "credentialName", diags)?);
            client_ca = pem(&s, &["ca.crt", "cacert"]);
            crl = pem(&s, &["ca.crl", "crl"]);
            if client_ca.is_none() && mode != TlsMode::Simple {
                // Istio's convention: the CA may live in `<name>-cacert`.
                let ca_name = format!("{name}-cacert");
                if let Some(cs) = ctx
                    .secrets
                    .get(&format!("{}/{ca_name}", ctx.gateway_namespace))
                    .or_else(|| ctx.secrets.get(&format!("{}/{ca_name}", ctx.gw_res.namespace())))
                {
                    client_ca = pem(cs, &["ca.crt", "cacert"]);
                    crl = crl.or_else(|| pem(cs, &["ca.crl", "crl"]));
                }
            }
        } else if !t.credential_names.is_empty() {
            for (i, name) in t.credential_names.iter().enumerate() {
                let field = format!("credentialNames[{i}]");
                let s = ctx.secret(name, &field, diags)?;
                certificates.push(cert_pair_from_secret(ctx, &s, name, &field, diags)?);
                if client_ca.is_none() {
                    client_ca = pem(&s, &["ca.crt", "cacert"]);
                }
            }
        } else if !t.tls_certificates.is_empty() {
            for c in &t.tls_certificates {
                if let (Some(cert), Some(key)) = (&c.server_certificate, &c.private_key) {
                    certificates
                        .push(CertPair { cert: Material::File(cert.clone()), key: Material::File(key.clone()) });
                }
                if client_ca.is_none() {
                    client_ca = c.ca_certificates.clone().map(Material::File);
                }
            }
        } else if let (Some(cert), Some(key)) = (&t.server_certificate, &t.private_key) {
            certificates.push(CertPair { cert: Material::File(cert.clone()), key: Material::File(key.clone()) });
        }
        if let Some(ca) = &t.ca_cert_credential_name {
            if let Some(s) = ctx.secret(ca, "caCertCredentialName", diags) {
                client_ca = pem(&s, &["ca.crt", "cacert"]).or(client_ca);
                crl = pem(&s, &["ca.crl", "crl"]).or(crl);
            }
        }
        if let Some(ca) = &t.ca_certificates {
            client_ca = Some(Material::File(ca.clone()));
        }
        if let Some(c) = &t.ca_crl {
            crl = Some(Material::File(c.clone()));
        }
        if certificates.is_empty() {
            return None;
        }
        if mode != TlsMode::Simple && client_ca.is_none() {
            diags.push(Diagnostic::error(
                ctx.gw_res.origin.locate(&ctx.path("mode")),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                ctx.gw_res.key(),
                format!(
                    "{}: {:?} needs a client CA (`ca.crt` in the secret, a `<name>-cacert` secret, or caCertificates); this server refuses handshakes",
                    ctx.path("mode"),
                    mode
                ),
            ));
            return None;
        }
    }
    let mut cipher_suites = Vec::new();
    for (i, c) in t.cipher_suites.iter().enumerate() {
        if SUPPORTED_CIPHER_SUITES.contains(&c.as_str()) {
            cipher_suites.push(c.clone());
        } else {
            diags.push(Diagnostic::warning(
                ctx.gw_res.origin.locate(&format!("{}[{i}]", ctx.path("cipherSuites"))),
                code::IGNORED,
                ctx.gw_res.key(),
                format!(
                    "{}[{i}]: cipher suite `{c}` is unknown or not offered by Portico; dropped",
                    ctx.path("cipherSuites")
                ),
            ));
        }
    }
    let min_version = version(t.min_protocol_version, TlsVersion::V1_2);
    let max_version = version(t.max_protocol_version, TlsVersion::V1_3);
    Some(ServerTls {
        mode,
        certificates,
        client_ca,
        crl,
        subject_alt_names: t.subject_alt_names.clone(),
        verify_certificate_spki: t.verify_certificate_spki.clone(),
        verify_certificate_hash: t.verify_certificate_hash.clone(),
        min_version,
        max_version: max_version.max(min_version),
        cipher_suites,
    })
}
