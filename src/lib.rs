//! uacd: a SIP UAC registration and routing daemon.
//!
//! Layout (one module per concern; imports flow down this list, and
//! `scripts/check-layout.py` checks that they never form a cycle):
//! * `app`: wiring, the routing directory over the registrations, reload
//!   and graceful shutdown; `systemd`: notify and the watchdog probe.
//! * `api`: REST API (Telnyx v2 shapes), error format, OpenAPI document;
//!   `status`: the `uacd status` client.
//! * `store`: SQLite persistence of connections (file- and API-owned), or
//!   PostgreSQL in cluster mode.
//! * `cluster`: ownership of connections by lease among the nodes of a
//!   cluster (pure core + the loop that drives it).
//! * `registration`: pure REGISTER state machine, its driver task, the
//!   supervisor that owns the drivers.
//! * `routing`: the proxy (RFC 3261 §16): pure route, call, failover,
//!   forward and dialog rules, each beside the I/O that drives it.
//! * `context`: who and where we are: the daemon-wide context, our
//!   interfaces and public address as a peer sees them.
//! * `transaction`: RFC 3261 §17 client and server transactions and timers.
//! * `transport`: UDP sockets, TCP/TLS flows, framing, keepalive, ICMP.
//! * `sip`: wire-faithful message parser and builder, URIs, digest (pure).
//! * Leaves, importing nothing but `config`'s value types: `config` (TOML
//!   schema, defaults and validation), `dns` (RFC 3263/2782 resolution,
//!   cache, greylist), `metrics` (every metric name), `crypto`
//!   (constant-time comparison, hex, HMAC-SHA256).

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cluster;
pub mod config;
pub mod context;
pub mod crypto;
pub mod dns;
pub mod lograte;
pub mod metrics;
pub mod registration;
pub mod routing;
pub mod sip;
pub mod status;
pub mod store;
pub mod systemd;
pub mod transaction;
pub mod transport;
