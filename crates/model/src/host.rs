//! Host names as Istio compares them: wildcards, short names, `namespace/host` gateway hosts.

/// Istio's short-name resolution: a name without a dot gets `.<namespace>.svc.<domain_suffix>`
/// (the cluster's DNS domain, `cluster.local` unless the cluster says otherwise);
/// `*`, IP addresses and names with a dot are kept as written.
pub fn resolve_short_name(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host == "*" || host.contains('.') || host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_ascii_lowercase();
    }
    format!("{}.{}.svc.{}", host.to_ascii_lowercase(), namespace, domain_suffix)
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

/// Names to entries, looked up as Envoy picks a virtual host by `Host` and a filter chain by
/// SNI: the exact name, then the longest wildcard suffix (`*.x.com` matches any depth below
/// `x.com`, not `x.com` itself), then `*`. Case-insensitive; the first entry for a name wins.
/// The one place wildcard lookup is decided (route tables and SNI both use it).
#[derive(Clone, Debug, Default)]
pub struct HostIndex {
    /// Looked up per request and per TLS handshake; the keys come from the config, so a fast
    /// hash without flood resistance is fine (a client's name only probes it).
    exact: rustc_hash::FxHashMap<String, usize>,
    /// `(suffix including the dot, entry)`, longest suffix first, then by entry.
    wildcards: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

impl HostIndex {
    /// Index `(pattern, entry)` pairs.
    pub fn new<'a>(patterns: impl IntoIterator<Item = (&'a str, usize)>) -> HostIndex {
        let mut idx = HostIndex::default();
        for (name, i) in patterns {
            if name == "*" {
                idx.catch_all.get_or_insert(i);
            } else if let Some(suffix) = name.strip_prefix('*') {
                let suffix = suffix.to_ascii_lowercase();
                if !idx.wildcards.iter().any(|(s, _)| *s == suffix) {
                    idx.wildcards.push((suffix, i));
                }
            } else {
                idx.exact.entry(name.to_ascii_lowercase()).or_insert(i);
            }
        }
        idx.wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        idx
    }

    /// The entry for a concrete name (any case).
    pub fn lookup(&self, name: &str) -> Option<usize> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup_lower(&name.to_ascii_lowercase())
        } else {
            self.lookup_lower(name)
        }
    }

    fn lookup_lower(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, i)| *i)
            .or(self.catch_all)
    }

    /// The `*` entry (which also takes TLS clients that send no SNI).
    pub fn catch_all(&self) -> Option<usize> {
        self.catch_all
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
    fn host_index_prefers_exact_then_longest_wildcard_then_star() {
        let idx = HostIndex::new([("*", 0), ("*.example.com", 1), ("*.a.example.com", 2), ("A.example.com", 3)]);
        assert_eq!(idx.lookup("a.example.com"), Some(3));
        assert_eq!(idx.lookup("x.A.example.com"), Some(2));
        assert_eq!(idx.lookup("b.example.com"), Some(1));
        assert_eq!(idx.lookup("example.com"), Some(0));
        assert_eq!(idx.catch_all(), Some(0));
        let idx = HostIndex::new([("a.io", 0), ("a.io", 1)]);
        assert_eq!(idx.lookup("a.io"), Some(0));
        assert_eq!(idx.lookup("b.io"), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(resolve_short_name("reviews", "default", "cluster.local"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve_short_name("Reviews", "prod", "example.internal"), "reviews.prod.svc.example.internal");
        assert_eq!(resolve_short_name("reviews.prod", "default", "example.internal"), "reviews.prod");
        assert_eq!(resolve_short_name("10.0.0.1", "default", "cluster.local"), "10.0.0.1");
        assert_eq!(resolve_short_name("*", "default", "cluster.local"), "*");
    }
}
