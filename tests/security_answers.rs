//! Attacks on the daemon's own answers, against the real `uacd` binary on
//! 127.0.0.40..=49 (issue 15 items 4 and 7): a stranger never gets more
//! bytes back than it sent (OPTIONS, unknown user, malformed requests,
//! many-valued Via), OPTIONS is answered only to verified parties, error
//! answers beyond `limits.error_replies_per_ip_per_sec` are not sent, and
//! the API's per-user connection quota.
//!
//! The loopback exemption of the reply rules is exactly 127.0.0.1 and ::1,
//! so the rest of 127.0.0.0/8 plays strangers here.
//!
//! | address    | role                                                |
//! |------------|-----------------------------------------------------|
//! | .40        | uacd (bytes test)                                   |
//! | .41        | stranger                                            |
//! | .42        | the PBX: the connection's `proxy` (nothing listens) |
//! | .43        | a `sip.monitors` address                            |
//! | .44        | uacd (rate test)                                    |
//! | .45, .46   | strangers                                           |
//! | .47        | uacd (API quota)                                    |

mod api_client;
mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use api_client::Api;
use common::{
    Uacd, free_tcp_port, temp_dir, test_ip, wait_for_tcp_listener, wait_for_udp_listener,
};
use serde_json::json;

const START_WAIT: Duration = Duration::from_secs(20);
/// How long a socket stays quiet before we take it that no (more) answer
/// comes. A negative result can only be observed this way; every answer we
/// do expect is waited for up to [`ANSWER_WAIT`].
const QUIET: Duration = Duration::from_millis(700);
const ANSWER_WAIT: Duration = Duration::from_secs(5);
const TOKEN: &str = "security-answers-token";

/// uacd with SIP (UDP) on `ip:5060`, the API on a free port, one
/// connection whose PBX is 127.0.0.42, and `extra` appended.
fn start(ip: Ipv4Addr, name: &str, extra: &str) -> (Uacd, SocketAddr) {
    let dir = temp_dir(name);
    let api = free_tcp_port(ip);
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:5060"]
monitors = ["{monitor}"]
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "{TOKEN}"
user_id = "1"
[[api.tokens]]
token = "{TOKEN}-other"
user_id = "2"
[registration]
retry_interval_sec = 30
max_retry_interval_sec = 30
unregister_timeout_sec = 1
{extra}
[[connection]]
id = "c1"
connection_name = "PBX"
user_name = "uacd-c1"
user_id = "1"
[connection.external_uac_settings]
proxy = "sip:{pbx}:5999"
transport = "UDP"
username = "100"
password = "pw-security-answers"
"#,
        monitor = test_ip(43),
        pbx = test_ip(42),
    );
    let uacd = Uacd::start(&config, &dir);
    wait_for_tcp_listener(ip, api, START_WAIT)
        .and_then(|_| wait_for_udp_listener(ip, 5060, START_WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", common::tail(uacd.log_path(), 40)));
    (uacd, SocketAddr::from((ip, api)))
}

fn socket(ip: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(QUIET)).unwrap();
    s
}

/// Everything that arrives on `sock` until it has been quiet for [`QUIET`]
/// (at most [`ANSWER_WAIT`] in all).
fn drain(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + ANSWER_WAIT;
    while Instant::now() < until {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => got.push(buf[..n].to_vec()),
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{e}"
                );
                break;
            }
        }
    }
    got
}

/// A request from `sock` to `uacd`; `{via}` is the socket's sent-by.
fn request(sock: &UdpSocket, template: &str, n: usize) -> String {
    let me = sock.local_addr().unwrap();
    template
        .replace(
            "{via}",
            &format!("SIP/2.0/UDP {me};rport;branch=z9hG4bK-sa-{n}"),
        )
        .replace("{n}", &n.to_string())
}

const OPTIONS: &str = "OPTIONS sip:uacd@127.0.0.40 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
From: <sip:x@y>;tag=a{n}\r\nTo: <sip:uacd@127.0.0.40>\r\nCall-ID: sa-{n}\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

const INVITE_NOBODY: &str = "INVITE sip:nobody@127.0.0.40 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
From: <sip:x@y>;tag=a{n}\r\nTo: <sip:nobody@127.0.0.40>\r\nCall-ID: sa-{n}\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

fn invite_with_sdp() -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.41\r\ns=-\r\nc=IN IP4 127.0.0.41\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n";
    format!(
        "INVITE sip:nobody@127.0.0.40 SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\n\
From: <sip:x@y>;tag=a{{n}}\r\nTo: <sip:nobody@127.0.0.40>\r\nCall-ID: sa-{{n}}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:x@127.0.0.41>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Sends `req` from `sock` and returns what came back.
fn exchange(sock: &UdpSocket, req: &str) -> Vec<Vec<u8>> {
    sock.send_to(req.as_bytes(), ("127.0.0.40", 5060)).unwrap();
    drain(sock)
}

#[test]
fn a_stranger_never_gets_more_bytes_than_it_sent() {
    let (uacd, _) = start(
        test_ip(40),
        "security-bytes",
        "[limits]\nerror_replies_per_ip_per_sec = 1000\n",
    );
    let stranger = socket(test_ip(41));
    let many_vias = INVITE_NOBODY.replace(
        "Via: {via}\r\n",
        &format!("Via: {{via}}{}\r\n", ",SIP/2.0/UDP a".repeat(300)),
    );
    let compact_vias = INVITE_NOBODY.replace(
        "Via: {via}\r\n",
        &format!("Via: {{via}}\r\n{}", "v: SIP/2.0/UDP a\r\n".repeat(200)),
    );
    let sdp_many_vias = invite_with_sdp().replace(
        "Via: {via}\r\n",
        &format!("Via: {{via}}{}\r\n", ",SIP/2.0/UDP a".repeat(100)),
    );
    let attacks: Vec<(&str, String)> = vec![
        ("OPTIONS", OPTIONS.to_owned()),
        ("INVITE for an unknown user", INVITE_NOBODY.to_owned()),
        ("INVITE with SDP for an unknown user", invite_with_sdp()),
        ("many comma-separated Vias", many_vias),
        ("many compact Via lines", compact_vias),
        ("many Vias with SDP", sdp_many_vias.clone()),
        (
            "CSeq method mismatch",
            OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
        ),
        (
            "bad Content-Length",
            OPTIONS.replace("Content-Length: 0", "Content-Length: abc"),
        ),
        (
            "two Call-IDs",
            OPTIONS.replace("Call-ID: sa-{n}\r\n", "Call-ID: sa-{n}\r\ni: other\r\n"),
        ),
        ("SIP/7.0", OPTIONS.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1)),
        (
            "unknown Require",
            OPTIONS.replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: x\r\n"),
        ),
    ];
    let mut answered = Vec::new();
    for (n, (what, template)) in attacks.iter().enumerate() {
        let req = request(&stranger, template, n);
        let got = exchange(&stranger, &req);
        let out: usize = got.iter().map(Vec::len).sum();
        assert!(
            out <= req.len(),
            "{what}: {} bytes in, {out} out:\n{}",
            req.len(),
            got.iter()
                .map(|g| String::from_utf8_lossy(g).into_owned())
                .collect::<String>()
        );
        if *what == "OPTIONS" {
            assert!(got.is_empty(), "a stranger's OPTIONS was answered");
        }
        if !got.is_empty() {
            answered.push((*what, String::from_utf8_lossy(&got[0]).into_owned()));
        }
    }
    // Answers that fit are still given: the 404 to the big INVITE, with the
    // Via lines as they came (one line for the comma-separated group).
    let four04 = answered
        .iter()
        .find(|(w, _)| *w == "many Vias with SDP")
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| panic!("no 404 to the big INVITE; answered: {answered:?}"));
    assert!(four04.starts_with("SIP/2.0 404 "), "{four04}");
    assert_eq!(four04.matches("Via: ").count(), 1, "{four04}");
    assert!(
        answered
            .iter()
            .any(|(w, a)| *w == "INVITE with SDP for an unknown user"
                && a.starts_with("SIP/2.0 404 ")),
        "{answered:?}"
    );

    // Verified parties get OPTIONS answered: a monitor and the PBX.
    for ip in [43, 42] {
        let sock = socket(test_ip(ip));
        let got = exchange(&sock, &request(&sock, OPTIONS, 100 + usize::from(ip)));
        assert_eq!(got.len(), 1, "from 127.0.0.{ip}: {got:?}");
        assert!(got[0].starts_with(b"SIP/2.0 200 "), "127.0.0.{ip}");
    }
    // RFC 4475 answers, to a verified party (so that size does not hide them).
    let monitor = socket(test_ip(43));
    for (n, (template, want)) in [
        (
            OPTIONS.replace(
                "sip:uacd@127.0.0.40 SIP",
                "nobodyknowsthisscheme:totallyopaquecontent SIP",
            ),
            "SIP/2.0 416 ",
        ),
        (
            OPTIONS.replace(
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nRequire: nothingsupportsthis\r\n",
            ),
            "SIP/2.0 420 ",
        ),
        (
            OPTIONS.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1),
            "SIP/2.0 505 ",
        ),
        (
            OPTIONS.replace(
                "CSeq: 1 OPTIONS\r\n",
                "CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n",
            ),
            "SIP/2.0 400 Bad Request (repeated CSeq)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let got = exchange(&monitor, &request(&monitor, &template, 200 + n));
        assert_eq!(got.len(), 1, "{want}: {got:?}");
        let text = String::from_utf8_lossy(&got[0]);
        assert!(text.starts_with(want), "want {want}, got {text}");
        if want.contains("420") {
            assert!(
                text.contains("\r\nUnsupported: nothingsupportsthis\r\n"),
                "{text}"
            );
        }
    }
    uacd.wait_for_log("larger_than_request", ANSWER_WAIT);
    uacd.wait_for_log("unverified_source", ANSWER_WAIT);
}

#[test]
fn error_answers_beyond_the_rate_are_not_sent() {
    let (_uacd, _) = start(
        test_ip(44),
        "security-rate",
        "[limits]\nerror_replies_per_ip_per_sec = 1\n",
    );
    let stranger = socket(test_ip(45));
    let dest = (test_ip(44), 5060);
    let template = invite_with_sdp().replace("127.0.0.40", "127.0.0.44");
    let started = Instant::now();
    let sent = 30;
    for n in 0..sent {
        let req = request(&stranger, &template, n);
        stranger.send_to(req.as_bytes(), dest).unwrap();
    }
    let got = drain(&stranger);
    let elapsed = started.elapsed();
    // A bucket of 1 a second with a burst of 1: at most one answer plus one
    // per second that passed, whatever the machine's speed.
    let bound = 1 + elapsed.as_secs() as usize + 1;
    assert!(!got.is_empty(), "not even the first error was answered");
    assert!(
        got.len() <= bound && got.len() < sent,
        "{} answers to {sent} requests in {elapsed:?}",
        got.len()
    );
    for g in &got {
        assert!(
            g.starts_with(b"SIP/2.0 404 "),
            "{}",
            String::from_utf8_lossy(g)
        );
    }
    // The budget is per source IP: another stranger is still answered.
    let other = socket(test_ip(46));
    other
        .send_to(request(&other, &template, 1000).as_bytes(), dest)
        .unwrap();
    let got = drain(&other);
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_user_gets_at_most_connections_per_user_connections() {
    let (_uacd, api) = start(
        test_ip(47),
        "security-quota",
        "[limits]\nconnections_per_user = 2\n",
    );
    let a = Api::new(api, TOKEN);
    // User 1 owns c1 from the config file already: one more fits.
    let r = a.post("/v2/uac_connections", &json!({"connection_name": "second"}));
    assert_eq!(r.status, 201, "{r:?}");
    let r = a.post("/v2/uac_connections", &json!({"connection_name": "third"}));
    assert_eq!(r.status, 422, "{r:?}");
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], "connection_limit_reached", "{v}");
    assert_eq!(r.error_source(), "/user_id", "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("limits.connections_per_user")),
        "{v}"
    );
    // Another user has a quota of its own.
    let b = a.with_token(Some(&format!("{TOKEN}-other")));
    let r = b.post("/v2/uac_connections", &json!({"connection_name": "b's"}));
    assert_eq!(r.status, 201, "{r:?}");
}
