//! What the watchers have seen, per watcher, and the resources it makes.

use crate::convert::{self, PodLabels};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use portico_api::{Diagnostic, Parsed, Resource};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One object as kept: Istio kinds and Secrets already parsed (once per change, not per
/// compile); Services and EndpointSlices typed; Pods and Namespaces only their labels.
#[derive(Clone, Debug)]
pub enum Item {
    Parsed(Arc<Parsed>),
    Service(Arc<Service>),
    Slice(Arc<EndpointSlice>),
    Pod(BTreeMap<String, String>),
    Namespace(BTreeMap<String, String>),
}

/// Objects by watcher, then by `namespace/name`. A watcher's (re)list replaces its own map
/// whole, so an object deleted while the watch was down does not linger.
#[derive(Default)]
pub struct Store {
    pub watchers: BTreeMap<String, BTreeMap<String, Item>>,
    /// Bumped on every change: equal generations mean nothing changed.
    pub generation: u64,
}

/// All resources of one moment, in a stable order (two replicas that saw the same objects
/// compile the same snapshot).
pub struct Load {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
    pub generation: u64,
}

impl Store {
    pub fn replace(&mut self, watcher: &str, items: BTreeMap<String, Item>) {
        self.watchers.insert(watcher.to_string(), items);
        self.generation += 1;
    }

    pub fn apply(&mut self, watcher: &str, key: String, item: Item) {
        self.watchers.entry(watcher.to_string()).or_default().insert(key, item);
        self.generation += 1;
    }

    pub fn delete(&mut self, watcher: &str, key: &str) {
        if let Some(m) = self.watchers.get_mut(watcher) {
            if m.remove(key).is_some() {
                self.generation += 1;
            }
        }
    }

    pub fn count(&self, watcher: &str) -> usize {
        self.watchers.get(watcher).map_or(0, BTreeMap::len)
    }

    /// Objects that came with an error diagnostic (not decoded, or rejected), per watcher.
    pub fn rejected(&self, watcher: &str) -> usize {
        self.watchers.get(watcher).map_or(0, |m| {
            m.values()
                .filter(|i| matches!(i, Item::Parsed(p) if p.diagnostics.iter().any(Diagnostic::is_error)))
                .count()
        })
    }

    pub fn load(&self, domain_suffix: &str) -> Load {
        let mut resources = Vec::new();
        let mut diagnostics = Vec::new();
        let mut services: BTreeMap<String, &Service> = BTreeMap::new();
        let mut slices: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
        let mut pods = PodLabels::new();
        for items in self.watchers.values() {
            for (key, item) in items {
                match item {
                    Item::Parsed(p) => {
                        resources.extend(p.resources.iter().cloned());
                        diagnostics.extend(p.diagnostics.iter().cloned());
                    }
                    Item::Service(s) => {
                        services.insert(key.clone(), s);
                    }
                    Item::Slice(s) => {
                        if let Some(svc) = convert::slice_service(s) {
                            slices.entry(svc).or_default().push(s);
                        }
                    }
                    Item::Pod(labels) => {
                        pods.insert(key.clone(), labels.clone());
                    }
                    Item::Namespace(_) => {}
                }
            }
        }
        for (key, svc) in services {
            let empty = Vec::new();
            let these = slices.get(&key).unwrap_or(&empty);
            if let Some(r) = convert::service_entry(svc, these, &pods, domain_suffix) {
                resources.push(r);
            }
            resources.extend(convert::service_object(svc));
        }
        Load { resources, diagnostics, generation: self.generation }
    }
}
