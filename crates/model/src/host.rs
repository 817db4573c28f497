//! Host names as Istio compares them: wildcards, short names, `namespace/host` gateway hosts.

/// Istio's short-name resolution: a name without a dot gets `.<namespace>.svc.cluster.local`;
/// `*`, IP addresses and names with a dot are kept as written.
pub fn resolve_short_name(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') || host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_ascii_lowercase();
    }
    format!("{}.{}.svc.cluster.local", host.to_ascii_lowercase(), namespace)
}

/// Does pattern `p` (exact, `*.suffix` or `*`) match the concrete or wildcard host `h`?
/// `*.x.com` matches any depth below `x.com` but not `x.com` itself. Case-insensitive.
pub fn matches(p: &str, h: &str) -> bool {
    if p == "*" {
        return true;
    }
    if let Some(suffix) = p.strip_prefix('*') {
        // A wildcard `h` matches only when it is at least as narrow.
        let h_tail = h.strip_prefix('*').unwrap_or(h);
        return h_tail.len() >= suffix.len()
            && ends_with_ignore_case(h_tail, suffix)
            && (h_tail.len() > suffix.len() || h.starts_with('*'));
    }
    !h.starts_with('*') && p.eq_ignore_ascii_case(h)
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The narrower of two hosts when they overlap (`*.x.com` ∩ `a.x.com` = `a.x.com`), else None.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if matches(a, b) {
        Some(b.to_ascii_lowercase())
    } else if matches(b, a) {
        Some(a.to_ascii_lowercase())
    } else {
        None
    }
}

/// A Gateway server host `ns/host`: the namespace part (`*` any, `.` the Gateway's own, else a
/// name) and the host part. A host without `/` allows every namespace.
pub fn split_namespace(host: &str) -> (&str, &str) {
    match host.split_once('/') {
        Some((ns, h)) => (ns, h),
        None => ("*", host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_rules() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("*.example.com", "*.a.example.com"));
        assert!(matches("*.example.com", "*.example.com"));
        assert!(!matches("*.a.example.com", "*.example.com"));
        assert!(matches("*", "anything.io"));
        assert!(matches("A.example.com", "a.EXAMPLE.com"));
        assert!(!matches("a.example.com", "*.example.com"));
    }

    #[test]
    fn intersections() {
        assert_eq!(intersect("*.example.com", "a.example.com").as_deref(), Some("a.example.com"));
        assert_eq!(intersect("a.example.com", "*").as_deref(), Some("a.example.com"));
        assert_eq!(intersect("*", "*.x.com").as_deref(), Some("*.x.com"));
        assert_eq!(intersect("a.x.com", "b.x.com"), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(resolve_short_name("reviews", "default"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve_short_name("reviews.prod", "default"), "reviews.prod");
        assert_eq!(resolve_short_name("10.0.0.1", "default"), "10.0.0.1");
        assert_eq!(resolve_short_name("*", "default"), "*");
    }
}
