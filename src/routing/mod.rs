//! Routing (RFC 3261 §16, RFC 5658, RFC 6026): a transaction-stateful,
//! record-routing proxy from each connection's PBX to its
//! `destination_uri`. Pure cores and the I/O that drives each, side by side:
//! - `route` (which connection, may it be relayed) driven by `router`, which
//!   admits requests and dispatches them;
//! - `call` (one proxied INVITE, with `failover`'s rules) driven by
//!   `executor`;
//! - `outbound` (the two views of a call toward a PBX, digest answers)
//!   and `calls` (channel limits, the views of open calls), used by both;
//! - `dialogs` (where a dialog's requests may go) and `forward` (the bytes
//!   of a forwarded request or relayed response) driven by `relay`, the
//!   stateless in-dialog path (§16.11).

pub mod call;
mod call_events;
pub mod calls;
pub mod dialogs;
mod executor;
pub mod failover;
pub mod forward;
pub mod outbound;
mod relay;
pub mod route;
mod router;
pub mod token;

#[cfg(test)]
mod call_outbound_tests;
#[cfg(test)]
mod call_tests;
#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod testdata;

pub use route::{ConnectionEntry, Directory};
pub use router::{MAX_IN_PROGRESS, Router};

/// The keyed tag (first 8 bytes of HMAC-SHA256 over `parts`, in hex) in our
/// Record-Route entries and stateless branches. Stable across releases, so
/// dialogs survive an upgrade.
pub fn tag(key: &[u8], parts: &[&[u8]]) -> String {
    crate::crypto::hex(&crate::crypto::hmac_sha256(key, parts)[..8])
}

/// Whether a tag we received is the one we computed (constant time).
pub fn tags_match(received: &str, expected: &str) -> bool {
    crate::crypto::constant_time_eq(received.as_bytes(), expected.as_bytes())
}
