//! Who and where this daemon is, shared by registration and routing: the
//! daemon-wide [`Context`] (config, transaction layer, transports, DNS,
//! timers), our SIP [`Interface`]s as a peer sees them (RFC 3261 §18.1.1 Via
//! sent-by, §16.6 Record-Route; `sip.public_address` behind NAT), and the
//! set of addresses and names that are [`Local`] (§16.4; pure, in
//! `interface`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

mod interface;

use crate::config::{Config, PublicAddress, PublicHost, Transport};
use crate::dns::Dns;
use crate::sip::Host;
use crate::transaction::{Layer, client::Timers};
use crate::transport::Transports;

pub use interface::{Interface, Local};

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
    /// Record-Route. With `sip.public_address`: its host, and its port, else
    /// the listener's, else the transport's default. Otherwise the socket
    /// the message leaves from or arrived on (`local`; without one, the
    /// listener), a wildcard IP replaced by `route` (a cached answer for
    /// this peer) or the local IP the kernel routes towards `peer`; over UDP
    /// the socket's port, over TCP/TLS the listener's (a connection's own
    /// port is ephemeral, and a peer connects to the listener, RFC 3261
    /// §18.1.1).
    pub fn interface(
        &self,
        transport: Transport,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        route: Option<IpAddr>,
    ) -> Interface {
        let listen = self.transports.listen_addr(transport);
        if let Some(p) = self.public() {
            let port = p
                .port
                .or(listen.map(|a| a.port()))
                .unwrap_or(transport.default_port());
            return Interface::new(transport, public_host(&p.host), port);
        }
        let port = match (transport, local) {
            (Transport::Udp, Some(l)) => l.port(),
            _ => listen
                .or(local)
                .map_or(transport.default_port(), |a| a.port()),
        };
        let ip = local
            .or(listen)
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
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
