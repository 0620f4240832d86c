//! Our SIP interfaces and the set of addresses and names that are us
//! (RFC 3261 §16.4), pure: the routing rules compare against them.

use std::net::SocketAddr;

use crate::config::Transport;
use crate::sip::{Host, Scheme, Uri, Via};

/// One of our SIP interfaces as advertised in Via, Contact and
/// Record-Route.
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

    /// `host:port` as in a Via sent-by or a Contact (IPv6 bracketed).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The socket address, when the host is an IP (not a public name).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host.ip().map(|ip| SocketAddr::new(ip, self.port))
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
        let param = uri
            .params
            .value("transport")
            .and_then(|t| t.parse::<Transport>().ok());
        let named = Transport::named_by(uri.scheme == Scheme::Sips, param);
        let port = uri
            .port
            .unwrap_or(named.unwrap_or(Transport::Udp).default_port());
        self.host_is_us(&uri.host, port)
    }

    /// Whether a Via's sent-by is one of our interfaces.
    pub fn is_our_via(&self, via: &Via) -> bool {
        let tls = via.transport.eq_ignore_ascii_case("TLS");
        let port = via.port.unwrap_or(if tls { 5061 } else { 5060 });
        self.host_is_us(&via.host, port)
    }
}
