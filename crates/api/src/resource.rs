//! A parsed resource: its identity, where it came from, and its typed spec.

use crate::diag::Location;
use crate::gateway_api::{GatewayClass, GrpcRoute, HttpRoute, KubeGateway, L4Route, ReferenceGrant};
use crate::istio::{DestinationRule, Gateway, ServiceEntry, VirtualService};
use crate::k8s::{Ingress, ObjectMeta, Secret, Service};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Secret,
    Ingress,
    // Gateway API (`gateway.networking.k8s.io`).
    GatewayClass,
    /// The Gateway API's `Gateway` (printed `Gateway.gateway.networking.k8s.io`, as kubectl
    /// names it, so it is never mistaken for Istio's).
    KubeGateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    /// A Kubernetes Namespace: only its labels are read (Gateway `allowedRoutes` selectors).
    Namespace,
    /// A core `v1` Service.
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::GatewayClass => "GatewayClass",
            Kind::KubeGateway => "Gateway.gateway.networking.k8s.io",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
        }
    }

    /// The kind for an `apiVersion` + `kind` pair, or `None` when Portico does not handle it.
    /// The Istio kinds share one schema across `v1`, `v1beta1` and `v1alpha3`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let version = api_version.rsplit_once('/').map(|(_, v)| v).unwrap_or(api_version);
        match (group, kind) {
            ("networking.istio.io", "Gateway") if is_istio_version(version) => Some(Kind::Gateway),
            ("networking.istio.io", "VirtualService") if is_istio_version(version) => Some(Kind::VirtualService),
            ("networking.istio.io", "DestinationRule") if is_istio_version(version) => Some(Kind::DestinationRule),
            ("networking.istio.io", "ServiceEntry") if is_istio_version(version) => Some(Kind::ServiceEntry),
            ("", "Secret") if version == "v1" => Some(Kind::Secret),
            ("", "Namespace") if version == "v1" => Some(Kind::Namespace),
            ("", "Service") if version == "v1" => Some(Kind::Service),
            ("networking.k8s.io", "Ingress") if version == "v1" => Some(Kind::Ingress),
            (GATEWAY_API, kind) if matches!(version, "v1" | "v1beta1") => match kind {
                "GatewayClass" => Some(Kind::GatewayClass),
                "Gateway" => Some(Kind::KubeGateway),
                "HTTPRoute" => Some(Kind::HttpRoute),
                "GRPCRoute" => Some(Kind::GrpcRoute),
                "ReferenceGrant" => Some(Kind::ReferenceGrant),
                // TLSRoute reached v1 (standard channel) after its v1alpha2/v1alpha3 years.
                "TLSRoute" => Some(Kind::TlsRoute),
                _ => None,
            },
            (GATEWAY_API, "TLSRoute") if matches!(version, "v1alpha2" | "v1alpha3") => Some(Kind::TlsRoute),
            (GATEWAY_API, "TCPRoute") if matches!(version, "v1alpha2" | "v1alpha3" | "v1") => Some(Kind::TcpRoute),
            (GATEWAY_API, "GRPCRoute") if version == "v1alpha2" => Some(Kind::GrpcRoute),
            (GATEWAY_API, "ReferenceGrant") if version == "v1alpha2" => Some(Kind::ReferenceGrant),
            _ => None,
        }
    }
}

const GATEWAY_API: &str = crate::gateway_api::GATEWAY_API_GROUP;

impl Kind {
    /// Is this kind one of the Gateway API's?
    pub fn is_gateway_api(self) -> bool {
        matches!(
            self,
            Kind::GatewayClass
                | Kind::KubeGateway
                | Kind::HttpRoute
                | Kind::GrpcRoute
                | Kind::TlsRoute
                | Kind::TcpRoute
                | Kind::ReferenceGrant
        )
    }
}

fn is_istio_version(v: &str) -> bool {
    matches!(v, "v1" | "v1beta1" | "v1alpha3")
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Positions of the fields of one object, by path relative to the object root
/// (`spec.http[0].route[1].weight`). Lets later stages point at the exact line.
///
/// Every object of every file has one, and it is read only when a finding is reported: the
/// paths are kept end to end in one string, in document order, and looked up by a scan. (A map
/// from each path to its position cost an allocation and a hash per field: a third of the
/// instructions of loading 10,000 VirtualServices.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldIndex {
    paths: String,
    /// Per field: where its path ends in `paths`, and its line and column.
    fields: Vec<(u32, u32, u32)>,
}

impl FieldIndex {
    /// Record the position of `path`.
    pub fn push(&mut self, path: &str, (line, col): (u32, u32)) {
        self.paths.push_str(path);
        self.fields.push((u32::try_from(self.paths.len()).unwrap_or(u32::MAX), line, col));
    }

    /// The position of exactly `path`.
    pub fn get(&self, path: &str) -> Option<(u32, u32)> {
        let mut start = 0usize;
        for &(end, line, col) in &self.fields {
            let end = end as usize;
            if self.paths.get(start..end) == Some(path) {
                return Some((line, col));
            }
            start = end;
        }
        None
    }

    /// Move every position `by` lines down (a document that starts further into its file).
    pub fn shift_lines(&mut self, by: u32) {
        for (_, line, _) in &mut self.fields {
            *line = line.saturating_add(by);
        }
    }
}

/// Where a resource came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    /// Position of the object itself (its first key).
    pub line: u32,
    pub col: u32,
    pub fields: Arc<FieldIndex>,
}

impl Origin {
    /// The location of `path` (or of its longest known prefix, or of the object).
    pub fn locate(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some((line, col)) = self.fields.get(p) {
                return Location { file: self.file.clone(), line, col };
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
        self.location()
    }

    pub fn location(&self) -> Location {
        Location { file: self.file.clone(), line: self.line, col: self.col }
    }
}

// Config-time data, a few hundred values at most: boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Spec {
    Gateway(Gateway),
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    ServiceEntry(ServiceEntry),
    Secret(Secret),
    Ingress(Ingress),
    GatewayClass(GatewayClass),
    KubeGateway(KubeGateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    TlsRoute(L4Route),
    TcpRoute(L4Route),
    ReferenceGrant(ReferenceGrant),
    Namespace,
    /// A core Service in the files: read by the analyzers only (IST0162); the registry's
    /// services are ServiceEntries (the Kubernetes source converts Services to them).
    Service(Service),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Gateway(_) => Kind::Gateway,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::Secret(_) => Kind::Secret,
            Spec::Ingress(_) => Kind::Ingress,
            Spec::GatewayClass(_) => Kind::GatewayClass,
            Spec::KubeGateway(_) => Kind::KubeGateway,
            Spec::HttpRoute(_) => Kind::HttpRoute,
            Spec::GrpcRoute(_) => Kind::GrpcRoute,
            Spec::TlsRoute(_) => Kind::TlsRoute,
            Spec::TcpRoute(_) => Kind::TcpRoute,
            Spec::ReferenceGrant(_) => Kind::ReferenceGrant,
            Spec::Namespace => Kind::Namespace,
            Spec::Service(_) => Kind::Service,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub api_version: String,
    /// `metadata.namespace` is always filled: the loader applies the default namespace.
    pub meta: ObjectMeta,
    pub origin: Origin,
    /// Shared: the file source keeps every document's last parse and hands the same objects to
    /// each load, so a reload of a large file copies no spec it did not change.
    pub spec: Arc<Spec>,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn namespace(&self) -> &str {
        &self.meta.namespace
    }

    /// `Kind/namespace/name`, as diagnostics print it.
    pub fn key(&self) -> String {
        // Joined rather than formatted: made for every object on every reload.
        [self.kind().as_str(), &self.meta.namespace, &self.meta.name].join("/")
    }
}
