//! TLS toward endpoints (DestinationRule `tls`, SIMPLE / MUTUAL), rustls with aws-lc-rs.
//!
//! Istio semantics as implemented:
//! * SNI: `sni` if set, else the request's host (Istio enables Envoy's `auto_sni`, documented as
//!   "SNI will be set based on downstream HTTP host/authority header").
//! * Verification: against `caCertificates` / the secret's `ca.crt`; names checked are
//!   `subjectAltNames` if set (any may match), else the SNI (Istio's `auto_san_validation`).
//!   `insecureSkipVerify` skips chain and name checks. Without a CA and without
//!   `insecureSkipVerify` there is nothing to verify against (no system roots are bundled):
//!   connections fail (503 `UF`) rather than go out unverified.
//! * MUTUAL: the client certificate and key are presented.
//! * Pooled connections belong to an endpoint: the SNI of the request that opened a connection
//!   is the one it keeps.

use portico_model::snapshot::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error("reading {0}: {1}")]
    File(String, std::io::Error),
    #[error("no usable certificate in {0}")]
    NoCert(&'static str),
    #[error("no usable private key")]
    NoKey,
    #[error("no CA certificates to verify the backend with (set caCertificates or insecureSkipVerify)")]
    NoCa,
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) struct Connector {
    connector: Option<TlsConnector>,
    sni: Option<ServerName<'static>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn material(inline: &Option<Vec<u8>>, file: &Option<String>) -> Result<Option<Vec<u8>>, TlsSetupError> {
    if let Some(pem) = inline {
        return Ok(Some(pem.clone()));
    }
    match file {
        Some(path) => std::fs::read(path).map(Some).map_err(|e| TlsSetupError::File(path.clone(), e)),
        None => Ok(None),
    }
}

impl Connector {
    pub(crate) fn new(t: &UpstreamTls) -> Result<Connector, TlsSetupError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let ca = material(&t.ca_pem, &t.ca_file)?;
        let verifier: Arc<dyn ServerCertVerifier> = if t.insecure_skip_verify {
            Arc::new(NoVerify(provider.clone()))
        } else {
            let pem = ca.ok_or(TlsSetupError::NoCa)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsSetupError::NoCert("caCertificates"));
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            let sans = t.subject_alt_names.iter().filter_map(|s| ServerName::try_from(s.clone()).ok()).collect();
            Arc::new(SanVerifier { inner, sans })
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let mut config = if t.mutual {
            let cert_pem = material(&t.cert_pem, &t.cert_file)?.ok_or(TlsSetupError::NoCert("clientCertificate"))?;
            let key_pem = material(&t.key_pem, &t.key_file)?.ok_or(TlsSetupError::NoKey)?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).flatten().collect();
            if certs.is_empty() {
                return Err(TlsSetupError::NoCert("clientCertificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsSetupError::NoKey)?;
            builder.with_client_auth_cert(certs, key)?
        } else {
            builder.with_no_client_auth()
        };
        config.enable_sni = true;
        let sni = t.sni.as_ref().and_then(|s| ServerName::try_from(s.clone()).ok());
        Ok(Connector { connector: Some(TlsConnector::from(Arc::new(config))), sni })
    }

    /// A connector for unusable settings: every connection fails.
    pub(crate) fn broken() -> Connector {
        Connector { connector: None, sni: None }
    }

    /// Handshake over `tcp`; `host` is the request's host (the SNI when `sni` is unset).
    pub(crate) async fn connect(&self, tcp: TcpStream, host: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let Some(c) = &self.connector else {
            return Err(std::io::Error::other("upstream TLS is misconfigured"));
        };
        let name = match &self.sni {
            Some(n) => n.clone(),
            None => {
                ServerName::try_from(portico_model::snapshot::strip_port(host).trim_matches(['[', ']']).to_string())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            }
        };
        c.connect(name, tcp).await
    }
}

/// Chain verification by webpki; the name checked is any of `subjectAltNames` when given,
/// else the SNI.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    sans: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.sans.is_empty() {
            return self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = rustls::Error::General("no subjectAltNames".into());
        for san in &self.sans {
            match self.inner.verify_server_cert(end_entity, intermediates, san, ocsp, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecureSkipVerify`: any certificate is accepted; handshake signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
