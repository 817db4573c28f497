//! `DestinationRule`: Istio's `ValidateDestinationRule`, `validateTrafficPolicy` and helpers
//! (load balancer, locality, connection pool, outlier detection, client TLS, port-level
//! settings, tunnel, proxy protocol), plus the CRD rules on `warmup`.

use super::{
    dot, dot_ix, duplicates, export_to, idx, is_dns1123_label, is_ip, set, validate_fqdn, validate_percent_int,
    validate_port, validate_wildcard_domain, workload_selector, Cx,
};
use portico_api::istio::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy, LoadBalancerSettings,
    LocalityLbSetting, OutlierDetection, PortTrafficPolicy, TrafficPolicy,
};
use std::fmt;

pub(super) fn validate(cx: &mut Cx<'_>, dr: &DestinationRule) {
    if dr.host.is_empty() {
        cx.error(&"spec.host", "host is required: name the service this rule applies to");
    } else {
        cx.check(&"spec.host", validate_wildcard_domain(&dr.host));
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(cx, &"spec.trafficPolicy", tp);
    }
    for (i, name) in duplicates(&dr.subsets, |s| s.name.as_str()) {
        cx.error(&dot(&idx(&"spec.subsets", i), "name"), format!("duplicate subset name {name:?}"));
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        let p = idx(&"spec.subsets", i);
        if s.name.is_empty() {
            cx.error(&dot(&p, "name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&s.name) {
            cx.error(&dot(&p, "name"), format!("invalid subset name {:?}: must be a DNS-1123 label", s.name));
        }
        cx.labels(&dot(&p, "labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(cx, &dot(&p, "trafficPolicy"), tp);
        }
    }
    export_to(cx, &"spec.exportTo", &dr.export_to, false, dr.workload_selector.is_some());
    if let Some(ws) = &dr.workload_selector {
        workload_selector(cx, &"spec.workloadSelector.matchLabels", &ws.match_labels, "it applies to every workload");
    }
}

fn traffic_policy(cx: &mut Cx<'_>, path: &dyn fmt::Display, tp: &TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        cx.error(path, "a traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        cx.error(path, "`tunnel` and `proxyProtocol` must not be set together");
    }
    if let Some(o) = &tp.outlier_detection {
        outlier(cx, &dot(&path, "outlierDetection"), o);
    }
    if let Some(c) = &tp.connection_pool {
        connection_pool(cx, &dot(&path, "connectionPool"), c);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(cx, &dot(&path, "loadBalancer"), lb, tp.outlier_detection.is_some());
    }
    if let Some(t) = &tp.tls {
        client_tls(cx, &dot(&path, "tls"), t);
    }
    port_level(cx, &dot(&path, "portLevelSettings"), &tp.port_level_settings);
    if let Some(t) = &tp.tunnel {
        let p = dot(&path, "tunnel");
        if let Some(proto) = t.protocol.as_deref().filter(|p| !p.is_empty()) {
            if proto != "CONNECT" && proto != "POST" {
                cx.error(
                    &dot(&p, "protocol"),
                    format!("tunnel protocol must be \"CONNECT\" or \"POST\", got {proto:?}"),
                );
            }
        }
        if let Err(e) = validate_fqdn(&t.target_host) {
            if !is_ip(&t.target_host) {
                cx.error(&dot(&p, "targetHost"), format!("tunnel targetHost must be an FQDN or an IP address: {e}"));
            }
        }
        cx.check(&dot(&p, "targetPort"), validate_port(i64::from(t.target_port)));
    }
    if let Some(pp) = &tp.proxy_protocol {
        if let Some(v) = pp.version.as_deref() {
            if v != "V1" && v != "V2" {
                cx.error(
                    &dot(&path, "proxyProtocol.version"),
                    format!("proxy protocol version must be V1 or V2, got {v:?}"),
                );
            }
        }
    }
    if let Some(rb) = &tp.retry_budget {
        if let Some(pct) = rb.percent {
            if pct.is_nan() || !(0.0..=100.0).contains(&pct) {
                cx.error(&dot(&path, "retryBudget.percent"), format!("percent must be within 0..100, got {pct}"));
            }
        }
    }
}

fn outlier(cx: &mut Cx<'_>, path: &dyn fmt::Display, o: &OutlierDetection) {
    cx.duration(&dot(&path, "baseEjectionTime"), &o.base_ejection_time);
    cx.duration(&dot(&path, "interval"), &o.interval);
    if o.consecutive_errors.is_some_and(|n| n != 0) {
        cx.warning(
            &dot(&path, "consecutiveErrors"),
            "`consecutiveErrors` is deprecated: use `consecutiveGatewayErrors` or `consecutive5xxErrors` instead",
        );
    }
    if o.consecutive_local_origin_failures.is_some_and(|n| n > 0) && o.split_external_local_origin_errors != Some(true)
    {
        cx.error(
            &dot(&path, "consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures is set but splitExternalLocalOriginErrors is not true: set it, or remove \
             this field",
        );
    }
    if let Some(p) = o.max_ejection_percent {
        cx.check(&dot(&path, "maxEjectionPercent"), validate_percent_int(i64::from(p)));
    }
    if let Some(p) = o.min_health_percent {
        cx.check(&dot(&path, "minHealthPercent"), validate_percent_int(i64::from(p)));
    }
}

fn non_negative(cx: &mut Cx<'_>, path: &dyn fmt::Display, v: Option<i32>) {
    if let Some(n) = v.filter(|n| *n < 0) {
        cx.error(path, format!("must be non-negative, got {n}"));
    }
}

fn connection_pool(cx: &mut Cx<'_>, path: &dyn fmt::Display, c: &ConnectionPoolSettings) {
    if c.http.is_none() && c.tcp.is_none() {
        cx.error(path, "a connection pool must have at least one of `tcp` or `http`");
        return;
    }
    if let Some(h) = &c.http {
        let p = dot(&path, "http");
        non_negative(cx, &dot(&p, "http1MaxPendingRequests"), h.http1_max_pending_requests);
        non_negative(cx, &dot(&p, "http2MaxRequests"), h.http2_max_requests);
        non_negative(cx, &dot(&p, "maxRequestsPerConnection"), h.max_requests_per_connection);
        non_negative(cx, &dot(&p, "maxRetries"), h.max_retries);
        non_negative(cx, &dot(&p, "maxConcurrentStreams"), h.max_concurrent_streams);
        cx.duration(&dot(&p, "idleTimeout"), &h.idle_timeout);
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol == Some(true) {
            cx.error(
                &dot(&p, "useClientProtocol"),
                "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            cx.duration(&dot(&p, "http2KeepAlive.interval"), &ka.interval);
            cx.duration(&dot(&p, "http2KeepAlive.timeout"), &ka.timeout);
        }
    }
    if let Some(t) = &c.tcp {
        let p = dot(&path, "tcp");
        non_negative(cx, &dot(&p, "maxConnections"), t.max_connections);
        cx.duration(&dot(&p, "connectTimeout"), &t.connect_timeout);
        cx.duration(&dot(&p, "maxConnectionDuration"), &t.max_connection_duration);
        cx.duration(&dot(&p, "idleTimeout"), &t.idle_timeout);
        if let Some(ka) = &t.tcp_keepalive {
            cx.duration(&dot(&p, "tcpKeepalive.time"), &ka.time);
            cx.duration(&dot(&p, "tcpKeepalive.interval"), &ka.interval);
        }
    }
}

/// Envoy's primality test for Maglev table sizes (Istio copies it).
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

fn load_balancer(cx: &mut Cx<'_>, path: &dyn fmt::Display, lb: &LoadBalancerSettings, has_outlier: bool) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        cx.error(path, "set only one of `simple` or `consistentHash`");
    }
    if let Some(ch) = &lb.consistent_hash {
        let p = dot(&path, "consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|b| **b).count() {
            0 => cx.warning(
                &p,
                "consistentHash has no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName): \
                 requests are not hashed consistently",
            ),
            1 => {}
            _ => {
                cx.error(&p, "set only one hash key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
            }
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.is_empty() {
                cx.error(&dot(&p, "httpCookie.name"), "name is required for httpCookie");
            }
            // The cookie TTL may be 0s (a session cookie): only its syntax is checked.
            if let Some(ttl) = &cookie.ttl {
                if let Err(e) = crate::duration::parse(ttl) {
                    cx.error(&dot(&p, "httpCookie.ttl"), e);
                }
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            cx.error(&p, "set only one of `ringHash` or `maglev`");
        }
        let deprecated_ring = ch.minimum_ring_size.is_some_and(|n| n != 0);
        if deprecated_ring {
            cx.warning(
                &dot(&p, "minimumRingSize"),
                "`minimumRingSize` is deprecated: use `ringHash.minimumRingSize` instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                cx.error(&dot(&p, "minimumRingSize"), "set only one of `minimumRingSize` or `ringHash`/`maglev`");
            }
        }
        if let Some(m) = &ch.maglev {
            let mp = dot(&p, "maglev.tableSize");
            match m.table_size.unwrap_or(0) {
                0 => cx.error(&mp, "tableSize must be set for maglev (a prime number, e.g. 65537)"),
                n if n >= 5_000_011 => cx.error(&mp, format!("tableSize {n} must be less than 5000011")),
                n if !is_prime(n) => cx.error(&mp, format!("tableSize {n} must be a prime number (e.g. 65537)")),
                _ => {}
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality(cx, &dot(&path, "localityLbSetting"), l, has_outlier);
    }
    cx.duration(&dot(&path, "warmupDurationSecs"), &lb.warmup_duration_secs);
    if let Some(w) = &lb.warmup {
        let p = dot(&path, "warmup");
        match &w.duration {
            None => cx.error(&dot(&p, "duration"), "warmup.duration is required"),
            Some(_) => cx.duration(&dot(&p, "duration"), &w.duration),
        }
        if let Some(m) = w.minimum_percent {
            if m.is_nan() || !(0.0..=100.0).contains(&m) {
                cx.error(&dot(&p, "minimumPercent"), format!("minimumPercent must be within 0..100, got {m}"));
            }
        }
        if let Some(a) = w.aggression {
            // Istio's CRD requires ≥ 0; Envoy treats 0 as its default (1.0).
            if a.is_nan() || a < 0.0 {
                cx.error(&dot(&p, "aggression"), format!("aggression must not be negative, got {a}"));
            } else if a == 0.0 {
                cx.warning(&dot(&p, "aggression"), "aggression 0 is treated as 1.0 (linear ramp-up)");
            }
        }
    }
}

const TOPOLOGY_LABELS: &[&str] =
    &["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];

/// Istio's `ValidateLocalityLbSetting`.
fn locality(cx: &mut Cx<'_>, path: &dyn fmt::Display, l: &LocalityLbSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        cx.error(path, "cannot set both `distribute` and `failover`");
        return;
    }
    if !l.failover.is_empty() {
        if let Some(label) = l.failover_priority.iter().find(|p| TOPOLOGY_LABELS.contains(&p.as_str())) {
            cx.error(
                &dot(&path, "failoverPriority"),
                format!("cannot set both `failover` and the topology label {label:?} in `failoverPriority`"),
            );
            return;
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let p = dot_ix(&path, "distribute", i);
        sources.push(d.from.clone());
        let mut total: u64 = 0;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                cx.error(&dot(&dot(&p, "to"), loc), format!("locality weight {w} must be in range 1..100"));
                return;
            }
            total += u64::from(*w);
        }
        if total != 100 {
            cx.error(&dot(&p, "to"), format!("locality weights add up to {total}: they must add up to 100"));
            return;
        }
        let dests: Vec<String> = d.to.keys().cloned().collect();
        if let Err(e) = localities(&dests) {
            cx.error(&dot(&p, "to"), e);
        }
    }
    if let Err(e) = localities(&sources) {
        cx.error(&dot(&path, "distribute"), e);
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        cx.warning(path, "failover needs an outlier detection policy (trafficPolicy.outlierDetection) to take effect");
    }
    for (i, f) in l.failover.iter().enumerate() {
        let p = dot_ix(&path, "failover", i);
        if f.from == f.to {
            cx.error(&p, "locality failover must go from one region to a different one");
        }
        if f.from.contains('/') || f.to.contains('/') {
            cx.error(&p, "locality failover names regions only (no `/`)");
        }
        if f.from.contains('*') || f.to.contains('*') {
            cx.error(&p, "locality failover regions cannot contain the '*' wildcard");
        }
    }
}

/// Istio's `validateLocalities`: `region[/zone[/subzone]]`, one trailing `*` at most, no overlaps.
fn localities(list: &[String]) -> Result<(), String> {
    use std::collections::HashMap;
    // region → zone → subzones ("*" = everything below).
    let mut seen: HashMap<&str, HashMap<&str, Vec<&str>>> = HashMap::new();
    for loc in list {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!("locality {loc:?}: at most one '*' wildcard, and only at the end"));
        }
        if seen.contains_key("*") {
            return Err(format!("locality {loc:?} overlaps with previous ones"));
        }
        let items: Vec<&str> = loc.splitn(3, '/').collect();
        if items.iter().any(|s| s.is_empty()) {
            return Err(format!("locality {loc:?} must not contain an empty region/zone/subzone"));
        }
        let overlap = || Err(format!("locality {loc:?} overlaps with previous ones"));
        match items.as_slice() {
            [region] => {
                if seen.contains_key(region) {
                    return overlap();
                }
                seen.insert(region, HashMap::from([("*", vec!["*"])]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return overlap();
                }
                zones.insert(zone, vec!["*"]);
            }
            [region, zone, sub] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subs = zones.entry(zone).or_default();
                if subs.contains(&"*") || subs.contains(sub) {
                    return overlap();
                }
                subs.push(sub);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Istio's `ValidateTLS` for upstream (client) TLS.
fn client_tls(cx: &mut Cx<'_>, path: &dyn fmt::Display, t: &ClientTlsSettings) {
    let cred = set(&t.credential_name);
    if t.insecure_skip_verify == Some(true) {
        if t.mode == ClientTlsMode::Simple && (set(&t.ca_certificates) || cred || !t.subject_alt_names.is_empty()) {
            cx.error(
                &dot(&path, "insecureSkipVerify"),
                "cannot set caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true",
            );
        }
        if t.mode == ClientTlsMode::Mutual && (set(&t.ca_certificates) || !t.subject_alt_names.is_empty()) {
            cx.error(
                &dot(&path, "insecureSkipVerify"),
                "cannot set caCertificates or subjectAltNames when insecureSkipVerify is true",
            );
        }
    }
    let simple_or_mutual = matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if simple_or_mutual && cred {
        if set(&t.client_certificate) || set(&t.ca_certificates) || set(&t.private_key) || set(&t.ca_crl) {
            cx.error(
                &dot(&path, "credentialName"),
                "cannot set clientCertificate, privateKey, caCertificates or caCrl when credentialName is set (the \
                 secret holds them)",
            );
        }
        return;
    }
    if t.mode == ClientTlsMode::Mutual {
        if !set(&t.client_certificate) {
            cx.error(
                &dot(&path, "clientCertificate"),
                "MUTUAL TLS requires a client certificate: set credentialName, or clientCertificate and privateKey",
            );
        }
        if !set(&t.private_key) {
            cx.error(
                &dot(&path, "privateKey"),
                "MUTUAL TLS requires a private key: set credentialName, or clientCertificate and privateKey",
            );
        }
    }
}

fn port_level(cx: &mut Cx<'_>, path: &dyn fmt::Display, list: &[PortTrafficPolicy]) {
    let mut seen: Vec<(u32, usize)> = Vec::new();
    for (i, pl) in list.iter().enumerate() {
        let p = idx(&path, i);
        match &pl.port {
            None => cx.error(&dot(&p, "port"), "a port-level traffic policy must have a port"),
            Some(port) => {
                cx.port(&dot(&p, "port.number"), port.number);
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == port.number) {
                    cx.warning(
                        &dot(&p, "port.number"),
                        format!(
                            "port {} already has settings at {path}[{first}]: the first entry applies",
                            port.number
                        ),
                    );
                } else {
                    seen.push((port.number, i));
                }
            }
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            cx.error(&p, "a port-level traffic policy must have at least one field besides `port`");
            continue;
        }
        if let Some(o) = &pl.outlier_detection {
            outlier(cx, &dot(&p, "outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            connection_pool(cx, &dot(&p, "connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(cx, &dot(&p, "loadBalancer"), lb, pl.outlier_detection.is_some());
        }
        if let Some(t) = &pl.tls {
            client_tls(cx, &dot(&p, "tls"), t);
        }
    }
}
