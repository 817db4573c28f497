//! Consistent-hash load balancing (DestinationRule `loadBalancer.consistentHash`): Envoy's ring
//! hash (Ketama) and Maglev tables, built when the endpoint list changes (never per request);
//! a request's key is hashed and looked up.
//!
//! Both give stickiness (same key → same endpoint while the endpoint set is unchanged) and
//! near-minimal disruption: removing an endpoint moves the keys that were on it, plus a few
//! others — for the ring because Envoy rescales the points per endpoint to keep
//! `minimumRingSize` (1024/5 → 1024/4 points each: ~10 % of other keys move), for Maglev by
//! construction (its paper bounds the extra movement to a few percent).
//! Endpoint weights count as Envoy counts them: the ring gives each endpoint points in
//! proportion to its share of the total weight (scaled so the lightest endpoint still gets its
//! share of `minimumRingSize`), and the Maglev fill lets an endpoint take a slot in a round only
//! as often as its weight relative to the heaviest one allows.

use crate::rng::FastRng;
use http::header::{self, HeaderValue};
use portico_model::snapshot::{HashPolicy, HashTable, LbPolicy};
use std::net::SocketAddr;

/// The request's hash key for a consistent-hash cluster, and the `Set-Cookie` to send when the
/// hash cookie was absent and has a `ttl` (Envoy generates it then; without `ttl` it does not,
/// and the request is balanced at random).
pub(crate) fn request_key(
    lb: &LbPolicy,
    parts: &http::request::Parts,
    peer: SocketAddr,
    rng: &FastRng,
) -> (Option<u64>, Option<HeaderValue>) {
    let LbPolicy::ConsistentHash(policy, _) = lb else { return (None, None) };
    match policy {
        HashPolicy::Header(name) => (parts.headers.get(name.as_str()).map(|v| hash64(v.as_bytes())), None),
        HashPolicy::SourceIp => (Some(hash64(peer.ip().to_string().as_bytes())), None),
        HashPolicy::QueryParameter(q) => {
            let value = parts.uri.query().and_then(|query| {
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == q).then_some(v)
                })
            });
            (value.map(|v| hash64(v.as_bytes())), None)
        }
        HashPolicy::Cookie { name, path, ttl } => {
            let found = parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"'))
                });
            if let Some(v) = found {
                return (Some(hash64(v.as_bytes())), None);
            }
            let Some(ttl) = ttl else { return (None, None) };
            let value = format!("{:016x}", rng.next_u64());
            let mut cookie = format!("{name}=\"{value}\"");
            if !ttl.is_zero() {
                cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
            }
            if let Some(p) = path {
                cookie.push_str(&format!("; Path={p}"));
            }
            cookie.push_str("; HttpOnly");
            (Some(hash64(value.as_bytes())), HeaderValue::from_str(&cookie).ok())
        }
    }
}

/// 64-bit FNV-1a then a SplitMix64 finalizer: stable across runs and platforms (the table must
/// not change between processes, or stickiness would break at every restart).
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// A lookup table from hash to endpoint index.
pub(crate) enum Table {
    /// Sorted (point, endpoint index).
    Ring(Vec<(u64, u32)>),
    /// Endpoint index per slot.
    Maglev(Vec<u32>),
}

/// Upper bound on the ring (Envoy's default maximum_ring_size is 8M; our default is far below).
const MAX_RING: u64 = 1 << 23;

impl Table {
    /// Build for `addrs` (the pool's endpoint list, in its order) with their `weights` (same
    /// order; missing ones count 1). `None` for an empty list.
    pub(crate) fn build(kind: &HashTable, addrs: &[SocketAddr], weights: &[u32]) -> Option<Table> {
        if addrs.is_empty() {
            return None;
        }
        let n = addrs.len() as u64;
        let names: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        let w: Vec<f64> = (0..addrs.len()).map(|i| f64::from(weights.get(i).copied().unwrap_or(1).max(1))).collect();
        let total: f64 = w.iter().sum();
        Some(match *kind {
            HashTable::Ring { minimum_size } => {
                // Envoy: scale = ceil(min_normalized_weight × minimumRingSize) / min_normalized_weight
                // (capped), and each endpoint gets normalized_weight × scale points.
                let min_norm = w.iter().copied().fold(f64::INFINITY, f64::min) / total;
                let min_size = minimum_size.clamp(1, MAX_RING) as f64;
                let scale = ((min_norm * min_size).ceil() / min_norm).min(MAX_RING as f64);
                let mut ring = Vec::with_capacity(usize::try_from(minimum_size.clamp(1, MAX_RING).max(n)).unwrap_or(0));
                // Running totals, so rounding never drifts over the whole ring.
                let (mut target, mut placed) = (0.0f64, 0u64);
                for (i, name) in names.iter().enumerate() {
                    target += scale * w[i] / total;
                    let mut r = 0u64;
                    while (placed as f64) < target.round() || r == 0 {
                        // Envoy's point names are "address_replica".
                        let point = hash64(format!("{name}_{r}").as_bytes());
                        ring.push((point, i as u32));
                        placed += 1;
                        r += 1;
                    }
                }
                ring.sort_unstable();
                Table::Ring(ring)
            }
            HashTable::Maglev { table_size } => {
                // Maglev needs a prime table size for the permutations to cover every slot.
                let m = next_prime(table_size.clamp(n.max(7), 5_000_011));
                let perms: Vec<(u64, u64)> = names
                    .iter()
                    .map(|name| {
                        let offset = hash64(name.as_bytes()) % m;
                        let skip = hash64(format!("{name}#skip").as_bytes()) % (m - 1) + 1;
                        (offset, skip)
                    })
                    .collect();
                let max_w = w.iter().copied().fold(0.0f64, f64::max);
                let size = usize::try_from(m).unwrap_or(usize::MAX);
                let mut table = vec![u32::MAX; size];
                let mut next = vec![0u64; names.len()];
                // Weighted fill: each round an endpoint earns weight/max of a slot and takes one
                // once it has earned a whole one (equal weights: every endpoint every round).
                let mut credit = vec![0.0f64; names.len()];
                let mut filled = 0usize;
                'fill: loop {
                    for (i, (offset, skip)) in perms.iter().enumerate() {
                        credit[i] += w[i] / max_w;
                        if credit[i] < 1.0 {
                            continue;
                        }
                        credit[i] -= 1.0;
                        let mut c = (offset + next[i] * skip) % m;
                        while table[c as usize] != u32::MAX {
                            next[i] += 1;
                            c = (offset + next[i] * skip) % m;
                        }
                        table[c as usize] = i as u32;
                        next[i] += 1;
                        filled += 1;
                        if filled == size {
                            break 'fill;
                        }
                    }
                }
                Table::Maglev(table)
            }
        })
    }

    /// The endpoint index for `hash`.
    pub(crate) fn lookup(&self, hash: u64) -> Option<usize> {
        match self {
            Table::Ring(ring) => {
                let i = ring.partition_point(|(p, _)| *p < hash);
                ring.get(i).or_else(|| ring.first()).map(|(_, e)| *e as usize)
            }
            Table::Maglev(t) => {
                let len = t.len() as u64;
                if len == 0 {
                    return None;
                }
                t.get((hash % len) as usize).map(|e| *e as usize)
            }
        }
    }
}

fn next_prime(mut n: u64) -> u64 {
    let is_prime = |n: u64| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d));
    while !is_prime(n) {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([10, 0, 0, (i + 1) as u8], 8080))).collect()
    }

    fn moved(kind: HashTable) -> (usize, usize) {
        let all = addrs(5);
        let fewer: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != all[2]).collect();
        let (a, b) = (Table::build(&kind, &all, &[]).unwrap(), Table::build(&kind, &fewer, &[]).unwrap());
        let (mut on_removed, mut moved_others) = (0, 0);
        for k in 0..10_000u32 {
            let h = hash64(format!("user-{k}").as_bytes());
            let before = all[a.lookup(h).unwrap()];
            let after = fewer[b.lookup(h).unwrap()];
            if before == all[2] {
                on_removed += 1;
            } else if before != after {
                moved_others += 1;
            }
        }
        (on_removed, moved_others)
    }

    #[test]
    fn ring_moves_few_other_keys() {
        let (on_removed, moved_others) = moved(HashTable::Ring { minimum_size: 1024 });
        assert!(on_removed > 1000, "{on_removed}");
        // Rescaled points per endpoint: allow 15 % of all keys.
        assert!(moved_others < 1500, "{moved_others}");
    }

    #[test]
    fn maglev_moves_few_other_keys() {
        let (on_removed, moved_others) = moved(HashTable::Maglev { table_size: 65537 });
        assert!(on_removed > 1000, "{on_removed}");
        // Maglev trades exact minimal disruption for balance: allow 5 % of all keys.
        assert!(moved_others < 500, "{moved_others}");
    }

    #[test]
    fn maglev_balances() {
        let t = Table::build(&HashTable::Maglev { table_size: 65537 }, &addrs(3), &[]).unwrap();
        let Table::Maglev(slots) = &t else { panic!() };
        let mut counts = [0usize; 3];
        for s in slots {
            counts[*s as usize] += 1;
        }
        assert!(counts.iter().all(|c| (21_000..23_000).contains(c)), "{counts:?}");
    }

    fn shares(t: &Table, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for k in 0..20_000u32 {
            counts[t.lookup(hash64(format!("key-{k}").as_bytes())).unwrap()] += 1;
        }
        counts.iter().map(|c| *c as f64 / 20_000.0).collect()
    }

    #[test]
    fn weights_shape_ring_and_maglev() {
        // 3:1:1 → 60/20/20 % of the keys, within 5 points (ring: hash-point variance).
        for kind in [HashTable::Ring { minimum_size: 1024 }, HashTable::Maglev { table_size: 65537 }] {
            let t = Table::build(&kind, &addrs(3), &[3, 1, 1]).unwrap();
            let s = shares(&t, 3);
            assert!((s[0] - 0.6).abs() < 0.05 && (s[1] - 0.2).abs() < 0.05 && (s[2] - 0.2).abs() < 0.05, "{s:?}");
        }
        // minimumRingSize points in all, split by weight (Envoy's scale: the lightest endpoint's
        // rounded-up share, divided by its normalized weight).
        let Table::Ring(r) = Table::build(&HashTable::Ring { minimum_size: 1024 }, &addrs(2), &[3, 1]).unwrap() else {
            panic!()
        };
        let light = r.iter().filter(|(_, e)| *e == 1).count();
        assert_eq!((light, r.len() - light), (256, 768));
    }
}
