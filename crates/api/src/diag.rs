//! Diagnostics: one finding about the config, printed as
//! `FILE:LINE:COL: error|warning CODE Kind/namespace/name: message` (DESIGN.md §5).

use serde::Serialize;
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// Istio's `Info` level (for example IST0131): never fails `validate`.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// Stable diagnostic codes. Istio's analyzer codes where Istio has one, `PTC` codes for ours.
pub mod code {
    /// YAML/JSON syntax error: the file (or one document) does not parse.
    pub const SYNTAX: &str = "PTC0001";
    /// A field that the resource's schema does not have.
    pub const UNKNOWN_FIELD: &str = "PTC0002";
    /// A value of the wrong type or shape.
    pub const BAD_VALUE: &str = "PTC0003";
    /// A kind Portico does not handle; the document is skipped.
    pub const UNSUPPORTED_KIND: &str = "PTC0004";
    /// apiVersion/kind/metadata.name missing or malformed.
    pub const BAD_OBJECT: &str = "PTC0005";
    /// A field that parses but whose behaviour is not implemented yet.
    pub const NOT_SUPPORTED: &str = "PTC0006";
    /// Two resources with the same kind, namespace and name.
    pub const DUPLICATE: &str = "PTC0007";
    /// Something Portico had to ignore or reinterpret (for example a class-less Ingress).
    pub const IGNORED: &str = "PTC0008";
    /// Istio's schema/webhook validation rejected the resource (istioctl: SchemaValidationError).
    pub const SCHEMA: &str = "IST0106";
    /// Referenced gateway, secret, host or subset not found.
    pub const REFERENCED_RESOURCE_NOT_FOUND: &str = "IST0101";
    /// Destination port required: the host has several ports.
    pub const DESTINATION_PORT_REQUIRED: &str = "IST0112";
    /// A rule can never match: an earlier rule catches everything it would.
    pub const UNREACHABLE_RULE: &str = "IST0130";
    /// A match condition is ineffective (covered by an earlier one).
    pub const INEFFECTIVE_MATCH: &str = "IST0131";
    /// A VirtualService host matches no host of a gateway it names.
    pub const VS_HOST_NOT_IN_GATEWAY: &str = "IST0132";
    /// Conflicting gateways: same port and host on one instance.
    pub const CONFLICTING_GATEWAYS: &str = "IST0145";
    /// A DestinationRule subset selects no endpoints.
    pub const SUBSET_NO_ENDPOINTS: &str = "IST0173";
    /// Deprecated field or value (istioctl: Deprecated).
    pub const DEPRECATED: &str = "IST0002";
    /// An Istio annotation on a kind it does not apply to.
    pub const MISPLACED_ANNOTATION: &str = "IST0107";
    /// An `*.istio.io/` annotation Istio does not know.
    pub const UNKNOWN_ANNOTATION: &str = "IST0108";
    /// Several mesh-bound VirtualServices define the same host.
    pub const CONFLICTING_MESH_GATEWAY_VS_HOSTS: &str = "IST0109";
    /// A regular expression RE2 does not accept.
    pub const INVALID_REGEXP: &str = "IST0122";
    /// DestinationRule TLS without `caCertificates` (traffic policy level).
    pub const NO_SERVER_CERT_VERIFICATION_DESTINATION: &str = "IST0128";
    /// DestinationRule TLS without `caCertificates` (port level).
    pub const NO_SERVER_CERT_VERIFICATION_PORT: &str = "IST0129";
    /// Istio's webhook accepted the resource with a warning (istioctl: SchemaWarning).
    pub const SCHEMA_WARNING: &str = "IST0133";
    /// A ServiceEntry needs `addresses` for TCP (or protocol-less) ports.
    pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: &str = "IST0134";
    /// The same certificate on several Gateways (HTTP/2 connection reuse → 404s).
    pub const GATEWAY_DUPLICATE_CERTIFICATE: &str = "IST0138";
    /// A mesh VirtualService's subset routing does not apply to requests entering a gateway.
    pub const INGRESS_ROUTE_RULES_NOT_AFFECTED: &str = "IST0140";
    /// JWT claim routing with no RequestAuthentication to validate the token.
    pub const JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN: &str = "IST0149";
    /// The credential a Gateway references is not a usable certificate and key.
    pub const INVALID_GATEWAY_CREDENTIAL: &str = "IST0161";
    /// A Gateway port that no Service selecting the gateway's pods targets.
    pub const GATEWAY_PORT_NOT_DEFINED_ON_SERVICE: &str = "IST0162";
    /// A VirtualService names a Gateway that Istio generates from a Gateway API Gateway.
    pub const REFERENCED_INTERNAL_GATEWAY: &str = "IST0165";
    /// A status condition with a negative status (`Accepted: False`, …) on the object.
    pub const NEGATIVE_CONDITION_STATUS: &str = "IST0171";
    /// A DestinationRule host matches no service.
    pub const UNKNOWN_DESTINATION_RULE_HOST: &str = "IST0174";
    /// ServiceEntries visible together give one host and port different protocols.
    pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: &str = "IST0177";
}

/// Where a diagnostic points. Line and column are 1-based; 0 means "unknown".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub location: Location,
    pub severity: Severity,
    pub code: &'static str,
    /// `Kind/namespace/name`, or `-` when the finding is not about one resource.
    pub resource: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        location: Location,
        code: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic { location, severity: Severity::Error, code, resource: resource.into(), message: message.into() }
    }

    pub fn warning(
        location: Location,
        code: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic { location, severity: Severity::Warning, code, resource: resource.into(), message: message.into() }
    }

    pub fn info(
        location: Location,
        code: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic { location, severity: Severity::Info, code, resource: resource.into(), message: message.into() }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} {} {}: {}",
            self.location.file,
            self.location.line,
            self.location.col,
            self.severity,
            self.code,
            self.resource,
            self.message
        )
    }
}
