//! Test helpers shared by `crates/proxy/tests` and `crates/portico/tests`: real clients (hyper,
//! HTTP/1, h2c, TLS with a custom root), an echo backend, certificates made at test time, free
//! ports, and the real binary started on a config with its readiness awaited.
//!
//! Test-only code (a dev-dependency): a failed helper fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backend;
pub mod blocking;
pub mod certs;
pub mod client;
pub mod hello;
pub mod net;
pub mod process;
