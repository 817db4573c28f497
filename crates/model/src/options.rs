//! What this gateway instance is: the inputs of [`compile`](crate::compile) besides the resources.

use std::collections::BTreeMap;

/// What this gateway instance is.
#[derive(Clone, Debug)]
pub struct Options {
    /// This instance's labels; a Gateway applies when its selector is a subset.
    pub labels: BTreeMap<String, String>,
    /// The namespace the gateway runs in (where `credentialName` secrets are looked up).
    pub gateway_namespace: String,
    /// This instance's locality, `region/zone/subzone` (Istio's); `None` turns locality load
    /// balancing off.
    pub locality: Option<String>,
    /// The Gateway API `gatewayClassName` this instance serves (`--gateway-class`).
    pub gateway_class: String,
    /// The cluster's DNS domain (`--domain-suffix`): short names expand to
    /// `name.namespace.svc.<domain_suffix>`, as Istio's `--domainSuffix` does.
    pub domain_suffix: String,
    /// The time (Unix seconds) certificates are judged at: an expired or not yet valid
    /// `credentialName` certificate is IST0161, as istioctl says. `None` (the default) skips
    /// that check: the model has no clock, so `validate` passes one in.
    pub now: Option<i64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            gateway_namespace: "istio-system".to_string(),
            locality: None,
            gateway_class: "portico".to_string(),
            domain_suffix: "cluster.local".to_string(),
            now: None,
        }
    }
}
