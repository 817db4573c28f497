//! Certificates made at test time (rcgen), and rustls client configs trusting them.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A certificate it issued, with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), params: p, key }
    }

    /// A leaf with DNS (or IP) SANs, plus URI SANs, and a serial number (for a CRL).
    pub fn issue(&self, cn: &str, names: &[&str], uris: &[&str], serial: u64) -> Leaf {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for u in uris {
            p.subject_alt_names.push(SanType::URI((*u).try_into().unwrap()));
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "Portico Tests");
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// Sign `params` for `key` (a leaf of any shape: an RSA key, other fields).
    pub fn sign(&self, params: &CertificateParams, key: &KeyPair) -> Leaf {
        let cert = params.signed_by(key, &Issuer::from_params(&self.params, &self.key)).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// A server certificate for `names` (the first is the common name), with a fresh serial.
    pub fn server(&self, names: &[&str]) -> Leaf {
        static SERIAL: AtomicU64 = AtomicU64::new(1000);
        self.issue(names[0], names, &[], SERIAL.fetch_add(1, Ordering::Relaxed))
    }

    /// A CRL revoking `revoked` serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let p = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        p.signed_by(&Issuer::from_params(&self.params, &self.key)).unwrap().pem().unwrap()
    }
}

/// The crypto provider the gateway uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client trusting the CAs in `roots` (PEM), presenting `client` if given, offering `alpn`.
pub fn client_config(roots: &[&str], client: Option<&Leaf>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            store.add(c.unwrap()).unwrap();
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut cfg = match client {
        Some(l) => {
            let key: PrivateKeyDer<'static> =
                rustls::pki_types::pem::PemObject::from_pem_slice(l.key_pem.as_bytes()).unwrap();
            b.with_client_auth_cert(vec![l.der.clone()], key).unwrap()
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}
