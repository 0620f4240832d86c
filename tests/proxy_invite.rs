//! Calls through uacd with real peers on 127.0.0.70..79: Kamailio is the PBX
//! (registrar, and router of calls from a SIPp phone to the registered
//! contact), uacd registers to it and proxies the calls to `1006@dest.test`,
//! whose SRV record (served by a DNS server in this test process) lists two
//! SIPp destinations. Every SIPp run checks its side of the dialog and exits
//! 0 only if all held; the caller logs the final status it got.
//!
//! | address | role |
//! |---|---|
//! | .70 | uacd |
//! | .71 | Kamailio (PBX) |
//! | .72 | SIPp caller (a phone on the PBX, or a stranger) |
//! | .73, .74 | SIPp destinations (SRV priority 10 and 20) |
//! | .75 | DNS server |
//!
//! Tests of this file run in parallel: each uses its own ports.

mod api_client;
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use common::dns::{DnsServer, a, srv};
use common::{
    Kamailio, KamailioOpts, Sipp, SippRun, Uacd, free_tcp_port, free_udp_port, require_peer,
    temp_dir, test_ip,
};

const WAIT: Duration = Duration::from_secs(30);

fn uacd_ip() -> Ipv4Addr {
    test_ip(70)
}
fn pbx_ip() -> Ipv4Addr {
    test_ip(71)
}
fn caller_ip() -> Ipv4Addr {
    test_ip(72)
}
fn dest1() -> Ipv4Addr {
    test_ip(73)
}
fn dest2() -> Ipv4Addr {
    test_ip(74)
}

/// A DNS server for `dest.test` in its own runtime (the daemon and SIPp
/// are child processes; this test's thread only waits on them).
struct Dns {
    rt: tokio::runtime::Runtime,
    server: Option<DnsServer>,
    addr: SocketAddr,
}

impl Dns {
    /// SRV `_sip._<proto>.dest.test`: priority 10 → .73:`p1`, 20 → .74:`p2`.
    fn start(proto: &str, p1: u16, p2: u16) -> Dns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(async {
            let mut s = DnsServer::start(test_ip(75), "dest.test").await;
            let service = format!("_sip._{proto}.dest.test");
            s.set(&[
                srv(&service, 60, 10, p1, "sip1.dest.test"),
                srv(&service, 60, 20, p2, "sip2.dest.test"),
                a("sip1.dest.test", 60, dest1()),
                a("sip2.dest.test", 60, dest2()),
            ])
            .await;
            s
        });
        let addr = server.addr;
        Dns {
            rt,
            server: Some(server),
            addr,
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            self.rt.block_on(s.stop());
        }
    }
}

struct Setup {
    dir: PathBuf,
    uacd: Uacd,
    uacd_port: u16,
    kam: Option<Kamailio>,
    kam_port: u16,
    _dns: Dns,
    p1: u16,
    p2: u16,
    dest_tcp: bool,
    api: SocketAddr,
}

/// uacd registered (over `transport`) to a Kamailio PBX, destinations over
/// `dest_proto` (`udp` or `tcp`). `pbx: false`: no Kamailio at all (the
/// registration fails; for the rejection tests).
fn setup(name: &str, transport: &str, dest_proto: &str, pbx: bool) -> Setup {
    require_peer("sipp");
    let dir = temp_dir(name);
    let uacd_port = free_udp_port(uacd_ip());
    let kam_port = free_udp_port(pbx_ip());
    let (p1, p2) = if dest_proto == "tcp" {
        (free_tcp_port(dest1()), free_tcp_port(dest2()))
    } else {
        (free_udp_port(dest1()), free_udp_port(dest2()))
    };
    let dns = Dns::start(dest_proto, p1, p2);
    let api = SocketAddr::from((uacd_ip(), free_tcp_port(uacd_ip())));
    let kam = pbx.then(|| {
        require_peer("kamailio");
        require_peer("kamcmd");
        let kdir = dir.join("kamailio");
        std::fs::create_dir_all(&kdir).unwrap();
        let mut opts = KamailioOpts::new(pbx_ip(), kam_port, "s3cret");
        opts.pbx = true;
        Kamailio::start(opts, &kdir)
    });
    let dest_uri = if dest_proto == "tcp" {
        "1006@dest.test;transport=tcp"
    } else {
        "1006@dest.test"
    };
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:{uacd_port}", "tcp:{ip}:{uacd_port}"]
[dns]
nameservers = ["{dns}"]
# No greylist: every step meets its targets in SRV order, whatever the
# previous step did to them (greylisting has its own tests in src/dns/).
greylist_sec = 0
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[store]
path = "{store}"
[registration]
retry_interval_sec = 2
max_retry_interval_sec = 2
[routing]
timeout_1xx_sec = 1
[[connection]]
id = "c1"
connection_name = "Kamailio PBX"
user_name = "uacd-c1"
[connection.external_uac_settings]
proxy = "sip:{pbx}:{kam_port}"
transport = "{transport}"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "{dest_uri}"
"#,
        ip = uacd_ip(),
        dns = dns.addr,
        api = api.port(),
        store = dir.join("uacd.db").display(),
        pbx = pbx_ip(),
    );
    let uacd = Uacd::start(&config, &dir);
    if pbx {
        uacd.wait_for_log("status=success", WAIT);
    }
    Setup {
        dir,
        uacd,
        uacd_port,
        kam,
        kam_port,
        _dns: dns,
        p1,
        p2,
        dest_tcp: dest_proto == "tcp",
        api,
    }
}

impl Setup {
    /// A SIPp destination on `ip:port` running `scenario` (over TCP when the
    /// destinations are).
    fn dest(&self, step: &str, scenario: &str, ip: Ipv4Addr, port: u16, extra: &[&str]) -> SippRun {
        let mut s = Sipp::new(scenario, &self.dir)
            .name(&format!("{step}-{scenario}-{ip}"))
            .local(ip, port)
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied());
        if self.dest_tcp {
            s = s.args(["-t", "t1"]);
        }
        s.start()
    }

    /// The caller: through the PBX (`via_pbx`) or straight to uacd.
    fn call(
        &self,
        step: &str,
        scenario: &str,
        service: &str,
        via_pbx: bool,
        extra: &[&str],
    ) -> SippRun {
        let remote = if via_pbx {
            format!("{}:{}", pbx_ip(), self.kam_port)
        } else {
            format!("{}:{}", uacd_ip(), self.uacd_port)
        };
        Sipp::new(scenario, &self.dir)
            .name(&format!("{step}-{scenario}-caller"))
            .local(caller_ip(), free_udp_port(caller_ip()))
            .remote(remote)
            .args(["-s", service, "-key", "mf", "70"])
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start()
    }
}

fn log_of(run: &SippRun) -> String {
    std::fs::read_to_string(run.logs_path()).unwrap_or_default()
}

fn final_status(run: &SippRun) -> String {
    let log = log_of(run);
    log.lines()
        .find_map(|l| l.split("FINAL ").nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no FINAL in the caller's log:\n{}", run.report()))
}

fn ruri_seen(run: &SippRun) -> String {
    let log = log_of(run);
    log.lines()
        .find_map(|l| l.split("RURI ").nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn messages(run: &SippRun) -> String {
    std::fs::read_to_string(run.messages_path()).unwrap_or_default()
}

fn uacd_log(s: &Setup) -> String {
    std::fs::read_to_string(s.uacd.log_path()).unwrap_or_default()
}

#[test]
fn calls_through_the_pbx_over_udp() {
    let s = setup("proxy-udp", "UDP", "udp", true);

    // 1. A plain call, hung up by the caller: R-URI rewritten, unknown
    //    header and body byte for byte, record-routed (uas-answer checks).
    let mut d1 = s.dest("1", "uas-answer.xml", dest1(), s.p1, &[]);
    let mut c = s.call("1", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);
    assert_eq!(ruri_seen(&d1), "sip:1006@dest.test");

    // 2. The destination hangs up: its BYE reaches the phone.
    let mut d1 = s.dest("2", "uas-hangup.xml", dest1(), s.p1, &["-d", "200"]);
    let mut c = s.call("2", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);

    // 3. The first destination answers 503: the second takes the call.
    let mut d1 = s.dest("3", "uas-unavailable.xml", dest1(), s.p1, &[]);
    let mut d2 = s.dest("3", "uas-answer.xml", dest2(), s.p2, &[]);
    let mut c = s.call("3", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);
    d2.wait_success(WAIT);

    // 4. 486 is relayed as is: no failover.
    let mut d1 = s.dest("4", "uas-busy.xml", dest1(), s.p1, &[]);
    let mut c = s.call("4", "pbx-call-fails.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);
    assert_eq!(final_status(&c), "486");

    // 5. The caller cancels while it rings: 487.
    let mut d1 = s.dest("5", "uas-ring-cancel.xml", dest1(), s.p1, &[]);
    let mut c = s.call("5", "pbx-cancel.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);
    assert_eq!(final_status(&c), "487");

    // 6. Max-Forwards runs out at uacd (1 from the phone, 0 after the PBX): 483.
    let mut c = Sipp::new("pbx-call-fails.xml", &s.dir)
        .name("6-caller")
        .local(caller_ip(), free_udp_port(caller_ip()))
        .remote(format!("{}:{}", pbx_ip(), s.kam_port))
        .args([
            "-s",
            "telnyx-reg",
            "-key",
            "mf",
            "1",
            "-m",
            "1",
            "-timeout",
            "20",
            "-timeout_error",
        ])
        .start();
    c.wait_success(WAIT);
    assert_eq!(final_status(&c), "483");

    // 7. The first destination stays silent: after timeout_1xx_sec the
    //    second takes the call.
    let mut d1 = s.dest("7", "uas-silent.xml", dest1(), s.p1, &["-d", "3000"]);
    let mut d2 = s.dest("7", "uas-answer.xml", dest2(), s.p2, &[]);
    let mut c = s.call("7", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d2.wait_success(WAIT);
    d1.wait(WAIT);

    // 8. Nothing listens on the first destination (UDP): the ICMP port
    //    unreachable is a transport error (§18.4), the second takes the call
    //    without waiting for timeout_1xx_sec.
    let icmp_failovers = |log: &str| {
        log.lines()
            .filter(|l| l.contains("call target failed") && l.contains("transport error"))
            .count()
    };
    let before = icmp_failovers(&uacd_log(&s));
    let mut d2 = s.dest("8", "uas-answer.xml", dest2(), s.p2, &[]);
    let mut c = s.call("8", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d2.wait_success(WAIT);
    let log = uacd_log(&s);
    assert_eq!(
        icmp_failovers(&log),
        before + 1,
        "the dead UDP target failed on ICMP, not on the 1xx timer:\n{log}"
    );

    let log = uacd_log(&s);
    assert!(log.contains("call finished"), "{log}");
    assert!(!log.contains("s3cret"), "password in the log");
    drop(s.kam);
}

#[test]
fn rejects_strangers_unknown_users_and_exhausted_max_forwards() {
    let s = setup("proxy-reject", "UDP", "udp", false);
    // A destination that must see nothing.
    let mut d1 = Sipp::new("uas-answer.xml", &s.dir)
        .name("never-dest")
        .local(dest1(), s.p1)
        .args(["-m", "1", "-timeout", "4", "-timeout_error"])
        .start();

    // Not from the PBX: 403, nothing forwarded.
    let mut c = s.call("stranger", "pbx-call-fails.xml", "uacd-c1", false, &[]);
    c.wait_success(WAIT);
    assert_eq!(final_status(&c), "403");

    // Unknown user: 404.
    let mut c = s.call("unknown", "pbx-call-fails.xml", "nobody", false, &[]);
    c.wait_success(WAIT);
    assert_eq!(final_status(&c), "404");

    // Max-Forwards 0: 483.
    let mut c = Sipp::new("pbx-call-fails.xml", &s.dir)
        .name("mf0-caller")
        .local(caller_ip(), free_udp_port(caller_ip()))
        .remote(format!("{}:{}", uacd_ip(), s.uacd_port))
        .args([
            "-s",
            "uacd-c1",
            "-key",
            "mf",
            "0",
            "-m",
            "1",
            "-timeout",
            "20",
            "-timeout_error",
        ])
        .start();
    c.wait_success(WAIT);
    assert_eq!(final_status(&c), "483");

    d1.wait_failure(WAIT);
    assert!(
        !messages(&d1).contains("INVITE sip:"),
        "a rejected call reached the destination:\n{}",
        messages(&d1)
    );

    // Made-up responses whose top Via looks like ours (our branch prefix,
    // with and without a stateless tag) and whose next Via names a victim:
    // uacd must not reflect them (a response is relayed without a
    // transaction only when its branch's keyed tag verifies).
    let victim = std::net::UdpSocket::bind((test_ip(75), 0)).expect("victim socket");
    victim
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let attacker = std::net::UdpSocket::bind((caller_ip(), 0)).expect("attacker socket");
    let v = victim.local_addr().expect("addr");
    for branch in [
        "z9hG4bK-ua-0011223344556677-s9f.0123456789abcdef",
        "z9hG4bK-ua-0011223344556677-1a2b",
    ] {
        let forged = format!(
            "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP {uacd}:{port};branch={branch}\r\n\
Via: SIP/2.0/UDP {vip}:{vport};rport={vport};received={vip};branch=z9hG4bKvictim\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n\
Call-ID: forged-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            uacd = uacd_ip(),
            port = s.uacd_port,
            vip = v.ip(),
            vport = v.port(),
        );
        attacker
            .send_to(forged.as_bytes(), (uacd_ip(), s.uacd_port))
            .expect("send");
    }
    assert_silent(&victim, "a forged response");

    // In-dialog requests aimed at a third party through our route set: a
    // Route with a made-up token, and genuine tokens (as uacd would issue
    // them) that were given to another address or that name another hop.
    // Each is refused with 403 and the victim hears nothing.
    attacker
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let key: [u8; 16] = std::fs::read(s.dir.join("uacd.key"))
        .expect("dialog key next to the store")
        .try_into()
        .expect("16 bytes");
    let call_id = "relay-attempt-1@attacker";
    use uacd::routing::token::{End, Grant, HopId, issue, now_epoch};
    let issued = |from: std::net::IpAddr, to: &str| {
        let to = HopId::of(&to.parse().expect("uri"));
        let grant = Grant {
            call_id,
            holder: End::Pbx,
            from,
            to: &to,
            back: None,
        };
        issue(&key, now_epoch(), &grant)
    };
    let victim_uri = format!("sip:toll@{}:{}", v.ip(), v.port());
    let copied = issued(pbx_ip().into(), &victim_uri);
    let elsewhere = issued(caller_ip().into(), "sip:1006@127.0.0.73:5060");
    let mut buf = [0u8; 2048];
    for (n, token) in ["0000000000000000", copied.as_str(), elsewhere.as_str()]
        .into_iter()
        .enumerate()
    {
        let a = attacker.local_addr().expect("addr");
        let reinvite = format!(
            "INVITE sip:toll@{vip}:{vport} SIP/2.0\r\n\
Via: SIP/2.0/UDP {aip}:{aport};rport;branch=z9hG4bKrelay{n}\r\n\
Route: <sip:{uacd}:{port};lr;uacd={token}>\r\n\
Max-Forwards: 70\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n\
Call-ID: {call_id}\r\nCSeq: 3 INVITE\r\nContact: <sip:a@{aip}:{aport}>\r\n\
Content-Length: 0\r\n\r\n",
            vip = v.ip(),
            vport = v.port(),
            aip = a.ip(),
            aport = a.port(),
            uacd = uacd_ip(),
            port = s.uacd_port,
        );
        attacker
            .send_to(reinvite.as_bytes(), (uacd_ip(), s.uacd_port))
            .expect("send");
        let status = loop {
            let n = attacker.recv(&mut buf).expect("an answer from uacd");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = text
                .get(8..11)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not a response:\n{text}"));
            if code >= 200 {
                break code;
            }
        };
        assert_eq!(status, 403, "token {token}");
    }
    assert_silent(&victim, "an in-dialog request to a third party");
}

/// Nothing arrives on `sock` within its read timeout.
fn assert_silent(sock: &std::net::UdpSocket, what: &str) {
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => panic!(
            "uacd relayed {what} from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}

#[test]
fn call_over_the_registration_tcp_flow() {
    let s = setup("proxy-tcp-flow", "TCP", "udp", true);
    let mut d1 = s.dest("1", "uas-answer.xml", dest1(), s.p1, &[]);
    let mut c = s.call("1", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d1.wait_success(WAIT);
    let kam_log = std::fs::read_to_string(s.kam.as_ref().unwrap().log_path()).unwrap_or_default();
    assert!(
        kam_log.contains("via sip:"),
        "Kamailio routed the call over the registration's connection:\n{kam_log}"
    );
}

#[test]
fn dead_tcp_destination_fails_over_at_once() {
    let s = setup("proxy-tcp-dest", "UDP", "tcp", true);
    // Nothing listens on .73:p1 (TCP): the connect is refused.
    let mut d2 = s.dest("1", "uas-answer.xml", dest2(), s.p2, &[]);
    let mut c = s.call("1", "pbx-call.xml", "telnyx-reg", true, &[]);
    c.wait_success(WAIT);
    d2.wait_success(WAIT);

    // This daemon has registered, routed a call, failed over and met a
    // transport error: its /metrics must hold the whole contract.
    let resp = api_client::Api::new(s.api, "test-token-0123456").get("/metrics");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        resp.headers
    );
    check_metrics(&resp.body, &s.dir);
}

/// design.md Part 2: every name with its type (and a label it must carry).
const CONTRACT: [(&str, &str, &str); 10] = [
    ("uacd_build_info", "gauge", "version="),
    ("uacd_registrations", "gauge", "status=\"success\""),
    (
        "uacd_register_requests_total",
        "counter",
        "response=\"200\"",
    ),
    ("uacd_register_duration_seconds", "histogram", "le="),
    (
        "uacd_calls_total",
        "counter",
        "direction=\"inbound\",result=\"answered\"",
    ),
    ("uacd_call_setup_seconds", "histogram", "le="),
    ("uacd_failovers_total", "counter", ""),
    ("uacd_dialogs_active", "gauge", ""),
    ("uacd_sip_messages_total", "counter", "kind=\"INVITE\""),
    (
        "uacd_transport_errors_total",
        "counter",
        "transport=\"tcp\"",
    ),
];

fn check_metrics(text: &str, dir: &std::path::Path) {
    // UACD_TEST_METRICS_OUT=<file>: keep what a daemon that has registered,
    // routed and failed over serves (for the docs and release notes).
    if let Some(out) = std::env::var_os("UACD_TEST_METRICS_OUT") {
        std::fs::write(out, text).expect("write UACD_TEST_METRICS_OUT");
    }
    for (name, kind, label) in CONTRACT {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(label)),
            "no {name} sample with {label}:\n{text}"
        );
    }
    assert!(
        text.contains("uacd_failovers_total 1") || text.contains("uacd_failovers_total 2"),
        "the refused first target was a failover:\n{text}"
    );
    assert!(!text.contains("s3cret"), "password in /metrics");
    // promtool (Debian's prometheus package) validates the exposition.
    require_peer("promtool");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(common::peer_path("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every metric a dashboard panel queries exists in this output.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_dir().join("dashboards/uacd.json")).unwrap(),
    )
    .expect("dashboards/uacd.json is JSON");
    let mut queried = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("uacd_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "the dashboard queries {name}, which /metrics does not serve"
        );
    }
}
