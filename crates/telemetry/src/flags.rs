//! Envoy response flags (`%RESPONSE_FLAGS%`, the `response_flags` metric label).
//!
//! Codes and their order are Envoy's (`source/common/stream_info/utility.cc`,
//! `ResponseFlagUtils::ALL_RESPONSE_STRING_FLAGS`): `toShortString` walks that list and joins
//! the set codes with `,`, printing `-` when none is set. The bit values here follow the same
//! order, so `Display` is a walk over the bits from low to high.

use std::fmt;

/// A set of Envoy response flags. `Copy`, one `u32`; `Display` prints Envoy's short form
/// (`UH`, `UT,DI,FI`, `-`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseFlags(u32);

macro_rules! flags {
    ($( $(#[$doc:meta])* $name:ident = $bit:expr, $code:literal; )*) => {
        impl ResponseFlags {
            $( $(#[$doc])* pub const $name: ResponseFlags = ResponseFlags(1 << $bit); )*

            /// Every flag with its Envoy code, in Envoy's print order.
            pub const ALL: &'static [(ResponseFlags, &'static str)] = &[
                $( (ResponseFlags::$name, $code), )*
            ];
        }
    };
}

flags! {
    /// `LH`: the local health check failed.
    FAILED_LOCAL_HEALTH_CHECK = 0, "LH";
    /// `UH`: no healthy upstream host in the cluster.
    NO_HEALTHY_UPSTREAM = 1, "UH";
    /// `UT`: upstream request timeout (the route timeout elapsed).
    UPSTREAM_REQUEST_TIMEOUT = 2, "UT";
    /// `LR`: the connection was reset locally.
    LOCAL_RESET = 3, "LR";
    /// `UR`: the upstream reset the stream.
    UPSTREAM_REMOTE_RESET = 4, "UR";
    /// `UF`: connecting to the upstream failed.
    UPSTREAM_CONNECTION_FAILURE = 5, "UF";
    /// `UC`: the upstream connection was terminated.
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC";
    /// `UO`: upstream overflow (circuit breaker).
    UPSTREAM_OVERFLOW = 7, "UO";
    /// `NR`: no route matched (or no virtual host).
    NO_ROUTE_FOUND = 8, "NR";
    /// `DI`: a fault delay was injected.
    DELAY_INJECTED = 9, "DI";
    /// `FI`: a fault abort was injected.
    FAULT_INJECTED = 10, "FI";
    /// `RL`: rate limited locally (reserved: Portico has no rate limiting yet).
    RATE_LIMITED = 11, "RL";
    /// `UAEX`: denied by an external authorization service (reserved).
    UNAUTHORIZED_EXTERNAL_SERVICE = 12, "UAEX";
    /// `RLSE`: the rate limit service failed (reserved).
    RATE_LIMIT_SERVICE_ERROR = 13, "RLSE";
    /// `DC`: the downstream connection was terminated.
    DOWNSTREAM_CONNECTION_TERMINATION = 14, "DC";
    /// `URX`: retries (or connect attempts) exhausted.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 15, "URX";
    /// `SI`: stream idle timeout.
    STREAM_IDLE_TIMEOUT = 16, "SI";
    /// `IH`: invalid `x-envoy-*` request headers (reserved).
    INVALID_ENVOY_REQUEST_HEADERS = 17, "IH";
    /// `DPE`: downstream protocol error.
    DOWNSTREAM_PROTOCOL_ERROR = 18, "DPE";
    /// `UMSDR`: upstream max stream duration reached.
    UPSTREAM_MAX_STREAM_DURATION_REACHED = 19, "UMSDR";
    /// `RFCF`: response served from a cache filter (reserved).
    RESPONSE_FROM_CACHE_FILTER = 20, "RFCF";
    /// `NFCF`: no filter configuration found (reserved).
    NO_FILTER_CONFIG_FOUND = 21, "NFCF";
    /// `DT`: max connection / request duration reached.
    DURATION_TIMEOUT = 22, "DT";
    /// `UPE`: upstream protocol error.
    UPSTREAM_PROTOCOL_ERROR = 23, "UPE";
    /// `NC`: the route's upstream cluster was not found.
    NO_CLUSTER_FOUND = 24, "NC";
    /// `OM`: overload manager (reserved).
    OVERLOAD_MANAGER = 25, "OM";
    /// `DF`: DNS resolution of the upstream failed.
    DNS_RESOLUTION_FAILED = 26, "DF";
}

impl ResponseFlags {
    /// No flag: prints `-`.
    pub const NONE: ResponseFlags = ResponseFlags(0);

    /// The empty set.
    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }

    /// The raw bits (stable only within one build).
    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set in `self` (and `other` is not empty).
    pub const fn contains(self, other: ResponseFlags) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: ResponseFlags) {
        self.0 &= !other.0;
    }

    /// The Envoy codes of the set flags, in Envoy's order.
    pub fn codes(self) -> impl Iterator<Item = &'static str> {
        ResponseFlags::ALL.iter().filter(move |(f, _)| self.0 & f.0 != 0).map(|(_, c)| *c)
    }

    /// One Envoy code (`"UH"`) to its flag.
    pub fn from_code(code: &str) -> Option<ResponseFlags> {
        ResponseFlags::ALL.iter().find(|(_, c)| *c == code).map(|(f, _)| *f)
    }

    /// Parse Envoy's short form (`"UT,DI"`, `"-"`); `None` on an unknown code.
    pub fn parse(s: &str) -> Option<ResponseFlags> {
        if s == "-" || s.is_empty() {
            return Some(ResponseFlags::NONE);
        }
        s.split(',').try_fold(ResponseFlags::NONE, |acc, code| Some(acc | ResponseFlags::from_code(code)?))
    }

    /// Append the short form to `out` without going through `fmt`.
    pub(crate) fn write_to(self, out: &mut String) {
        if self.0 == 0 {
            out.push('-');
            return;
        }
        let mut first = true;
        for code in self.codes() {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(code);
        }
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_in_envoy_order() {
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(ResponseFlags::NO_ROUTE_FOUND.to_string(), "NR");
        // Envoy's own test: DelayInjected | FaultInjected | UpstreamRequestTimeout → "UT,DI,FI".
        let f = ResponseFlags::DELAY_INJECTED | ResponseFlags::FAULT_INJECTED | ResponseFlags::UPSTREAM_REQUEST_TIMEOUT;
        assert_eq!(f.to_string(), "UT,DI,FI");
        let f = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED | ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        assert_eq!(f.to_string(), "UF,URX");
        let f = ResponseFlags::NO_CLUSTER_FOUND | ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        assert_eq!(f.to_string(), "DC,NC");
    }

    #[test]
    fn codes_round_trip() {
        for (flag, code) in ResponseFlags::ALL {
            assert_eq!(ResponseFlags::from_code(code), Some(*flag));
            assert_eq!(flag.to_string(), *code);
        }
        assert_eq!(ResponseFlags::parse("UT,DI,FI").map(|f| f.to_string()).as_deref(), Some("UT,DI,FI"));
        assert_eq!(ResponseFlags::parse("-"), Some(ResponseFlags::NONE));
        assert_eq!(ResponseFlags::parse("XX"), None);
        let mut f = ResponseFlags::UPSTREAM_OVERFLOW;
        f.insert(ResponseFlags::LOCAL_RESET);
        assert!(f.contains(ResponseFlags::LOCAL_RESET) && !f.contains(ResponseFlags::NONE));
        f.remove(ResponseFlags::LOCAL_RESET);
        assert_eq!(f.to_string(), "UO");
    }
}
