//! The one delivery engine: everything that must reach an HTTP target.
//!
//! Owns the outbound HTTP client (rustls, connection pool), the mapping of a
//! received request onto its upstream (`forward`), and, in queue mode, the
//! workers, retry policy, circuit breakers, attempt log and dead letters. It knows no route
//! configuration beyond what a job or a [`forward::Target`] carries.

pub mod circuit;
pub mod client;
pub mod engine;
pub mod forward;
pub mod job;
pub mod policy;
pub mod ssrf;
pub mod tls;
