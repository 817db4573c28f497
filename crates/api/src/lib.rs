//! Istio and Kubernetes resource types, and parsing of YAML/JSON text into them.
//! Data only: no sockets, no files, no clocks (the caller reads the files and hands over the text).
#![forbid(unsafe_code)]

pub mod diag;
pub mod gateway_api;
pub mod istio;
pub mod k8s;
pub mod resource;
pub mod source;

pub use diag::{Diagnostic, Location, Severity};
pub use resource::{FieldIndex, Kind, Origin, Resource, Spec};
pub use source::{parse_document, parse_text, split_documents, Parsed};
