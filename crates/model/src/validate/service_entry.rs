//! `ServiceEntry`: Istio's `ValidateServiceEntry` and `validateWorkloadEntry`, plus the CRD's
//! CEL rules (hosts required, no `*`, endpoints vs workloadSelector, CIDR vs resolution, port ranges).

use super::{
    dot, export_to, idx, is_dns1123_label, is_ip, partial_wildcard, validate_fqdn, validate_ip_subnet, validate_port,
    validate_unix_address, validate_wildcard_domain, workload_selector, Cx, Proto, PROTOCOLS,
};
use portico_api::istio::{Resolution, ServiceEntry, WorkloadEntry};
use std::fmt;

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
    }
}

pub(super) fn validate(cx: &mut Cx<'_>, se: &ServiceEntry) {
    let resolution = se.resolution.unwrap_or_default();
    if let Some(ws) = &se.workload_selector {
        workload_selector(
            cx,
            &"spec.workloadSelector.labels",
            &ws.labels,
            "it applies to every workload in the namespace",
        );
        if !se.endpoints.is_empty() {
            cx.error(&"spec.workloadSelector", "set only one of `workloadSelector` or `endpoints`");
        }
    }

    if se.hosts.is_empty() {
        cx.error(&"spec.hosts", "a ServiceEntry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = idx(&"spec.hosts", i);
        if h == "*" {
            cx.error(&p, "host cannot be the wildcard `*`: name the service (e.g. \"*.example.com\")");
            continue;
        }
        cx.check(&p, validate_wildcard_domain(h));
        if let Err(e) = partial_wildcard(h) {
            cx.warning(&p, e);
        }
    }

    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        cx.check(&idx(&"spec.addresses", i), validate_ip_subnet(a));
    }
    if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
        cx.error(&"spec.addresses", "CIDR addresses are allowed only with resolution NONE or STATIC");
    }

    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<u32> = Vec::new();
    for (i, port) in se.ports.iter().enumerate() {
        let p = idx(&"spec.ports", i);
        if names.contains(&port.name.as_str()) {
            cx.error(&dot(&p, "name"), format!("duplicate port name {:?}", port.name));
        }
        names.push(&port.name);
        if numbers.contains(&port.number) {
            cx.error(&dot(&p, "number"), format!("port number {} cannot be duplicated", port.number));
        }
        numbers.push(port.number);
        if let Some(tp) = port.target_port.filter(|t| *t != 0) {
            cx.port(&dot(&p, "targetPort"), tp);
            if resolution == Resolution::None {
                cx.warning(&dot(&p, "targetPort"), "targetPort has no effect when resolution is NONE");
            }
        }
        if !is_dns1123_label(&port.name) {
            cx.error(&dot(&p, "name"), format!("invalid port name {:?}: must be a DNS-1123 label", port.name));
        }
        if let Some(proto) = port.protocol.as_deref().filter(|p| !p.is_empty()) {
            if Proto::parse(proto).is_none() {
                cx.error(
                    &dot(&p, "protocol"),
                    format!("unsupported protocol {proto:?}: supported protocols are {PROTOCOLS}"),
                );
            }
        }
        cx.port(&dot(&p, "number"), port.number);
    }

    match resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                cx.error(&"spec.endpoints", "resolution NONE cannot have endpoints: use STATIC or DNS");
            }
            if se.workload_selector.is_some() {
                cx.warning(&"spec.workloadSelector", "workloadSelector should not be set when resolution is NONE");
            }
        }
        Resolution::Static => {
            for (i, ep) in se.endpoints.iter().enumerate() {
                static_endpoint(cx, &idx(&"spec.endpoints", i), ep, &names);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let mode = resolution_name(resolution);
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if h != "*" && validate_fqdn(h).is_err() {
                        cx.error(
                            &idx(&"spec.hosts", i),
                            format!(
                                "hosts must be fully qualified (no wildcards) when resolution is {mode} and no \
                                 endpoints are given: Portico resolves the host itself"
                            ),
                        );
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                cx.error(&"spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint");
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                dns_endpoint(cx, &idx(&"spec.endpoints", i), ep, &names);
            }
            if se.workload_selector.is_some() {
                cx.warning(
                    &"spec.workloadSelector",
                    format!("workloadSelector should not be set when resolution is {mode}"),
                );
            }
            if !se.addresses.is_empty()
                && se.hosts.len() > 1
                && se.ports.iter().any(|p| Proto::parse(p.protocol.as_deref().unwrap_or("")).is_some_and(Proto::is_tcp))
            {
                cx.warning(
                    &"spec.hosts",
                    "a ServiceEntry should not have more than one host together with addresses and a TCP port",
                );
            }
        }
    }

    // Several hosts on a plain TCP port cannot be told apart unless resolution is NONE.
    if resolution != Resolution::None && se.hosts.len() > 1 {
        if let Some(i) = se.ports.iter().position(|p| {
            let proto = Proto::parse(p.protocol.as_deref().unwrap_or(""));
            !proto.is_some_and(|p| p.is_http() || p.is_tls())
        }) {
            cx.error(
                &dot(&idx(&"spec.ports", i), "protocol"),
                "several hosts with a non-HTTP, non-TLS port: traffic to them cannot be told apart (use one host per \
                 ServiceEntry, or an HTTP/TLS protocol)",
            );
        }
    }

    export_to(cx, &"spec.exportTo", &se.export_to, true, false);
}

fn endpoint_ports(cx: &mut Cx<'_>, path: &dyn fmt::Display, ep: &WorkloadEntry, service_ports: &[&str]) {
    let ports = dot(&path, "ports");
    for (name, port) in &ep.ports {
        let p = dot(&ports, name);
        if !service_ports.contains(&name.as_str()) {
            cx.error(&p, format!("endpoint port {name:?} is not defined by the service entry's ports"));
        }
        if !is_dns1123_label(name) {
            cx.error(&p, format!("invalid port name {name:?}: must be a DNS-1123 label"));
        }
        cx.check(&p, validate_port(i64::from(*port)));
    }
    cx.labels(&dot(&path, "labels"), &ep.labels);
}

/// Istio's `validateWorkloadEntry` for STATIC resolution (FQDN addresses not allowed).
fn static_endpoint(cx: &mut Cx<'_>, path: &dyn fmt::Display, ep: &WorkloadEntry, service_ports: &[&str]) {
    let addr = ep.address.as_deref().unwrap_or("");
    let ap = dot(&path, "address");
    if addr.is_empty() {
        match ep.network.as_deref().filter(|n| !n.is_empty()) {
            None => {
                cx.error(&ap, "address is required for STATIC endpoints (an IP address or unix:///path)");
                return;
            }
            Some(n) => cx.warning(&ap, format!("address is unset with network {n:?}")),
        }
    }
    let unix = addr.strip_prefix("unix://");
    if let Some(path_part) = unix {
        cx.check(&ap, validate_unix_address(path_part));
        if !ep.ports.is_empty() {
            cx.error(&dot(&path, "ports"), format!("unix endpoint {addr:?} must not include ports"));
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        cx.error(
            &ap,
            format!("endpoint address {addr:?} is not a valid IP address: STATIC resolution needs IPs (use DNS for host names)"),
        );
    }
    endpoint_ports(cx, path, ep, service_ports);
    if unix.is_some() && service_ports.len() != 1 {
        cx.error(&ap, "a unix endpoint requires exactly one service port");
    }
}

fn dns_endpoint(cx: &mut Cx<'_>, path: &dyn fmt::Display, ep: &WorkloadEntry, service_ports: &[&str]) {
    let addr = ep.address.as_deref().unwrap_or("");
    if !is_ip(addr) && validate_fqdn(addr).is_err() {
        cx.error(&dot(&path, "address"), format!("endpoint address {addr:?} is not a valid FQDN or IP address"));
    }
    endpoint_ports(cx, path, ep, service_ports);
}
