//! SIP tracing against the running daemon: with
//! `RUST_LOG=info,uacd::sip=trace` every message sent and received is in
//! the log, and with `[trace] hep` each one also reaches a HEP v3
//! collector (a UDP socket of this test that decodes the packets); in both
//! the digest `response` is redacted. The registrar is a socket of this
//! test that challenges once, then accepts.
//!
//! | address | role |
//! |---|---|
//! | .150 | HEP collector |
//! | .151 | registrar |
//! | .152 | uacd |
//! | .153 / .154 | uacd / a stranger flooding it (log rate test) |

mod api_client;
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Uacd, free_tcp_port, free_udp_port, temp_dir, test_ip, wait_for_line};

const WAIT: Duration = Duration::from_secs(20);

/// The chunks of one HEP v3 packet, as (type, value).
fn hep_chunks(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
    assert_eq!(&p[..4], b"HEP3", "not HEP v3");
    assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
    let mut out = Vec::new();
    let mut i = 6;
    while i + 6 <= p.len() {
        let kind = u16::from_be_bytes([p[i + 2], p[i + 3]]);
        let len = usize::from(u16::from_be_bytes([p[i + 4], p[i + 5]]));
        assert!(len >= 6 && i + len <= p.len(), "bad chunk length");
        out.push((kind, p[i + 6..i + len].to_vec()));
        i += len;
    }
    out
}

/// One captured message: source, destination, payload.
fn decode(p: &[u8]) -> (SocketAddr, SocketAddr, String) {
    let c = hep_chunks(p);
    let get = |k: u16| {
        c.iter()
            .find(|(t, _)| *t == k)
            .map(|(_, v)| v.clone())
            .expect("chunk")
    };
    assert_eq!(get(1), [2], "IPv4");
    assert_eq!(get(2), [17], "UDP");
    assert_eq!(get(11), [1], "SIP");
    let ip = |v: Vec<u8>| std::net::IpAddr::from([v[0], v[1], v[2], v[3]]);
    let port = |v: Vec<u8>| u16::from_be_bytes([v[0], v[1]]);
    (
        SocketAddr::new(ip(get(3)), port(get(7))),
        SocketAddr::new(ip(get(4)), port(get(8))),
        String::from_utf8(get(15)).expect("text"),
    )
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{msg}"))
}

fn answer(req: &str, code: &str, extra: &str) -> String {
    format!(
        "SIP/2.0 {code}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=reg\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        header(req, "Via"),
        header(req, "From"),
        header(req, "To"),
        header(req, "Call-ID"),
        header(req, "CSeq"),
    )
}

#[test]
fn every_message_is_logged_and_sent_to_the_hep_collector_redacted() {
    let dir = temp_dir("sip-trace");
    let collector = UdpSocket::bind((test_ip(150), 0)).expect("collector");
    let registrar = UdpSocket::bind((test_ip(151), 0)).expect("registrar");
    registrar.set_read_timeout(Some(WAIT)).unwrap();
    let (c, r) = (
        collector.local_addr().unwrap(),
        registrar.local_addr().unwrap(),
    );
    let uacd_addr = SocketAddr::from((test_ip(152), free_udp_port(test_ip(152))));
    let config = format!(
        r#"[sip]
listen = ["udp:{uacd_addr}"]
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "trace-test-token-0123"
user_id = "1"
[trace]
hep = "{c}"
hep_capture_id = 77
[[connection]]
id = "t1"
connection_name = "traced"
user_name = "uacd-trace"
[connection.external_uac_settings]
proxy = "sip:{r}"
transport = "UDP"
username = "line1"
password = "trace-s3cret"
expiration_sec = 600
"#,
        ip = test_ip(152),
        api = free_tcp_port(test_ip(152)),
    );
    let uacd = Uacd::start_logging(&config, &dir, "info,uacd::sip=trace");

    // Challenge once, then accept.
    let mut buf = vec![0u8; 65536];
    let (n, from) = registrar.recv_from(&mut buf).expect("a REGISTER");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    let challenge = "WWW-Authenticate: Digest realm=\"trace\", nonce=\"n0nce\", algorithm=MD5, qop=\"auth\"\r\n";
    registrar
        .send_to(
            answer(&first, "401 Unauthorized", challenge).as_bytes(),
            from,
        )
        .unwrap();
    let (n, from) = registrar
        .recv_from(&mut buf)
        .expect("the answered REGISTER");
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    let auth = header(&second, "Authorization");
    let response = auth
        .split("response=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a digest response")
        .to_owned();
    let contact = header(&second, "Contact").to_owned();
    let ok = answer(
        &second,
        "200 OK",
        &format!("Contact: {contact};expires=600\r\n"),
    );
    registrar.send_to(ok.as_bytes(), from).unwrap();
    uacd.wait_for_log("status=success", WAIT);

    // The log: both REGISTERs sent, the 401 and the 200 received, redacted.
    wait_for_line(uacd.log_path(), "SIP/2.0 200 OK", WAIT).expect("the 200 in the log");
    let log = std::fs::read_to_string(uacd.log_path()).expect("log");
    assert!(log.contains("uacd::sip"), "logged under uacd::sip:\n{log}");
    assert_eq!(log.matches("REGISTER sip:").count(), 2, "{log}");
    assert!(log.contains("SIP/2.0 401 Unauthorized"), "{log}");
    assert!(log.contains("response=\"<redacted>\""), "{log}");
    assert!(
        !log.contains(&response),
        "the digest response is in the log"
    );
    assert!(!log.contains("trace-s3cret"), "the password is in the log");

    // The collector: the same four messages, with addresses, ports and our
    // capture id, in order.
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 4 && Instant::now() < deadline {
        if let Ok(n) = collector.recv(&mut buf) {
            let c = hep_chunks(&buf[..n]);
            assert!(
                c.contains(&(12, 77u32.to_be_bytes().to_vec())),
                "capture id"
            );
            got.push(decode(&buf[..n]));
        }
    }
    let starts: Vec<(SocketAddr, SocketAddr, &str)> = got
        .iter()
        .map(|(s, d, p)| (*s, *d, p.split("\r\n").next().unwrap_or("")))
        .collect();
    let reg_line = format!("REGISTER sip:{r} SIP/2.0");
    assert_eq!(
        starts,
        vec![
            (uacd_addr, r, reg_line.as_str()),
            (r, uacd_addr, "SIP/2.0 401 Unauthorized"),
            (uacd_addr, r, reg_line.as_str()),
            (r, uacd_addr, "SIP/2.0 200 OK"),
        ]
    );
    assert!(got[2].2.contains("response=\"<redacted>\""));
    assert!(got.iter().all(|(_, _, p)| !p.contains(&response)));
}

/// Network-caused log lines are rate-limited per kind: a flood of
/// malformed datagrams writes one line per interval, whose `suppressed`
/// field and `uacd_log_lines_suppressed_total{kind="malformed"}` count the
/// rest.
#[test]
fn a_flood_of_garbage_writes_a_line_per_interval_and_counts_the_rest() {
    let dir = temp_dir("log-rate");
    let uacd_addr = SocketAddr::from((test_ip(153), free_udp_port(test_ip(153))));
    let api = SocketAddr::from((test_ip(153), free_tcp_port(test_ip(153))));
    let config = format!(
        r#"[sip]
listen = ["udp:{uacd_addr}"]
[api]
listen = "{api}"
[[api.tokens]]
token = "log-rate-test-token-01"
user_id = "1"
"#
    );
    let uacd = Uacd::start(&config, &dir);
    common::wait_for_udp_listener(test_ip(153), uacd_addr.port(), WAIT).expect("listening");
    common::wait_for_tcp_listener(test_ip(153), api.port(), WAIT).expect("API");
    let stranger = UdpSocket::bind((test_ip(154), 0)).unwrap();
    let api = api_client::Api::new(api, "log-rate-test-token-01");
    let want = "uacd_log_lines_suppressed_total{kind=\"malformed\"}";
    // (logged, suppressed) as the log and /metrics tell.
    let counts = || {
        let m = api.get("/metrics");
        let suppressed = m
            .body
            .lines()
            .find_map(|l| l.strip_prefix(want))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let log = std::fs::read_to_string(uacd.log_path()).unwrap();
        let lines = log.matches("dropping malformed SIP datagram").count() as u64;
        (lines, suppressed)
    };
    // 300 in bursts of 30, each sent once the previous one is accounted
    // for (300 at once can overflow the socket buffer): every datagram is
    // either logged or counted as suppressed.
    let (mut lines, mut suppressed) = (0, 0);
    for burst in 0..10u64 {
        for i in 0..30 {
            let garbage = format!("NOT SIP {burst}-{i}\r\n\r\n");
            stranger.send_to(garbage.as_bytes(), uacd_addr).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && lines + suppressed < 30 * (burst + 1) {
            (lines, suppressed) = counts();
        }
    }
    assert_eq!(
        lines + suppressed,
        300,
        "{lines} logged, {suppressed} suppressed"
    );
    // One line per 5 s: the flood takes milliseconds, so a handful at most.
    assert!(
        (1..=10).contains(&lines),
        "{lines} lines for 300 malformed datagrams"
    );
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(
        log.contains("suppressed=0"),
        "the first line says none were suppressed"
    );
}
