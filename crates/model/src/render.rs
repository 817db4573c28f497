//! `portico routes`: the effective listeners and route tables as a readable table.

use crate::matcher::{RequestMatch, StrMatch};
use crate::snapshot::{ListenerKind, Route, RouteAction, RouteTable, Snapshot, WeightedClusters};
use std::fmt::Write;

fn str_match(m: &StrMatch) -> String {
    match m {
        StrMatch::Exact(s) => format!("exact {s}"),
        StrMatch::Prefix(s) => format!("prefix {s}"),
        StrMatch::Regex(r) => format!("regex {}", r.source),
        StrMatch::Present => "present".to_string(),
    }
}

fn describe_match(m: &RequestMatch) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &m.uri {
        parts.push(format!("{}{}", str_match(u), if m.ignore_uri_case { " (ignore case)" } else { "" }));
    }
    for (label, v) in [("method", &m.method), ("scheme", &m.scheme), ("authority", &m.authority)] {
        if let Some(v) = v {
            parts.push(format!("{label} {}", str_match(v)));
        }
    }
    for (k, v) in &m.headers {
        parts.push(format!("header {k} {}", str_match(v)));
    }
    for (k, v) in &m.without_headers {
        parts.push(format!("without header {k} {}", str_match(v)));
    }
    for (k, v) in &m.query_params {
        parts.push(format!("query {k} {}", str_match(v)));
    }
    if let Some(p) = m.port {
        parts.push(format!("port {p}"));
    }
    if parts.is_empty() {
        "any".to_string()
    } else {
        parts.join(", ")
    }
}

fn describe_weighted(w: &WeightedClusters) -> String {
    w.destinations
        .iter()
        .map(|d| {
            let share = f64::from(d.weight) * 100.0 / f64::from(w.total_weight.max(1));
            let subset = d.subset.as_deref().map(|s| format!(" subset {s}")).unwrap_or_default();
            if w.destinations.len() == 1 {
                format!("{}:{}{subset}", d.host, d.port)
            } else {
                format!("{}:{}{subset} ({share:.0}%)", d.host, d.port)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_route(r: &Route) -> String {
    let m = r.matches.first().map(describe_match).unwrap_or_else(|| "any".to_string());
    let action = match &r.action {
        RouteAction::Forward(w) => format!("→ {}", describe_weighted(w)),
        RouteAction::Redirect(rd) => {
            format!("redirect {} {}{}", rd.code, rd.authority.as_deref().unwrap_or(""), rd.uri.as_deref().unwrap_or(""))
        }
        RouteAction::DirectResponse { status, .. } => format!("direct response {status}"),
    };
    format!("{m}  {action}   [VirtualService {} http[{}]]", r.virtual_service, r.index)
}

fn table(out: &mut String, t: &RouteTable, indent: &str) {
    if t.virtual_hosts.is_empty() {
        let _ = writeln!(out, "{indent}(no virtual hosts: every request gets 404 NR)");
    }
    for vh in &t.virtual_hosts {
        let redirect = if vh.https_redirect { "  (httpsRedirect: 301 to https)" } else { "" };
        let _ = writeln!(out, "{indent}{}{redirect}", vh.name);
        for (i, r) in vh.routes.iter().enumerate() {
            let _ = writeln!(out, "{indent}  {}. {}", i + 1, describe_route(r));
        }
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if s.listeners.is_empty() {
        out.push_str("no listeners: no Gateway selected by this instance's labels has a server\n");
    }
    for l in &s.listeners {
        let kind = match l.kind {
            ListenerKind::Http => "HTTP",
            ListenerKind::Tls => "TLS",
            ListenerKind::Tcp => "TCP",
        };
        let _ = writeln!(out, "port {} ({kind})", l.port);
        for sb in &l.servers {
            let _ = writeln!(
                out,
                "  server {}[{}] {} {} hosts {}",
                sb.gateway,
                sb.index,
                sb.port_name,
                sb.protocol.as_str(),
                sb.hosts.join(",")
            );
            if let Some(t) = &sb.http {
                table(&mut out, t, "    ");
            }
            for r in &sb.tls_routes {
                let _ = writeln!(
                    out,
                    "    sni {}  → {}   [VirtualService {} tls[{}]]",
                    r.sni_hosts.join(","),
                    describe_weighted(&r.destinations),
                    r.virtual_service,
                    r.index
                );
            }
            if l.kind == ListenerKind::Tls {
                for r in &sb.tcp_routes {
                    let _ = writeln!(
                        out,
                        "    tcp → {}   [VirtualService {} tcp[{}]]",
                        describe_weighted(&r.destinations),
                        r.virtual_service,
                        r.index
                    );
                }
            }
        }
        if let Some(t) = &l.http {
            table(&mut out, t, "  ");
        }
        for r in &l.tcp_routes {
            let _ = writeln!(
                out,
                "  tcp → {}   [VirtualService {} tcp[{}]]",
                describe_weighted(&r.destinations),
                r.virtual_service,
                r.index
            );
        }
    }
    if !s.clusters.is_empty() {
        out.push_str("clusters\n");
        for c in s.clusters.values() {
            let eps: Vec<String> = c.endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
            let _ = writeln!(out, "  {}  endpoints [{}]", c.name, eps.join(", "));
        }
    }
    if !s.gateway_api.is_empty() {
        out.push_str("gateway api status\n");
        for st in &s.gateway_api {
            for line in st.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}
