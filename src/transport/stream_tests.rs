//! The flow policy as the stream driver carries it out: in-memory streams
//! under paused time for the deadlines, loopback sockets for accept.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::transport::{FlowUsers, InboundHandler, Transports};

/// Hands every message's Call-ID to the test; panics on Call-ID `panic`.
struct Collect(mpsc::UnboundedSender<String>);

impl InboundHandler for Collect {
    fn handle(&self, inbound: Inbound) {
        let id = inbound.msg.call_id().unwrap_or("").to_owned();
        assert_ne!(id, "panic", "the handler panics on purpose");
        let _ = self.0.send(id);
    }
}

/// Flows a registration uses, as the supervisor would answer.
struct Used(Mutex<HashSet<u64>>);

impl FlowUsers for Used {
    fn uses_flow(&self, flow: u64) -> bool {
        self.0.lock().unwrap().contains(&flow)
    }
}

fn config(listen: &[&str], per_ip: usize, total: usize) -> Config {
    config_with(listen, per_ip, total, "")
}

/// `extra` is more TOML, after `[limits]`.
fn config_with(listen: &[&str], per_ip: usize, total: usize, extra: &str) -> Config {
    let listen: Vec<String> = listen.iter().map(|l| format!("{l:?}")).collect();
    let text = format!(
        "[sip]\nlisten = [{}]\n[limits]\ninbound_flows = {total}\ninbound_flows_per_ip = {per_ip}\n\
         inbound_flow_idle_sec = 120\nheader_timeout_sec = 10\n{extra}",
        listen.join(", ")
    );
    crate::config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

async fn transports(c: &Config) -> (Transports, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let t = Transports::bind(c, Arc::new(Collect(tx)), CancellationToken::new())
        .await
        .unwrap();
    (t, rx)
}

const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 5060);

/// An inbound flow from `PEER` over an in-memory stream, as accept makes it.
fn inbound(t: &Transports) -> (Flow, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(70_000);
    let admitted = t.admit(PEER.ip()).unwrap();
    let flow = start(t, ours, Transport::Tcp, PEER, LOCAL, Some(admitted));
    t.adopt_flow(&flow);
    (flow, theirs)
}

fn message(call_id: &str) -> String {
    format!(
        "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK{call_id}\r\n\
         From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads until the peer closes; returns what arrived first.
async fn read_to_close(s: &mut DuplexStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    got
}

#[tokio::test(start_paused = true)]
async fn a_message_begun_and_not_finished_in_time_closes_the_flow() {
    let (t, mut rx) = transports(&config(&["tcp:127.0.0.1:0"], 4, 8)).await;
    let (flow, mut peer) = inbound(&t);
    // One whole message, then half a header block held back.
    peer.write_all(message("first").as_bytes()).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "first");
    let begun = tokio::time::Instant::now();
    peer.write_all(b"INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/TCP x")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut peer).await, b"", "closed, nothing sent");
    assert!(
        begun.elapsed() >= Duration::from_secs(10),
        "not before the deadline"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(120),
        "by the header deadline, not idleness"
    );
    assert!(flow.is_closed());
    assert_eq!((t.flow_count(), t.inbound_flows()), (0, 0));
}

/// Whether the peer still sees the flow open after `d` (paused time: the
/// wait is virtual).
async fn still_open(peer: &mut DuplexStream, d: Duration) -> bool {
    let mut b = [0u8; 1];
    tokio::time::timeout(d, peer.read(&mut b)).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn idle_inbound_flows_close_unless_a_registration_or_a_transaction_uses_them() {
    let (t, _rx) = transports(&config(&["tcp:127.0.0.1:0"], 4, 8)).await;
    let used = Arc::new(Used(Mutex::default()));
    t.set_flow_users(used.clone());
    // The test keeps no handle on these two: it watches them from the peer.
    let (idle, mut idle_peer) = inbound(&t);
    drop(idle);
    let (kept, mut kept_peer) = inbound(&t);
    used.0.lock().unwrap().insert(kept.id());
    drop(kept);
    // A transaction that will answer over this one holds a handle on it.
    let (held, mut held_peer) = inbound(&t);
    // A keepalive ping is answered, but we send none of our own: the first
    // thing the idle peer sees after its pong is the close.
    idle_peer.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    idle_peer.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"\r\n");
    let quiet = tokio::time::Instant::now();
    assert_eq!(read_to_close(&mut idle_peer).await, b"", "never pinged");
    assert!(quiet.elapsed() >= Duration::from_secs(120));
    assert!(
        still_open(&mut kept_peer, Duration::from_secs(600)).await,
        "a registration's flow stays"
    );
    assert!(
        still_open(&mut held_peer, Duration::from_secs(1)).await,
        "a flow something will answer over stays"
    );
    assert_eq!(t.inbound_flows(), 2);
    // Once the transaction is done, the flow is idle like any other.
    drop(held);
    assert_eq!(read_to_close(&mut held_peer).await, b"");
    assert!(still_open(&mut kept_peer, Duration::from_secs(1)).await);
    assert_eq!(t.inbound_flows(), 1);
}

#[tokio::test(start_paused = true)]
async fn rfc5626_our_flow_is_pinged_and_closed_when_a_pong_does_not_come() {
    let (t, _rx) = transports(&config(&["tcp:127.0.0.1:0"], 4, 8)).await;
    let (ours, mut peer) = tokio::io::duplex(70_000);
    let flow = start(&t, ours, Transport::Tcp, PEER, LOCAL, None);
    let mut ping = [0u8; 4];
    peer.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"\r\n\r\n");
    peer.write_all(b"\r\n").await.unwrap();
    // The peer answers pings; the next one goes unanswered.
    peer.read_exact(&mut ping).await.unwrap();
    let pinged = tokio::time::Instant::now();
    flow.closed().await;
    assert!(pinged.elapsed() >= crate::transport::limits::PONG_TIMEOUT);
    assert_eq!(read_to_close(&mut peer).await, b"");
    assert_eq!(t.inbound_flows(), 0, "our flows are not counted as inbound");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_pongs_keeps_its_flow_and_gets_pinged() {
    let (t, _rx) = transports(&config(&["tcp:127.0.0.1:0"], 4, 8)).await;
    let (ours, mut peer) = tokio::io::duplex(70_000);
    let flow = start(&t, ours, Transport::Tcp, PEER, LOCAL, None);
    let mut ping = [0u8; 4];
    for _ in 0..3 {
        peer.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"\r\n\r\n");
    }
    assert!(!flow.is_closed());
}

#[tokio::test]
async fn a_panicking_reader_still_closes_and_forgets_its_flow() {
    let (t, mut rx) = transports(&config(&["tcp:127.0.0.1:0"], 4, 8)).await;
    let (flow, mut peer) = inbound(&t);
    peer.write_all(message("ok").as_bytes()).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "ok");
    assert_eq!((t.flow_count(), t.inbound_flows()), (1, 1));
    peer.write_all(message("panic").as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), flow.closed())
        .await
        .expect("the flow closes");
    assert_eq!(read_to_close(&mut peer).await, b"");
    assert_eq!((t.flow_count(), t.inbound_flows()), (0, 0));
}

#[tokio::test]
async fn a_panicking_udp_receive_loop_is_restarted() {
    let (t, mut rx) = transports(&config(&["udp:127.0.0.1:0"], 4, 8)).await;
    let to = t.listen_addr(Transport::Udp).unwrap();
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(message("panic").as_bytes(), to).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            s.send_to(message("after").as_bytes(), to).await.unwrap();
            if let Ok(Some(id)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
            {
                break id;
            }
        }
    })
    .await
    .expect("the socket is served again");
    assert_eq!(served, "after");
}

#[tokio::test]
async fn every_receive_thread_hands_its_datagrams_to_the_handler() {
    let (t, mut rx) = transports(&config(&["udp:127.0.0.1:0"], 4, 8)).await;
    let to = t.listen_addr(Transport::Udp).unwrap();
    // Peers on 16 ports: with more than one receive thread, the kernel's
    // hash sends some of them to each socket of the group.
    let mut peers = Vec::new();
    for _ in 0..16 {
        peers.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    for (i, p) in peers.iter().enumerate() {
        p.send_to(message(&format!("peer-{i}")).as_bytes(), to)
            .await
            .unwrap();
    }
    let mut heard = HashSet::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while heard.len() < peers.len() {
            heard.insert(rx.recv().await.unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {heard:?} reached the handler"));
}

#[tokio::test]
async fn a_udp_address_in_use_fails_the_bind_without_a_panic() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let c = config(&["udp:127.0.0.1:0", &format!("udp:{addr}")], 4, 8);
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = match Transports::bind(&c, Arc::new(Collect(tx)), CancellationToken::new()).await {
        Ok(_) => panic!("{addr} is taken"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn accept_closes_flows_beyond_the_per_ip_and_total_limits() {
    let (t, _rx) = transports(&config(&["tcp:127.0.0.1:0"], 2, 3)).await;
    let port = t.listen_addr(Transport::Tcp).unwrap().port();
    let connect = |last: u8| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
        s.connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap()
    };
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
        matches!(n, Ok(Ok(0)) | Ok(Err(_)))
    };
    let wait_for = |n: usize| {
        let t = t.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while t.inbound_flows() != n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("flows counted")
        }
    };
    let _a1 = connect(1).await;
    let _a2 = connect(1).await;
    wait_for(2).await;
    assert!(closed(connect(1).await).await, "third from one IP");
    let _b1 = connect(2).await;
    wait_for(3).await;
    assert!(closed(connect(3).await).await, "beyond the total");
    assert_eq!(t.inbound_flows(), 3);
    drop(_a1);
    wait_for(2).await;
    let _c1 = connect(3).await;
    wait_for(3).await;
}

/// A TLS listener with a fresh self-signed certificate, `handshakes` at
/// once, handshake deadline `deadline_sec`.
async fn tls_transports(dir: &std::path::Path, handshakes: usize, deadline_sec: u64) -> Transports {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["uacd.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = format!("[tls]\ncertificate = {cert_path:?}\nprivate_key = {key_path:?}\n");
    let mut c = config_with(&["tls:127.0.0.1:0"], 8, 8, &tls);
    c.limits.tls_handshakes = handshakes;
    c.limits.header_timeout_sec = deadline_sec;
    transports(&c).await.0
}

async fn closed_within(s: &mut tokio::net::TcpStream, d: Duration) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(d, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn tls_handshakes_beyond_the_limit_are_closed_at_accept() {
    let dir = tempfile::tempdir().unwrap();
    let t = tls_transports(dir.path(), 1, 60).await;
    let to = t.listen_addr(Transport::Tls).unwrap();
    // A handshake that never starts holds the only slot (for 60 s).
    let mut stalled = tokio::net::TcpStream::connect(to).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while t.inbound_flows() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let mut second = tokio::net::TcpStream::connect(to).await.unwrap();
    assert!(closed_within(&mut second, Duration::from_secs(10)).await);
    assert_eq!(t.inbound_flows(), 1, "the refused one gave its slot back");
    assert!(!closed_within(&mut stalled, Duration::from_millis(50)).await);
}

#[tokio::test]
async fn a_tls_handshake_must_finish_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let t = tls_transports(dir.path(), 1, 1).await;
    let to = t.listen_addr(Transport::Tls).unwrap();
    let mut stalled = tokio::net::TcpStream::connect(to).await.unwrap();
    assert!(closed_within(&mut stalled, Duration::from_secs(20)).await);
    // The slot is free again: a real handshake succeeds and a flow opens.
    let client = super::super::tls::ClientTls::new(&crate::config::TlsConfig {
        certificate: None,
        private_key: None,
        ca_file: None,
        verify_server: false,
    })
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let mut tls = client.connect("uacd.test", tcp).await.unwrap();
    tls.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tls.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"\r\n");
    assert_eq!(t.inbound_flows(), 1);
}
