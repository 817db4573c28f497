//! DNS discovery: endpoint host names are resolved with tokio's resolver in the background and
//! re-resolved every `dns_refresh`; requests only read the cached result. IPv4 addresses are
//! preferred when a name has both (Envoy `V4_PREFERRED`). A failed lookup keeps the last good
//! addresses.

use super::lb::Meta;
use super::ClusterPool;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::watch;

pub(super) fn spawn(
    pool: Weak<ClusterPool>,
    statics: Vec<(SocketAddr, Meta)>,
    names: Vec<(String, u16, Meta)>,
    refresh: Duration,
    stop: watch::Receiver<bool>,
) {
    tokio::spawn(run(pool, statics, names, refresh, stop));
}

async fn run(
    pool: Weak<ClusterPool>,
    statics: Vec<(SocketAddr, Meta)>,
    names: Vec<(String, u16, Meta)>,
    refresh: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let mut addrs = statics.clone();
        let mut failed = false;
        for (name, port, meta) in &names {
            match tokio::net::lookup_host((name.as_str(), *port)).await {
                Ok(found) => {
                    let all: Vec<SocketAddr> = found.collect();
                    let v4: Vec<SocketAddr> = all.iter().copied().filter(SocketAddr::is_ipv4).collect();
                    let chosen = if v4.is_empty() { all } else { v4 };
                    addrs.extend(chosen.into_iter().map(|a| (a, meta.clone())));
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(host = %name, error = %e, "DNS resolution failed; keeping the last good addresses");
                }
            }
        }
        let Some(p) = pool.upgrade() else { return };
        let had_some = !p.balancer.load().eps.is_empty();
        if !(failed && had_some) {
            p.set_endpoints(addrs, None);
        }
        p.mark_resolved();
        drop(p);
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}
