//! An authoritative DNS server in the test process (hickory-server) on a
//! loopback address, UDP and TCP on the same port, whose zone a test can
//! replace at any time and which it can stop and start again.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// One record of the test zone (names are absolute, without the final dot).
#[derive(Debug, Clone)]
pub enum Rr {
    Srv {
        name: String,
        ttl: u32,
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    A {
        name: String,
        ttl: u32,
        ip: Ipv4Addr,
    },
    Cname {
        name: String,
        ttl: u32,
        target: String,
    },
}

pub fn srv(name: &str, ttl: u32, priority: u16, port: u16, target: &str) -> Rr {
    Rr::Srv {
        name: name.into(),
        ttl,
        priority,
        weight: 10,
        port,
        target: target.into(),
    }
}

pub fn a(name: &str, ttl: u32, ip: Ipv4Addr) -> Rr {
    Rr::A {
        name: name.into(),
        ttl,
        ip,
    }
}

pub fn cname(name: &str, ttl: u32, target: &str) -> Rr {
    Rr::Cname {
        name: name.into(),
        ttl,
        target: target.into(),
    }
}

fn name(s: &str) -> Name {
    if s == "." {
        return Name::root();
    }
    Name::from_str(&format!("{}.", s.trim_end_matches('.'))).expect("valid name")
}

pub struct DnsServer {
    pub addr: SocketAddr,
    origin: Name,
    zone: Arc<InMemoryZoneHandler>,
    server: Option<Server<Catalog>>,
    serial: u32,
}

impl DnsServer {
    /// Serves `origin` (e.g. "pbx.test") on `ip`, on a free port.
    pub async fn start(ip: Ipv4Addr, origin: &str) -> DnsServer {
        let udp = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .expect("bind dns udp");
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind dns tcp");
        let origin = name(origin);
        let zone = Arc::new(InMemoryZoneHandler::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        ));
        let mut s = DnsServer {
            addr,
            origin,
            zone,
            server: None,
            serial: 1,
        };
        s.set(&[]).await;
        s.serve(udp, tcp);
        s
    }

    fn serve(&mut self, udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener) {
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&self.origin), vec![self.zone.clone()]);
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65_535);
        self.server = Some(server);
    }

    /// Replaces every record of the zone (the SOA is kept).
    pub async fn set(&mut self, records: &[Rr]) {
        self.serial += 1;
        self.zone.records_mut().await.clear();
        let soa = SOA::new(
            name(&format!("ns.{}", self.origin)),
            name(&format!("hostmaster.{}", self.origin)),
            self.serial,
            60,
            60,
            600,
            1,
        );
        self.zone
            .upsert(
                Record::from_rdata(self.origin.clone(), 1, RData::SOA(soa)),
                self.serial,
            )
            .await;
        for rr in records {
            let record = match rr {
                Rr::Srv {
                    name: n,
                    ttl,
                    priority,
                    weight,
                    port,
                    target,
                } => Record::from_rdata(
                    name(n),
                    *ttl,
                    RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
                ),
                Rr::A { name: n, ttl, ip } => Record::from_rdata(name(n), *ttl, RData::A(A(*ip))),
                Rr::Cname {
                    name: n,
                    ttl,
                    target,
                } => Record::from_rdata(name(n), *ttl, RData::CNAME(CNAME(name(target)))),
            };
            self.zone.upsert(record, self.serial).await;
        }
    }

    /// Stops answering (the port is closed: queries time out or are refused).
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.shutdown_gracefully().await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let udp = tokio::net::UdpSocket::bind(self.addr)
            .await
            .expect("rebind dns udp");
        let tcp = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind dns tcp");
        self.serve(udp, tcp);
    }
}
