//! Who and where this daemon is, shared by registration and routing: the
//! daemon-wide [`Context`] (config, transaction layer, transports, DNS,
//! timers), our SIP [`Interface`]s as a peer sees them (RFC 3261 §18.1.1 Via
//! sent-by, §16.6 Record-Route; `sip.public_address` behind NAT), and the
//! set of addresses and names that are [`Local`] (§16.4).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, PublicAddress, PublicHost, Transport};
use crate::dns::Dns;
use crate::sip::{Host, Scheme, Uri, Via};
use crate::transaction::{Layer, client::Timers};
use crate::transport::Transports;

/// What registration and routing share.
pub struct Context {
    pub config: Arc<Config>,
    pub layer: Layer,
    pub transports: Transports,
    pub timers: Timers,
    /// RFC 3263 resolution and target health.
    pub dns: Arc<Dns>,
}

impl Context {
    pub fn new(
        config: Arc<Config>,
        layer: Layer,
        transports: Transports,
        dns: Arc<Dns>,
    ) -> Context {
        Context {
            config,
            layer,
            transports,
            timers: Timers::default(),
            dns,
        }
    }

    /// `sip.public_address`, when configured.
    pub fn public(&self) -> Option<&PublicAddress> {
        self.config.sip.public_address.as_ref()
    }

    /// Our interface on `transport` as `peer` sees it, for Via, Contact and
    /// Record-Route: `sip.public_address` when configured; else the socket
    /// the message leaves from or arrived on (`local`), or the listener. A
    /// wildcard IP becomes `route` (a cached answer for this peer) or the
    /// local IP the kernel routes towards `peer`. Over UDP the port is the
    /// socket's; over TCP/TLS the listener's (a connection's own port is
    /// ephemeral, and a peer connects to the listener, RFC 3261 §18.1.1).
    pub fn interface(
        &self,
        transport: Transport,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        route: Option<IpAddr>,
    ) -> Interface {
        let listen = self.transports.listen_addr(transport);
        let port = match (transport, local) {
            (Transport::Udp, Some(l)) => l.port(),
            _ => listen
                .or(local)
                .map_or(transport.default_port(), |a| a.port()),
        };
        if let Some(p) = self.public() {
            return Interface::new(transport, public_host(&p.host), p.port.unwrap_or(port));
        }
        let concrete = |a: Option<SocketAddr>| a.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        let ip = concrete(local)
            .or(concrete(listen))
            .or(route)
            .or_else(|| local_ip_towards(peer))
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Interface::new(transport, Host::from(ip), port)
    }

    /// Every interface we listen on or advertise, for [`Local`]: the
    /// listeners bound to a concrete address, and the public address on
    /// each listener's transport.
    pub fn local(&self) -> Local {
        let mut local = Local::default();
        let bound = self.transports.listen_addrs();
        for (transport, addr) in &bound {
            if !addr.ip().is_unspecified() {
                local.interfaces.push(Interface::new(
                    *transport,
                    Host::from(addr.ip()),
                    addr.port(),
                ));
            }
        }
        if let Some(p) = self.public() {
            let host = public_host(&p.host);
            for (transport, addr) in &bound {
                let port = p.port.unwrap_or(addr.port());
                local
                    .interfaces
                    .push(Interface::new(*transport, host.clone(), port));
            }
            if let Host::Domain(d) = &host {
                local.names.push(d.clone());
            }
        }
        local
    }
}

fn public_host(h: &PublicHost) -> Host {
    match h {
        PublicHost::Ip(ip) => Host::from(*ip),
        PublicHost::Name(n) => Host::Domain(n.clone()),
    }
}

/// The local address the kernel would use towards `remote` (no packet is
/// sent: connecting a UDP socket only picks a route).
pub fn local_ip_towards(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(remote).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

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
