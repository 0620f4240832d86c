//! Receive-queue overload against the running daemon (issue 18): INVITEs
//! that waited in uacd's UDP receive queue, or came while the kernel was
//! dropping datagrams for a full queue, are answered 503 with Retry-After
//! at once and go nowhere; once the queue has drained, calls go through
//! again. The daemon is stopped (SIGSTOP) while the PBX sends, so every
//! INVITE of the burst has waited as long as the stop lasted when uacd reads
//! it: the overload is made, not hoped for.
//!
//! | address | role |
//! |---|---|
//! | .131 | uacd |
//! | .132 | the PBX: registrar, and the caller |
//! | .133 | the destination |

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    Uacd, free_tcp_port, free_udp_port, recv_sip as recv, sip_headers, sip_response, temp_dir,
    test_ip,
};

const WAIT: Duration = Duration::from_secs(20);

/// The first value of header `name` in `msg`.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    sip_headers(msg, name).first().copied()
}

fn invite(uacd: SocketAddr, pbx: SocketAddr, n: usize) -> String {
    format!(
        "INVITE sip:uacd-ovl@{uacd} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};rport;branch=z9hG4bK-ovl-{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:601@pbx.test>;tag=p{n}\r\nTo: <sip:uacd-ovl@uacd.test>\r\n\
Call-ID: ovl-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:601@{pbx}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992)
}

#[test]
fn a_backlog_of_invites_is_answered_503_with_retry_after_and_calls_resume_after_it() {
    let dir = temp_dir("overload");
    let pbx = UdpSocket::bind((test_ip(132), 0)).unwrap();
    let dest = UdpSocket::bind((test_ip(133), 0)).unwrap();
    let uacd_addr = SocketAddr::from((test_ip(131), free_udp_port(test_ip(131))));
    let (pbx_addr, dest_addr) = (pbx.local_addr().unwrap(), dest.local_addr().unwrap());
    let config = format!(
        r#"[sip]
listen = ["udp:{uacd_addr}"]
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "overload-test-token-0123"
user_id = "1"
[registration]
unregister_timeout_sec = 1
[[connection]]
id = "c1"
connection_name = "PBX"
user_name = "uacd-ovl"
[connection.external_uac_settings]
proxy = "sip:{pbx_addr}"
transport = "UDP"
username = "line1"
password = "s3cret-line"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "sip:1006@{dest_addr}"
"#,
        ip = test_ip(131),
        api = free_tcp_port(test_ip(131)),
    );
    let mut uacd = Uacd::start(&config, &dir);

    // The PBX takes the registration.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(uacd.log_path()).is_ok_and(|l| l.contains("status=success")) {
        assert!(Instant::now() < deadline, "uacd never registered");
        if let Some((msg, from)) = recv(&pbx, Duration::from_millis(200))
            && msg.starts_with("REGISTER ")
        {
            let contact = header(&msg, "Contact").unwrap_or("");
            let extra = format!("Contact: {contact};expires=600\r\n");
            let reply = sip_response(&msg, 200, "OK", Some("reg"), &extra);
            pbx.send_to(reply.as_bytes(), from).unwrap();
        }
    }

    // A burst while uacd is stopped: more than its receive queue holds, so
    // the kernel drops some (the queue is at most twice rmem_max, and each
    // queued datagram costs more than its ~380 bytes).
    let burst = (2 * rmem_max() / 380 + 2000).min(60_000);
    uacd.child.signal("STOP");
    for n in 0..burst {
        // The PBX's own socket buffer may be full too: a lost send is one
        // INVITE fewer in the burst.
        let _ = pbx.send_to(invite(uacd_addr, pbx_addr, n).as_bytes(), uacd_addr);
    }
    // Not a wait for anything: the stop's length is what every queued
    // INVITE will have waited when uacd reads it (the kernel stamps each
    // on arrival), six times the 50 ms that counts as late.
    std::thread::sleep(Duration::from_millis(300));
    uacd.child.signal("CONT");

    // Every answer to the burst is a 503 with Retry-After; nothing of it
    // reaches the destination.
    let mut refused = 0;
    while let Some((msg, _)) = recv(&pbx, Duration::from_millis(1500)) {
        let call = header(&msg, "Call-ID").unwrap_or("");
        assert!(
            msg.starts_with("SIP/2.0 503 ") && call.starts_with("ovl-"),
            "the burst got\n{msg}"
        );
        assert_eq!(header(&msg, "Retry-After"), Some("5"), "{msg}");
        refused += 1;
    }
    assert!(refused > 0, "no 503 for {burst} queued INVITEs");
    if let Some((msg, _)) = recv(&dest, Duration::from_millis(100)) {
        panic!("an INVITE of the burst reached the destination:\n{msg}");
    }
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(
        log.contains("receive queue overloaded"),
        "{}",
        common::tail(uacd.log_path(), 20)
    );

    // Once the queue has drained and the hold has passed, a call goes
    // through: one INVITE every 200 ms until one reaches the destination.
    let deadline = Instant::now() + WAIT;
    let mut n = burst;
    let fwd = loop {
        assert!(
            Instant::now() < deadline,
            "no call went through after the burst"
        );
        n += 1;
        pbx.send_to(invite(uacd_addr, pbx_addr, n).as_bytes(), uacd_addr)
            .unwrap();
        if let Some((msg, _)) = recv(&dest, Duration::from_millis(200)) {
            break msg;
        }
    };
    assert!(fwd.starts_with("INVITE sip:1006@"), "{fwd}");
    let call = header(&fwd, "Call-ID").unwrap().to_owned();
    let contact = format!("Contact: <sip:1006@{dest_addr}>\r\n");
    dest.send_to(
        sip_response(&fwd, 200, "OK", Some("d1"), &contact).as_bytes(),
        uacd_addr,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the 200 never reached the PBX");
        let Some((msg, _)) = recv(&pbx, left) else {
            continue;
        };
        if header(&msg, "Call-ID") == Some(call.as_str()) && msg.starts_with("SIP/2.0 200 ") {
            break;
        }
    }
    uacd.terminate(Duration::from_secs(5));
}
