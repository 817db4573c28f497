//! The workload identities behind Istio's `source_*` and `destination_*` labels.

/// The gateway's own identity: the `source_*` labels of every Istio series (an ingress gateway
/// reports as `reporter="source"`). Set once at startup. Empty fields print as `unknown`, except
/// `canonical_revision`, which prints `latest` as Istio's injector defaults it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceLabels {
    /// `source_workload`, e.g. `istio-ingressgateway`.
    pub workload: String,
    /// `source_workload_namespace`, e.g. `istio-system`.
    pub namespace: String,
    /// `source_principal`: the gateway's SPIFFE identity when it has one.
    pub principal: String,
    /// `source_app` (the `app` label).
    pub app: String,
    /// `source_version` (the `version` label).
    pub version: String,
    /// `source_canonical_service` (`service.istio.io/canonical-name`).
    pub canonical_service: String,
    /// `source_canonical_revision` (`service.istio.io/canonical-revision`).
    pub canonical_revision: String,
    /// `source_cluster`: the cluster id (`Kubernetes` in a default Istio install).
    pub cluster: String,
}

impl SourceLabels {
    /// A workload in a namespace; its canonical service defaults to the workload name, as Istio's
    /// injector does when no `app` label is set.
    pub fn new(workload: impl Into<String>, namespace: impl Into<String>) -> SourceLabels {
        let workload = workload.into();
        SourceLabels {
            canonical_service: workload.clone(),
            workload,
            namespace: namespace.into(),
            ..Default::default()
        }
    }
}

/// The `destination_*` labels of one upstream: intern it with
/// [`Metrics::destination`](crate::Metrics::destination) when the cluster is built and put the
/// handle in every record sent there. Empty fields print as `unknown` (`canonical_revision`:
/// `latest`), which is what Istio's gateway reports when it knows nothing of the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationLabels {
    /// `destination_service`: the service host, e.g. `reviews.default.svc.cluster.local`.
    pub service: String,
    /// `destination_service_name`, e.g. `reviews`.
    pub service_name: String,
    /// `destination_service_namespace`, e.g. `default`.
    pub service_namespace: String,
    /// `destination_workload`.
    pub workload: String,
    /// `destination_workload_namespace`.
    pub workload_namespace: String,
    /// `destination_principal`: the upstream's SPIFFE identity (from its certificate).
    pub principal: String,
    /// `destination_app`.
    pub app: String,
    /// `destination_version`: the subset's / endpoint's `version` label.
    pub version: String,
    /// `destination_canonical_service`.
    pub canonical_service: String,
    /// `destination_canonical_revision`.
    pub canonical_revision: String,
    /// `destination_cluster`.
    pub cluster: String,
}

impl DestinationLabels {
    /// A service by host, short name and namespace; everything else unknown.
    pub fn service(
        host: impl Into<String>,
        name: impl Into<String>,
        namespace: impl Into<String>,
    ) -> DestinationLabels {
        DestinationLabels {
            service: host.into(),
            service_name: name.into(),
            service_namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// Set `destination_version`.
    pub fn with_version(mut self, version: impl Into<String>) -> DestinationLabels {
        self.version = version.into();
        self
    }
}

const UNKNOWN: &str = "unknown";
const LATEST: &str = "latest";

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// Append `name="value"` (value escaped per the text format) with a leading comma unless first.
pub(crate) fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() && !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value);
    out.push('"');
}

/// Label-value escaping of the Prometheus text format: `\` `"` and newline.
pub(crate) fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The `reporter` and `source_*` labels, in the order Istio's stats filter emits them.
pub(crate) fn source_fragment(s: &SourceLabels) -> String {
    let mut out = String::new();
    push_label(&mut out, "reporter", "source");
    push_label(&mut out, "source_workload", or(&s.workload, UNKNOWN));
    push_label(&mut out, "source_canonical_service", or(&s.canonical_service, UNKNOWN));
    push_label(&mut out, "source_canonical_revision", or(&s.canonical_revision, LATEST));
    push_label(&mut out, "source_workload_namespace", or(&s.namespace, UNKNOWN));
    push_label(&mut out, "source_principal", or(&s.principal, UNKNOWN));
    push_label(&mut out, "source_app", or(&s.app, UNKNOWN));
    push_label(&mut out, "source_version", or(&s.version, UNKNOWN));
    push_label(&mut out, "source_cluster", or(&s.cluster, UNKNOWN));
    out
}

/// The `destination_*` labels, in the order Istio's stats filter emits them for a client-side
/// reporter.
pub(crate) fn destination_fragment(d: &DestinationLabels) -> String {
    let mut out = String::new();
    push_label(&mut out, "destination_workload", or(&d.workload, UNKNOWN));
    push_label(&mut out, "destination_workload_namespace", or(&d.workload_namespace, UNKNOWN));
    push_label(&mut out, "destination_principal", or(&d.principal, UNKNOWN));
    push_label(&mut out, "destination_app", or(&d.app, UNKNOWN));
    push_label(&mut out, "destination_version", or(&d.version, UNKNOWN));
    push_label(&mut out, "destination_service", or(&d.service, UNKNOWN));
    push_label(&mut out, "destination_canonical_service", or(&d.canonical_service, UNKNOWN));
    push_label(&mut out, "destination_canonical_revision", or(&d.canonical_revision, LATEST));
    push_label(&mut out, "destination_service_name", or(&d.service_name, UNKNOWN));
    push_label(&mut out, "destination_service_namespace", or(&d.service_namespace, UNKNOWN));
    push_label(&mut out, "destination_cluster", or(&d.cluster, UNKNOWN));
    out
}
