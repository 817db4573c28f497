//! "Not supported yet": fields that parse and validate but that the data plane does not act on
//! yet. Users get a warning naming the field instead of silence. Shrinks as features land.

use portico_api::diag::code;
use portico_api::istio::{DestinationRule, Gateway, ServiceEntry, SimpleLb, TrafficPolicy, VirtualService};
use portico_api::{Diagnostic, Resource, Spec};

struct Found<'r> {
    res: &'r Resource,
    out: Vec<Diagnostic>,
}

impl Found<'_> {
    fn warn(&mut self, path: String, what: &str) {
        self.out.push(Diagnostic::warning(
            self.res.origin.locate(&path),
            code::NOT_SUPPORTED,
            self.res.key(),
            format!("{path}: {what} is not supported yet and is ignored"),
        ));
    }
}

pub fn unsupported(res: &Resource) -> Vec<Diagnostic> {
    let mut f = Found { res, out: Vec::new() };
    match &*res.spec {
        Spec::Gateway(g) => gateway(&mut f, g),
        Spec::VirtualService(vs) => virtual_service(&mut f, vs),
        Spec::DestinationRule(dr) => destination_rule(&mut f, dr),
        Spec::ServiceEntry(se) => service_entry(&mut f, se),
        _ => {}
    }
    f.out
}

fn gateway(f: &mut Found<'_>, g: &Gateway) {
    for (i, s) in g.servers.iter().enumerate() {
        if s.default_endpoint.is_some() {
            f.warn(format!("spec.servers[{i}].defaultEndpoint"), "defaultEndpoint (sidecar only)");
        }
    }
}

/// `%VAR%`s in header values that we do not substitute (they are sent as written).
fn header_vars(f: &mut Found<'_>, path: &str, h: Option<&portico_api::istio::Headers>) {
    let Some(h) = h else { return };
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (k, v) in map {
                for var in crate::template::HeaderValueTemplate::parse(v).unknown {
                    f.warn(format!("{path}.headers.{side}.{op}.{k}"), &format!("the variable %{var}%"));
                }
            }
        }
    }
}

fn virtual_service(f: &mut Found<'_>, vs: &VirtualService) {
    for (i, r) in vs.http.iter().enumerate() {
        header_vars(f, &format!("spec.http[{i}]"), r.headers.as_ref());
        for (j, d) in r.route.iter().enumerate() {
            header_vars(f, &format!("spec.http[{i}].route[{j}]"), d.headers.as_ref());
        }
        for (j, m) in r.matches.iter().enumerate() {
            if m.stat_prefix.is_some() {
                f.warn(format!("spec.http[{i}].match[{j}].statPrefix"), "per-route statistics (statPrefix)");
            }
        }
        if let Some(rt) = &r.retries {
            let path = format!("spec.http[{i}].retries");
            if rt.retry_remote_localities == Some(true) {
                f.warn(format!("{path}.retryRemoteLocalities"), "retrying in other localities");
            }
            // Retries always prefer other hosts (Istio's default).
            if rt.retry_ignore_previous_hosts == Some(false) {
                f.warn(format!("{path}.retryIgnorePreviousHosts"), "retrying on the same host (`false`)");
            }
            if rt.backoff.is_some() {
                f.warn(format!("{path}.backoff"), "a retry backoff interval (Envoy's 25 ms base is used)");
            }
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, m) in r.matches.iter().enumerate() {
            if !m.destination_subnets.is_empty() {
                f.warn(format!("spec.tcp[{i}].match[{j}].destinationSubnets"), "matching destination subnets");
            }
            if m.source_subnet.is_some() {
                f.warn(format!("spec.tcp[{i}].match[{j}].sourceSubnet"), "matching the source subnet");
            }
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, m) in r.matches.iter().enumerate() {
            if !m.destination_subnets.is_empty() {
                f.warn(format!("spec.tls[{i}].match[{j}].destinationSubnets"), "matching destination subnets");
            }
        }
    }
}

fn service_entry(f: &mut Found<'_>, se: &ServiceEntry) {
    if se.workload_selector.is_some() {
        f.warn("spec.workloadSelector".into(), "selecting workloads (file mode has no WorkloadEntries)");
    }
    if !se.subject_alt_names.is_empty() {
        f.warn(
            "spec.subjectAltNames".into(),
            "verifying the backend's names from the ServiceEntry (set the DestinationRule's tls.subjectAltNames)",
        );
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        if ep.network.is_some() {
            f.warn(format!("spec.endpoints[{i}].network"), "endpoint networks (every endpoint is dialled directly)");
        }
    }
}

fn traffic_policy(f: &mut Found<'_>, prefix: &str, tp: &TrafficPolicy) {
    if let Some(lb) = &tp.load_balancer {
        if let Some(l) = &lb.locality_lb_setting {
            let path = format!("{prefix}.loadBalancer.localityLbSetting");
            if !l.failover.is_empty() && !l.failover_priority.is_empty() {
                f.warn(
                    format!("{path}.failover"),
                    "`failover` together with `failoverPriority` (only failoverPriority is applied)",
                );
            }
            if l.failover_priority.iter().any(|p| p.contains('=')) {
                f.warn(format!("{path}.failoverPriority"), "overriding label values (`key=value`) in failoverPriority");
            }
        }
        let slow_start_lb = lb.consistent_hash.is_none()
            && matches!(
                lb.simple,
                None | Some(
                    SimpleLb::Unspecified | SimpleLb::RoundRobin | SimpleLb::LeastRequest | SimpleLb::LeastConn
                )
            );
        if (lb.warmup.is_some() || lb.warmup_duration_secs.is_some()) && !slow_start_lb {
            f.warn(
                format!("{prefix}.loadBalancer"),
                "slow-start warmup with this load balancer (Envoy applies it to ROUND_ROBIN and LEAST_REQUEST only)",
            );
        }
    }
    if tp.tls.as_ref().is_some_and(|t| t.mode == portico_api::istio::ClientTlsMode::IstioMutual) {
        f.warn(format!("{prefix}.tls.mode"), "ISTIO_MUTUAL (mesh certificates; use MUTUAL with a credentialName)");
    }
    if tp.tls.as_ref().is_some_and(|t| t.ca_crl.is_some()) {
        f.warn(format!("{prefix}.tls.caCrl"), "certificate revocation lists toward the backend");
    }
    if tp.retry_budget.is_some() {
        f.warn(format!("{prefix}.retryBudget"), "retry budgets (the maxRetries limit applies instead)");
    }
    if let Some(c) = tp.load_balancer.as_ref().and_then(|lb| lb.consistent_hash.as_ref()?.http_cookie.as_ref()) {
        if !c.attributes.is_empty() {
            f.warn(
                format!("{prefix}.loadBalancer.consistentHash.httpCookie.attributes"),
                "attributes of the hash cookie",
            );
        }
    }
    if tp.tunnel.is_some() {
        f.warn(format!("{prefix}.tunnel"), "tunneling");
    }
    if tp.proxy_protocol.is_some() {
        f.warn(format!("{prefix}.proxyProtocol"), "PROXY protocol toward the backend");
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let sub = TrafficPolicy {
            load_balancer: pl.load_balancer.clone(),
            connection_pool: pl.connection_pool.clone(),
            outlier_detection: pl.outlier_detection.clone(),
            tls: pl.tls.clone(),
            ..Default::default()
        };
        traffic_policy(f, &format!("{prefix}.portLevelSettings[{i}]"), &sub);
    }
}

fn destination_rule(f: &mut Found<'_>, dr: &DestinationRule) {
    if dr.workload_selector.is_some() {
        f.warn("spec.workloadSelector".into(), "selecting workloads (the rule applies to every gateway instance)");
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(f, "spec.trafficPolicy", tp);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(f, &format!("spec.subsets[{i}].trafficPolicy"), tp);
        }
    }
}
