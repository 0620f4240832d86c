//! uacd: a SIP UAC registration and routing daemon.
//!
//! Layout (one module per concern):
//! * `config`: TOML schema, defaults and validation (design.md Part 2).
//! * `sip`: wire-faithful message parser and builder, URIs, digest (pure).
//! * `transport`: UDP sockets, TCP/TLS flows, framing, keepalive.
//! * `transaction`: RFC 3261 §17 client transactions and timers.
//! * `registration`: pure REGISTER state machine, its driver task, supervisor.
//! * `store`: SQLite persistence of connections (file- and API-owned).
//! * `api`: REST API (Telnyx v2 shapes), error format, OpenAPI document.
//! * `app`: wiring and graceful shutdown.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod registration;
pub mod sip;
pub mod store;
pub mod transaction;
pub mod transport;
