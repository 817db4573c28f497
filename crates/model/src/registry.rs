//! The service registry (ServiceEntries) and the clusters built from it with DestinationRules.

use crate::duration;
use crate::host;
use crate::snapshot::{
    Cluster, ConnectionOptions, Discovery, Endpoint, HashPolicy, HashTable, Http2Keepalive, LbPolicy, Limits,
    OutlierPolicy, SecretData, TcpKeepalive, UpstreamProtocol, UpstreamTls, Warmup,
};
use portico_api::istio::{
    ConnectionPoolSettings, DestinationRule, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection, Resolution,
    ServiceEntry, SimpleLb, TrafficPolicy,
};
use portico_api::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One port of one registry host.
#[derive(Clone, Debug)]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    pub protocol: Option<String>,
    pub target_port: Option<u32>,
}

/// A host known to the registry, from one ServiceEntry.
pub struct Service<'a> {
    pub host: String,
    /// The ServiceEntry's namespace.
    pub namespace: String,
    /// The service's namespace: `ns` of `name.ns.svc.<domain suffix>`, else the entry's.
    pub service_namespace: String,
    pub spec: &'a ServiceEntry,
    pub ports: Vec<ServicePort>,
}

pub struct Registry<'a> {
    /// By lowercase host; the first ServiceEntry (oldest) for a host wins.
    pub services: BTreeMap<String, Service<'a>>,
}

impl<'a> Registry<'a> {
    pub fn build(entries: &[&'a Resource], domain_suffix: &str) -> Registry<'a> {
        let mut services = BTreeMap::new();
        for res in entries {
            let portico_api::Spec::ServiceEntry(se) = &*res.spec else { continue };
            for h in &se.hosts {
                let host = host::resolve_short_name(h, res.namespace(), domain_suffix);
                let service_ns = service_namespace(&host, domain_suffix).unwrap_or(res.namespace()).to_string();
                services.entry(host.clone()).or_insert_with(|| Service {
                    host,
                    namespace: res.namespace().to_string(),
                    service_namespace: service_ns,
                    spec: se,
                    ports: se
                        .ports
                        .iter()
                        .map(|p| ServicePort {
                            number: p.number,
                            name: p.name.clone(),
                            protocol: p.protocol.clone(),
                            target_port: p.target_port,
                        })
                        .collect(),
                });
            }
        }
        Registry { services }
    }

    /// The service for a destination host: exact host, else the most specific wildcard entry.
    pub fn lookup(&self, h: &str) -> Option<&Service<'a>> {
        let h = h.to_ascii_lowercase();
        if let Some(s) = self.services.get(&h) {
            return Some(s);
        }
        self.services
            .values()
            .filter(|s| s.host.starts_with('*') && host::matches(&s.host, &h))
            .max_by_key(|s| s.host.len())
    }
}

/// Envoy/Istio cluster name: `outbound|PORT|SUBSET|HOST`.
pub fn cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    // Joined rather than formatted: made for every destination on every reload.
    ["outbound", itoa::Buffer::new().format(port), subset.unwrap_or(""), host].join("|")
}

/// The DestinationRule for a host: exact match first, then the most specific wildcard; among
/// equals, one in the gateway's namespace, then the service's, then the oldest (input order).
pub fn find_destination_rule<'r>(
    drs: &[&'r Resource],
    service_host: &str,
    gateway_ns: &str,
    service_ns: &str,
    domain_suffix: &str,
) -> Option<(&'r Resource, &'r DestinationRule)> {
    let mut best: Option<(usize, u8, &'r Resource, &'r DestinationRule)> = None;
    for res in drs {
        let portico_api::Spec::DestinationRule(dr) = &*res.spec else { continue };
        let dr_host = host::resolve_short_name(&dr.host, res.namespace(), domain_suffix);
        if !host::matches(&dr_host, service_host) {
            continue;
        }
        let specificity = if dr_host.starts_with('*') { dr_host.len() } else { usize::MAX };
        let ns_rank = if res.namespace() == gateway_ns {
            2
        } else if res.namespace() == service_ns {
            1
        } else {
            0
        };
        let better = match &best {
            None => true,
            Some((s, n, _, _)) => specificity > *s || (specificity == *s && ns_rank > *n),
        };
        if better {
            best = Some((specificity, ns_rank, res, dr));
        }
    }
    best.map(|(_, _, r, d)| (r, d))
}

/// The effective policy of one port: the top level, then `portLevelSettings` for the port,
/// each field replaced whole (Istio's merge).
pub fn port_policy(tp: Option<&TrafficPolicy>, port: u32) -> TrafficPolicy {
    let mut out = tp.cloned().unwrap_or_default();
    if let Some(pl) =
        tp.and_then(|t| t.port_level_settings.iter().find(|p| p.port.as_ref().map(|s| s.number) == Some(port)))
    {
        if pl.load_balancer.is_some() {
            out.load_balancer = pl.load_balancer.clone();
        }
        if pl.connection_pool.is_some() {
            out.connection_pool = pl.connection_pool.clone();
        }
        if pl.outlier_detection.is_some() {
            out.outlier_detection = pl.outlier_detection.clone();
        }
        if pl.tls.is_some() {
            out.tls = pl.tls.clone();
        }
    }
    out.port_level_settings.clear();
    out
}

/// Overlay a subset's policy on the destination's (fields the subset sets win).
pub fn merge_policy(base: TrafficPolicy, over: &TrafficPolicy) -> TrafficPolicy {
    TrafficPolicy {
        load_balancer: over.load_balancer.clone().or(base.load_balancer),
        connection_pool: over.connection_pool.clone().or(base.connection_pool),
        outlier_detection: over.outlier_detection.clone().or(base.outlier_detection),
        tls: over.tls.clone().or(base.tls),
        port_level_settings: Vec::new(),
        tunnel: over.tunnel.clone().or(base.tunnel),
        proxy_protocol: over.proxy_protocol.clone().or(base.proxy_protocol),
        retry_budget: over.retry_budget.clone().or(base.retry_budget),
    }
}

pub fn lb_policy(lb: Option<&LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else { return LbPolicy::LeastRequest };
    if let Some(ch) = &lb.consistent_hash {
        let policy = if let Some(h) = &ch.http_header_name {
            HashPolicy::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            HashPolicy::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl: c.ttl.as_deref().and_then(|t| duration::parse(t).ok()),
            }
        } else if let Some(q) = &ch.http_query_parameter_name {
            HashPolicy::QueryParameter(q.clone())
        } else {
            HashPolicy::SourceIp
        };
        // Istio: `maglev` selects Maglev; otherwise a ring hash whose size comes from
        // `ringHash.minimumRingSize`, else the deprecated top-level `minimumRingSize`, else 1024.
        let table = match &ch.maglev {
            Some(m) => HashTable::Maglev { table_size: m.table_size.filter(|n| *n > 0).unwrap_or(65537) },
            None => HashTable::Ring {
                minimum_size: ch
                    .ring_hash
                    .as_ref()
                    .and_then(|r| r.minimum_ring_size)
                    .or(ch.minimum_ring_size)
                    .filter(|n| *n > 0)
                    .unwrap_or(1024),
            },
        };
        return LbPolicy::ConsistentHash(policy, table);
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    }
}

/// `warmup` (preferred) or the older `warmupDurationSecs`; `None` without a positive duration.
pub fn warmup(lb: Option<&LoadBalancerSettings>) -> Option<Warmup> {
    let lb = lb?;
    let parse = |d: Option<&str>| d.and_then(|d| duration::parse(d).ok()).filter(|d| !d.is_zero());
    let (duration, min, aggression) = match &lb.warmup {
        Some(w) => (parse(w.duration.as_deref())?, w.minimum_percent, w.aggression),
        None => (parse(lb.warmup_duration_secs.as_deref())?, None, None),
    };
    Some(Warmup {
        duration,
        minimum_percent: min.filter(|m| (0.0..=100.0).contains(m)).unwrap_or(10.0),
        // 0 (or unset) means Envoy's default, 1.0.
        aggression: aggression.filter(|a| *a > 0.0 && a.is_finite()).unwrap_or(1.0),
    })
}

fn clamp_u32(v: Option<i32>) -> Option<u32> {
    v.map(|n| n.max(0) as u32)
}

pub fn limits(cp: Option<&ConnectionPoolSettings>) -> Limits {
    let mut l = Limits::default();
    let Some(cp) = cp else { return l };
    if let Some(tcp) = &cp.tcp {
        if let Some(n) = clamp_u32(tcp.max_connections) {
            l.max_connections = n;
        }
    }
    if let Some(http) = &cp.http {
        if let Some(n) = clamp_u32(http.http1_max_pending_requests) {
            l.max_pending_requests = n;
        }
        if let Some(n) = clamp_u32(http.http2_max_requests) {
            l.max_requests = n;
        }
        if let Some(n) = clamp_u32(http.max_retries) {
            l.max_retries = n;
        }
        if let Some(n) = clamp_u32(http.max_requests_per_connection) {
            l.max_requests_per_connection = n;
        }
    }
    l
}

/// `connectionPool` settings of each connection (see `ConnectionOptions`).
pub fn connection_options(cp: Option<&ConnectionPoolSettings>) -> ConnectionOptions {
    let Some(cp) = cp else { return ConnectionOptions::default() };
    let d = |s: Option<&str>| s.and_then(|v| duration::parse(v).ok());
    // Socket keepalive options are whole seconds (Envoy's too); a sub-second value becomes 1 s
    // rather than 0, which the kernel rejects.
    let secs = |s: Option<&str>| d(s).map(|t| Duration::from_secs(t.as_secs().max(1)));
    let (tcp, http) = (cp.tcp.as_ref(), cp.http.as_ref());
    ConnectionOptions {
        tcp_keepalive: tcp.and_then(|t| t.tcp_keepalive.as_ref()).map(|k| TcpKeepalive {
            probes: k.probes.filter(|p| *p > 0),
            time: secs(k.time.as_deref()),
            interval: secs(k.interval.as_deref()),
        }),
        // Zero means no limit (as Envoy reads an unset or zero duration).
        max_connection_duration: d(tcp.and_then(|t| t.max_connection_duration.as_deref())).filter(|t| !t.is_zero()),
        max_concurrent_streams: clamp_u32(http.and_then(|h| h.max_concurrent_streams)).filter(|n| *n > 0),
        use_client_protocol: http.and_then(|h| h.use_client_protocol).unwrap_or(false),
        // Istio sets Envoy's `connection_keepalive` only with an interval; the timeout alone does
        // nothing.
        http2_keepalive: http.and_then(|h| h.http2_keep_alive.as_ref()).and_then(|k| {
            Some(Http2Keepalive {
                interval: d(k.interval.as_deref()).filter(|t| !t.is_zero())?,
                timeout: d(k.timeout.as_deref()).filter(|t| !t.is_zero()),
            })
        }),
    }
}

pub fn outlier(od: Option<&OutlierDetection>) -> Option<OutlierPolicy> {
    let od = od?;
    let d =
        |s: &Option<String>, default: Duration| s.as_deref().and_then(|v| duration::parse(v).ok()).unwrap_or(default);
    // Istio: consecutive5xxErrors defaults to 5 when the block is present; the deprecated
    // consecutiveErrors maps to gateway errors.
    let consecutive_5xx = match od.consecutive_5xx_errors {
        Some(0) => None,
        Some(n) => Some(n),
        None if od.consecutive_errors.is_some() => None,
        None => Some(5),
    };
    let consecutive_gateway_errors =
        od.consecutive_gateway_errors.or(od.consecutive_errors.map(|n| n.max(0) as u32)).filter(|n| *n > 0);
    Some(OutlierPolicy {
        consecutive_5xx,
        consecutive_gateway_errors,
        consecutive_local_origin_failures: od.consecutive_local_origin_failures.filter(|n| *n > 0),
        split_external_local_origin_errors: od.split_external_local_origin_errors.unwrap_or(false),
        interval: d(&od.interval, Duration::from_secs(10)),
        base_ejection_time: d(&od.base_ejection_time, Duration::from_secs(30)),
        max_ejection_percent: od.max_ejection_percent.map(|n| n.clamp(0, 100) as u32).unwrap_or(10),
        min_health_percent: od.min_health_percent.map(|n| n.clamp(0, 100) as u32).unwrap_or(0),
    })
}

/// Build the cluster for (service, port, subset).
pub fn build_cluster(
    svc: &Service<'_>,
    port: &ServicePort,
    subset: Option<(&str, &BTreeMap<String, String>)>,
    policy: &TrafficPolicy,
) -> Cluster {
    let resolution = svc.spec.resolution.unwrap_or_default();
    let mut endpoints = Vec::new();
    for ep in &svc.spec.endpoints {
        let Some(addr) = ep.address.as_deref() else { continue };
        if let Some((_, labels)) = subset {
            if !labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)) {
                continue;
            }
        }
        let ep_port = ep.ports.get(&port.name).copied().or(port.target_port).unwrap_or(port.number);
        endpoints.push(Endpoint {
            address: addr.to_string(),
            port: u16::try_from(ep_port).unwrap_or(0),
            labels: ep.labels.clone(),
            weight: ep.weight.unwrap_or(1).max(1),
            locality: ep.locality.clone().filter(|l| !l.is_empty()),
            ..Endpoint::default()
        });
    }
    let discovery = match resolution {
        Resolution::Dns | Resolution::DnsRoundRobin => Discovery::Dns,
        _ => Discovery::Static,
    };
    // DNS entries without endpoints resolve the host itself.
    if endpoints.is_empty() && discovery == Discovery::Dns && subset.is_none() && !svc.host.starts_with('*') {
        endpoints.push(Endpoint {
            address: svc.host.clone(),
            port: u16::try_from(port.target_port.unwrap_or(port.number)).unwrap_or(0),
            weight: 1,
            ..Endpoint::default()
        });
    }
    let mut protocol = match port.protocol.as_deref().map(|p| p.to_ascii_uppercase()) {
        Some(p) if p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB" => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    };
    let cp = policy.connection_pool.as_ref();
    // With `useClientProtocol` the request's own protocol decides and h2UpgradePolicy has no
    // effect (Istio's doc; the two together fail validation).
    let use_client = cp.and_then(|c| c.http.as_ref()).and_then(|h| h.use_client_protocol) == Some(true);
    if !use_client
        && cp.and_then(|c| c.http.as_ref()).and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade)
    {
        protocol = UpstreamProtocol::Http2;
    }
    let connect_timeout = cp
        .and_then(|c| c.tcp.as_ref())
        .and_then(|t| t.connect_timeout.as_deref())
        .and_then(|t| duration::parse(t).ok())
        .unwrap_or(Duration::from_secs(10));
    let idle_timeout =
        cp.and_then(|c| c.http.as_ref()).and_then(|h| h.idle_timeout.as_deref()).and_then(|t| duration::parse(t).ok());
    let tcp_idle_timeout =
        cp.and_then(|c| c.tcp.as_ref()).and_then(|t| t.idle_timeout.as_deref()).and_then(|t| duration::parse(t).ok());
    let version = subset.and_then(|(_, labels)| labels.get("version").cloned());
    let namespace = svc.service_namespace.clone();
    Cluster {
        name: Arc::from(cluster_name(port.number, subset.map(|s| s.0), &svc.host)),
        host: svc.host.clone(),
        namespace,
        port: port.number,
        subset: subset.map(|s| s.0.to_string()),
        protocol,
        discovery,
        endpoints,
        lb: lb_policy(policy.load_balancer.as_ref()),
        connect_timeout,
        idle_timeout,
        tcp_idle_timeout,
        limits: limits(cp),
        outlier: outlier(policy.outlier_detection.as_ref()),
        tls: None,
        warmup: warmup(policy.load_balancer.as_ref()),
        version,
        conn: connection_options(cp),
    }
}

/// `name.ns.svc.<domain_suffix>` → `ns`.
pub fn service_namespace<'h>(host: &'h str, domain_suffix: &str) -> Option<&'h str> {
    let rest = host.strip_suffix(domain_suffix)?.strip_suffix(".svc.")?;
    let (_, ns) = rest.rsplit_once('.')?;
    Some(ns)
}

/// DestinationRule `tls` toward the backend, for SIMPLE and MUTUAL (DISABLE → none;
/// ISTIO_MUTUAL needs mesh certificates a standalone gateway does not have: none, and the
/// support check warns). `credentialName` is resolved here from the Secrets, looked up in
/// `namespaces` in order (the gateway's namespace first, as Istio does); file paths are left for
/// the data plane to read.
pub fn upstream_tls(
    t: Option<&portico_api::istio::ClientTlsSettings>,
    secrets: &BTreeMap<String, Arc<SecretData>>,
    namespaces: &[&str],
) -> Option<UpstreamTls> {
    use portico_api::istio::ClientTlsMode;
    let t = t?;
    let mutual = match t.mode {
        ClientTlsMode::Simple => false,
        ClientTlsMode::Mutual => true,
        ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
    };
    let secret = t
        .credential_name
        .as_deref()
        .and_then(|name| namespaces.iter().find_map(|ns| secrets.get(&format!("{ns}/{name}"))));
    let key = |names: &[&str]| secret.and_then(|s| names.iter().find_map(|n| s.data.get(*n).cloned()));
    Some(UpstreamTls {
        mutual,
        sni: t.sni.clone().filter(|s| !s.is_empty()),
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
        ca_pem: key(&["ca.crt", "cacert"]),
        cert_pem: if mutual { key(&["tls.crt", "cert"]) } else { None },
        key_pem: if mutual { key(&["tls.key", "key"]) } else { None },
        ca_file: t.ca_certificates.clone().filter(|s| !s.is_empty()),
        cert_file: t.client_certificate.clone().filter(|s| !s.is_empty() && mutual),
        key_file: t.private_key.clone().filter(|s| !s.is_empty() && mutual),
    })
}

// ───────────────────────────── locality ─────────────────────────────

/// `region/zone/subzone` → its three parts ("" for missing ones).
fn split_locality(l: &str) -> [&str; 3] {
    let mut it = l.splitn(3, '/');
    [it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or("")]
}

/// Istio's locality pattern match: each part of `pattern` is `*` or equal; missing zone or
/// subzone parts match anything.
fn locality_matches(pattern: &str, locality: &str) -> bool {
    let (p, l) = (split_locality(pattern), split_locality(locality));
    (p[0] == "*" || p[0] == l[0])
        && (p[1].is_empty() || p[1] == "*" || p[1] == l[1])
        && (p[2].is_empty() || p[2] == "*" || p[2] == l[2])
}

const TOPOLOGY: [&str; 3] =
    ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"];

/// Istio's locality load balancing for a proxy at `opts.locality` (off without one, or with
/// `enabled: false`), as endpoint priorities and locality weights for the data plane:
/// * `distribute`: the first rule whose `from` matches the proxy; each `to` pattern's weight is
///   split over the localities it claims (first pattern wins) in proportion to their endpoint
///   weights, rounded up; endpoints of localities no pattern claims get no traffic (removed).
///   It does not need outlier detection.
/// * otherwise, only with `outlierDetection` (Envoy cannot fail over without it) — Istio's
///   default even without a `localityLbSetting`: `failoverPriority` labels (priority = how many
///   of the labels, from the last, fail to match the proxy's in order) or locality failover:
///   same region/zone/subzone 0, same zone 1, same region 2, other regions 3 — and with a
///   `failover` rule for the proxy's region, its `to` region 3 and the others 4.
pub fn apply_locality(c: &mut Cluster, policy: &TrafficPolicy, opts: &crate::Options) {
    let Some(proxy) = opts.locality.as_deref().filter(|l| !l.is_empty()) else { return };
    let setting = policy.load_balancer.as_ref().and_then(|lb| lb.locality_lb_setting.as_ref());
    if setting.and_then(|s| s.enabled) == Some(false) {
        return;
    }
    let empty = portico_api::istio::LocalityLbSetting::default();
    let s = setting.unwrap_or(&empty);
    let loc = |e: &Endpoint| e.locality.clone().unwrap_or_default();
    if !s.distribute.is_empty() {
        let Some(rule) = s.distribute.iter().find(|d| locality_matches(&d.from, proxy)) else { return };
        let mut localities: BTreeMap<String, u64> = BTreeMap::new();
        for e in &c.endpoints {
            *localities.entry(loc(e)).or_default() += u64::from(e.weight);
        }
        let mut weights: BTreeMap<String, u32> = BTreeMap::new();
        for (pattern, w) in &rule.to {
            let claimed: Vec<(&String, &u64)> =
                localities.iter().filter(|(l, _)| !weights.contains_key(*l) && locality_matches(pattern, l)).collect();
            let total: u64 = claimed.iter().map(|(_, w)| **w).sum::<u64>().max(1);
            let mut these = Vec::new();
            for (l, own) in claimed {
                let share = (own * u64::from(*w)).div_ceil(total);
                these.push((l.clone(), u32::try_from(share).unwrap_or(u32::MAX)));
            }
            weights.extend(these);
        }
        c.endpoints.retain(|e| weights.get(&loc(e)).is_some_and(|w| *w > 0));
        for e in &mut c.endpoints {
            e.locality_weight = weights.get(&loc(e)).copied();
        }
        return;
    }
    if c.outlier.is_none() {
        return;
    }
    let p = split_locality(proxy);
    if !s.failover_priority.is_empty() {
        let value = |labels: &BTreeMap<String, String>, parts: [&str; 3], key: &str| -> Option<String> {
            match TOPOLOGY.iter().position(|t| *t == key) {
                Some(i) => Some(parts[i].to_string()).filter(|v| !v.is_empty()),
                None => labels.get(key).cloned(),
            }
        };
        let n = s.failover_priority.len() as u32;
        for e in &mut c.endpoints {
            let l = loc(e);
            let ep_parts = split_locality(&l);
            let matched = s
                .failover_priority
                .iter()
                .take_while(|key| {
                    let mine = value(&opts.labels, p, key);
                    mine.is_some() && mine == value(&e.labels, ep_parts, key)
                })
                .count() as u32;
            e.priority = n - matched;
        }
        return;
    }
    let to_region = s.failover.iter().find(|f| f.from == p[0]).map(|f| f.to.as_str());
    for e in &mut c.endpoints {
        let l = loc(e);
        let q = split_locality(&l);
        e.priority = if q[0] != p[0] {
            match to_region {
                Some(to) if q[0] != to => 4,
                _ => 3,
            }
        } else if q[1] != p[1] {
            2
        } else if q[2] != p[2] {
            1
        } else {
            0
        };
    }
}
