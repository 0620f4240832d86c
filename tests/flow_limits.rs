//! Attack test (issue 15, item 3): thousands of idle and half-sent TCP flows
//! from many 127.0.2.x sources against uacd's TCP listener while a call
//! still goes through and the API answers; flows beyond the per-IP limit
//! are closed at accept, half-sent ones after `limits.header_timeout_sec`,
//! idle ones after `limits.inbound_flow_idle_sec` (each reason counted in
//! `uacd_transport_flows_closed_total`).
//!
//! | address | role |
//! |---|---|
//! | 127.0.2.1 | uacd (SIP 5060 udp+tcp, API) |
//! | 127.0.2.2 | Kamailio (PBX: registrar, routes the call to uacd) |
//! | 127.0.2.3 | SIPp caller (a phone on the PBX) |
//! | 127.0.2.4 | SIPp destination |
//! | 127.0.2.10.. | attackers |

mod api_client;
mod common;

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use api_client::Api;
use common::{
    Kamailio, KamailioOpts, Sipp, Uacd, free_tcp_port, poll_until, require_peer, temp_dir,
};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "flow-limits-test-token-0123456789";
const PER_IP: usize = 100;
/// Connections beyond PER_IP from the first attacker address.
const OVER: usize = 10;
const HEADER_TIMEOUT_SEC: u64 = 2;
const IDLE_SEC: u64 = 8;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, n)
}

/// How many attack connections fit: each side (this process and uacd)
/// holds one descriptor per connection, under the same soft limit.
fn attack_size() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    3000.min(soft.saturating_sub(300))
}

/// Opens `n` TCP connections from `from` to `to`.
async fn connect_many(from: Ipv4Addr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        let s = tokio::time::timeout(WAIT, s.connect(to))
            .await
            .expect("connect in time")
            .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
        out.push(s.into_std().unwrap());
    }
    out
}

/// Whether uacd has closed this connection (EOF or reset), without blocking.
fn is_closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

fn closed_count(flows: &[TcpStream]) -> usize {
    flows.iter().filter(|s| is_closed(s)).count()
}

/// Waits until every connection of `flows` is closed; panics naming `what`.
fn wait_all_closed(flows: &[TcpStream], what: &str, timeout: Duration) {
    let mut open: Vec<&TcpStream> = flows.iter().collect();
    let r = poll_until(timeout, || {
        open.retain(|s| !is_closed(s));
        open.is_empty()
    });
    assert!(
        r.is_ok(),
        "{} {what} flows still open after {timeout:?}",
        open.len()
    );
}

fn metric(text: &str, reason: &str) -> u64 {
    let prefix = format!("uacd_transport_flows_closed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} sample:\n{text}"))
}

#[test]
fn thousands_of_idle_and_half_sent_flows_while_a_call_completes() {
    require_peer("sipp");
    require_peer("kamailio");
    let dir = temp_dir("flow-limits");
    let uacd_sip = SocketAddr::from((ip(1), 5060));
    let api_addr = SocketAddr::from((ip(1), free_tcp_port(ip(1))));
    let kdir = dir.join("kamailio");
    std::fs::create_dir_all(&kdir).unwrap();
    let mut opts = KamailioOpts::new(ip(2), 5060, "s3cret");
    opts.pbx = true;
    let kam = Kamailio::start(opts, &kdir);
    let config = format!(
        r#"[sip]
listen = ["udp:{uacd_sip}", "tcp:{uacd_sip}"]
[api]
listen = "{api_addr}"
[[api.tokens]]
token = "{TOKEN}"
user_id = "1"
[limits]
inbound_flows = 4096
inbound_flows_per_ip = {PER_IP}
inbound_flow_idle_sec = {IDLE_SEC}
header_timeout_sec = {HEADER_TIMEOUT_SEC}
[registration]
retry_interval_sec = 2
max_retry_interval_sec = 2
[[connection]]
id = "c1"
connection_name = "Kamailio PBX"
user_name = "uacd-c1"
[connection.external_uac_settings]
proxy = "sip:{pbx}:5060"
transport = "TCP"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "1006@{dest}:5060"
"#,
        pbx = ip(2),
        dest = ip(4),
    );
    let mut uacd = Uacd::start(&config, &dir);
    uacd.wait_for_log("status=success", WAIT);
    let api = Api::new(api_addr, TOKEN);

    // The attack: OVER too many from one address, then idle flows and
    // half-sent header blocks from other addresses, PER_IP from each.
    let total = attack_size();
    assert!(
        total >= 3 * PER_IP,
        "fd limit too low for the test: {total}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut over = rt.block_on(connect_many(ip(10), uacd_sip, PER_IP + OVER));
    let rest = total - over.len();
    let (mut idle, mut half) = (Vec::new(), Vec::new());
    for (i, n) in (0..rest.div_ceil(PER_IP)).map(|i| (i, PER_IP.min(rest - i * PER_IP))) {
        let mut flows = rt.block_on(connect_many(ip(11 + i as u8), uacd_sip, n));
        if i % 3 == 0 {
            // Written as soon as the group is open: opening thousands of
            // flows on a loaded machine can outlast the idle timeout, and
            // a flow must not go idle before its half-sent header arrives.
            for s in &mut flows {
                use std::io::Write;
                s.write_all(b"INVITE sip:1006@127.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.2.11;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n")
                    .unwrap();
            }
            half.extend(flows);
        } else {
            idle.extend(flows);
        }
    }
    for s in over.iter_mut().chain(&mut idle).chain(&mut half) {
        s.set_nonblocking(true).unwrap();
    }

    // (c) Beyond the per-IP limit: closed at once.
    let r = poll_until(WAIT, || closed_count(&over) >= OVER);
    assert!(
        r.is_ok(),
        "connections beyond {PER_IP} from one IP were not closed"
    );

    // (a) A call still completes: phone -> PBX -> uacd -> destination.
    let mut dest = Sipp::new("uas-answer.xml", &dir)
        .name("dest")
        .local(ip(4), 5060)
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    let mut caller = Sipp::new("pbx-call.xml", &dir)
        .name("caller")
        .local(ip(3), 5060)
        .remote(format!("{}:5060", ip(2)))
        .args(["-s", "telnyx-reg", "-key", "mf", "70"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    // (b) The API answers meanwhile.
    assert_eq!(api.get("/healthz").status, 200);
    caller.wait_success(WAIT);
    dest.wait_success(WAIT);

    // (d) Half-sent header blocks are closed by the header deadline, idle
    // flows by the idle timeout; the over-limit address's admitted flows
    // are idle ones too.
    wait_all_closed(&half, "half-sent", WAIT);
    wait_all_closed(&idle, "idle", WAIT);
    wait_all_closed(&over, "over-limit", WAIT);
    let text = api.get("/metrics").body;
    assert_eq!(metric(&text, "inbound_flows_per_ip"), OVER as u64, "{text}");
    assert_eq!(metric(&text, "inbound_flows"), 0);
    assert!(
        metric(&text, "header_timeout") >= half.len() as u64,
        "{text}"
    );
    assert!(
        metric(&text, "idle") >= (idle.len() + PER_IP) as u64,
        "{text}"
    );
    assert!(uacd.child.try_status().is_none(), "uacd is still running");
    assert_eq!(api.get("/healthz").status, 200);
    // The registration's own flow (opened by uacd) was not touched.
    let log = std::fs::read_to_string(uacd.log_path()).unwrap_or_default();
    assert!(
        !log.contains("flow to registrar closed"),
        "registration flow closed"
    );
    uacd.terminate(Duration::from_secs(10));
    drop(kam);
}
