//! The compiled, immutable configuration the data plane serves from. Built by `compile`,
//! shared behind an `Arc`, swapped whole on reload. Everything here is precomputed so that the
//! request path only looks things up and matches borrowed strings.

use crate::matcher::{RequestMatch, RequestView};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// One per port, sorted by port.
    pub listeners: Vec<Listener>,
    /// By cluster name (`outbound|PORT|SUBSET|HOST`, Istio/Envoy's naming).
    pub clusters: BTreeMap<Arc<str>, Arc<Cluster>>,
    /// Kubernetes Secrets by `namespace/name`, for `credentialName` (TLS comes in a later stage).
    #[serde(skip)]
    pub secrets: BTreeMap<String, Arc<SecretData>>,
    /// Status of the Gateway API objects this instance owns (their Accepted/Programmed/ResolvedRefs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_api: Vec<crate::gateway_api::status::ObjectStatus>,
}

impl Snapshot {
    pub fn listener(&self, port: u32) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

/// Decoded Secret keys (`tls.crt`, `tls.key`, `ca.crt`, `cert`, `key`, `cacert`, `ca.crl` …).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    pub data: BTreeMap<String, Vec<u8>>,
}

/// The Istio Gateway port protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Mysql,
    Redis,
}

impl Protocol {
    /// Case-insensitive, as Istio parses protocols.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "GRPC" => Protocol::Grpc,
            "GRPC-WEB" => Protocol::GrpcWeb,
            "HTTPS" => Protocol::Https,
            "TLS" => Protocol::Tls,
            "TCP" => Protocol::Tcp,
            "MONGO" => Protocol::Mongo,
            "MYSQL" => Protocol::Mysql,
            "REDIS" => Protocol::Redis,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "MONGO",
            Protocol::Mysql => "MYSQL",
            Protocol::Redis => "REDIS",
        }
    }

    /// Plaintext HTTP family: served by the HTTP server directly.
    pub fn is_plain_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Opaque byte streams.
    pub fn is_tcp(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Mongo | Protocol::Mysql | Protocol::Redis)
    }
}

/// What a listener does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    /// Plaintext HTTP/1.1, h2c (prior knowledge) — HTTP, HTTP2, GRPC, GRPC-WEB servers.
    Http,
    /// TLS servers chosen by SNI (terminated or passed through), see `servers`.
    Tls,
    /// Opaque TCP.
    Tcp,
}

#[derive(Debug, Serialize)]
pub struct Listener {
    /// The Gateway's port number (the bind port may differ through `--port-map`).
    pub port: u32,
    pub kind: ListenerKind,
    /// `server.bind`, when every server on the port names the same one.
    pub bind: Option<String>,
    /// The servers (doors) merged on this port, in precedence order.
    pub servers: Vec<Arc<ServerBlock>>,
    /// For `Http` listeners: the one route table of the port (all servers' virtual hosts).
    pub http: Option<Arc<RouteTable>>,
    /// For `Tcp` listeners: the TCP routes of the port, first match wins.
    pub tcp_routes: Vec<Arc<TcpRoute>>,
    /// For `Tls` listeners: the server (index into `servers`) by SNI, as Envoy's filter chain
    /// match picks it (the hosts' `namespace/` part is not part of the name).
    #[serde(skip)]
    pub sni: crate::host::HostIndex,
}

impl Listener {
    /// The server block a TLS client with this SNI gets (no SNI: the `*` server, if any).
    pub fn server_for_sni(&self, sni: Option<&str>) -> Option<&Arc<ServerBlock>> {
        let i = match sni {
            Some(name) => self.sni.lookup(name),
            None => self.sni.catch_all(),
        };
        i.and_then(|i| self.servers.get(i))
    }
}

#[derive(Debug, Serialize)]
pub struct ServerBlock {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    pub index: usize,
    pub name: Option<String>,
    pub port_name: String,
    pub protocol: Protocol,
    pub hosts: Vec<String>,
    pub https_redirect: bool,
    /// TLS settings of HTTPS/TLS servers, material resolved (None for plaintext, or when the
    /// certificate could not be found: such a server refuses handshakes).
    pub tls: Option<crate::tls::ServerTls>,
    /// Terminated TLS servers (HTTPS SIMPLE/MUTUAL…): the HTTP routes served behind this server.
    pub http: Option<Arc<RouteTable>>,
    /// TLS passthrough routes (`tls` routes of bound VirtualServices).
    pub tls_routes: Vec<Arc<TlsRoute>>,
    /// TCP routes served after TLS termination (`TLS` protocol, SIMPLE/MUTUAL).
    pub tcp_routes: Vec<Arc<TcpRoute>>,
}

/// The virtual hosts of one route configuration, indexed for lookup by `Host`.
#[derive(Debug, Default, Serialize)]
pub struct RouteTable {
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(skip)]
    pub index: crate::host::HostIndex,
}

impl RouteTable {
    pub fn new(virtual_hosts: Vec<VirtualHost>) -> RouteTable {
        let index = crate::host::HostIndex::new(virtual_hosts.iter().enumerate().map(|(i, vh)| (vh.name.as_str(), i)));
        RouteTable { virtual_hosts, index }
    }

    /// The virtual host for a `Host`/`:authority` value: exact name first, then the longest
    /// wildcard suffix, then `*`. Case-insensitive; the port is ignored.
    pub fn find(&self, authority: &str) -> Option<&VirtualHost> {
        self.index.lookup(strip_port(authority)).and_then(|i| self.virtual_hosts.get(i))
    }
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`. Read back from the end over the port's digits:
/// every request's authority goes through here, and `rfind` set up a searcher each time.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    let bytes = authority.as_bytes();
    let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    match bytes.len().checked_sub(digits + 1) {
        Some(colon) if bytes[colon] == b':' => &authority[..colon],
        _ => authority,
    }
}

#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// The host this virtual host answers for (`a.example.com`, `*.example.com`, `*`).
    pub name: String,
    pub routes: Vec<Arc<Route>>,
    /// `httpsRedirect` of the server that opened this host: 301 to https before routing.
    pub https_redirect: bool,
}

impl VirtualHost {
    /// The first route whose matches accept the request (Istio: first match wins).
    pub fn select(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches_request(req))
    }
}

#[derive(Debug, Serialize)]
pub struct Route {
    /// `namespace/name` of the VirtualService and the index of the http route in it.
    pub virtual_service: String,
    pub index: usize,
    /// Shared so that each request's record names its route without a copy (`%ROUTE_NAME%`).
    pub name: Option<Arc<str>>,
    /// Any one must match; empty = match everything.
    pub matches: Vec<RequestMatch>,
    pub action: RouteAction,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub rewrite: Option<Rewrite>,
    pub headers: HeaderRules,
    pub cors: Option<CorsPolicy>,
}

impl Route {
    /// The index of the first matching `match` block (0 when there are none), or None.
    pub fn matching_index(&self, req: &RequestView<'_>) -> Option<usize> {
        if self.matches.is_empty() {
            return Some(0);
        }
        self.matches.iter().position(|m| m.matches(req))
    }

    pub fn matches_request(&self, req: &RequestView<'_>) -> bool {
        self.matching_index(req).is_some()
    }

    /// Matches every request (Istio moves such routes after the specific ones of other VSs).
    pub fn is_catch_all(&self) -> bool {
        self.matches.is_empty() || self.matches.iter().any(RequestMatch::is_catch_all)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Forward(WeightedClusters),
    Redirect(Redirect),
    DirectResponse { status: u16, body: Arc<[u8]> },
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightedClusters {
    pub destinations: Vec<WeightedDestination>,
    /// Sum of the weights (> 0).
    pub total_weight: u32,
}

impl WeightedClusters {
    /// The destination for a uniformly random `r` in `0..total_weight`
    /// (share = weight / sum, as Envoy's weighted clusters).
    pub fn pick(&self, r: u32) -> Option<&WeightedDestination> {
        self.pick_index(r).and_then(|i| self.destinations.get(i))
    }

    /// [`pick`](Self::pick), as an index into `destinations`.
    pub fn pick_index(&self, r: u32) -> Option<usize> {
        let mut acc = 0u32;
        for (i, d) in self.destinations.iter().enumerate() {
            acc += d.weight;
            if r < acc {
                return Some(i);
            }
        }
        self.destinations.iter().rposition(|d| d.weight > 0)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightedDestination {
    /// Cluster name; may be absent from `Snapshot::clusters` (→ 503 `NC`).
    pub cluster: Arc<str>,
    /// Fully qualified destination host (`reviews.default.svc.cluster.local`).
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    pub weight: u32,
    pub headers: HeaderRules,
}

#[derive(Clone, Debug, Serialize)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    /// `derivePort: FROM_REQUEST_PORT`.
    pub port_from_request: bool,
    pub scheme: Option<String>,
    pub code: u16,
}

/// Envoy's `retry_on` conditions as bits: the tokens are read once, at compile time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 7);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 8);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 9);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 10);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 12);
    /// A response an upstream Envoy marked `x-envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 13);

    /// Every token Portico acts on, in Envoy's spelling.
    pub const TOKENS: &'static [(&'static str, RetryOn)] = &[
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("internal", Self::GRPC_INTERNAL),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
    ];

    /// The condition of one token (`None`: not a token Portico knows).
    pub fn token(name: &str) -> Option<RetryOn> {
        Self::TOKENS.iter().find(|(t, _)| *t == name).map(|(_, b)| *b)
    }

    pub const fn empty() -> RetryOn {
        RetryOn(0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Any of `other`'s conditions.
    pub const fn intersects(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    pub fn insert(&mut self, other: RetryOn) {
        self.0 |= other.0;
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

/// Shown as the list of tokens (`routes --json`, `/config_dump`).
impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        for (name, bit) in Self::TOKENS {
            if self.contains(*bit) {
                seq.serialize_element(name)?;
            }
        }
        seq.end()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`); 0 disables.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Envoy `retry_on` conditions, compiled from the tokens.
    pub retry_on: RetryOn,
    pub retriable_status_codes: Vec<u16>,
}

#[derive(Debug, Serialize)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(FaultAbortKind, f64)>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAbortKind {
    Http(u16),
    Grpc(GrpcCode),
}

/// A gRPC status code, compiled from Istio's name for it (`UNAVAILABLE` → 14); shown by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcCode(pub u32);

impl GrpcCode {
    /// By name (any case) or number; anything else is UNKNOWN (2), as Envoy reads it.
    pub fn parse(name: &str) -> GrpcCode {
        let name = name.trim();
        if let Ok(n) = name.parse::<u32>() {
            return GrpcCode(n);
        }
        let i = GRPC_STATUS_NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)).unwrap_or(2);
        GrpcCode(u32::try_from(i).unwrap_or(2))
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match usize::try_from(self.0).ok().and_then(|i| GRPC_STATUS_NAMES.get(i)) {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u32(self.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Mirror {
    pub cluster: Arc<str>,
    pub host: String,
    pub port: u32,
    /// 0..=100.
    pub percentage: f64,
}

#[derive(Debug, Serialize)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex: Option<(crate::matcher::Re, String)>,
}

/// Names are parsed once here, not per request. A request rule on `:authority` (or `Host`) is
/// kept as a `set` of `host`, which also becomes the upstream authority (see `sets_authority`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeaderOps {
    /// Values are templates (`%VAR%` parsed at compile time); `"text".into()` makes one.
    #[serde(serialize_with = "ser_named")]
    pub set: Vec<(http::HeaderName, crate::template::HeaderValueTemplate)>,
    #[serde(serialize_with = "ser_named")]
    pub add: Vec<(http::HeaderName, crate::template::HeaderValueTemplate)>,
    #[serde(serialize_with = "ser_names")]
    pub remove: Vec<http::HeaderName>,
}

impl HeaderOps {
    /// A request rule sets the authority (Envoy applies it as the upstream `:authority`/`Host`,
    /// unless the route's `rewrite.authority` overrides it).
    pub fn sets_authority(&self) -> bool {
        self.set.iter().any(|(n, _)| n == http::header::HOST)
    }

    /// Some value reads request headers (`%REQ(…)%`).
    pub fn uses_request(&self) -> bool {
        self.set.iter().chain(&self.add).any(|(_, v)| v.uses_request())
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Serialize)]
pub struct CorsPolicy {
    pub allow_origins: Vec<crate::matcher::StrMatch>,
    /// `access-control-allow-methods`, joined once (`None`: empty list, header not sent).
    #[serde(serialize_with = "ser_header_value")]
    pub allow_methods: Option<http::HeaderValue>,
    #[serde(serialize_with = "ser_header_value")]
    pub allow_headers: Option<http::HeaderValue>,
    #[serde(serialize_with = "ser_header_value")]
    pub expose_headers: Option<http::HeaderValue>,
    pub max_age: Option<Duration>,
    pub allow_credentials: bool,
    /// `unmatchedPreflights: IGNORE` (default FORWARD).
    pub ignore_unmatched_preflights: bool,
}

#[derive(Debug, Serialize)]
pub struct TcpRoute {
    pub virtual_service: String,
    pub index: usize,
    /// Ports any of which must match (empty = any).
    pub ports: Vec<u32>,
    pub destinations: WeightedClusters,
}

#[derive(Debug, Serialize)]
pub struct TlsRoute {
    pub virtual_service: String,
    pub index: usize,
    /// SNI patterns (exact or `*.suffix`), any of which must match.
    pub sni_hosts: Vec<String>,
    pub ports: Vec<u32>,
    pub destinations: WeightedClusters,
}

// ───────────────────────────── clusters ─────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Endpoints are IP addresses.
    Static,
    /// Endpoints are host names, re-resolved periodically by the data plane.
    Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// IP address (Static) or host name (Dns).
    pub address: String,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// `region/zone/subzone` (ServiceEntry endpoint `locality`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Envoy priority from locality failover (0 = preferred); 0 when locality LB is off.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// Weight of the endpoint's locality from `distribute` (Envoy's locality-weighted LB);
    /// `None` when not distributing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_weight: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    LeastRequest,
    RoundRobin,
    Random,
    /// The hash key and the table that maps hashes to endpoints.
    ConsistentHash(HashPolicy, HashTable),
}

/// Envoy's consistent-hash load balancers as Istio configures them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashTable {
    /// Ketama ring with at least this many points (Istio's default: 1024).
    Ring { minimum_size: u64 },
    /// Maglev lookup table of this (prime) size (Envoy's default: 65537).
    Maglev { table_size: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    Header(String),
    Cookie { name: String, path: Option<String>, ttl: Option<Duration> },
    SourceIp,
    QueryParameter(String),
}

/// Circuit-breaking limits (Envoy's defaults when the DestinationRule is silent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// 0 = unlimited.
    pub max_requests_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        // Istio sets these to 2^32-1 when unspecified, disabling Envoy's 1024 defaults.
        Limits {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
            max_requests_per_connection: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutlierPolicy {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// Envoy's slow start: an endpoint's weight is scaled by
/// `max(minimum_percent / 100, (time_since_joined / duration)^(1 / aggression))` until
/// `duration` has passed since it joined.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Warmup {
    pub duration: Duration,
    /// 0..=100 (Istio's default: 10).
    pub minimum_percent: f64,
    /// > 0 (default 1.0: linear).
    pub aggression: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// SIMPLE or MUTUAL.
    pub mutual: bool,
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
    #[serde(skip)]
    pub cert_pem: Option<Vec<u8>>,
    #[serde(skip)]
    pub key_pem: Option<Vec<u8>>,
    /// File paths (`caCertificates`, `clientCertificate`, `privateKey`), read by the proxy when
    /// the PEM was not resolved from a secret.
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Cluster {
    pub name: Arc<str>,
    /// Fully qualified service host, and the namespace it belongs to (for metrics labels).
    pub host: String,
    pub namespace: String,
    pub port: u32,
    pub subset: Option<String>,
    pub protocol: UpstreamProtocol,
    pub discovery: Discovery,
    pub endpoints: Vec<Endpoint>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    /// `connectionPool.tcp.idleTimeout` for TCP routes (unset: the proxy's default, 1 h as
    /// Istio's; zero: no idle timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_idle_timeout: Option<Duration>,
    pub limits: Limits,
    pub outlier: Option<OutlierPolicy>,
    pub tls: Option<UpstreamTls>,
    /// Slow start for endpoints that join later (DestinationRule `loadBalancer.warmup` or
    /// `warmupDurationSecs`); the data plane applies it to ROUND_ROBIN and LEAST_REQUEST only,
    /// as Envoy does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// `version` label of the subset's endpoints, for `destination_version`.
    pub version: Option<String>,
    /// How upstream connections are opened and kept (`connectionPool` beyond the limits).
    #[serde(skip_serializing_if = "ConnectionOptions::is_default")]
    pub conn: ConnectionOptions,
}

/// Per-connection settings of a cluster (DestinationRule `connectionPool`); all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectionOptions {
    /// `tcp.tcpKeepalive`: SO_KEEPALIVE on upstream sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `tcp.maxConnectionDuration`: a connection this old takes no new requests and closes once
    /// its requests are done (Envoy's `max_connection_duration`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// `http.maxConcurrentStreams`: most streams on one HTTP/2 upstream connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// `http.useClientProtocol`: the upstream request keeps the downstream request's HTTP version.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub use_client_protocol: bool,
    /// `http.http2KeepAlive`: HTTP/2 PINGs on upstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_keepalive: Option<Http2Keepalive>,
}

impl ConnectionOptions {
    pub fn is_default(&self) -> bool {
        *self == ConnectionOptions::default()
    }
}

/// TCP keepalive; `None` fields leave the OS default (as Envoy does). Whole seconds, as the
/// socket options (and Envoy's) take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// HTTP/2 keepalive PINGs: one every `interval`; no answer within `timeout` closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Http2Keepalive {
    pub interval: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// gRPC status names by code (0..=16), as Istio's `grpcStatus` spells them.
pub const GRPC_STATUS_NAMES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn ser_named<S: serde::Serializer>(
    ops: &[(http::HeaderName, crate::template::HeaderValueTemplate)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(ops.iter().map(|(n, v)| (n.as_str(), v)))
}

fn ser_names<S: serde::Serializer>(names: &[http::HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(http::HeaderName::as_str))
}

fn ser_header_value<S: serde::Serializer>(v: &Option<http::HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v.as_ref().and_then(|v| v.to_str().ok()) {
        Some(text) => s.serialize_str(text),
        None => s.serialize_none(),
    }
}

/// A list as one header value (`a,b,c`); `None` for an empty list or text that is not a valid
/// header value (validation reports it).
pub fn joined_header_value(items: &[String]) -> Option<http::HeaderValue> {
    if items.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&items.join(",")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_drops_only_a_trailing_numeric_port() {
        for (authority, host) in [
            ("example.com:8080", "example.com"),
            ("example.com", "example.com"),
            ("example.com:", "example.com"),
            ("127.0.0.1:18931", "127.0.0.1"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("host:http", "host:http"),
            ("a:1b", "a:1b"),
            ("8080", "8080"),
            (":80", ""),
            ("", ""),
        ] {
            assert_eq!(strip_port(authority), host, "{authority}");
        }
    }

    #[test]
    fn grpc_codes_compile_from_names_or_numbers() {
        assert_eq!(GrpcCode::parse("UNAVAILABLE"), GrpcCode(14));
        assert_eq!(GrpcCode::parse(" unavailable "), GrpcCode(14));
        assert_eq!(GrpcCode::parse("8"), GrpcCode(8));
        assert_eq!(GrpcCode::parse("bogus"), GrpcCode(2));
        assert_eq!(serde_json::to_string(&GrpcCode(14)).unwrap(), "\"UNAVAILABLE\"");
    }

    #[test]
    fn retry_on_tokens_round_trip() {
        let on = RetryOn::token("gateway-error").unwrap() | RetryOn::token("unavailable").unwrap();
        assert!(on.contains(RetryOn::GATEWAY_ERROR) && on.contains(RetryOn::GRPC_UNAVAILABLE));
        assert!(!on.contains(RetryOn::FIVE_XX));
        assert_eq!(RetryOn::token("retriable-headers"), None);
        assert_eq!(serde_json::to_string(&on).unwrap(), r#"["gateway-error","unavailable"]"#);
        assert!(RetryOn::empty().is_empty() && !RetryOn::empty().contains(RetryOn::empty()));
    }

    #[test]
    fn header_lists_join_once() {
        assert_eq!(joined_header_value(&["GET".into(), "POST".into()]).unwrap(), "GET,POST");
        assert_eq!(joined_header_value(&[]), None);
        assert_eq!(joined_header_value(&["bad\nvalue".into()]), None);
    }
}
