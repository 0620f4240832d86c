//! The daemon in-process against a scripted fake registrar on 127.0.1.x:
//! bad registrar behaviour (garbage, silence, missing binding, zero or
//! absurd expiry, TCP reset mid-message, flow closure), flow sharing,
//! isolation between connections, and requests addressed to the daemon.
//! Short RFC 3261 timers (T1 = 20 ms) keep Timer F near one second; every
//! wait is on an event with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;
use uacd::app::App;
use uacd::registration::{RegStatus, Snapshot};
use uacd::sip::{Frame, Message, next_frame, response_to};
use uacd::transaction::client::Timers;

const WAIT: Duration = Duration::from_secs(10);

fn timers() -> Timers {
    Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(200),
        t4: Duration::from_millis(200),
    }
}

/// A config with one `udp`+`tcp` listener on `ip` and the given connections.
fn config(ip: &str, connections: &[(&str, &str, &str)]) -> uacd::config::Config {
    let mut text = format!(
        "[sip]\nlisten = [\"udp:{ip}:0\", \"tcp:{ip}:0\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"1\"\n\
         [registration]\nretry_interval_sec = 1\nmax_retry_interval_sec = 2\nunregister_timeout_sec = 2\n"
    );
    for (id, proxy, transport) in connections {
        text.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nconnection_name = \"{id}\"\nuser_name = \"u-{id}\"\n\
             [connection.external_uac_settings]\nproxy = \"{proxy}\"\ntransport = \"{transport}\"\n\
             username = \"{id}\"\npassword = \"pw\"\nexpiration_sec = 300\n"
        ));
    }
    uacd::config::parse(&text, "test.toml").expect("test config is valid")
}

async fn start(cfg: uacd::config::Config) -> App {
    App::start_with_timers(cfg, timers())
        .await
        .expect("daemon starts")
}

async fn wait_status(app: &App, id: &str, want: RegStatus) -> Snapshot {
    let status = app.supervisor.watch(id).expect("connection exists");
    match timeout(WAIT, status.wait_for(|s| s.status == want)).await {
        Ok(snap) => snap,
        Err(_) => panic!("{id} never reached {want:?}; last: {:?}", status.get()),
    }
}

fn ok_with_contact(req: &Message, contact: &str) -> Bytes {
    Bytes::from(
        response_to(req, 200, "OK", Some("reg"))
            .header("Contact", contact)
            .build(),
    )
}

fn our_contact(req: &Message) -> String {
    let c = &req.contacts().expect("contact parses")[0];
    format!("<{}>", c.uri)
}

struct UdpRegistrar {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl UdpRegistrar {
    async fn bind(ip: &str) -> UdpRegistrar {
        let sock = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
        let addr = sock.local_addr().unwrap();
        UdpRegistrar { sock, addr }
    }

    fn uri(&self) -> String {
        format!("sip:{}", self.addr)
    }

    /// Next request, retransmissions included.
    async fn recv(&self) -> (Message, SocketAddr) {
        let mut buf = vec![0u8; 65536];
        let (n, from) = timeout(WAIT, self.sock.recv_from(&mut buf))
            .await
            .expect("a request arrives")
            .unwrap();
        let msg = Message::parse_datagram(Bytes::copy_from_slice(&buf[..n]))
            .expect("daemon sends valid SIP");
        (msg, from)
    }

    /// Next request with a new branch (retransmissions skipped).
    async fn recv_new(&self, last_branch: &mut String) -> (Message, SocketAddr) {
        loop {
            let (m, from) = self.recv().await;
            let b = m.top_via().unwrap().branch().unwrap().to_owned();
            if b != *last_branch {
                *last_branch = b;
                return (m, from);
            }
        }
    }

    async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).await.unwrap();
    }
}

#[tokio::test]
async fn garbage_reply_times_out_then_recovers() {
    let reg = UdpRegistrar::bind("127.0.1.1").await;
    let app = start(config("127.0.1.2", &[("c1", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (_req, from) = reg.recv_new(&mut branch).await;
    reg.send(from, b"SIP/2.0 2OO OK\r\nthis is not SIP\r\n\r\n")
        .await;
    reg.send(from, &[0xff, 0x00, 0x13, 0x37]).await;
    let snap = wait_status(&app, "c1", RegStatus::Failed).await;
    assert_eq!(snap.last_response.as_deref(), Some("408 Request Timeout"));
    // The retry (after ~1 s) is answered properly.
    let (req, from) = reg.recv_new(&mut branch).await;
    reg.send(from, &ok_with_contact(&req, &our_contact(&req)))
        .await;
    let snap = wait_status(&app, "c1", RegStatus::Success).await;
    assert_eq!(snap.last_registered_ip, Some(reg.addr));
    app.stop().await;
}

#[tokio::test]
async fn ok_without_our_contact_is_failed() {
    let reg = UdpRegistrar::bind("127.0.1.3").await;
    let app = start(config("127.0.1.4", &[("c1", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (req, from) = reg.recv_new(&mut branch).await;
    reg.send(
        from,
        &ok_with_contact(&req, "<sip:someone-else@192.0.2.1>;expires=300"),
    )
    .await;
    let snap = wait_status(&app, "c1", RegStatus::Failed).await;
    assert_eq!(
        snap.last_response.as_deref(),
        Some("200 OK (binding missing)")
    );
    app.stop().await;
}

#[tokio::test]
async fn zero_expiry_fails_and_absurd_expiry_is_clamped() {
    let reg = UdpRegistrar::bind("127.0.1.5").await;
    let app = start(config("127.0.1.6", &[("c1", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (req, from) = reg.recv_new(&mut branch).await;
    let contact = format!("{};expires=0", our_contact(&req));
    reg.send(from, &ok_with_contact(&req, &contact)).await;
    wait_status(&app, "c1", RegStatus::Failed).await;
    let (req, from) = reg.recv_new(&mut branch).await;
    let contact = format!("{};expires=99999999", our_contact(&req));
    reg.send(from, &ok_with_contact(&req, &contact)).await;
    let snap = wait_status(&app, "c1", RegStatus::Success).await;
    let left = snap
        .expires_at
        .unwrap()
        .duration_since(snap.updated_at)
        .unwrap();
    assert!(
        left <= Duration::from_secs(300),
        "clamped to what we asked for: {left:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn silent_registrar_does_not_affect_another_connection() {
    let dead = UdpRegistrar::bind("127.0.1.7").await;
    let good = UdpRegistrar::bind("127.0.1.8").await;
    let app = start(config(
        "127.0.1.9",
        &[("dead", &dead.uri(), "UDP"), ("good", &good.uri(), "UDP")],
    ))
    .await;
    let mut branch = String::new();
    let (req, from) = good.recv_new(&mut branch).await;
    good.send(from, &ok_with_contact(&req, &our_contact(&req)))
        .await;
    wait_status(&app, "good", RegStatus::Success).await;
    let snap = wait_status(&app, "dead", RegStatus::Failed).await;
    assert_eq!(snap.last_response.as_deref(), Some("408 Request Timeout"));
    assert_eq!(
        app.supervisor.watch("good").unwrap().get().status,
        RegStatus::Success
    );
    // The silent registrar saw retransmissions of the same REGISTER (UDP, Timer E).
    let (first, _) = dead.recv().await;
    let (second, _) = dead.recv().await;
    assert_eq!(
        first.top_via().unwrap().branch(),
        second.top_via().unwrap().branch()
    );
    app.stop().await;
}

#[tokio::test]
async fn shutdown_unregisters_with_expires_zero() {
    let reg = UdpRegistrar::bind("127.0.1.10").await;
    let app = start(config("127.0.1.11", &[("c1", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (req, from) = reg.recv_new(&mut branch).await;
    let call_id = req.call_id().unwrap().to_owned();
    let cseq = req.cseq().unwrap().seq;
    reg.send(from, &ok_with_contact(&req, &our_contact(&req)))
        .await;
    wait_status(&app, "c1", RegStatus::Success).await;
    let stopping = tokio::spawn(app.stop());
    let (req, from) = reg.recv_new(&mut branch).await;
    assert_eq!(req.expires(), Some(0));
    assert_eq!(req.call_id().unwrap(), call_id);
    assert_eq!(req.cseq().unwrap().seq, cseq + 1);
    reg.send(from, &ok_with_contact(&req, &our_contact(&req)))
        .await;
    timeout(WAIT, stopping)
        .await
        .expect("stop is bounded")
        .unwrap();
}

/// A TCP registrar: accepts flows and yields framed requests.
struct TcpRegistrar {
    listener: TcpListener,
    addr: SocketAddr,
}

struct TcpPeer {
    stream: TcpStream,
    buf: BytesMut,
}

impl TcpRegistrar {
    async fn bind(ip: &str) -> TcpRegistrar {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        TcpRegistrar { listener, addr }
    }

    fn uri(&self) -> String {
        format!("sip:{}", self.addr)
    }

    async fn accept(&self) -> TcpPeer {
        let (stream, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("daemon connects")
            .unwrap();
        TcpPeer {
            stream,
            buf: BytesMut::new(),
        }
    }
}

enum Got {
    Msg(Box<Message>),
    Pong,
}

impl TcpPeer {
    async fn next(&mut self) -> Got {
        loop {
            match next_frame(&self.buf) {
                Frame::Message(n) => {
                    let frame = self.buf.split_to(n).freeze();
                    return Got::Msg(Box::new(
                        Message::parse_stream(frame).expect("valid SIP on the flow"),
                    ));
                }
                Frame::Pong => {
                    let _ = self.buf.split_to(2);
                    return Got::Pong;
                }
                Frame::Ping => {
                    let _ = self.buf.split_to(4);
                }
                Frame::Incomplete => {
                    let n = timeout(WAIT, self.stream.read_buf(&mut self.buf))
                        .await
                        .expect("data arrives")
                        .unwrap();
                    assert!(n > 0, "daemon closed the flow");
                }
                Frame::Invalid(e) => panic!("unframeable data from the daemon: {e}"),
            }
        }
    }

    async fn request(&mut self) -> Message {
        match self.next().await {
            Got::Msg(m) => *m,
            Got::Pong => panic!("expected a request, got a pong"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

#[tokio::test]
async fn tcp_flow_close_reregisters_at_once_on_a_new_flow() {
    let reg = TcpRegistrar::bind("127.0.1.12").await;
    let app = start(config("127.0.1.13", &[("c1", &reg.uri(), "TCP")])).await;
    let mut peer = reg.accept().await;
    let req = peer.request().await;
    assert_eq!(req.top_via().unwrap().transport, "TCP");
    let contact = &req.contacts().unwrap()[0];
    assert_eq!(contact.uri.params.get("transport"), Some(Some("tcp")));
    let (call_id, cseq) = (req.call_id().unwrap().to_owned(), req.cseq().unwrap().seq);
    peer.send(&ok_with_contact(&req, &our_contact(&req))).await;
    wait_status(&app, "c1", RegStatus::Success).await;
    drop(peer); // the registrar closes the flow
    let mut peer = reg.accept().await;
    let req = peer.request().await;
    assert_eq!(
        req.call_id().unwrap(),
        call_id,
        "same Call-ID on the new flow"
    );
    assert_eq!(req.cseq().unwrap().seq, cseq + 1);
    peer.send(&ok_with_contact(&req, &our_contact(&req))).await;
    // Keepalive: a CRLFCRLF ping gets a CRLF pong (RFC 5626 §3.5.1).
    peer.send(b"\r\n\r\n").await;
    assert!(matches!(peer.next().await, Got::Pong));
    app.stop().await;
}

#[tokio::test]
async fn tcp_reset_mid_message_is_a_transport_error_then_retried() {
    let reg = TcpRegistrar::bind("127.0.1.14").await;
    let app = start(config("127.0.1.15", &[("c1", &reg.uri(), "TCP")])).await;
    let mut peer = reg.accept().await;
    let req = peer.request().await;
    let full = ok_with_contact(&req, &our_contact(&req));
    peer.send(&full[..full.len() / 2]).await;
    drop(peer);
    let snap = wait_status(&app, "c1", RegStatus::Failed).await;
    assert_eq!(
        snap.last_response.as_deref(),
        Some("503 Service Unavailable")
    );
    let mut peer = reg.accept().await;
    let req = peer.request().await;
    peer.send(&ok_with_contact(&req, &our_contact(&req))).await;
    wait_status(&app, "c1", RegStatus::Success).await;
    app.stop().await;
}

#[tokio::test]
async fn connections_to_one_tcp_registrar_share_one_flow() {
    let reg = TcpRegistrar::bind("127.0.1.16").await;
    let app = start(config(
        "127.0.1.17",
        &[
            ("a", &reg.uri(), "TCP"),
            ("b", &reg.uri(), "TCP"),
            ("c", &reg.uri(), "TCP"),
        ],
    ))
    .await;
    let mut peer = reg.accept().await;
    let mut users = Vec::new();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let req = peer.request().await;
        let contact = req.contacts().unwrap()[0].uri.clone();
        users.push(contact.user.clone().unwrap());
        lines.push(format!(
            "line={}",
            contact.params.value("line").unwrap_or("none")
        ));
        peer.send(&ok_with_contact(&req, &our_contact(&req))).await;
    }
    users.sort();
    assert_eq!(users, vec!["u-a", "u-b", "u-c"]);
    assert!(lines.iter().all(|l| l.starts_with("line=")), "{lines:?}");
    for id in ["a", "b", "c"] {
        wait_status(&app, id, RegStatus::Success).await;
    }
    // No second connection was opened.
    assert!(
        timeout(Duration::from_millis(300), reg.listener.accept())
            .await
            .is_err()
    );
    assert_eq!(app.transports.flow_count(), 1);

    // Requests from the registrar over the shared flow: one naming a line
    // (the user part rewritten, as some PBXes do) is matched to that line,
    // which has no destination_uri here (480); one naming none is not
    // matched to whichever line comes first (404).
    let invite = |ruri: &str, n: u32| {
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP {reg};branch=z9hG4bKshared{n}\r\n\
             From: <sip:pbx@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: shared-{n}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:pbx@{reg};transport=tcp>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            reg = reg.addr
        )
    };
    let us = app
        .transports
        .listen_addr(uacd::config::Transport::Tcp)
        .unwrap();
    for (n, ruri, want) in [
        (1, format!("sip:rewritten@{us};transport=tcp;line=b"), 480),
        (2, format!("sip:rewritten@{us};transport=tcp"), 404),
    ] {
        peer.send(invite(&ruri, n).as_bytes()).await;
        let status = loop {
            let r = timeout(WAIT, peer.request()).await.expect("an answer");
            match r.status() {
                Some(c) if c >= 200 => break c,
                _ => continue,
            }
        };
        assert_eq!(status, want, "{ruri}");
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_to_the_daemon_get_precise_answers() {
    // The asker is a monitor: OPTIONS is answered only to verified parties.
    let mut cfg = config("127.0.1.18", &[]);
    cfg.sip.monitors = vec!["127.0.1.19".parse().unwrap()];
    let app = start(cfg).await;
    let daemon = app
        .transports
        .listen_addr(uacd::config::Transport::Udp)
        .unwrap();
    let sock = UdpSocket::bind("127.0.1.19:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let ask = |method: &str, extra: &str| {
        format!(
            "{method} sip:{daemon} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method}\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>{extra}\r\nCall-ID: c-{method}\r\nCSeq: 1 {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let mut buf = vec![0u8; 65536];
    let mut exchange = async |bytes: String| -> Message {
        sock.send_to(bytes.as_bytes(), daemon).await.unwrap();
        let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        Message::parse_datagram(Bytes::copy_from_slice(&buf[..n])).unwrap()
    };
    let r = exchange(ask("OPTIONS", "")).await;
    assert_eq!(r.status(), Some(200));
    assert!(r.to_header().unwrap().tag().is_some());
    assert_eq!(r.call_id().unwrap(), "c-OPTIONS");
    assert_eq!(exchange(ask("FROB", "")).await.status(), Some(501));
    assert_eq!(exchange(ask("BYE", ";tag=x")).await.status(), Some(481));
    assert_eq!(exchange(ask("REGISTER", "")).await.status(), Some(405));
    // Malformed: CSeq method does not match the request method.
    let bad = ask("OPTIONS", "").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    let r = exchange(bad).await;
    assert_eq!(r.status(), Some(400));
    let warning = r
        .header(uacd::sip::HeaderName::Warning)
        .expect("Warning says why");
    assert!(
        warning.value().starts_with("399 uacd"),
        "{}",
        warning.value()
    );
    // Unparseable but answerable: bad Content-Length.
    let broken = ask("OPTIONS", "").replace("Content-Length: 0", "Content-Length: abc");
    assert_eq!(exchange(broken).await.status(), Some(400));
    // Pure garbage is dropped; the daemon still answers afterwards.
    sock.send_to(b"\x00\x01garbage", daemon).await.unwrap();
    assert_eq!(exchange(ask("OPTIONS", "")).await.status(), Some(200));
    app.stop().await;
}

#[tokio::test]
async fn wildcard_listener_advertises_the_routed_source_address() {
    let reg = UdpRegistrar::bind("127.0.1.20").await;
    let app = start(config("0.0.0.0", &[("c1", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (req, from) = reg.recv_new(&mut branch).await;
    let contact = req.contacts().unwrap()[0].uri.clone();
    assert_eq!(
        contact.host.to_string(),
        from.ip().to_string(),
        "Contact names where we send from"
    );
    assert_eq!(contact.port, Some(from.port()));
    let via = req.top_via().unwrap();
    assert_eq!(via.host.to_string(), from.ip().to_string());
    // A refused attempt and its retry keep the same advertised address.
    reg.send(
        from,
        &response_to(&req, 500, "Server Internal Error", Some("r")).build(),
    )
    .await;
    let (req, from2) = reg.recv_new(&mut branch).await;
    assert_eq!(from2, from);
    assert_eq!(req.contacts().unwrap()[0].uri, contact);
    app.stop().await;
}

/// An IPv6 listener on ::1 and a registrar on ::1: the REGISTER leaves from
/// the IPv6 socket, names it (bracketed) in Via and Contact, and the
/// registration succeeds.
#[tokio::test]
async fn registers_over_an_ipv6_listener_on_loopback() {
    let reg = UdpRegistrar::bind("[::1]").await;
    let app = start(config("[::1]", &[("v6", &reg.uri(), "UDP")])).await;
    let mut branch = String::new();
    let (req, from) = reg.recv_new(&mut branch).await;
    let ours = app
        .transports
        .listen_addr(uacd::config::Transport::Udp)
        .unwrap();
    assert!(ours.is_ipv6(), "{ours}");
    assert_eq!(from, ours, "sent from the IPv6 listener");
    let via = req.top_via().unwrap();
    assert_eq!(via.host.to_string(), "[::1]", "{via}");
    let contact = &req.contacts().unwrap()[0].uri;
    assert_eq!(contact.host.to_string(), "[::1]", "{contact}");
    assert_eq!(contact.port, Some(ours.port()));
    reg.send(from, &ok_with_contact(&req, &our_contact(&req)))
        .await;
    let snap = wait_status(&app, "v6", RegStatus::Success).await;
    assert_eq!(snap.last_registered_ip, Some(reg.addr));
    app.stop().await;
}

/// While registered over UDP, the registrar gets a CRLF keepalive from the
/// socket the REGISTER left from, about every `udp_keepalive_sec` (so the
/// NAT binding the PBX's INVITEs come back through stays open). That two
/// connections to one registrar share one ping per round is the unit test
/// of `transport::keepalive`.
#[tokio::test]
async fn udp_registrations_keep_their_nat_binding_alive() {
    let reg = UdpRegistrar::bind("127.0.1.24").await;
    let mut cfg = config(
        "127.0.1.25",
        &[("k1", &reg.uri(), "UDP"), ("k2", &reg.uri(), "UDP")],
    );
    cfg.registration.udp_keepalive_sec = 1;
    let app = start(cfg).await;
    let ours = app
        .transports
        .listen_addr(uacd::config::Transport::Udp)
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut registered = 0;
    while registered < 2 {
        let (n, from) = timeout(WAIT, reg.sock.recv_from(&mut buf))
            .await
            .expect("REGISTERs")
            .unwrap();
        let req = Message::parse_datagram(Bytes::copy_from_slice(&buf[..n])).unwrap();
        reg.send(from, &ok_with_contact(&req, &our_contact(&req)))
            .await;
        registered += 1;
    }
    for id in ["k1", "k2"] {
        wait_status(&app, id, RegStatus::Success).await;
    }
    // Keepalives keep coming, each a CRLF CRLF from our socket.
    let mut pings = 0;
    while pings < 3 {
        let (n, from) = timeout(Duration::from_secs(3), reg.sock.recv_from(&mut buf))
            .await
            .expect("a keepalive within 3 s")
            .unwrap();
        if &buf[..n] == b"\r\n\r\n" {
            assert_eq!(from, ours, "from the socket the registrations use");
            pings += 1;
        }
    }
    app.stop().await;
}
