//! Attacks on dialog routing and message framing against the running
//! daemon: every peer is a plain UDP/TCP socket of this test, so each
//! message is exactly what an attacker would send. The invariant under test
//! (design.md, wire rules): an in-dialog request is sent only to a next hop
//! that one end of that dialog advertised, only when it comes from the other
//! end, and after a restart too; nothing uacd forwards onto a stream can be
//! read as a second message.
//!
//! | address | role |
//! |---|---|
//! | .160 | uacd (dialog test) |
//! | .161 | the PBX: registrar, and the caller |
//! | .162 | the destination (and, on another port, a bystander of it) |
//! | .163 | a victim that must hear nothing |
//! | .164 | an attacker |
//! | .165 / .166 / .167 | uacd / PBX / TCP destination (framing test) |
//! | .168 / .169 | uacd / a PBX "behind NAT" (its Contact names .163) |

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    Uacd, free_tcp_port, free_udp_port, recv_sip, sip_headers as header, sip_response as response,
    temp_dir, test_ip,
};

const WAIT: Duration = Duration::from_secs(20);
/// How long a socket that must hear nothing is listened to.
const QUIET: Duration = Duration::from_millis(1500);

/// A SIP peer on a UDP socket of its own.
struct Peer {
    sock: UdpSocket,
}

impl Peer {
    fn bind(n: u8) -> Peer {
        let sock = UdpSocket::bind((test_ip(n), 0)).expect("bind");
        Peer { sock }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    fn send(&self, msg: &str, to: SocketAddr) {
        self.sock.send_to(msg.as_bytes(), to).expect("send");
    }

    /// The next SIP message within `timeout` (keepalive whitespace skipped).
    fn recv(&self, timeout: Duration) -> Option<(String, SocketAddr)> {
        recv_sip(&self.sock, timeout)
    }

    /// The next message that is not a REGISTER (those are answered 200,
    /// as the registrar would).
    fn recv_call(&self, timeout: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (msg, from) = self.recv(left)?;
            if msg.starts_with("REGISTER ") {
                let contact = header(&msg, "Contact").first().copied().unwrap_or("");
                let extra = format!("Contact: {contact};expires=600\r\n");
                self.send(&response(&msg, 200, "OK", Some("reg"), &extra), from);
                continue;
            }
            return Some((msg, from));
        }
    }

    /// The next message of `call_id` that starts with `start` (1xx and
    /// other calls' messages skipped); panics with what came instead.
    fn expect(&self, start: &str, call_id: &str, what: &str) -> (String, SocketAddr) {
        loop {
            let (msg, from) = self
                .recv_call(WAIT)
                .unwrap_or_else(|| panic!("{what}: nothing arrived"));
            if (msg.starts_with("SIP/2.0 1") && !start.starts_with("SIP/2.0 1"))
                || header(&msg, "Call-ID").first() != Some(&call_id)
            {
                continue;
            }
            assert!(msg.starts_with(start), "{what}: got\n{msg}");
            return (msg, from);
        }
    }

    /// No request reaches this peer for [`QUIET`] (responses to its own
    /// requests may).
    fn assert_no_request(&self, what: &str) {
        let deadline = Instant::now() + QUIET;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some((msg, from)) = self.recv_call(left) else {
                return;
            };
            assert!(
                msg.starts_with("SIP/2.0 "),
                "{what}: uacd relayed a request from {from}:\n{msg}"
            );
        }
    }
}

/// The dialog token (`uacd=` parameter) in a message's Record-Route.
fn token_in(msg: &str) -> String {
    let rr = header(msg, "Record-Route").join(",");
    let at = rr
        .find("uacd=")
        .unwrap_or_else(|| panic!("no token in\n{msg}"))
        + 5;
    rr[at..]
        .split([';', '>', ','])
        .next()
        .expect("token")
        .to_owned()
}

/// The route set a UA builds from a message's Record-Route: as listed (the
/// UAS), or reversed (the UAC), RFC 3261 §12.1.
fn route_set(msg: &str, reverse: bool) -> String {
    let mut entries: Vec<String> = header(msg, "Record-Route")
        .iter()
        .flat_map(|v| v.split(", "))
        .map(str::to_owned)
        .collect();
    if reverse {
        entries.reverse();
    }
    entries.join(", ")
}

/// An in-dialog request.
struct Req<'a> {
    method: &'a str,
    ruri: &'a str,
    from: SocketAddr,
    branch: &'a str,
    route: &'a str,
    /// `From`/`To` with their tags, as the sender writes them.
    from_to: (&'a str, &'a str),
    call_id: &'a str,
    cseq: u32,
    extra: &'a str,
}

impl Req<'_> {
    fn text(&self) -> String {
        format!(
            "{m} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bK{b}\r\n\
Route: {route}\r\nMax-Forwards: 70\r\nFrom: {f}\r\nTo: {t}\r\nCall-ID: {cid}\r\n\
CSeq: {cseq} {m}\r\n{extra}Content-Length: 0\r\n\r\n",
            m = self.method,
            ruri = self.ruri,
            from = self.from,
            b = self.branch,
            route = self.route,
            f = self.from_to.0,
            t = self.from_to.1,
            cid = self.call_id,
            cseq = self.cseq,
            extra = self.extra,
        )
    }
}

fn config(uacd: SocketAddr, pbx: SocketAddr, dest_uri: &str) -> String {
    let std::net::IpAddr::V4(ip) = uacd.ip() else {
        unreachable!("test addresses are IPv4")
    };
    format!(
        r#"[sip]
listen = ["udp:{uacd}"]
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "attack-test-token-0123"
user_id = "1"
[registration]
unregister_timeout_sec = 1
[routing]
timeout_1xx_sec = 2
[[connection]]
id = "c1"
connection_name = "PBX"
user_name = "uacd-atk"
[connection.external_uac_settings]
proxy = "sip:{pbx}"
transport = "UDP"
username = "line1"
password = "s3cret-line"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "{dest_uri}"
"#,
        api = free_tcp_port(ip),
    )
}

/// Starts uacd and lets `pbx` register it.
fn start(config: &str, dir: &std::path::Path, pbx: &Peer) -> Uacd {
    let uacd = Uacd::start(config, dir);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "uacd never registered");
        // recv_call answers the REGISTER (and what else is left over from
        // before a restart is dropped); the log says when it took.
        let _ = pbx.recv_call(Duration::from_millis(200));
        if std::fs::read_to_string(uacd.log_path()).is_ok_and(|l| l.contains("status=success")) {
            return uacd;
        }
    }
}

/// From and To of the answered call's requests, as the PBX writes them (the
/// destination writes them the other way round).
const PBX_SIDE: (&str, &str) = (
    "<sip:601@pbx.test>;tag=pbx1",
    "<sip:uacd-atk@uacd.test>;tag=dst1",
);

/// What both ends saw of an answered call.
struct Answered {
    /// The INVITE as the destination got it.
    invite: String,
    /// The 200 as the PBX got it.
    ok: String,
}

/// The PBX calls through uacd (its Via sent-by and Contact as given), the
/// destination answers 200 with its Contact.
fn answered_call(
    (pbx, dest, uacd): (&Peer, &Peer, SocketAddr),
    call_id: &str,
    via: &str,
    contact: &str,
) -> Answered {
    let branch: String = call_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let invite = format!(
        "INVITE sip:uacd-atk@{uacd} SIP/2.0\r\nVia: SIP/2.0/UDP {via};rport;branch=z9hG4bK{branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:601@pbx.test>;tag=pbx1\r\nTo: <sip:uacd-atk@uacd.test>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    );
    pbx.send(&invite, uacd);
    let (fwd, _) = dest.expect("INVITE sip:1006@", call_id, "the INVITE at the destination");
    let contact = format!("Contact: <sip:1006@{}>\r\n", dest.addr());
    dest.send(&response(&fwd, 200, "OK", Some("dst1"), &contact), uacd);
    let (ok, _) = pbx.expect("SIP/2.0 200", call_id, "the 200 at the PBX");
    Answered { invite: fwd, ok }
}

#[test]
fn dialog_tokens_reach_only_the_dialogs_two_ends() {
    let dir = temp_dir("attack-dialog");
    let uacd_addr = SocketAddr::from((test_ip(160), free_udp_port(test_ip(160))));
    let pbx = Peer::bind(161);
    let dest = Peer::bind(162);
    let bystander = Peer::bind(162);
    let victim = Peer::bind(163);
    let attacker = Peer::bind(164);
    let (p, d) = (pbx.addr(), dest.addr());
    let cfg = config(uacd_addr, p, &format!("sip:1006@{d}"));
    let mut uacd = start(&cfg, &dir, &pbx);

    // A call: PBX → uacd → destination, answered and ACKed.
    let call_id = "atk-call-1@pbx";
    let (pbx_side, dest_side) = (PBX_SIDE, (PBX_SIDE.1, PBX_SIDE.0));
    let call = answered_call(
        (&pbx, &dest, uacd_addr),
        call_id,
        &p.to_string(),
        &format!("sip:601@{p}"),
    );
    let (fwd, ok_up) = (call.invite, call.ok);
    let dest_token = token_in(&fwd);
    let dest_route = route_set(&fwd, false);
    let pbx_token = token_in(&ok_up);
    let pbx_route = route_set(&ok_up, true);
    assert_ne!(pbx_token, dest_token, "each end has its own token");
    let dest_contact = format!("sip:1006@{d}");
    let pbx_contact = format!("sip:601@{p}");
    let ack = Req {
        method: "ACK",
        ruri: &dest_contact,
        from: p,
        branch: "ack1",
        route: &pbx_route,
        from_to: pbx_side,
        call_id,
        cseq: 1,
        extra: "",
    };
    pbx.send(&ack.text(), uacd_addr);
    dest.expect("ACK sip:1006@", call_id, "the ACK at the destination");

    // Attacks with the tokens as the two ends saw them.
    let v = victim.addr();
    let victim_uri = format!("sip:toll@{v}");
    let wrong_port = format!("sip:1006@{}", bystander.addr());
    let victim_route = format!("{pbx_route}, <sip:{v};lr>");
    let at = attacker.addr();
    let attacks = [
        // A third source with a copied token, to the right hop and to a victim.
        (
            "BYE",
            dest_contact.as_str(),
            at,
            pbx_route.as_str(),
            pbx_side,
            call_id,
        ),
        (
            "BYE",
            victim_uri.as_str(),
            at,
            pbx_route.as_str(),
            pbx_side,
            call_id,
        ),
        (
            "INVITE",
            pbx_contact.as_str(),
            at,
            dest_route.as_str(),
            dest_side,
            call_id,
        ),
        // The PBX itself: to a third host, to a wrong port of the
        // destination, past our Route to a third host, with another Call-ID.
        (
            "BYE",
            victim_uri.as_str(),
            p,
            pbx_route.as_str(),
            pbx_side,
            call_id,
        ),
        (
            "BYE",
            wrong_port.as_str(),
            p,
            pbx_route.as_str(),
            pbx_side,
            call_id,
        ),
        (
            "BYE",
            dest_contact.as_str(),
            p,
            victim_route.as_str(),
            pbx_side,
            call_id,
        ),
        (
            "BYE",
            dest_contact.as_str(),
            p,
            pbx_route.as_str(),
            pbx_side,
            "other-call@pbx",
        ),
        // The destination toward a third host.
        (
            "BYE",
            victim_uri.as_str(),
            d,
            dest_route.as_str(),
            dest_side,
            call_id,
        ),
    ];
    for (i, (method, ruri, from, route, from_to, cid)) in attacks.iter().enumerate() {
        let branch = format!("atk{i}");
        let req = Req {
            method,
            ruri,
            from: *from,
            branch: &branch,
            route,
            from_to: *from_to,
            call_id: cid,
            cseq: 10 + i as u32,
            extra: "",
        };
        let sender = [&attacker, &pbx, &dest]
            .into_iter()
            .find(|s| s.addr() == *from)
            .expect("sender");
        sender.send(&req.text(), uacd_addr);
    }
    assert!(victim.recv(QUIET).is_none(), "the victim heard from uacd");
    assert!(
        bystander.recv(Duration::from_millis(100)).is_none(),
        "a wrong port of the destination heard from uacd"
    );
    dest.assert_no_request("attacks toward the destination");
    pbx.assert_no_request("attacks toward the PBX");

    // The PBX moves its target to the victim (a re-INVITE the destination
    // accepts): it still cannot use uacd to reach the victim itself.
    let refresh = Req {
        method: "INVITE",
        ruri: &dest_contact,
        from: p,
        branch: "reinv1",
        route: &pbx_route,
        from_to: pbx_side,
        call_id,
        cseq: 2,
        extra: &format!("Contact: <sip:x@{v}>\r\n"),
    };
    pbx.send(&refresh.text(), uacd_addr);
    let (reinv, _) = dest.expect(
        "INVITE sip:1006@",
        call_id,
        "the re-INVITE at the destination",
    );
    dest.send(
        &response(
            &reinv,
            200,
            "OK",
            None,
            &format!("Contact: <sip:1006@{d}>\r\n"),
        ),
        uacd_addr,
    );
    pbx.expect(
        "SIP/2.0 200",
        call_id,
        "the 200 to the re-INVITE at the PBX",
    );
    let info = Req {
        method: "INFO",
        ruri: &victim_uri,
        from: p,
        branch: "info1",
        route: &pbx_route,
        from_to: pbx_side,
        call_id,
        cseq: 3,
        extra: "",
    };
    pbx.send(&info.text(), uacd_addr);
    assert!(
        victim.recv(QUIET).is_none(),
        "the PBX reached its own refreshed target"
    );

    // A restart: no state survives but the key; ACK and BYE still reach the
    // right party, and the answer to the BYE comes back.
    uacd.terminate(Duration::from_secs(10));
    let _uacd = start(&cfg, &dir, &pbx);
    let ack2 = Req {
        branch: "ack2",
        cseq: 2,
        ..ack
    };
    pbx.send(&ack2.text(), uacd_addr);
    dest.expect("ACK sip:1006@", call_id, "an ACK after the restart");
    // The destination hangs up toward the PBX's original Contact.
    let bye = Req {
        method: "BYE",
        ruri: &pbx_contact,
        from: d,
        branch: "bye1",
        route: &dest_route,
        from_to: dest_side,
        call_id,
        cseq: 5,
        extra: "",
    };
    dest.send(&bye.text(), uacd_addr);
    let (bye_at_pbx, _) = pbx.expect("BYE sip:601@", call_id, "the BYE after the restart");
    pbx.send(&response(&bye_at_pbx, 200, "OK", None, ""), uacd_addr);
    dest.expect(
        "SIP/2.0 200",
        call_id,
        "the 200 to the BYE at the destination",
    );

    // The call is over: the copied tokens still get a third party nothing.
    let replay = Req {
        from: at,
        branch: "replay1",
        ..bye
    };
    attacker.send(&replay.text(), uacd_addr);
    let to_victim = Req {
        ruri: &victim_uri,
        branch: "replay2",
        ..replay
    };
    attacker.send(&to_victim.text(), uacd_addr);
    assert!(
        victim.recv(QUIET).is_none(),
        "the victim heard from uacd after the call"
    );
    pbx.assert_no_request("a replayed BYE");
}

#[test]
fn nothing_forwarded_onto_a_stream_reads_as_a_second_message() {
    let dir = temp_dir("attack-framing");
    let uacd_addr = SocketAddr::from((test_ip(165), free_udp_port(test_ip(165))));
    let pbx = Peer::bind(166);
    let listener = TcpListener::bind((test_ip(167), 0)).expect("listen");
    let d = listener.local_addr().expect("addr");
    let p = pbx.addr();
    let cfg = config(uacd_addr, p, &format!("sip:1006@{d};transport=tcp"));
    let _uacd = start(&cfg, &dir, &pbx);

    // No Content-Length (allowed over UDP): the body is the rest of the
    // datagram, and here it looks like a request of its own.
    let smuggled = "INVITE sip:toll@127.0.0.163 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.163;branch=z9hG4bKsm\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: smuggled\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    let invite = format!(
        "INVITE sip:uacd-atk@{uacd_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {p};rport;branch=z9hG4bKsm1\r\n\
Max-Forwards: 70\r\nFrom: <sip:601@pbx.test>;tag=p1\r\nTo: <sip:uacd-atk@uacd.test>\r\n\
Call-ID: framing-1@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:601@{p}>\r\nContent-Type: text/plain\r\n\r\n{smuggled}"
    );
    pbx.send(&invite, uacd_addr);
    listener.set_nonblocking(false).expect("blocking");
    let (mut conn, _) = listener.accept().expect("uacd connects to the destination");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 8192];
    // Read until the connection has been quiet for QUIET after the headers.
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                quiet_since = None;
            }
            Err(_) => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && since.elapsed() >= QUIET {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a header block");
    let cl: usize = header(&format!("{head}\r\n\r\n"), "Content-Length")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length on the stream:\n{text}"));
    assert_eq!(
        cl,
        smuggled.len(),
        "Content-Length is the body uacd received"
    );
    assert_eq!(
        rest, smuggled,
        "exactly one message on the stream, its body the smuggled text:\n{text}"
    );

    // A Content-Length that disagrees with the datagram: 400, nothing sent on.
    for (i, body) in [
        "short",
        "v=0\r\nINVITE sip:toll@127.0.0.163 SIP/2.0\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        let cl = if i == 0 { 500 } else { 5 };
        let bad = format!(
            "INVITE sip:uacd-atk@{uacd_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {p};rport;branch=z9hG4bKcl{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:601@pbx.test>;tag=p{i}\r\nTo: <sip:uacd-atk@uacd.test>\r\n\
Call-ID: framing-bad-{i}@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:601@{p}>\r\nContent-Length: {cl}\r\n\r\n{body}"
        );
        pbx.send(&bad, uacd_addr);
        let (resp, _) = pbx.expect(
            "SIP/2.0 400",
            &format!("framing-bad-{i}@pbx"),
            "a Content-Length that disagrees",
        );
        assert!(
            resp.contains("Content-Length does not match the datagram"),
            "{resp}"
        );
    }
    let mut more = [0u8; 1024];
    conn.set_read_timeout(Some(QUIET)).expect("timeout");
    match conn.read(&mut more) {
        Ok(n) if n > 0 => panic!(
            "uacd forwarded more:\n{}",
            String::from_utf8_lossy(&more[..n])
        ),
        _ => {}
    }
}

/// A PBX behind NAT writes its private address in Via and Contact (here
/// the Contact is an address of .163 that must hear nothing; the Via's
/// 10.20.30.40 gets nothing either, responses follow `received`/`rport`):
/// the destination's in-dialog requests go back where its INVITE came
/// from, and still do after a restart (the destination's token carries the
/// way back).
#[test]
fn a_pbx_behind_nat_is_reached_where_its_invite_came_from() {
    let dir = temp_dir("attack-nat");
    let uacd_addr = SocketAddr::from((test_ip(168), free_udp_port(test_ip(168))));
    let pbx = Peer::bind(169);
    let private = Peer::bind(163);
    let dest = Peer::bind(162);
    let (p, d) = (pbx.addr(), dest.addr());
    let cfg = config(uacd_addr, p, &format!("sip:1006@{d}"));
    let mut uacd = start(&cfg, &dir, &pbx);
    let call_id = "nat-call-1@pbx";
    let dest_side = (PBX_SIDE.1, PBX_SIDE.0);
    let private_contact = format!("sip:601@{}", private.addr());
    let call = answered_call(
        (&pbx, &dest, uacd_addr),
        call_id,
        "10.20.30.40:5060",
        &private_contact,
    );
    let dest_route = route_set(&call.invite, false);

    uacd.terminate(Duration::from_secs(10));
    let _uacd = start(&cfg, &dir, &pbx);
    let bye = Req {
        method: "BYE",
        ruri: &private_contact,
        from: d,
        branch: "natbye1",
        route: &dest_route,
        from_to: dest_side,
        call_id,
        cseq: 5,
        extra: "",
    };
    dest.send(&bye.text(), uacd_addr);
    let (bye_at_pbx, from) = pbx.expect(
        "BYE sip:601@",
        call_id,
        "the BYE at the PBX's public address",
    );
    assert_eq!(from, uacd_addr);
    pbx.send(&response(&bye_at_pbx, 200, "OK", None, ""), uacd_addr);
    dest.expect("SIP/2.0 200", call_id, "the 200 to the BYE");
    assert!(
        private.recv(QUIET).is_none(),
        "uacd sent to the private Contact"
    );
}
