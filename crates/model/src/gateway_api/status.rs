//! Gateway API status as the compiler computes it: the conditions the spec defines
//! (`Accepted`, `Programmed`, `ResolvedRefs`) with its reasons, per Gateway and listener, and per
//! route and parent. Shown by `portico validate`/`routes` and in `/config_dump`; a Kubernetes
//! source can write the same values back.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `True` or `False`, as Kubernetes writes it.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn ok(type_: &'static str, reason: &'static str) -> Self {
        Condition { type_, status: "True", reason, message: String::new() }
    }

    pub fn bad(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Condition { type_, status: "False", reason, message: message.into() }
    }

    /// A condition whose good state is `False` (`Conflicted`).
    pub fn not(type_: &'static str, reason: &'static str) -> Self {
        Condition { type_, status: "False", reason, message: String::new() }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: u32,
    pub supported_kinds: Vec<String>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ParentStatus {
    /// `namespace/name` of the parent Gateway, with `/sectionName` or `:port` when the ref has them.
    pub parent_ref: String,
    pub conditions: Vec<Condition>,
}

/// The status of one Gateway API object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectStatus {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` the conditions were computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// GatewayClass and Gateway conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// Route status, one entry per parent this controller owns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentStatus>,
}

impl ObjectStatus {
    /// One line per condition, `Kind/ns/name [parent] Type=Status Reason: message`.
    pub fn lines(&self) -> Vec<String> {
        let head = format!("{}/{}/{}", self.kind, self.namespace, self.name);
        let mut out = Vec::new();
        let fmt = |scope: &str, c: &Condition| {
            let msg = if c.message.is_empty() { String::new() } else { format!(": {}", c.message) };
            format!("{head}{scope} {}={} {}{msg}", c.type_, c.status, c.reason)
        };
        for c in &self.conditions {
            out.push(fmt("", c));
        }
        for l in &self.listeners {
            for c in &l.conditions {
                out.push(fmt(&format!(" listener {} (attachedRoutes {})", l.name, l.attached_routes), c));
            }
        }
        for p in &self.parents {
            for c in &p.conditions {
                out.push(fmt(&format!(" parent {}", p.parent_ref), c));
            }
        }
        out
    }
}
