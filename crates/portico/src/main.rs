//! `portico`: run the gateway, validate config, print routes (DESIGN.md §5).

mod admin;
mod alloc;
mod convert;
mod files;
mod report;
mod run;
mod sink;
mod sources;
mod state;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use portico_model::Options;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "portico", version, about = "An edge gateway for Istio's Gateway, VirtualService and DestinationRule")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Gateways this instance applies, reloading when the config changes.
    Run(Box<RunArgs>),
    /// Check config files offline; one line per finding, exit 1 on errors.
    Validate(ValidateArgs),
    /// Print the listeners, server blocks, virtual hosts and routes this instance would serve.
    Routes(RoutesArgs),
    /// Turn Ingress resources (with ingress-nginx annotations) into Istio or Gateway API YAML
    /// on stdout; every annotation that cannot be carried over is reported on stderr.
    Convert(ConvertArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// Files or directories (recursively: *.yaml, *.yml, *.json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output API: Istio Gateway + VirtualService, or Gateway API Gateway + HTTPRoute.
    #[arg(long, default_value = "istio", value_name = "istio|gateway-api")]
    to: String,
    /// Namespace for resources that do not name one.
    #[arg(long, env = "PORTICO_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The cluster's DNS domain: a backend Service is written as `name.namespace.svc.<suffix>`.
    #[arg(long, env = "PORTICO_DOMAIN_SUFFIX", default_value = "cluster.local")]
    domain_suffix: String,
}

#[derive(Args, Clone)]
struct InstanceArgs {
    /// This instance's labels (`k=v,k2=v2`); a Gateway applies when its selector is a subset.
    #[arg(long, env = "PORTICO_LABELS", default_value = "istio=ingressgateway")]
    labels: String,
    /// Namespace for resources that do not name one.
    #[arg(long, env = "PORTICO_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The namespace this gateway runs in (where `credentialName` secrets are looked up).
    #[arg(long, env = "PORTICO_GATEWAY_NAMESPACE", default_value = "istio-system")]
    gateway_namespace: String,
    /// This instance's locality (`region/zone/subzone`, Istio's spelling); turns on locality
    /// load balancing (failover needs the DestinationRule's outlierDetection). Off when unset.
    #[arg(long, env = "PORTICO_LOCALITY", value_name = "REGION/ZONE/SUBZONE")]
    locality: Option<String>,
    /// The Gateway API GatewayClass this instance serves (Gateways naming another class are
    /// left to other controllers).
    #[arg(long, env = "PORTICO_GATEWAY_CLASS", default_value = "portico")]
    gateway_class: String,
    /// The cluster's DNS domain: a Service is `name.namespace.svc.<suffix>`, and a short host
    /// (`reviews`) in a VirtualService or DestinationRule means `reviews.<its namespace>.svc.<suffix>`.
    #[arg(long, env = "PORTICO_DOMAIN_SUFFIX", default_value = "cluster.local")]
    domain_suffix: String,
}

#[derive(Args)]
struct RunArgs {
    /// Config files or directories (watched; `*.yaml`, `*.yml`, `*.json`, recursively).
    #[arg(long, env = "PORTICO_CONFIG", value_delimiter = ',', required_unless_present = "kubernetes")]
    config: Vec<PathBuf>,
    /// Read Istio resources, Secrets, Services, EndpointSlices and Pods from the Kubernetes API
    /// (`--kubeconfig`, else `KUBECONFIG`, else in-cluster); `--config` files add to them.
    #[arg(long, env = "PORTICO_KUBERNETES")]
    kubernetes: bool,
    /// The kubeconfig file for `--kubernetes`.
    #[arg(long, env = "PORTICO_KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Namespaces to watch (repeatable, or comma-separated); default: all.
    #[arg(long = "watch-namespace", env = "PORTICO_WATCH_NAMESPACE", value_delimiter = ',', value_name = "NS")]
    watch_namespace: Vec<String>,
    /// With `--kubernetes`: the `coordination.k8s.io/v1` Lease (in the gateway namespace) whose
    /// holder writes Gateway API status back; the other replicas only read.
    #[arg(long, env = "PORTICO_LEASE_NAME", default_value = "portico-status-leader")]
    lease_name: String,
    /// The Lease's duration: a dead holder is replaced this long after its last renewal.
    #[arg(long, env = "PORTICO_LEASE_DURATION", default_value = "15s")]
    lease_duration: String,
    /// With `--kubernetes`: never write Gateway API status (no Lease either).
    #[arg(long, env = "PORTICO_NO_STATUS_WRITE")]
    no_status_write: bool,
    /// Serve only `/healthz/ready` here too (Istio's status port, 15021, for load balancers).
    #[arg(long, env = "PORTICO_STATUS")]
    status: Option<std::net::SocketAddr>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// Address listeners bind.
    #[arg(long, env = "PORTICO_BIND", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Serve Gateway port GW on local port LOCAL (Istio's Service port → targetPort).
    #[arg(long = "port-map", env = "PORTICO_PORT_MAP", value_delimiter = ',', value_name = "GW=LOCAL")]
    port_map: Vec<String>,
    /// Admin address: /healthz/ready, /config_dump, /stats/prometheus.
    #[arg(long, env = "PORTICO_ADMIN", default_value = "127.0.0.1:15000")]
    admin: std::net::SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value = "5s")]
    drain_timeout: String,
    /// Limits for hostile and overloading clients (Envoy-like defaults).
    #[command(flatten)]
    limits: LimitArgs,
    /// Data-plane worker threads (default: the number of cores).
    #[arg(long, env = "PORTICO_WORKERS")]
    workers: Option<usize>,
    /// Access log on stdout, one line per request: Istio's text format, JSON, or off.
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value = "text", value_name = "text|json|off")]
    access_log: String,
    /// Same as `--access-log` (Istio's `accessLogEncoding` spelled as a flag); wins when given.
    #[arg(long, env = "PORTICO_ACCESS_LOG_FORMAT", value_name = "text|json")]
    access_log_format: Option<String>,
    /// Also serve `/stats/prometheus` (and `/metrics`) here, as Istio's proxies do on 15090.
    #[arg(long, env = "PORTICO_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Export trace spans with OTLP HTTP/protobuf to this URL (`http://collector:4318/v1/traces`).
    #[arg(long, env = "PORTICO_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Percentage of requests traced when the caller did not decide (Istio's default: 1).
    #[arg(long, env = "PORTICO_TRACE_SAMPLING", default_value_t = 1.0, value_name = "PERCENT")]
    trace_sampling: f64,
    /// This gateway's workload name: `source_workload` of its metrics and the trace service name
    /// (`NAME.GATEWAY_NAMESPACE`). Istio's default gateway is `istio-ingressgateway`.
    #[arg(long, env = "PORTICO_WORKLOAD_NAME", default_value = "istio-ingressgateway")]
    workload_name: String,
}

/// Downstream limits and timeouts: what bounds a slow, flooding or oversized client.
#[derive(Args)]
struct LimitArgs {
    /// Most downstream connections open at once over all listeners; above it new connections
    /// are closed at once and counted (`portico_downstream_connections_overflow_total`).
    /// Unlimited when unset.
    #[arg(long, env = "PORTICO_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A client must send a whole request head within this time (slowloris), else 408/close.
    #[arg(long, env = "PORTICO_REQUEST_HEADERS_TIMEOUT", default_value = "10s")]
    request_headers_timeout: String,
    /// A connection with no bytes either way for this long is closed gracefully (HTTP/2
    /// GOAWAY). Envoy's default: 1h.
    #[arg(long, env = "PORTICO_IDLE_TIMEOUT", default_value = "1h")]
    idle_timeout: String,
    /// A connection that makes no progress for this long while a request body is due (slow
    /// POST) or the client is not reading (slow reader) is closed. Envoy's default: 5m.
    #[arg(long, env = "PORTICO_STREAM_IDLE_TIMEOUT", default_value = "5m")]
    stream_idle_timeout: String,
    /// Largest request head (request line and headers) in KiB → 431. Envoy's default: 60.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADERS_KB", default_value_t = 60)]
    max_request_headers_kb: usize,
    /// Most request headers → 431. Envoy's default: 100.
    #[arg(long, env = "PORTICO_MAX_REQUEST_HEADERS", default_value_t = 100)]
    max_request_headers: usize,
    /// Longest request target (path and query) in bytes → 414.
    #[arg(long, env = "PORTICO_MAX_URI_LENGTH", default_value_t = 16384)]
    max_uri_length: usize,
    /// HTTP/2 streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "PORTICO_H2_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    h2_max_concurrent_streams: u32,
    /// Serve HTTP/1.0 requests; without it they get 426, as from Istio's gateways. The
    /// environment variable is Istio's own switch for a gateway pod (its `HTTP10` metadata).
    #[arg(long = "accept-http10", env = "ISTIO_META_HTTP10", value_parser = clap::builder::BoolishValueParser::new())]
    accept_http10: bool,
    /// Istio's `meshConfig.pathNormalization`: NONE, BASE (Istio's default: RFC 3986 dot
    /// segments, unreserved escapes, `\` → `/`), MERGE_SLASHES (also `//` → `/`) or
    /// DECODE_AND_MERGE_SLASHES (also `%2F`, `%5C` decoded first).
    #[arg(long, env = "PORTICO_PATH_NORMALIZATION", default_value = "BASE")]
    path_normalization: String,
}

impl LimitArgs {
    fn to_limits(&self) -> Result<run::Limits> {
        let dur = |flag: &str, v: &str| portico_model::duration::parse(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
        if self.max_connections == Some(0) {
            anyhow::bail!("--max-connections: 0 would refuse every connection");
        }
        Ok(run::Limits {
            max_connections: self.max_connections,
            request_headers_timeout: dur("request-headers-timeout", &self.request_headers_timeout)?,
            idle_timeout: dur("idle-timeout", &self.idle_timeout)?,
            stream_idle_timeout: dur("stream-idle-timeout", &self.stream_idle_timeout)?,
            max_request_headers_bytes: self.max_request_headers_kb.saturating_mul(1024),
            max_request_headers: self.max_request_headers,
            max_uri_length: self.max_uri_length,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            accept_http10: self.accept_http10,
            path_normalization: portico_proxy::path::PathNormalization::from_istio(&self.path_normalization)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--path-normalization: {:?} is not one of NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES",
                        self.path_normalization
                    )
                })?,
        })
    }
}

#[derive(Args)]
struct ValidateArgs {
    /// Files or directories (recursively: *.yaml, *.yml, *.json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// `text`: one FILE:LINE:COL line per finding; `json`/`yaml`: `istioctl analyze -o json|yaml`'s messages.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: report::Format,
    /// Silence CODE on a resource, as istioctl: `IST0102=Namespace frod`, `IST0101=VirtualService *.default`
    /// or `IST0101=VirtualService/default/*` (`*` is a wildcard). Repeatable.
    #[arg(short = 'S', long, value_name = "CODE=RESOURCE")]
    suppress: Vec<report::Suppression>,
    /// Print findings at this level or above (istioctl's flag).
    #[arg(long, value_enum, default_value = "Info")]
    output_threshold: report::Level,
    /// Exit 1 when a finding is at this level or above (istioctl's flag).
    #[arg(long, value_enum, default_value = "Error")]
    failure_threshold: report::Level,
}

#[derive(Args)]
struct RoutesArgs {
    #[arg(long, env = "PORTICO_CONFIG", value_delimiter = ',', required = true)]
    config: Vec<PathBuf>,
    #[command(flatten)]
    instance: InstanceArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--labels: `{pair}` is not k=v"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn options(i: &InstanceArgs) -> Result<Options> {
    let locality = match i.locality.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) if l.split('/').count() > 3 || l.starts_with('/') => {
            anyhow::bail!("--locality: `{l}` is not region/zone/subzone")
        }
        Some(l) => Some(l.to_string()),
    };
    Ok(Options {
        labels: parse_labels(&i.labels)?,
        gateway_namespace: i.gateway_namespace.clone(),
        locality,
        gateway_class: i.gateway_class.clone(),
        domain_suffix: domain_suffix(&i.domain_suffix)?,
        now: None,
    })
}

/// `--domain-suffix`: a DNS name; dots around it are dropped (`cluster.local.` is the same domain).
fn domain_suffix(s: &str) -> Result<String> {
    let d = s.trim().trim_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.is_empty() || !d.split('.').all(label_ok) {
        anyhow::bail!("--domain-suffix: `{s}` is not a DNS domain (e.g. cluster.local)");
    }
    Ok(d)
}

/// Load and compile; diagnostics of parsing and compiling together, sorted by place.
fn load_and_compile(
    paths: Vec<PathBuf>,
    i: &InstanceArgs,
) -> Result<(portico_model::Compiled, Vec<portico_api::Diagnostic>)> {
    let mut opts = options(i)?;
    // Offline analysis judges certificate dates now, as istioctl does (IST0161).
    opts.now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    let mut source = files::FileSource::new(paths, &i.namespace);
    let load = source.load();
    let compiled = portico_model::compile(&load.resources, &opts);
    let mut diags = load.diagnostics;
    diags.extend(compiled.diagnostics.iter().cloned());
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
    Ok((compiled, diags))
}

fn parse_port_map(entries: &[String]) -> Result<std::collections::HashMap<u32, u16>> {
    let mut out = std::collections::HashMap::new();
    for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (gw, local) = e.split_once('=').ok_or_else(|| anyhow::anyhow!("--port-map: `{e}` is not GW=LOCAL"))?;
        let gw: u32 = gw.trim().parse().map_err(|_| anyhow::anyhow!("--port-map: `{gw}` is not a port number"))?;
        let local: u16 =
            local.trim().parse().map_err(|_| anyhow::anyhow!("--port-map: `{local}` is not a port number"))?;
        out.insert(gw, local);
    }
    Ok(out)
}

fn run_cmd(args: RunArgs, log_control: state::LogControl) -> Result<ExitCode> {
    let drain_timeout =
        portico_model::duration::parse(&args.drain_timeout).map_err(|e| anyhow::anyhow!("--drain-timeout: {e}"))?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let access_log: portico_telemetry::AccessLogFormat = args
        .access_log_format
        .as_deref()
        .unwrap_or(&args.access_log)
        .parse()
        .map_err(|e| anyhow::anyhow!("--access-log: {e}"))?;
    let otlp_endpoint = match args.otlp_endpoint.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(url) => {
            let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("--otlp-endpoint `{url}`: {e}"))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                anyhow::bail!("--otlp-endpoint `{url}`: an http://HOST:PORT/PATH URL is needed (OTLP HTTP/protobuf)");
            }
            Some(uri)
        }
    };
    if !(0.0..=100.0).contains(&args.trace_sampling) {
        anyhow::bail!("--trace-sampling: {} is not a percentage (0 to 100)", args.trace_sampling);
    }
    let mut options = options(&args.instance)?;
    let lease_duration =
        portico_model::duration::parse(&args.lease_duration).map_err(|e| anyhow::anyhow!("--lease-duration: {e}"))?;
    if lease_duration < std::time::Duration::from_secs(1) {
        anyhow::bail!("--lease-duration: at least 1s");
    }
    let kubernetes = args.kubernetes.then(|| {
        // In a pod, the gateway's namespace is the pod's own (Istio's gateway template sets
        // POD_NAMESPACE) unless given explicitly.
        if std::env::var_os("PORTICO_GATEWAY_NAMESPACE").is_none() && !explicit_gateway_namespace() {
            if let Some(ns) = std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()) {
                options.gateway_namespace = ns;
            }
        }
        run::KubeRun {
            kubeconfig: args.kubeconfig.clone(),
            options: portico_kube::KubeOptions {
                watch_namespaces: args.watch_namespace.iter().filter(|n| !n.is_empty()).cloned().collect(),
                domain_suffix: options.domain_suffix.clone(),
                secret_namespace: options.gateway_namespace.clone(),
                default_namespace: args.instance.namespace.clone(),
                status: (!args.no_status_write).then(|| portico_kube::StatusOptions {
                    lease_name: args.lease_name.clone(),
                    lease_namespace: options.gateway_namespace.clone(),
                    identity: lease_identity(),
                    lease_duration,
                    gateway_class: options.gateway_class.clone(),
                }),
            },
        }
    });
    let gateway_namespace = options.gateway_namespace.clone();
    run::run(run::RunConfig {
        config: args.config,
        options,
        namespace: args.instance.namespace.clone(),
        bind: args.bind,
        port_map: parse_port_map(&args.port_map)?,
        admin: args.admin,
        drain_timeout,
        limits: args.limits.to_limits()?,
        workers,
        access_log,
        metrics: args.metrics,
        otlp_endpoint,
        trace_sampling: args.trace_sampling,
        workload_name: args.workload_name,
        gateway_namespace,
        log_control,
        kubernetes,
        status: args.status,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The Lease holder identity: the pod's name (unique while it runs), else the host's, with the
/// process id so two processes on one host differ.
fn lease_identity() -> String {
    let host = ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|h| !h.is_empty()))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "portico".into());
    format!("{host}-{}", std::process::id())
}

/// `--gateway-namespace` given on the command line (clap's default is not a choice).
fn explicit_gateway_namespace() -> bool {
    std::env::args().any(|a| a == "--gateway-namespace" || a.starts_with("--gateway-namespace="))
}

/// Logs on stderr (the access log has stdout), with a filter `/logging?level=…` can change.
fn init_logging() -> state::LogControl {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        // kube's client logs every failed call of a retrying watch at error level; the source
        // reports an outage itself, once (see portico_kube::Status).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    // Colours only for a person at a terminal, not for log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi))
        .init();
    Box::new(move |directives: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let (compiled, mut diags) = load_and_compile(args.paths, &args.instance)?;
    report::suppress(&mut diags, &args.suppress);
    let failed = diags.iter().any(|d| report::Level::of(d) >= args.failure_threshold);
    diags.retain(|d| report::Level::of(d) >= args.output_threshold);
    let errors = diags.iter().filter(|d| d.is_error()).count();
    print!("{}", report::render(&diags, args.output));
    // Gateway API status on stderr: stdout stays the diagnostics alone.
    for st in &compiled.snapshot.gateway_api {
        for line in st.lines() {
            eprintln!("status {line}");
        }
    }
    let warnings = diags.iter().filter(|d| d.severity == portico_api::Severity::Warning).count();
    let infos = diags.len() - errors - warnings;
    eprintln!("{errors} error(s), {warnings} warning(s), {infos} info(s)");
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn routes(args: RoutesArgs) -> Result<ExitCode> {
    let (compiled, diags) = load_and_compile(args.config, &args.instance)?;
    for d in &diags {
        eprintln!("{d}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&compiled.snapshot)?);
    } else {
        print!("{}", portico_model::render::render(&compiled.snapshot));
    }
    Ok(ExitCode::SUCCESS)
}

fn convert_cmd(args: ConvertArgs) -> Result<ExitCode> {
    let target = match args.to.as_str() {
        "istio" => convert::Target::Istio,
        "gateway-api" => convert::Target::GatewayApi,
        other => anyhow::bail!("--to: `{other}` is not istio or gateway-api"),
    };
    let mut source = files::FileSource::new(args.paths, &args.namespace);
    let load = source.load();
    let suffix = domain_suffix(&args.domain_suffix)?;
    let out = convert::convert(&load.resources, target, &suffix);
    print!("{}", out.yaml);
    let mut findings = convert::load_findings(&load.diagnostics);
    findings.extend(out.findings);
    for f in &findings {
        eprintln!("{}: warning {}", f.at, f.message);
    }
    eprintln!("{} finding(s)", findings.len());
    Ok(ExitCode::SUCCESS)
}

#[global_allocator]
static ALLOCATOR: alloc::MiMalloc = alloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => {
            let log_control = init_logging();
            run_cmd(*a, log_control)
        }
        Command::Validate(a) => validate(a),
        Command::Routes(a) => routes(a),
        Command::Convert(a) => convert_cmd(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portico: {e:#}");
            ExitCode::from(2)
        }
    }
}
