//! `portico run`: load, compile, serve; watch the config and reload; admin server; drain.
//!
//! Threads: the data plane runs on its own multi-thread runtime (`--workers`); config work and
//! the admin server run on a separate single-thread runtime, so a compile or a metrics scrape
//! never takes request time.

use crate::files::FileSource;
use crate::sink::TelemetrySink;
use crate::sources::Sources;
use crate::state::{self, LogControl, SharedState};
use anyhow::{Context, Result};
use portico_model::Options;
use portico_proxy::{Proxy, ProxyOptions};
use portico_telemetry::{
    AccessLogFormat, MetricsConfig, SourceLabels, Telemetry, TelemetryConfig, TraceConfig, Tracer,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub struct RunConfig {
    pub config: Vec<PathBuf>,
    pub options: Options,
    pub namespace: String,
    pub bind: IpAddr,
    pub port_map: HashMap<u32, u16>,
    pub admin: SocketAddr,
    pub drain_timeout: Duration,
    /// Downstream limits and timeouts (`--max-connections`, `--idle-timeout`, …).
    pub limits: Limits,
    pub workers: usize,
    pub access_log: AccessLogFormat,
    /// `--metrics`: a second address serving only `/stats/prometheus`.
    pub metrics: Option<SocketAddr>,
    pub otlp_endpoint: Option<http::Uri>,
    pub trace_sampling: f64,
    /// `source_workload`; the namespace is `gateway_namespace`.
    pub workload_name: String,
    pub gateway_namespace: String,
    pub log_control: LogControl,
    /// `--kubernetes`: read resources from the API server too.
    pub kubernetes: Option<KubeRun>,
    /// `--status`: an address serving only `/healthz/ready` (Istio's port 15021).
    pub status: Option<SocketAddr>,
}

/// The Kubernetes source's settings.
pub struct KubeRun {
    /// `--kubeconfig`; else in-cluster, else `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    pub options: portico_kube::KubeOptions,
}

/// Downstream limits and timeouts, passed to the data plane as they are.
pub struct Limits {
    pub max_connections: Option<usize>,
    pub request_headers_timeout: Duration,
    pub idle_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub max_request_headers_bytes: usize,
    pub max_request_headers: usize,
    pub max_uri_length: usize,
    pub h2_max_concurrent_streams: u32,
    pub accept_http10: bool,
    pub path_normalization: portico_proxy::path::PathNormalization,
}

/// Load, compile and apply once, then analyze. Returns the new fingerprint.
async fn reload(
    source: &mut Sources,
    cfg: &RunConfig,
    proxy: &Proxy,
    dp: &tokio::runtime::Handle,
    state: &SharedState,
    sink: &TelemetrySink,
    last_fingerprint: Option<u64>,
) -> Option<u64> {
    let began = Instant::now();
    let load = source.load();
    if Some(load.fingerprint) == last_fingerprint {
        return last_fingerprint;
    }
    let loaded = Instant::now();
    let built = portico_model::build(&load.resources, &cfg.options);
    let compiled = Instant::now();
    let mut diags = load.diagnostics;
    diags.extend(built.diagnostics);
    log_diagnostics(&mut diags);
    for f in &load.kept_last_good {
        tracing::error!("{}: does not parse; serving its last good version", f.display());
    }
    let snapshot = Arc::new(built.snapshot);
    source.publish_status(load.complete, &snapshot);
    // Bind on the data-plane runtime so listeners belong to its reactor.
    let p = proxy.clone();
    let s = snapshot.clone();
    let applied = match dp.spawn(async move { p.apply(s).await }).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("apply task failed: {e}")),
    };
    let metrics = sink.telemetry().metrics();
    if applied.is_ok() {
        sink.apply(&snapshot);
        metrics.gateway().listeners.set(i64::try_from(proxy.local_addrs().len()).unwrap_or(i64::MAX));
    }
    let swapped = Instant::now();
    // Served already: istioctl's analyzers only add findings.
    let mut found = built.analysis.run(&snapshot);
    log_diagnostics(&mut found);
    diags.extend(found);
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
    let mut retired = None;
    let mut st = state::lock(state);
    st.diagnostics = diags;
    st.kept_last_good = load.kept_last_good.iter().map(|p| p.display().to_string()).collect();
    let fingerprint = match applied {
        Ok(()) => {
            st.generation += 1;
            retired = st.snapshot.replace(snapshot);
            st.last_reload_ok = !load.failed;
            st.last_reload_error = None;
            st.last_good_unix = state::unix_now();
            if load.complete && !st.source_ready {
                tracing::info!("every source has synced: ready");
            }
            st.source_ready = load.complete;
            if load.failed {
                // Served, but with a file's last good version: the change itself was rejected.
                metrics.config_reload_failed();
                metrics.gateway().config_generation.set(i64::try_from(st.generation).unwrap_or(i64::MAX));
            } else {
                metrics.config_reload_succeeded(st.generation, SystemTime::now());
            }
            let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
            tracing::info!(
                generation = st.generation,
                load_ms = ms(began, loaded),
                compile_ms = ms(loaded, compiled),
                swap_ms = ms(compiled, swapped),
                analyze_ms = ms(swapped, Instant::now()),
                "config applied"
            );
            Some(load.fingerprint)
        }
        Err(e) => {
            tracing::error!("config not applied, the previous one stays: {e}");
            st.last_reload_ok = false;
            st.last_reload_error = Some(e);
            metrics.config_reload_failed();
            // Retry this content on the next change or poll.
            last_fingerprint
        }
    };
    // The old snapshot is freed (a large one takes a while) with the admin server free to
    // read the new state.
    drop(st);
    drop(retired);
    fingerprint
}

/// Log diagnostics in file order, each once.
fn log_diagnostics(diags: &mut Vec<portico_api::Diagnostic>) {
    diags.sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    diags.dedup();
    for d in diags.iter() {
        if d.is_error() {
            tracing::error!("{d}");
        } else {
            tracing::warn!("{d}");
        }
    }
}

/// Watch every config path's directory (not the files: a ConfigMap swaps a `..data` symlink).
fn watch(paths: &[PathBuf], tx: mpsc::UnboundedSender<()>) -> Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })
    .context("cannot start the file watcher")?;
    for p in paths {
        let dir =
            if p.is_dir() { p.clone() } else { p.parent().map(|d| d.to_path_buf()).unwrap_or_else(|| ".".into()) };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        watcher.watch(&dir, RecursiveMode::Recursive).with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    Ok(watcher)
}

/// Config work (parse, compile, analyze), the admin server and the trace exporter run on this
/// thread, after the data plane's threads are started: it yields to them when they compete for a
/// core, so a large reload under full load is applied later rather than taking request time. Nice
/// 10 still gives it about a tenth of a contended core (CFS weights 110 against 1024), so a
/// reload is never starved. Threads started from here on inherit it; the workers, the access-log
/// writer and the blocking pool (started from the workers) do not.
fn lower_control_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!("cannot lower the control thread's priority: {e}");
    }
}

pub fn run(mut cfg: RunConfig) -> Result<()> {
    let mut log_control = std::mem::replace(&mut cfg.log_control, Box::new(|_| Err("unavailable".into())));
    let dp = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers.max(1))
        .thread_name("portico-worker")
        .enable_all()
        .build()
        .context("cannot start the data-plane runtime")?;
    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let telemetry = Telemetry::new(TelemetryConfig {
        metrics: MetricsConfig {
            source: SourceLabels::new(cfg.workload_name.as_str(), cfg.gateway_namespace.as_str()),
            ..MetricsConfig::default()
        },
        access_log: cfg.access_log,
        ..TelemetryConfig::default()
    })
    .context("cannot start the access log")?;
    // The exporter runs on the control runtime: a slow collector never takes data-plane time.
    let tracer = cfg.otlp_endpoint.clone().map(|endpoint| {
        let gw = telemetry.metrics().gateway();
        let (tracer, export) = Tracer::new(
            TraceConfig {
                sampling_percent: cfg.trace_sampling,
                ..TraceConfig::new(endpoint, format!("{}.{}", cfg.workload_name, cfg.gateway_namespace))
            },
            gw.spans_exported.clone(),
            gw.spans_dropped.clone(),
        );
        control.spawn(export);
        tracer
    });
    let sink = Arc::new(TelemetrySink::new(telemetry.clone(), tracer.clone()));
    let proxy = {
        let _guard = dp.enter();
        Proxy::new(ProxyOptions {
            bind: cfg.bind,
            port_map: cfg.port_map.clone(),
            drain_timeout: cfg.drain_timeout,
            max_connections: cfg.limits.max_connections,
            header_read_timeout: cfg.limits.request_headers_timeout,
            idle_timeout: cfg.limits.idle_timeout,
            stream_idle_timeout: cfg.limits.stream_idle_timeout,
            max_request_headers_bytes: cfg.limits.max_request_headers_bytes,
            max_request_headers: cfg.limits.max_request_headers,
            max_uri_length: cfg.limits.max_uri_length,
            accept_http10: cfg.limits.accept_http10,
            path_normalization: cfg.limits.path_normalization,
            h2_max_concurrent_streams: cfg.limits.h2_max_concurrent_streams,
            access_log: sink.clone(),
            tracer,
            telemetry: Some(telemetry.clone()),
            ..ProxyOptions::default()
        })
    };
    let state = state::shared();
    let dp_handle = dp.handle().clone();
    lower_control_priority();
    let result = control.block_on(async {
        let kube = match &cfg.kubernetes {
            None => None,
            Some(k) => {
                let client = portico_kube::client(k.kubeconfig.as_deref()).await?;
                Some(portico_kube::KubeSource::start(client, k.options.clone()))
            }
        };
        let files =
            (!cfg.config.is_empty() || kube.is_none()).then(|| FileSource::new(cfg.config.clone(), &cfg.namespace));
        let mut source = Sources { files, kube: kube.clone() };
        let mut fingerprint = reload(&mut source, &cfg, &proxy, &dp_handle, &state, &sink, None).await;
        {
            let st = state::lock(&state);
            if st.snapshot.is_none() {
                anyhow::bail!(
                    "the first config could not be applied: {}",
                    st.last_reload_error.clone().unwrap_or_default()
                );
            }
        }
        for (port, addr) in proxy.local_addrs() {
            tracing::info!("listening on {addr} for Gateway port {port}");
        }
        let admin_ctx = Arc::new(crate::admin::Admin {
            proxy: proxy.clone(),
            state: state.clone(),
            sink: sink.clone(),
            log_control: std::mem::replace(&mut log_control, Box::new(|_| Err("unavailable".into()))),
            kube: kube.clone(),
        });
        let admin = crate::admin::serve(cfg.admin, admin_ctx.clone(), crate::admin::Mode::All).await?;
        tracing::info!("admin on http://{admin}");
        if let Some(addr) = cfg.metrics {
            let m = crate::admin::serve(addr, admin_ctx.clone(), crate::admin::Mode::Metrics).await?;
            tracing::info!("metrics on http://{m}/stats/prometheus");
        }
        if let Some(addr) = cfg.status {
            let m = crate::admin::serve(addr, admin_ctx, crate::admin::Mode::Status).await?;
            tracing::info!("status on http://{m}/healthz/ready");
        }

        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = if cfg.config.is_empty() { None } else { Some(watch(&cfg.config, tx)?) };
        let kube_changed = || async {
            match &kube {
                Some(k) => k.changed().await,
                None => std::future::pending().await,
            }
        };
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        poll.tick().await;
        loop {
            tokio::select! {
                _ = rx.recv() => {
                    // Debounce: editors and ConfigMap swaps write several events at once.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                    fingerprint = reload(&mut source, &cfg, &proxy, &dp_handle, &state, &sink, fingerprint).await;
                }
                _ = kube_changed() => {
                    // Debounce: a relist or a rollout brings many events at once; one compile.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    fingerprint = reload(&mut source, &cfg, &proxy, &dp_handle, &state, &sink, fingerprint).await;
                }
                _ = poll.tick() => {
                    // A safety net for events the watcher cannot see (some network filesystems).
                    fingerprint = reload(&mut source, &cfg, &proxy, &dp_handle, &state, &sink, fingerprint).await;
                }
                _ = sigterm.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("draining (up to {:?})", cfg.drain_timeout);
        let p = proxy.clone();
        let _ = dp_handle.spawn(async move { p.shutdown().await }).await;
        Ok(())
    });
    dp.shutdown_timeout(Duration::from_millis(100));
    telemetry.access_log().flush(Duration::from_secs(1));
    result
}
