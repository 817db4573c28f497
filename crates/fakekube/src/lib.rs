//! A fake Kubernetes API server for tests: in-memory objects with one global resourceVersion,
//! served over HTTP on 127.0.0.1 the way kube-apiserver serves them:
//!
//! * list with `limit` / `continue` and `labelSelector`; `metadata.resourceVersion` on the list;
//! * watch (`watch=true`) from a resourceVersion: the events after it, then live ones, as
//!   `ADDED` / `MODIFIED` / `DELETED`; `BOOKMARK`s when `allowWatchBookmarks=true`; an `ERROR`
//!   event with a 410 `Expired` Status for a resourceVersion older than the compacted history;
//!   the stream ends after `timeoutSeconds`;
//! * `PartialObjectMetadata` answers when asked for them (`Accept: …;as=PartialObjectMetadata…`);
//! * a 404 `Status` for a kind that is not installed.
//!
//! Tests drive it from Rust: `apply`, `delete`, `expire_watches` (compaction: open watches end and
//! resuming them gets 410), `stop` / `restart` (connections dropped, the same port again).
#![forbid(unsafe_code)]

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone, Debug)]
struct KindInfo {
    api_version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    /// `apiVersion/plural`
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Events at or below this resourceVersion are compacted away.
    compacted: u64,
    kinds: Vec<KindInfo>,
    /// (`apiVersion/plural`, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    requests: Vec<String>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Change>,
    /// Bumped to end every open watch stream (compaction, restart).
    epoch: tokio::sync::watch::Sender<u64>,
    /// How often a watch that asked for them gets a BOOKMARK.
    bookmark_every: Duration,
}

/// The server. Dropping it stops it.
pub struct FakeApi {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeApi {
    /// Start on 127.0.0.1 with the core kinds installed (Services, Pods, Secrets, Namespaces,
    /// EndpointSlices) and none of Istio's: `install_istio` adds those.
    pub async fn start() -> std::io::Result<FakeApi> {
        let (events, _) = broadcast::channel(100_000);
        let (epoch, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State { rv: 1, ..State::default() }),
            events,
            epoch,
            bookmark_every: Duration::from_secs(1),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let api = FakeApi { inner, addr, server: Mutex::new(None) };
        for (v, k, p, n) in [
            ("v1", "Service", "services", true),
            ("v1", "Pod", "pods", true),
            ("v1", "Secret", "secrets", true),
            ("v1", "Namespace", "namespaces", false),
            ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", true),
            ("coordination.k8s.io/v1", "Lease", "leases", true),
        ] {
            api.install(v, k, p, n);
        }
        api.serve(listener);
        Ok(api)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Install a kind (a CRD).
    pub fn install(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        lock(&self.inner).kinds.push(KindInfo {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        });
    }

    /// Install Istio's networking kinds at `version` (`v1` or `v1beta1`).
    pub fn install_istio(&self, version: &str) {
        let av = format!("networking.istio.io/{version}");
        for (k, p) in [
            ("Gateway", "gateways"),
            ("VirtualService", "virtualservices"),
            ("DestinationRule", "destinationrules"),
            ("ServiceEntry", "serviceentries"),
        ] {
            self.install(&av, k, p, true);
        }
    }

    /// Install the Gateway API kinds at `version` (`v1` or `v1beta1`) for the standard channel;
    /// TLSRoute and TCPRoute only when `experimental` (at `v1alpha2`), as the two bundles do.
    pub fn install_gateway_api(&self, version: &str, experimental: bool) {
        let av = format!("gateway.networking.k8s.io/{version}");
        self.install(&av, "GatewayClass", "gatewayclasses", false);
        for (k, p) in [("Gateway", "gateways"), ("HTTPRoute", "httproutes"), ("ReferenceGrant", "referencegrants")] {
            self.install(&av, k, p, true);
        }
        self.install("gateway.networking.k8s.io/v1", "GRPCRoute", "grpcroutes", true);
        if experimental {
            self.install("gateway.networking.k8s.io/v1alpha2", "TLSRoute", "tlsroutes", true);
            self.install("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "tcproutes", true);
        }
    }

    /// A kubeconfig that points at this server (no auth, plain HTTP).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.addr
        )
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let inner = inner.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(route(&inner, req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
                // Reap finished connections so the set stays small.
                while conns.try_join_next().is_some() {}
            }
            // Dropping `conns` aborts every connection (as a crashed API server would).
        });
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stop serving: the listener closes and every connection (and watch) is cut.
    pub fn stop(&self) {
        if let Some(t) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }

    /// Serve again on the same port, with the same objects and history.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        // The aborted task drops the listener asynchronously; retry the bind briefly.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    let _ = e;
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Compact the history up to now and end every open watch: a client resuming from its last
    /// resourceVersion gets `410 Gone` and must relist.
    pub fn expire_watches(&self) {
        {
            let mut st = lock(&self.inner);
            // One past anything a client can have seen (bookmarks included): every resumed
            // watch is too old.
            st.rv += 1;
            st.compacted = st.rv;
            st.history.clear();
        }
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    /// Create or replace an object (by apiVersion, kind, namespace, name). Returns its new
    /// resourceVersion. Panics on an object without a known kind: a test mistake.
    pub fn apply(&self, obj: Value) -> u64 {
        match store(&self.inner, obj) {
            Some(rv) => rv,
            None => {
                #[allow(clippy::panic)]
                {
                    panic!("fake API: the object's kind is not installed")
                }
            }
        }
    }

    /// One stored object, as the API would answer a GET.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let st = lock(&self.inner);
        let info = st.kinds.iter().find(|k| k.api_version == api_version && k.kind == kind)?;
        let ns = if info.namespaced { namespace.to_string() } else { String::new() };
        st.objects.get(&(format!("{}/{}", info.api_version, info.plural), ns, name.to_string())).cloned()
    }

    /// Delete an object; true when it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut st = lock(&self.inner);
        let Some(info) = st.kinds.iter().find(|k| k.api_version == api_version && k.kind == kind).cloned() else {
            return false;
        };
        let ns = if info.namespaced { namespace.to_string() } else { String::new() };
        let key = (format!("{}/{}", info.api_version, info.plural), ns, name.to_string());
        let Some(mut obj) = st.objects.remove(&key) else { return false };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change { rv, resource: key.0, kind: "DELETED", object: obj };
        st.history.push(change.clone());
        let _ = self.inner.events.send(change);
        true
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner).rv
    }

    /// Requests served so far, as `METHOD path?query` (for asserting relists and watches).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).requests.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Create or replace an object; `None` when its kind is not installed.
fn store(inner: &Inner, mut obj: Value) -> Option<u64> {
    let mut st = lock(inner);
    let av = obj["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = obj["kind"].as_str().unwrap_or("").to_string();
    let info = st.kinds.iter().find(|k| k.api_version == av && k.kind == kind).cloned()?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ns = if info.namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        obj["metadata"]["namespace"] = json!(ns);
        ns
    } else {
        String::new()
    };
    if kind == "Secret" {
        string_data_to_data(&mut obj);
    }
    st.rv += 1;
    let rv = st.rv;
    let key = (format!("{}/{}", info.api_version, info.plural), ns, name.clone());
    let existing = st.objects.get(&key).cloned();
    let meta = &mut obj["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    // `metadata.generation` counts spec changes (status and metadata writes leave it).
    let generation = match &existing {
        Some(old) => {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            if old.get("spec") == obj.get("spec") {
                g
            } else {
                g + 1
            }
        }
        None => 1,
    };
    let meta = &mut obj["metadata"];
    meta["generation"] = json!(generation);
    match &existing {
        Some(old) => {
            meta["uid"] = old["metadata"]["uid"].clone();
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        }
        None => {
            meta["uid"] = json!(format!("00000000-0000-0000-0000-{rv:012}"));
            // Distinct, ordered timestamps: Istio's precedence is oldest first.
            meta["creationTimestamp"] = json!(format!("2026-01-01T00:{:02}:{:02}Z", (rv / 60) % 60, rv % 60));
        }
    }
    let ev = if existing.is_some() { "MODIFIED" } else { "ADDED" };
    st.objects.insert(key.clone(), obj.clone());
    let change = Change { rv, resource: key.0, kind: ev, object: obj };
    st.history.push(change.clone());
    let _ = inner.events.send(change);
    Some(rv)
}

/// kube-apiserver merges a Secret's write-only `stringData` into `data` (base64) and never
/// returns it.
fn string_data_to_data(obj: &mut Value) {
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    let Some(sd) = sd.as_object() else { return };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        obj["data"][k] = json!(base64(v.as_str().unwrap_or("").as_bytes()));
    }
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// `/api/v1[/namespaces/NS]/PLURAL` or `/apis/G/V[/namespaces/NS]/PLURAL` →
/// (apiVersion, namespace, plural, name).
fn parse_path(path: &str) -> Option<(String, Option<String>, String, Option<String>)> {
    let path = path.strip_suffix("/status").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (av, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, plural] => Some((av, Some((*ns).into()), (*plural).into(), None)),
        ["namespaces", ns, plural, name] => Some((av, Some((*ns).into()), (*plural).into(), Some((*name).into()))),
        [plural] => Some((av, None, (*plural).into(), None)),
        [plural, name] => Some((av, None, (*plural).into(), Some((*name).into()))),
        _ => None,
    }
}

fn query(req: &Request<hyper::body::Incoming>) -> BTreeMap<String, String> {
    let q = req.uri().query().unwrap_or("");
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a label selector.
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Kubernetes label selector syntax: `a=b,c!=d,e,!f,g in (x,y),h notin (z)`.
fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut reqs = Vec::new();
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner =
                rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or(format!("bad set in {p}"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        if let Some((k, v)) = p.split_once("!=") {
            reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            reqs.push(Req::NotIn(k.trim().into(), set(rest)?));
        } else if let Some((k, rest)) = p.split_once(" in ") {
            reqs.push(Req::In(k.trim().into(), set(rest)?));
        } else if let Some(k) = p.strip_prefix('!') {
            reqs.push(Req::NotExists(k.trim().into()));
        } else if p.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            reqs.push(Req::Exists(p.into()));
        } else {
            return Err(format!("unable to parse requirement: {p}"));
        }
    }
    Ok(reqs)
}

fn selects(reqs: &[Req], obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::Ne(k, v) => get(k) != Some(v.as_str()),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
    })
}

fn metadata_only(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"].clone()})
}

/// Reads go to `handle`; writes (create, replace, the status subresource) to `write`.
async fn route(inner: &Arc<Inner>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() == hyper::Method::GET {
        return handle(inner, req);
    }
    lock(inner).requests.push(format!("{} {}", req.method(), req.uri()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
    };
    write(inner, &method, &path, body)
}

/// A write as kube-apiserver does it: POST creates (409 when it exists), PUT replaces (409 when
/// `metadata.resourceVersion` is not the stored one), PATCH is a JSON merge patch; on
/// `…/status` only the status changes (and `generation` stays), elsewhere the status is kept.
fn write(inner: &Arc<Inner>, method: &hyper::Method, path: &str, body: Value) -> Response<Body> {
    let not_found =
        || reply(StatusCode::NOT_FOUND, &status(404, "NotFound", "the server could not find the requested resource"));
    let subresource = path.ends_with("/status");
    let Some((av, ns, plural, name)) = parse_path(path) else { return not_found() };
    let info = lock(inner).kinds.iter().find(|k| k.api_version == av && k.plural == plural).cloned();
    let Some(info) = info else { return not_found() };
    let ns = if info.namespaced { ns.unwrap_or_else(|| "default".into()) } else { String::new() };
    let resource = format!("{}/{}", info.api_version, info.plural);
    let name = match (&name, method) {
        (Some(n), _) => n.clone(),
        (None, &hyper::Method::POST) => body["metadata"]["name"].as_str().unwrap_or("").to_string(),
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "no such verb here")),
    };
    let existing = lock(inner).objects.get(&(resource, ns.clone(), name.clone())).cloned();
    let conflict = |m: &str| reply(StatusCode::CONFLICT, &status(409, "Conflict", m));
    let mut obj = match (method.as_str(), existing) {
        ("POST", Some(_)) => {
            return reply(
                StatusCode::CONFLICT,
                &status(409, "AlreadyExists", &format!("{plural} \"{name}\" already exists")),
            )
        }
        ("POST", None) => body,
        (_, None) => {
            return reply(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("{plural} \"{name}\" not found")))
        }
        ("PUT", Some(old)) => {
            let want = body["metadata"]["resourceVersion"].as_str();
            if want.is_some_and(|w| Some(w) != old["metadata"]["resourceVersion"].as_str()) {
                return conflict(&format!(
                    "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ));
            }
            if subresource {
                let mut o = old;
                o["status"] = body["status"].clone();
                o
            } else {
                let mut o = body;
                o["status"] = old["status"].clone();
                o
            }
        }
        ("PATCH", Some(old)) => {
            let mut o = old.clone();
            merge_patch(&mut o, &body);
            if subresource {
                let mut only = old;
                only["status"] = o["status"].clone();
                only
            } else {
                o["status"] = old["status"].clone();
                o
            }
        }
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "no such verb here")),
    };
    obj["apiVersion"] = json!(info.api_version);
    obj["kind"] = json!(info.kind);
    obj["metadata"]["name"] = json!(name);
    if info.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    }
    if obj["status"].is_null() {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    let key = (format!("{}/{}", info.api_version, info.plural), ns, name);
    match store(inner, obj) {
        Some(_) => match lock(inner).objects.get(&key) {
            Some(o) => reply(if method == hyper::Method::POST { StatusCode::CREATED } else { StatusCode::OK }, o),
            None => not_found(),
        },
        None => not_found(),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        if v.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(k);
            }
        } else {
            merge_patch(&mut target[k], v);
        }
    }
}

fn handle(inner: &Arc<Inner>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(&req);
    lock(inner).requests.push(format!("{} {}", req.method(), req.uri()));
    let Some((av, ns, plural, name)) = parse_path(&path) else {
        return reply(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    };
    let info = lock(inner).kinds.iter().find(|k| k.api_version == av && k.plural == plural).cloned();
    let Some(info) = info else {
        return reply(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    };
    let meta_only = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let selector = match parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return reply(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e)),
    };
    let resource = format!("{}/{}", info.api_version, info.plural);
    let ns = ns.filter(|_| info.namespaced);
    if let Some(name) = name {
        let st = lock(inner);
        let key = (resource, ns.unwrap_or_default(), name.clone());
        return match st.objects.get(&key) {
            Some(o) => reply(StatusCode::OK, o),
            None => {
                reply(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("{} \"{name}\" not found", info.plural)))
            }
        };
    }
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(inner, &info, resource, ns, selector, &q, meta_only);
    }
    list(inner, &info, &resource, ns.as_deref(), &selector, &q, meta_only)
}

fn list(
    inner: &Inner,
    info: &KindInfo,
    resource: &str,
    ns: Option<&str>,
    selector: &[Req],
    q: &BTreeMap<String, String>,
    meta_only: bool,
) -> Response<Body> {
    let st = lock(inner);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    // continue token: "RV:NAMESPACE/NAME" of the last item sent; the list keeps the first page's
    // resourceVersion, and a watch from it replays what changed while paging.
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let Some((rv, after)) = c.split_once(':') else {
                return reply(StatusCode::BAD_REQUEST, &status(400, "BadRequest", "invalid continue token"));
            };
            let rv: u64 = rv.parse().unwrap_or(0);
            if rv < st.compacted {
                return reply(
                    StatusCode::GONE,
                    &status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result.",
                    ),
                );
            }
            (rv, Some(after.to_string()))
        }
        None => (st.rv, None),
    };
    let mut items = Vec::new();
    let mut next = None;
    for ((r, ons, oname), obj) in &st.objects {
        if r != resource || ns.is_some_and(|n| n != ons) || !selects(selector, obj) {
            continue;
        }
        let key = format!("{ons}/{oname}");
        if after.as_ref().is_some_and(|a| key.as_str() <= a.as_str()) {
            continue;
        }
        if items.len() == limit {
            break;
        }
        items.push(if meta_only { metadata_only(obj) } else { obj.clone() });
        next = Some(key);
    }
    let more = next.as_ref().is_some_and(|last| {
        st.objects.iter().any(|((r, ons, oname), obj)| {
            r == resource
                && ns.is_none_or(|n| n == ons)
                && selects(selector, obj)
                && format!("{ons}/{oname}").as_str() > last.as_str()
        })
    });
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if more {
        if let Some(last) = next {
            metadata["continue"] = json!(format!("{list_rv}:{last}"));
        }
    }
    let (av, kind) = if meta_only {
        ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
    } else {
        (info.api_version.clone(), format!("{}List", info.kind))
    };
    reply(StatusCode::OK, &json!({"apiVersion": av, "kind": kind, "metadata": metadata, "items": items}))
}

fn line(v: &Value) -> Result<Frame<Bytes>, Infallible> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Frame::data(Bytes::from(s)))
}

fn watch(
    inner: &Arc<Inner>,
    info: &KindInfo,
    resource: String,
    ns: Option<String>,
    selector: Vec<Req>,
    q: &BTreeMap<String, String>,
    meta_only: bool,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1024);
    let from: u64 = q.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let kind = info.kind.clone();
    let av = info.api_version.clone();
    // Subscribe and read the history under one lock: no event falls between them.
    let (mut live, backlog, too_old, current) = {
        let st = lock(inner);
        let live = inner.events.subscribe();
        let too_old = from != 0 && from < st.compacted;
        let backlog: Vec<Change> = if from == 0 {
            // No resourceVersion: start with the current state as ADDED events (kube-apiserver's
            // "Any" semantics for a watch without one).
            st.objects
                .iter()
                .filter(|((r, _, _), _)| *r == resource)
                .map(|(_, o)| Change { rv: st.rv, resource: resource.clone(), kind: "ADDED", object: o.clone() })
                .collect()
        } else {
            st.history.iter().filter(|c| c.rv > from && c.resource == resource).cloned().collect()
        };
        (live, backlog, too_old, st.rv)
    };
    let mut epoch = inner.epoch.subscribe();
    let bookmark_every = inner.bookmark_every;
    tokio::spawn(async move {
        if too_old {
            let s = status(410, "Expired", &format!("too old resource version: {from} ({current})"));
            let _ = tx.send(line(&json!({"type": "ERROR", "object": s}))).await;
            return;
        }
        let matches = |c: &Change| {
            ns.as_ref().is_none_or(|n| c.object["metadata"]["namespace"].as_str() == Some(n))
                && selects(&selector, &c.object)
        };
        let render = |c: &Change| {
            let obj = if meta_only { metadata_only(&c.object) } else { c.object.clone() };
            json!({"type": c.kind, "object": obj})
        };
        let mut last = from;
        for c in &backlog {
            last = last.max(c.rv);
            if matches(c) && tx.send(line(&render(c))).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        epoch.borrow_and_update();
        loop {
            let end = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(c) => {
                        if c.rv <= last {
                            continue;
                        }
                        // Events arrive in resourceVersion order: every change up to this one
                        // has been seen, so bookmarks may say so.
                        last = c.rv;
                        if c.resource == resource && matches(&c) && tx.send(line(&render(&c))).await.is_err() {
                            return;
                        }
                    }
                    // A watcher too slow for the buffer is cut off, as the real one is.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": {"apiVersion": av, "kind": kind,
                        "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(line(&bm)).await.is_err() {
                        return;
                    }
                }
                _ = epoch.changed() => return,
                _ = end => return,
            }
        }
    });
    let body = BodyExt::boxed_unsync(StreamBody::new(tokio_stream_from(rx)));
    let mut r = Response::new(body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"labels": {"app": "a", "version": "v1"}}});
        let t = |s: &str| selects(&parse_selector(s).unwrap(), &o);
        assert!(t("app=a"));
        assert!(t("app==a,version"));
        assert!(!t("app!=a"));
        assert!(t("version in (v1, v2)"));
        assert!(!t("version notin (v1)"));
        assert!(t("!missing"));
        assert!(!t("missing"));
    }
}
