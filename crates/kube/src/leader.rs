//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection
//! does it: the holder renews `renewTime` every `duration / 3`; another replica takes the lease
//! over only when it has seen the same holder and renewTime unchanged for a whole
//! `leaseDurationSeconds` (measured on its own monotonic clock, so clock skew between nodes does
//! not matter). Every write carries the resourceVersion it read: two replicas racing for an
//! expired lease get one success and one 409.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The holder and renewTime last read, and when they were first seen so.
    observed: Option<(Option<String>, Option<String>, Instant)>,
    /// Leader until then (a renewal that keeps failing ends it).
    leader_until: Option<Instant>,
}

impl Elector {
    pub(crate) fn new(api: Api<Lease>, name: String, identity: String, duration: Duration) -> Elector {
        Elector { api, name, identity, duration, observed: None, leader_until: None }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader_until.is_some_and(|t| Instant::now() < t)
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX).max(1)),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: create the lease, renew it, or take it over when expired. Returns whether
    /// this replica leads now.
    pub(crate) async fn step(&mut self) -> bool {
        let started = Instant::now();
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("leader election: cannot read lease {}: {e}", self.name);
                return self.is_leader();
            }
        };
        let won = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
                let renew = spec.renew_time.as_ref().map(|t| t.0.to_string());
                let now = Instant::now();
                let seen_since = match &self.observed {
                    Some((h, r, at)) if *h == holder && *r == renew => *at,
                    _ => {
                        self.observed = Some((holder.clone(), renew, now));
                        now
                    }
                };
                let theirs =
                    spec.lease_duration_seconds.map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
                let mine = holder.as_deref() == Some(self.identity.as_str());
                let expired = holder.is_none() || now.duration_since(seen_since) >= theirs;
                if !mine && !expired {
                    self.leader_until = None;
                    return false;
                }
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                let acquire = if mine { spec.acquire_time.clone() } else { None };
                let mut next = lease.clone();
                next.spec = Some(self.spec(acquire, transitions));
                if !mine {
                    tracing::info!(
                        "leader election: lease {} held by {} expired; taking it over",
                        self.name,
                        holder.as_deref().unwrap_or("nobody")
                    );
                }
                // `replace` sends the resourceVersion read above: a concurrent writer wins, we 409.
                self.api.replace(&self.name, &PostParams::default(), &next).await.map(|_| ())
            }
        };
        match won {
            Ok(()) => {
                if !self.is_leader() {
                    tracing::info!("leader election: {} holds lease {}: writing status", self.identity, self.name);
                }
                // Counted from before the read: the others count from when they see the renewal.
                self.leader_until = Some(started + self.duration);
                true
            }
            Err(e) => {
                tracing::debug!("leader election: lease {} not taken: {e}", self.name);
                if self.is_leader() {
                    return true;
                }
                self.leader_until = None;
                false
            }
        }
    }
}
