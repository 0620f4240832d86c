//! dnsmasq as edge boxes run it: its own `srv-host`/`host-record` entries,
//! no upstream (`--no-resolv`), no `/etc/hosts`, as this test's child on a
//! loopback address and a free port, logging every query to its stderr.
//! Stopped by PID when dropped (`Child`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Child, free_udp_port, peer_path, tail, wait_for_udp_listener};

pub struct Dnsmasq {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// Serves `records`, dnsmasq options such as
    /// `--srv-host=_sip._udp.dest.test,sip1.dest.test,5070,10,0` and
    /// `--host-record=sip1.dest.test,127.0.0.133`, on `ip`; waits (5 s max)
    /// until it listens.
    pub fn start(ip: Ipv4Addr, records: &[String], dir: &Path) -> Dnsmasq {
        let bin = peer_path("dnsmasq");
        // One port free for both (dnsmasq serves UDP and TCP on it).
        let port = (0..100)
            .map(|_| free_udp_port(ip))
            .find(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
            .unwrap_or_else(|| panic!("no port free for both UDP and TCP on {ip}"));
        let mut cmd = Command::new(bin);
        cmd.args([
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--bind-interfaces",
            // Hermetic: not /etc/dnsmasq.conf, no pid file in /run.
            "--conf-file=/dev/null",
            "--log-queries",
            "--log-facility=-",
        ])
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg(format!("--port={port}"))
        .arg(format!("--listen-address={ip}"))
        .args(records);
        let mut child = Child::spawn("dnsmasq", cmd, dir);
        if let Err(e) = wait_for_udp_listener(ip, port, Duration::from_secs(5)) {
            let log = tail(child.stderr_path(), 20);
            child.terminate(Duration::from_secs(2));
            panic!("dnsmasq did not come up: {e}\n{log}");
        }
        Dnsmasq {
            child,
            addr: SocketAddr::from((ip, port)),
        }
    }

    /// dnsmasq's log: `query[NAPTR] dest.test from ...`, then the answer
    /// (`config error is REFUSED (EDE: not ready)`, `config ... is <SRV>`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.child.stderr_path()).unwrap_or_default()
    }
}
