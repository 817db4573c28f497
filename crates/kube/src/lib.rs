//! The Kubernetes source (DESIGN.md §3): watchers on the API server for the Istio kinds, the
//! Gateway API kinds,
//! Secrets, Services, EndpointSlices and Pods, kept in a store the runtime loads, compiles and
//! swaps like the file source.
//!
//! Every watcher is `kube::runtime::watcher` with the default backoff: it lists, then watches
//! from the list's resourceVersion, relists on `410 Gone`, and yields errors instead of ending.
//! An error never stops a watch and never empties the store: the last objects seen keep being
//! served until a relist replaces them.
#![forbid(unsafe_code)]

pub mod convert;
mod leader;
mod status;
pub mod store;
mod writeback;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
pub use status::Status;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Item, Store};
use tokio::sync::Notify;
pub use writeback::StatusOptions;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("no Kubernetes configuration (not in a cluster, no KUBECONFIG, no --kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `--kubeconfig PATH`, else `KUBECONFIG` / `~/.kube/config`, else the in-cluster
/// service account (kube's `Config::infer`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| Error::Kubeconfig { path: path.display().to_string(), source };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.map_err(err)?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// What to watch.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Namespaces to watch (`--watch-namespace`); empty: all.
    pub watch_namespaces: Vec<String>,
    /// `cluster.local`: Services are `name.namespace.svc.<suffix>`.
    pub domain_suffix: String,
    /// Where `credentialName` Secrets are read (the gateway's own namespace; a namespaced Role).
    pub secret_namespace: String,
    /// For objects without a namespace (cluster-scoped reads never have one for these kinds).
    pub default_namespace: String,
    /// Write Gateway API status back, from the replica holding this lease; `None`: never.
    pub status: Option<StatusOptions>,
}

/// The Istio kinds, by kind and plural; each tried as `v1`, then `v1beta1`.
const ISTIO_KINDS: [(&str, &str); 4] = [
    ("Gateway", "gateways"),
    ("VirtualService", "virtualservices"),
    ("DestinationRule", "destinationrules"),
    ("ServiceEntry", "serviceentries"),
];
const ISTIO_GROUP: &str = "networking.istio.io";
const ISTIO_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// One CRD-backed kind to watch: its group, kind, plural, the versions tried in order (the
/// first the cluster serves is watched), and whether it is namespaced.
#[derive(Clone, Copy, Debug)]
struct CrdKind {
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
    namespaced: bool,
}

const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The Gateway API kinds (standard channel, plus TLSRoute/TCPRoute from the experimental one),
/// newest version first: a cluster with an older bundle installed is read as it is.
const GATEWAY_API_KINDS: [CrdKind; 7] = [
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "GatewayClass",
        plural: "gatewayclasses",
        versions: &["v1", "v1beta1"],
        namespaced: false,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "Gateway",
        plural: "gateways",
        versions: &["v1", "v1beta1"],
        namespaced: true,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "HTTPRoute",
        plural: "httproutes",
        versions: &["v1", "v1beta1"],
        namespaced: true,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "GRPCRoute",
        plural: "grpcroutes",
        versions: &["v1", "v1alpha2"],
        namespaced: true,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "ReferenceGrant",
        plural: "referencegrants",
        versions: &["v1", "v1beta1", "v1alpha2"],
        namespaced: true,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "TLSRoute",
        plural: "tlsroutes",
        versions: &["v1", "v1alpha3", "v1alpha2"],
        namespaced: true,
    },
    CrdKind {
        group: GATEWAY_API_GROUP,
        kind: "TCPRoute",
        plural: "tcproutes",
        versions: &["v1", "v1alpha3", "v1alpha2"],
        namespaced: true,
    },
];

impl CrdKind {
    fn istio(kind: &'static str, plural: &'static str) -> CrdKind {
        CrdKind { group: ISTIO_GROUP, kind, plural, versions: ISTIO_VERSIONS, namespaced: true }
    }

    /// The watcher id and the pseudo-file kind: Istio's and the Gateway API's `Gateway` must
    /// not share one, so the Gateway API's kinds carry their group.
    fn label(&self) -> String {
        if self.group == ISTIO_GROUP {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

struct Shared {
    store: Mutex<Store>,
    changed: Notify,
    status: Status,
    opts: KubeOptions,
    /// The Gateway API version each kind is watched at (status is written at the same).
    versions: Mutex<BTreeMap<&'static str, String>>,
    /// The compiler's latest Gateway API status, for the writer.
    statuses: tokio::sync::watch::Sender<Vec<portico_model::gateway_api::status::ObjectStatus>>,
}

/// The running source: the watchers' store, a change signal, and their status.
#[derive(Clone)]
pub struct KubeSource {
    shared: Arc<Shared>,
}

impl KubeSource {
    /// Start every watcher on the current tokio runtime.
    pub fn start(client: Client, opts: KubeOptions) -> KubeSource {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: Notify::new(),
            status: Status::default(),
            opts,
            versions: Mutex::new(BTreeMap::new()),
            statuses: tokio::sync::watch::channel(Vec::new()).0,
        });
        let namespaces: Vec<Option<String>> = if shared.opts.watch_namespaces.is_empty() {
            vec![None]
        } else {
            shared.opts.watch_namespaces.iter().cloned().map(Some).collect()
        };
        for ns in &namespaces {
            let suffix = ns.as_deref().map(|n| format!("/{n}")).unwrap_or_default();
            let crds = ISTIO_KINDS.iter().map(|(k, p)| CrdKind::istio(k, p)).chain(GATEWAY_API_KINDS);
            for crd in crds.filter(|c| c.namespaced) {
                let id = format!("{}{suffix}", crd.label());
                shared.status.register(&id, crd.kind);
                tokio::spawn(crd_watch(shared.clone(), client.clone(), id, crd, ns.clone()));
            }
            let id = format!("Service{suffix}");
            shared.status.register(&id, "Service");
            let api: Api<Service> = scoped(&client, ns.as_deref());
            tokio::spawn(run_watch(shared.clone(), id, watcher::watcher(api, watcher::Config::default()), |s| {
                Some(Item::Service(Arc::new(s)))
            }));
            let id = format!("EndpointSlice{suffix}");
            shared.status.register(&id, "EndpointSlice");
            let api: Api<EndpointSlice> = scoped(&client, ns.as_deref());
            tokio::spawn(run_watch(shared.clone(), id, watcher::watcher(api, watcher::Config::default()), |s| {
                Some(Item::Slice(Arc::new(s)))
            }));
            // Pods: metadata only (labels select subsets); a pod's spec and status are never read.
            let id = format!("Pod{suffix}");
            shared.status.register(&id, "Pod");
            let api: Api<PartialObjectMeta<Pod>> = scoped(&client, ns.as_deref());
            tokio::spawn(run_watch(shared.clone(), id, watcher::watcher(api, watcher::Config::default()), |p| {
                Some(Item::Pod(p.metadata.labels.unwrap_or_default()))
            }));
        }
        // Namespaces: their labels select routes (`allowedRoutes.namespaces.from: Selector`).
        // Metadata only; one cluster-wide watcher.
        shared.status.register("Namespace", "Namespace");
        let api: Api<PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>> = Api::all(client.clone());
        let default_ns = shared.opts.default_namespace.clone();
        tokio::spawn(run_watch(
            shared.clone(),
            "Namespace".into(),
            watcher::watcher(api, watcher::Config::default()),
            move |n| {
                let json = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": n.metadata.name, "labels": n.metadata.labels.unwrap_or_default()}});
                Some(Item::Parsed(Arc::new(convert::parse_object("Namespace", json, &default_ns))))
            },
        ));
        // Cluster-scoped kinds (GatewayClass): one watcher, whatever the namespaces watched.
        for crd in GATEWAY_API_KINDS.into_iter().filter(|c| !c.namespaced) {
            let id = crd.label();
            shared.status.register(&id, crd.kind);
            tokio::spawn(crd_watch(shared.clone(), client.clone(), id, crd, None));
        }
        let id = format!("Secret/{}", shared.opts.secret_namespace);
        shared.status.register(&id, "Secret");
        let api: Api<Secret> = Api::namespaced(client.clone(), &shared.opts.secret_namespace);
        let default_ns = shared.opts.default_namespace.clone();
        tokio::spawn(run_watch(shared.clone(), id, watcher::watcher(api, watcher::Config::default()), move |s| {
            let json = serde_json::to_value(&s).ok()?;
            Some(Item::Parsed(Arc::new(convert::parse_object("Secret", with_type(json, "v1", "Secret"), &default_ns))))
        }));
        if let Some(so) = shared.opts.status.clone() {
            let rx = shared.statuses.subscribe();
            tokio::spawn(writeback::run(shared.clone(), client.clone(), so, rx));
        }
        tokio::spawn(probe(shared.clone(), client));
        KubeSource { shared }
    }

    /// Every resource and diagnostic the API has now.
    pub fn load(&self) -> store::Load {
        let st = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        let load = st.load(&self.shared.opts.domain_suffix);
        self.shared.status.set_counts(&st);
        load
    }

    /// Resolves when something changed since the last call (a stored permit: no change is lost).
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    /// True once every watcher has listed at least once.
    pub fn synced(&self) -> bool {
        self.shared.status.all_synced()
    }

    /// The compiler's Gateway API status for the objects it read; the lease holder writes
    /// what changed back to the API.
    pub fn publish_status(&self, statuses: &[portico_model::gateway_api::status::ObjectStatus]) {
        self.shared.statuses.send_if_modified(|cur| {
            let same = cur.len() == statuses.len()
                && cur.iter().zip(statuses).all(|(a, b)| serde_json::to_value(a).ok() == serde_json::to_value(b).ok());
            if !same {
                *cur = statuses.to_vec();
            }
            !same
        });
    }

    pub fn status(&self) -> &Status {
        &self.shared.status
    }
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Typed objects serialize without `apiVersion`/`kind`; the parser needs them.
fn with_type(mut json: serde_json::Value, api_version: &str, kind: &str) -> serde_json::Value {
    if let Some(o) = json.as_object_mut() {
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
    }
    json
}

fn key_of<K: kube::Resource>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Run one watcher until the runtime stops: errors are logged and counted, and the watcher
/// (with its backoff) goes on.
async fn run_watch<K, S, F>(shared: Arc<Shared>, id: String, stream: S, convert: F)
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    F: Fn(K) -> Option<Item> + Send,
{
    let stream = stream.default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut buffer: Option<BTreeMap<String, Item>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            // 410 Gone: the history the watch resumed from is compacted. Not an outage: the
            // watcher relists (and the relist replaces this watcher's objects whole).
            Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                shared.status.expired(&id);
                tracing::info!("kubernetes: {id} watch expired (410 Gone): relisting");
                continue;
            }
            Err(e) => {
                shared.status.error(&id, &e.to_string());
                continue;
            }
        };
        shared.status.ok(&id);
        let mut st = shared.store.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Event::Init => buffer = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                let key = key_of(&o);
                if let Some(item) = convert(o) {
                    buffer.get_or_insert_with(BTreeMap::new).insert(key, item);
                }
            }
            Event::InitDone => {
                st.replace(&id, buffer.take().unwrap_or_default());
                shared.status.synced(&id);
                shared.changed.notify_one();
            }
            Event::Apply(o) => {
                let key = key_of(&o);
                match convert(o) {
                    Some(item) => st.apply(&id, key, item),
                    None => st.delete(&id, &key),
                }
                shared.changed.notify_one();
            }
            Event::Delete(o) => {
                st.delete(&id, &key_of(&o));
                shared.changed.notify_one();
            }
        }
    }
}

/// The first served version of a CRD kind, in the order of `crd.versions`; `None` when none is
/// installed (all 404). Other errors (API server away) are retried with backoff.
async fn crd_version(
    shared: &Shared,
    client: &Client,
    id: &str,
    crd: CrdKind,
    ns: Option<&str>,
) -> Option<ApiResource> {
    let mut delay = Duration::from_millis(200);
    loop {
        let mut not_found = 0;
        for v in crd.versions {
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(crd.group, v, crd.kind), crd.plural);
            let api: Api<DynamicObject> = dynamic_api(client, ns, &ar);
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => return Some(ar),
                Err(kube::Error::Api(s)) if s.code == 404 => not_found += 1,
                Err(e) => {
                    shared.status.error(id, &e.to_string());
                    break;
                }
            }
        }
        if not_found == crd.versions.len() {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn dynamic_api(client: &Client, ns: Option<&str>, ar: &ApiResource) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Watch one CRD kind (Istio's or the Gateway API's) as `DynamicObject`s. A kind the cluster
/// does not serve counts as synced (empty), is logged once, and is looked for again every
/// 30 s, so installing the CRDs later works and a missing one never holds the others back.
async fn crd_watch(shared: Arc<Shared>, client: Client, id: String, crd: CrdKind, ns: Option<String>) {
    let ar = loop {
        match crd_version(&shared, &client, &id, crd, ns.as_deref()).await {
            Some(ar) => break ar,
            None => {
                if !shared.status.is_synced(&id) {
                    let versions = crd.versions.join(", ");
                    // Istio's kinds are what a gateway is for; the Gateway API's are optional.
                    if crd.group == ISTIO_GROUP {
                        tracing::warn!(
                            "{} {} is not installed in this cluster ({versions} all 404): none read; looking again every 30 s",
                            crd.group,
                            crd.kind
                        );
                    } else {
                        tracing::info!(
                            "{} {} is not installed in this cluster ({versions} all 404): none read; looking again every 30 s",
                            crd.group,
                            crd.kind
                        );
                    }
                    shared.status.synced(&id);
                    shared.changed.notify_one();
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    tracing::info!("watching {}/{} {}", crd.group, ar.version, crd.kind);
    if crd.group == GATEWAY_API_GROUP {
        shared.versions.lock().unwrap_or_else(|e| e.into_inner()).insert(crd.kind, ar.version.clone());
    }
    let api = dynamic_api(&client, ns.as_deref(), &ar);
    let default_ns = shared.opts.default_namespace.clone();
    let api_version = ar.api_version.clone();
    let label = crd.label();
    let stream = watcher::watcher(api, watcher::Config::default());
    run_watch(shared.clone(), id, stream, move |o: DynamicObject| {
        let json = serde_json::to_value(&o).ok()?;
        let json = with_type(json, &api_version, crd.kind);
        Some(Item::Parsed(Arc::new(convert::parse_object(&label, json, &default_ns))))
    })
    .await;
}

/// Tells when the API server answers again after a failure: a watch that resumes without
/// events has nothing else to say so. Any HTTP answer counts (the server is there); only a
/// transport failure does not.
async fn probe(shared: Arc<Shared>, client: Client) {
    loop {
        let down = shared.status.is_disconnected();
        tokio::time::sleep(if down { Duration::from_millis(500) } else { Duration::from_secs(10) }).await;
        if !shared.status.is_disconnected() {
            continue;
        }
        match client.apiserver_version().await {
            Ok(_) | Err(kube::Error::Api(_)) => shared.status.reachable(),
            Err(e) => tracing::debug!("kubernetes: the API server is still away: {e}"),
        }
    }
}
