//! Gateway API status written back to the API server by the replica that holds the lease:
//! GatewayClass, Gateway (with listeners) and route status (one entry per parent this
//! controller owns, beside other controllers' entries), through the status subresource as a
//! JSON merge patch. A status is written only when it differs from the last one this replica
//! wrote, so a write (which comes back as a watch event and a recompile) does not loop.

use crate::leader::Elector;
use crate::Shared;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use portico_model::gateway_api::status::{Condition, ObjectStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `--kubernetes` status write-back settings.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// The Lease that elects the writer (`--lease-name`).
    pub lease_name: String,
    /// Where the Lease lives: the gateway's namespace.
    pub lease_namespace: String,
    /// This replica's holder identity (the pod name, else host and pid).
    pub identity: String,
    /// `leaseDurationSeconds`; renewed every third of it.
    pub lease_duration: Duration,
    /// The GatewayClass served (`--gateway-class`): its `controllerName` names our route entries.
    pub gateway_class: String,
}

const GROUP: &str = "gateway.networking.k8s.io";

type Key = (&'static str, String, String);

pub(crate) async fn run(
    shared: Arc<Shared>,
    client: Client,
    opts: StatusOptions,
    mut rx: watch::Receiver<Vec<ObjectStatus>>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.lease_namespace);
    let mut elector = Elector::new(leases, opts.lease_name.clone(), opts.identity.clone(), opts.lease_duration);
    let mut written: BTreeMap<Key, Value> = BTreeMap::new();
    let mut tick = tokio::time::interval((opts.lease_duration / 3).max(Duration::from_millis(200)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renew = tokio::select! {
            _ = tick.tick() => true,
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
        };
        let leader = if renew { elector.step().await } else { elector.is_leader() };
        shared.status.set_leader(leader);
        if !leader {
            // A later term writes everything again: another replica may have written since.
            written.clear();
            continue;
        }
        let statuses = rx.borrow_and_update().clone();
        for st in &statuses {
            let key: Key = (st.kind, st.namespace.clone(), st.name.clone());
            let want = serde_json::to_value(st).unwrap_or(Value::Null);
            if written.get(&key) == Some(&want) {
                continue;
            }
            match write_one(&shared, &client, &opts, st).await {
                Ok(()) => {
                    shared.status.status_written();
                    written.insert(key, want);
                }
                Err(e) => tracing::debug!("status of {} {}/{} not written: {e}", st.kind, st.namespace, st.name),
            }
        }
    }
}

fn api_for(shared: &Shared, client: &Client, kind: &str, ns: &str) -> Option<Api<DynamicObject>> {
    let version = shared.versions.lock().unwrap_or_else(|e| e.into_inner()).get(kind).cloned()?;
    let plural = match kind {
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        "TLSRoute" => "tlsroutes",
        "TCPRoute" => "tcproutes",
        _ => return None,
    };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, &version, kind), plural);
    Some(if ns.is_empty() { Api::all_with(client.clone(), &ar) } else { Api::namespaced_with(client.clone(), ns, &ar) })
}

fn conditions(cs: &[Condition], generation: Option<i64>, now: &Value, old: &Value) -> Value {
    Value::Array(
        cs.iter()
            .map(|c| {
                // lastTransitionTime moves only when the condition's status does.
                let same = old.as_array().and_then(|a| {
                    a.iter().find(|o| o["type"] == c.type_ && o["status"] == c.status).map(|o| o["lastTransitionTime"].clone())
                });
                let mut o = json!({"type": c.type_, "status": c.status, "reason": c.reason,
                    "message": c.message, "lastTransitionTime": same.filter(|t| !t.is_null()).unwrap_or_else(|| now.clone())});
                if let Some(g) = generation {
                    o["observedGeneration"] = json!(g);
                }
                o
            })
            .collect(),
    )
}

/// `ns/name[/section][:port]` of a spec parentRef, as the compiler prints it.
fn parent_text(p: &Value, route_ns: &str) -> String {
    let mut s = format!("{}/{}", p["namespace"].as_str().unwrap_or(route_ns), p["name"].as_str().unwrap_or(""));
    if let Some(sn) = p["sectionName"].as_str() {
        s.push('/');
        s.push_str(sn);
    }
    if let Some(port) = p["port"].as_i64() {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s
}

async fn write_one(
    shared: &Shared,
    client: &Client,
    opts: &StatusOptions,
    st: &ObjectStatus,
) -> Result<(), kube::Error> {
    let Some(api) = api_for(shared, client, st.kind, &st.namespace) else { return Ok(()) };
    // Read first: the spec's parentRefs are echoed verbatim, other controllers' entries kept,
    // and unchanged conditions keep their lastTransitionTime.
    let Some(obj) = api.get_opt(&st.name).await? else { return Ok(()) };
    let obj = serde_json::to_value(&obj).unwrap_or(Value::Null);
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null);
    let gen = st.observed_generation;
    let old = &obj["status"];
    let status = match st.kind {
        "GatewayClass" => json!({"conditions": conditions(&st.conditions, gen, &now, &old["conditions"])}),
        "Gateway" => {
            let listeners: Vec<Value> = st
                .listeners
                .iter()
                .map(|l| {
                    let old_l = old["listeners"].as_array().and_then(|a| a.iter().find(|o| o["name"] == l.name.as_str()));
                    json!({"name": l.name, "attachedRoutes": l.attached_routes,
                        "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
                        "conditions": conditions(&l.conditions, gen, &now, old_l.map_or(&Value::Null, |o| &o["conditions"]))})
                })
                .collect();
            json!({"conditions": conditions(&st.conditions, gen, &now, &old["conditions"]), "listeners": listeners})
        }
        _ => {
            let controller = controller_name(shared, client, &opts.gateway_class).await?;
            let spec_refs = obj["spec"]["parentRefs"].as_array().cloned().unwrap_or_default();
            let mut parents: Vec<Value> = old["parents"]
                .as_array()
                .map(|a| a.iter().filter(|p| p["controllerName"] != controller.as_str()).cloned().collect())
                .unwrap_or_default();
            for p in &st.parents {
                let spec_ref = spec_refs.iter().find(|r| parent_text(r, &st.namespace) == p.parent_ref).cloned();
                let parent_ref = spec_ref.unwrap_or_else(|| {
                    let (ns, name) = p.parent_ref.split_once('/').unwrap_or(("", &p.parent_ref));
                    json!({"group": GROUP, "kind": "Gateway", "namespace": ns, "name": name})
                });
                let old_p = old["parents"].as_array().and_then(|a| {
                    a.iter().find(|o| o["controllerName"] == controller.as_str() && o["parentRef"] == parent_ref)
                });
                parents.push(json!({"parentRef": parent_ref, "controllerName": controller,
                    "conditions": conditions(&p.conditions, gen, &now, old_p.map_or(&Value::Null, |o| &o["conditions"]))}));
            }
            json!({"parents": parents})
        }
    };
    let params = PatchParams { field_manager: Some("portico".into()), ..PatchParams::default() };
    api.patch_status(&st.name, &params, &Patch::Merge(json!({"status": status}))).await?;
    Ok(())
}

async fn controller_name(shared: &Shared, client: &Client, class: &str) -> Result<String, kube::Error> {
    let Some(api) = api_for(shared, client, "GatewayClass", "") else { return Ok(String::new()) };
    let gc = api.get_opt(class).await?;
    Ok(gc
        .and_then(|o| {
            o.data.get("spec").and_then(|s| s.get("controllerName")).and_then(Value::as_str).map(str::to_string)
        })
        .unwrap_or_default())
}
