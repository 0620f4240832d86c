//! uacd: a SIP UAC registration and routing daemon.
//!
//! Layout (one module per concern):
//! * `config`: TOML schema, defaults and validation (design.md Part 2).
//! * `sip`: wire-faithful message parser and builder, URIs, digest (pure).
//! * `transport`: UDP sockets, TCP/TLS flows, framing, keepalive.
//! * `transaction`: RFC 3261 §17 client transactions and timers.
//! * `routing`: pure proxy decisions (RFC 3261 §16): match, source check,
//!   forwarding, failover, the per-call machine.
//! * `registration`: pure REGISTER state machine, its driver task, supervisor.
//! * `store`: SQLite persistence of connections (file- and API-owned).
//! * `api`: REST API (Telnyx v2 shapes), error format, OpenAPI document.
//! * `crypto`: constant-time comparison, hex, HMAC-SHA256 (secrets).
//! * `app`: wiring and graceful shutdown.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod metrics;
pub mod registration;
pub mod routing;
pub mod sip;
pub mod status;
pub mod store;
pub mod systemd;
pub mod transaction;
pub mod transport;
