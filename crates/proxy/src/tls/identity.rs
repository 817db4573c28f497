//! The verified client identity, as Envoy forwards it in `x-forwarded-client-cert`.

use http::HeaderValue;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Every subject alternative name as text (DNS, URI, email, IP), for `subjectAltNames` checks.
pub(crate) fn san_strings(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    out.push((*s).to_string())
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        out.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        out.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The subject in RFC 2253 form (last RDN first, `,` between), as Envoy prints it.
fn subject_rfc2253(cert: &X509Certificate<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in cert.subject().iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = a.as_str().unwrap_or("");
                let mut escaped = String::with_capacity(value.len());
                for c in value.chars() {
                    if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
                        escaped.push('\\');
                    }
                    escaped.push(c);
                }
                format!("{key}={escaped}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

/// `Hash=<hex sha256 of the DER>;Subject="…";URI=…;DNS=…` (Envoy's XFCC with Istio gateway's
/// details: hash, subject, URI and DNS SANs). `None` for a certificate we cannot parse (it was
/// verified by rustls, so this does not happen in practice).
pub(crate) fn xfcc(der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let hash = sha256(der);
    let mut v = String::from("Hash=");
    for b in hash.as_ref() {
        v.push_str(&format!("{b:02x}"));
    }
    let subject = subject_rfc2253(&cert).replace('"', "\\\"");
    v.push_str(";Subject=\"");
    v.push_str(&subject);
    v.push('"');
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(s) => {
                    v.push_str(";URI=");
                    v.push_str(s);
                }
                GeneralName::DNSName(s) => {
                    v.push_str(";DNS=");
                    v.push_str(s);
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&v).ok()
}
/// SHA-256 of certificate bytes (XFCC `Hash`, `verifyCertificateHash`/`Spki`), with the
/// crypto provider rustls uses.
pub(crate) fn sha256(data: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
}
