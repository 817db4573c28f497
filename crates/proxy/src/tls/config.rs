//! rustls server configurations for terminated TLS servers, built from the snapshot's resolved
//! material and kept by content hash: a rebuild (snapshot applied, or the periodic re-read of
//! certificate files) reuses the config of material that did not change, so session resumption
//! keeps working, and new material is used by new handshakes only — open connections keep the
//! config they were made with.

use portico_model::snapshot::{ListenerKind, Protocol, ServerBlock, Snapshot};
use portico_model::tls::{Material, ServerTls, TlsMode, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The TLS configs of one snapshot, by server block (its `Arc` address: the store lives inside
/// the `State` that owns the snapshot, so the addresses stay valid and unique).
#[derive(Default)]
pub(crate) struct TlsStore {
    entries: HashMap<usize, Entry>,
}

#[derive(Clone)]
struct Entry {
    /// Hash of the resolved settings and the bytes of every file they name.
    hash: u64,
    config: Result<Arc<ServerConfig>, Arc<str>>,
}

pub(crate) fn block_key(block: &Arc<ServerBlock>) -> usize {
    Arc::as_ptr(block) as usize
}

impl TlsStore {
    /// The config of a terminated server, or why it refuses handshakes.
    pub(crate) fn get(&self, block: &Arc<ServerBlock>) -> Result<Arc<ServerConfig>, Arc<str>> {
        match self.entries.get(&block_key(block)) {
            Some(e) => e.config.clone(),
            None => Err(Arc::from("no TLS configuration for this server")),
        }
    }

    /// Configs for every terminated server of `snapshot`, reusing `prev`'s where the content is
    /// the same. Reads certificate files (small; this runs on the control path, never per
    /// request). Returns the store and whether anything changed.
    pub(crate) fn build(snapshot: &Snapshot, prev: &TlsStore, provider: &Arc<CryptoProvider>) -> (TlsStore, bool) {
        let by_hash: HashMap<u64, &Entry> = prev.entries.values().map(|e| (e.hash, e)).collect();
        let mut entries = HashMap::new();
        let mut changed = false;
        for l in snapshot.listeners.iter().filter(|l| l.kind == ListenerKind::Tls) {
            for block in &l.servers {
                let Some(tls) = terminated(block) else {
                    if block.tls.is_none() {
                        let why: Arc<str> = Arc::from(
                            "the server's TLS material could not be resolved (see the configuration diagnostics)",
                        );
                        entries.insert(block_key(block), Entry { hash: 0, config: Err(why) });
                    }
                    continue;
                };
                let loaded = Loaded::read(tls);
                let mut h = DefaultHasher::new();
                tls.hash(&mut h);
                block.protocol.hash(&mut h);
                loaded.hash(&mut h);
                let hash = h.finish();
                let entry = match by_hash.get(&hash) {
                    Some(e) => (*e).clone(),
                    None => {
                        changed = true;
                        let config = build_config(tls, block.protocol, &loaded, provider).map(Arc::new).map_err(|e| {
                            tracing::warn!(
                                gateway = %block.gateway, server = block.index, port = l.port, hosts = ?block.hosts,
                                error = %e, "TLS server refuses handshakes: its certificate configuration is unusable"
                            );
                            Arc::<str>::from(e)
                        });
                        if config.is_ok() {
                            tracing::info!(gateway = %block.gateway, server = block.index, port = l.port, "TLS certificate loaded");
                        }
                        Entry { hash, config }
                    }
                };
                entries.insert(block_key(block), entry);
            }
        }
        changed |= entries.len() != prev.entries.len();
        (TlsStore { entries }, changed)
    }
}

/// The TLS settings of a server that terminates TLS.
pub(crate) fn terminated(block: &ServerBlock) -> Option<&ServerTls> {
    block.tls.as_ref().filter(|t| matches!(t.mode, TlsMode::Simple | TlsMode::Mutual | TlsMode::OptionalMutual))
}

/// The bytes of every piece of material (files read now), or the read error.
#[derive(Hash)]
struct Loaded {
    certs: Vec<(Bytes, Bytes)>,
    ca: Option<Bytes>,
    crl: Option<Bytes>,
}

/// Material's bytes, or why they could not be read.
type Bytes = Result<Arc<[u8]>, String>;

impl Loaded {
    fn read(tls: &ServerTls) -> Loaded {
        Loaded {
            certs: tls.certificates.iter().map(|p| (read(&p.cert), read(&p.key))).collect(),
            ca: tls.client_ca.as_ref().map(read),
            crl: tls.crl.as_ref().map(read),
        }
    }
}

fn read(m: &Material) -> Bytes {
    match m {
        Material::Pem(b) => Ok(b.clone()),
        Material::File(path) => std::fs::read(path).map(Arc::from).map_err(|e| format!("cannot read {path}: {e}")),
    }
}

fn bytes(r: &Bytes) -> Result<&[u8], String> {
    r.as_deref().map_err(Clone::clone)
}

/// OpenSSL/Envoy names → rustls suites (TLS 1.2; TLS 1.3 suites are not configurable, as in Envoy).
fn suite_name(s: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    Some(match s {
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

/// The provider for terminated TLS: aws-lc-rs with its suites in the order this server prefers.
/// AES-128-GCM leads, as in Envoy's default TLS 1.2 list (for TLS 1.3 Envoy takes the client's
/// order; rustls has one switch for both, and this is RFC 8446's mandatory suite). Its SHA-256
/// key schedule runs on the CPU's SHA instructions, where SHA-384 runs in plain code on many
/// CPUs: with AES-256-GCM-SHA384 first, 13% of a full handshake's CPU went to SHA-512 blocks
/// (ARCHITECTURE.md).
pub(crate) fn server_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| server_rank(s.suite()));
    provider
}

/// Envoy's default server order for TLS 1.2 (`[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]`,
/// the same for RSA, then AES-256), with AES-128 first inside each equal-preference group, as
/// BoringSSL picks on AES hardware. TLS 1.3 suites come first, so a TLS 1.3 client gets one.
fn server_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384 => 1,
        C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => 3,
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => 4,
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 5,
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 6,
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => 7,
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 8,
        _ => 9,
    }
}

fn build_config(
    tls: &ServerTls,
    protocol: Protocol,
    loaded: &Loaded,
    base: &Arc<CryptoProvider>,
) -> Result<ServerConfig, String> {
    let mut provider = (**base).clone();
    if !tls.cipher_suites.is_empty() {
        // Keep TLS 1.3 suites, and the configured TLS 1.2 suites in the configured order.
        let mut suites: Vec<_> =
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        for name in &tls.cipher_suites {
            suites.extend(provider.cipher_suites.iter().filter(|s| suite_name(s.suite()) == Some(name.as_str())));
        }
        provider.cipher_suites = suites;
    }
    let provider = Arc::new(provider);

    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if tls.min_version <= TlsVersion::V1_2 && tls.max_version >= TlsVersion::V1_2 {
        versions.push(&rustls::version::TLS12);
    }
    if tls.max_version >= TlsVersion::V1_3 {
        versions.push(&rustls::version::TLS13);
    }

    let mut keys = Vec::new();
    for (i, (cert, key)) in loaded.certs.iter().enumerate() {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes(cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate {i}: bad PEM: {e}"))?;
        if chain.is_empty() {
            return Err(format!("certificate {i}: no certificate in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(bytes(key)?).map_err(|e| format!("private key {i}: {e}"))?;
        let signer =
            provider.key_provider.load_private_key(key).map_err(|e| format!("private key {i}: unusable: {e}"))?;
        let ck = CertifiedKey::new(chain, signer);
        ck.keys_match().map_err(|e| format!("certificate {i} does not match its private key: {e}"))?;
        keys.push(Arc::new(ck));
    }
    if keys.is_empty() {
        return Err("no certificate".into());
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions / cipher suites: {e}"))?;
    let builder = match tls.mode {
        TlsMode::Mutual | TlsMode::OptionalMutual => {
            let ca = loaded.ca.as_ref().ok_or("MUTUAL TLS needs a client CA")?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(bytes(ca)?) {
                let c = c.map_err(|e| format!("client CA: bad PEM: {e}"))?;
                roots.add(c).map_err(|e| format!("client CA: {e}"))?;
            }
            let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if let Some(crl) = &loaded.crl {
                let crls: Vec<CertificateRevocationListDer<'static>> =
                    CertificateRevocationListDer::pem_slice_iter(bytes(crl)?)
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("CRL: bad PEM: {e}"))?;
                // The client certificate must be covered by a CRL of its issuer (Envoy refuses a
                // certificate whose CA has no CRL once CRLs are configured). Intermediates are
                // not checked (Envoy's `only_verify_leaf_cert_crl`): gateway client CAs are
                // mostly one level deep, and a missing intermediate CRL would refuse everyone.
                vb = vb.with_crls(crls).only_check_end_entity_revocation();
            }
            if tls.mode == TlsMode::OptionalMutual {
                vb = vb.allow_unauthenticated();
            }
            let inner = vb.build().map_err(|e| format!("client verifier: {e}"))?;
            let verifier: Arc<dyn ClientCertVerifier> = if tls.subject_alt_names.is_empty()
                && tls.verify_certificate_spki.is_empty()
                && tls.verify_certificate_hash.is_empty()
            {
                inner
            } else {
                Arc::new(CheckedVerifier::new(inner, tls))
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Resolver::new(keys)));
    // Stateless session tickets (Envoy's default, keys rotated every 6 h): rustls' default keeps
    // 256 sessions in memory, so past a few hundred clients between two visits, none resumed.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    // The server's order (the configured `cipherSuites` order, else `server_provider`'s) wins,
    // as Envoy sets for TLS 1.2.
    config.ignore_client_order = true;
    if protocol == Protocol::Https {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// Several certificates for one server (e.g. RSA and ECDSA, or one per host), chosen as Envoy
/// does: those whose DNS names match the SNI (exactly, else by a `*.` wildcard), else all; among
/// them the first whose key can sign with a scheme the client offers, else the first.
#[derive(Debug)]
struct Resolver {
    /// Each key with its leaf's names, lowercased.
    keys: Vec<(Arc<CertifiedKey>, Vec<String>)>,
}

impl Resolver {
    fn new(keys: Vec<Arc<CertifiedKey>>) -> Resolver {
        let keys = keys
            .into_iter()
            .map(|k| {
                let names = k
                    .cert
                    .first()
                    .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
                    .map(|(_, x)| crate::tls::identity::san_strings(&x))
                    .unwrap_or_default();
                (k, names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
            })
            .collect();
        Resolver { keys }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let by_name = |exact: bool| -> Vec<&Arc<CertifiedKey>> {
            let Some(sni) = sni.as_deref() else { return Vec::new() };
            let wild = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            self.keys
                .iter()
                .filter(|(_, names)| {
                    names.iter().any(|n| if exact { n == sni } else { wild.as_deref() == Some(n.as_str()) })
                })
                .map(|(k, _)| k)
                .collect()
        };
        let mut candidates = by_name(true);
        if candidates.is_empty() {
            candidates = by_name(false);
        }
        if candidates.is_empty() {
            candidates = self.keys.iter().map(|(k, _)| k).collect();
        }
        candidates.iter().find(|k| k.key.choose_scheme(schemes).is_some()).or(candidates.first()).map(|k| Arc::clone(k))
    }
}

/// Istio's extra client-certificate checks on top of chain (and CRL) verification, failing
/// the handshake as Envoy does.
#[derive(Debug)]
struct CheckedVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
    spki: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl CheckedVerifier {
    fn new(inner: Arc<dyn ClientCertVerifier>, tls: &ServerTls) -> CheckedVerifier {
        use base64::Engine;
        CheckedVerifier {
            inner,
            sans: tls.subject_alt_names.clone(),
            // Undecodable entries match nothing (the compiler validated them already).
            spki: tls
                .verify_certificate_spki
                .iter()
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok())
                .collect(),
            hashes: tls.verify_certificate_hash.iter().filter_map(|h| decode_hex(h)).collect(),
        }
    }

    fn accepts(&self, cert: &[u8]) -> bool {
        let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert) else { return false };
        if !self.sans.is_empty() {
            let names = crate::tls::identity::san_strings(&x509);
            if !self.sans.iter().any(|want| names.iter().any(|n| n == want)) {
                return false;
            }
        }
        // Envoy: when both pin lists are set, matching either one is enough.
        if self.spki.is_empty() && self.hashes.is_empty() {
            return true;
        }
        let spki = super::identity::sha256(x509.tbs_certificate.subject_pki.raw);
        let hash = super::identity::sha256(cert);
        self.spki.iter().any(|p| p.as_slice() == spki.as_ref())
            || self.hashes.iter().any(|h| h.as_slice() == hash.as_ref())
    }
}

/// Hex with optional colons (`AB:CD:…`), as `verifyCertificateHash` allows.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

impl ClientCertVerifier for CheckedVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if self.accepts(end_entity) {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::decode_hex;

    #[test]
    fn hex_with_colons() {
        assert_eq!(decode_hex("0a:FF:10"), Some(vec![10, 255, 16]));
        assert_eq!(decode_hex("0aF"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
