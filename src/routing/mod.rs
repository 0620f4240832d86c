//! Routing: the pure decisions of the transaction-stateful, record-routing
//! proxy (RFC 3261 §16, RFC 5658, RFC 6026): which connection an inbound
//! request belongs to and whether it may be relayed (`route`), the bytes of a
//! forwarded request or relayed response (`forward`), the failover and best
//! response rules (`failover`) and the per-call machine tying them to the
//! INVITE transactions (`call`). No I/O: the proxy task carries out actions.

pub mod call;
pub mod dialogs;
pub mod failover;
pub mod forward;
pub mod proxy;
pub mod route;

#[cfg(test)]
mod call_tests;
#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod testdata;

use crate::config::Transport;
use crate::sip::{Host, Scheme, Uri, Via};

/// One of our SIP interfaces as advertised in Via and Record-Route: the
/// listener's address, or `sip.public_address` behind NAT.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Interface {
    pub transport: Transport,
    pub host: Host,
    pub port: u16,
}

impl Interface {
    pub fn new(transport: Transport, host: Host, port: u16) -> Interface {
        Interface {
            transport,
            host,
            port,
        }
    }

    /// Our Via value: `SIP/2.0/UDP host:port;branch=...;rport` (RFC 3581 §3).
    pub fn via_value(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            self.transport.via_token(),
            self.host,
            self.port
        )
    }

    /// Our Record-Route value: `<sip:host:port;transport=x;lr>`, plus the
    /// dialog token that lets in-dialog requests prove they follow a route
    /// set we created (see [`route`]).
    pub fn record_route_value(&self, token: &str) -> String {
        format!(
            "<sip:{}:{};transport={};lr;{}={token}>",
            self.host,
            self.port,
            self.transport.uri_param(),
            route::TOKEN_PARAM
        )
    }
}

/// The addresses and names that are "us" (RFC 3261 §16.4: a URI this proxy
/// placed in a Record-Route, or a Request-URI it is responsible for).
#[derive(Clone, Debug, Default)]
pub struct Local {
    /// Every interface we listen on or advertise (concrete addresses, not 0.0.0.0).
    pub interfaces: Vec<Interface>,
    /// Extra host names that mean us (e.g. the machine's FQDN), compared ignoring case.
    pub names: Vec<String>,
}

impl Local {
    fn host_is_us(&self, host: &Host, port: u16) -> bool {
        let name_match = |h: &Host| match (h, host) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        };
        self.interfaces
            .iter()
            .any(|i| i.port == port && name_match(&i.host))
            || matches!(host, Host::Domain(d) if self.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
                && self.interfaces.iter().any(|i| i.port == port)
    }

    /// Whether `uri` designates this proxy (host and port, the port defaulting
    /// to 5061 for `sips:` or `transport=tls`, else 5060; RFC 3263 §4).
    pub fn is_us(&self, uri: &Uri) -> bool {
        if !uri.is_sip() {
            return false;
        }
        let tls = uri.scheme == Scheme::Sips
            || uri
                .params
                .value("transport")
                .is_some_and(|t| t.eq_ignore_ascii_case("tls"));
        let port = uri.port.unwrap_or(if tls { 5061 } else { 5060 });
        self.host_is_us(&uri.host, port)
    }

    /// Whether a Via's sent-by is one of our interfaces.
    pub fn is_our_via(&self, via: &Via) -> bool {
        let tls = via.transport.eq_ignore_ascii_case("TLS");
        let port = via.port.unwrap_or(if tls { 5061 } else { 5060 });
        self.host_is_us(&via.host, port)
    }
}

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
