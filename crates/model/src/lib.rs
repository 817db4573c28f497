//! PURE: validation, binding and compilation of Istio resources into a `Snapshot`.
//! No sockets, files, clocks or threads here (DESIGN.md §2).
#![forbid(unsafe_code)]

mod analyze;
pub mod compile;
pub mod duration;
pub mod gateway_api;
pub mod host;
mod ingress;
pub mod matcher;
mod options;
mod registry;
pub mod render;
pub mod routes;
pub mod snapshot;
mod support;
pub mod template;
pub mod tls;
pub mod validate;

pub use compile::{build, compile, Analysis, Built, Compiled};
pub use options::Options;
pub use snapshot::Snapshot;
