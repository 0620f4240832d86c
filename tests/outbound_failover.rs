//! Failover of a call toward the PBX (README "Calls toward the PBX"), on
//! 127.0.0.190..199: the connection's `proxy` is `sip:pbx.test`, whose SRV
//! (dnsmasq) lists PBX stand-in A (priority 10) and B (priority 20). uacd
//! registers on A (SIPp `registrar-digest.xml`); A's SIPp is then replaced
//! on the same port by the behaviour under test, and an internal
//! application calls through uacd. The registrar target in use is tried
//! first; the next SRV target only when it times out or fails at the
//! transport (RFC 3263 §4.3), never on its 4xx-6xx (relayed as is,
//! RFC 3261 §16.7).
//!
//! | address | role |
//! |---|---|
//! | .190 | uacd |
//! | .191 | internal SIPp (the only `routing.internal_sources`) |
//! | .192 | PBX A, `sip1.pbx.test` (SRV priority 10) |
//! | .193 | PBX B, `sip2.pbx.test` (SRV priority 20) |
//! | .199 | dnsmasq |
//!
//! Tests of this file run in parallel: each uses its own ports (the SRV
//! records carry them).

mod api_client;
mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::{
    Sipp, SippRun, Uacd, free_tcp_port, free_udp_port, require_peer, tail, temp_dir, test_ip,
    wait_for_udp_listener,
};

const WAIT: Duration = Duration::from_secs(30);
const FQDN: &str = "uacd-f1.uac.test";

fn uacd_ip() -> Ipv4Addr {
    test_ip(190)
}
fn internal_ip() -> Ipv4Addr {
    test_ip(191)
}
fn a_ip() -> Ipv4Addr {
    test_ip(192)
}
fn b_ip() -> Ipv4Addr {
    test_ip(193)
}
fn dns_ip() -> Ipv4Addr {
    test_ip(199)
}

struct Setup {
    dir: PathBuf,
    uacd: Uacd,
    uacd_port: u16,
    api_port: u16,
    a_port: u16,
    b_port: u16,
    _dns: Dnsmasq,
    /// A's registrar until [`Setup::replace_a`].
    registrar: Option<SippRun>,
}

/// dnsmasq, A's registrar and uacd, registered on A. `timeout_1xx` is the
/// connection's `[connection.outbound] timeout_1xx_secs`.
fn setup(name: &str, timeout_1xx: u32) -> Setup {
    require_peer("sipp");
    require_peer("dnsmasq");
    let dir = temp_dir(name);
    let uacd_port = free_udp_port(uacd_ip());
    let api_port = free_tcp_port(uacd_ip());
    let (a_port, b_port) = (free_udp_port(a_ip()), free_udp_port(b_ip()));
    let registrar = Sipp::new("registrar-digest.xml", &dir)
        .name("a-registrar")
        .local(a_ip(), a_port)
        .key("realm", "pbx.test")
        .set("pw", "s3cret")
        .key("expires_grant", "600")
        .args(["-m", "1", "-timeout", "60"])
        .start();
    wait_for_udp_listener(a_ip(), a_port, WAIT).expect("A's registrar listens");
    let dns = Dnsmasq::start(
        dns_ip(),
        &[
            format!("--srv-host=_sip._udp.pbx.test,sip1.pbx.test,{a_port},10,0"),
            format!("--srv-host=_sip._udp.pbx.test,sip2.pbx.test,{b_port},20,0"),
            format!("--host-record=sip1.pbx.test,{}", a_ip()),
            format!("--host-record=sip2.pbx.test,{}", b_ip()),
        ],
        &dir,
    );
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:{uacd_port}"]
domain = "uac.test"
[dns]
nameservers = ["{dns}"]
[api]
listen = "{ip}:{api_port}"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[routing]
internal_sources = ["{internal}/32"]
timeout_1xx_sec = 20
[[connection]]
id = "f1"
connection_name = "PBX behind SRV"
user_name = "uacd-f1"
[connection.external_uac_settings]
proxy = "sip:pbx.test"
transport = "UDP"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "sip:1006@{internal}:5060"
[connection.outbound]
timeout_1xx_secs = {timeout_1xx}
"#,
        ip = uacd_ip(),
        dns = dns.addr,
        internal = internal_ip(),
    );
    let uacd = Uacd::start(&config, &dir);
    let line = uacd.wait_for_log("status=success", WAIT);
    assert!(
        line.contains(&format!("registrar={}:{a_port}", a_ip())),
        "the registration lands on A (SRV priority 10): {line}"
    );
    Setup {
        dir,
        uacd,
        uacd_port,
        api_port,
        a_port,
        b_port,
        _dns: dns,
        registrar: Some(registrar),
    }
}

impl Setup {
    /// Stops A's registrar (uacd stays registered there: the refresh is
    /// minutes away) and, with `Some(scenario)`, starts that on A's port
    /// with `extra` arguments.
    fn replace_a(&mut self, scenario: Option<&str>, extra: &[&str]) -> Option<SippRun> {
        if let Some(mut r) = self.registrar.take() {
            r.child.terminate(Duration::from_secs(5));
        }
        let run = scenario.map(|sc| {
            Sipp::new(sc, &self.dir)
                .name(&format!("a-{}", sc.trim_end_matches(".xml")))
                .local(a_ip(), self.a_port)
                .args(["-m", "1", "-timeout", "20", "-timeout_error"])
                .args(extra.iter().copied())
                .start()
        });
        if run.is_some() {
            wait_for_udp_listener(a_ip(), self.a_port, WAIT).expect("A's new SIPp listens");
        }
        run
    }

    /// B, answering with `uas-answer.xml` (checks uacd record-routed);
    /// waits until it listens.
    fn b(&self) -> SippRun {
        let run = Sipp::new("uas-answer.xml", &self.dir)
            .name("b-uas-answer")
            .local(b_ip(), self.b_port)
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .start();
        wait_for_udp_listener(b_ip(), self.b_port, WAIT).expect("B listens");
        run
    }

    /// The internal application calling extension 2000 through uacd.
    fn call(&self, scenario: &str, extra: &[&str]) -> SippRun {
        Sipp::new(scenario, &self.dir)
            .name(&format!("int-{}", scenario.trim_end_matches(".xml")))
            .local(internal_ip(), free_udp_port(internal_ip()))
            .remote(format!("{}:{}", uacd_ip(), self.uacd_port))
            .args(["-s", "2000", "-key", "fqdn", FQDN])
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start()
    }

    fn report(&self, runs: &[&SippRun]) -> String {
        let mut out = String::new();
        for r in runs {
            out.push_str(&r.report());
            out.push('\n');
        }
        out.push_str(&format!(
            "--- uacd log:\n{}",
            tail(self.uacd.log_path(), 60)
        ));
        out
    }

    fn wait_ok(&self, run: &mut SippRun, who: &str, others: &[&SippRun]) {
        let s = run.wait(WAIT);
        assert!(
            s.success(),
            "{who} failed: {s}\n{}",
            self.report(&[&*run]) + &self.report(others)
        );
    }

    /// uacd's `call finished` line (waits for it).
    fn call_finished(&self) -> String {
        self.uacd.wait_for_log("call finished", WAIT)
    }

    /// The value of the first series of `/metrics` named `name` whose line
    /// contains every one of `labels` (`direction="outbound"`).
    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let addr = std::net::SocketAddr::from((uacd_ip(), self.api_port));
        let resp = api_client::Api::new(addr, "test-token-0123456").get("/metrics");
        assert_eq!(resp.status, 200, "{}", resp.body);
        resp.body
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics:\n{}", resp.body))
    }

    /// `uacd_calls_total` of calls toward the PBX that ended with `result`.
    fn outbound_calls(&self, result: &str) -> f64 {
        let r = format!("result=\"{result}\"");
        self.metric("uacd_calls_total", &["direction=\"outbound\"", &r])
    }

    /// uacd's `call target failed` lines.
    fn targets_failed(&self) -> Vec<String> {
        std::fs::read_to_string(self.uacd.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("call target failed"))
            .map(str::to_owned)
            .collect()
    }
}

/// The SIP requests of `method` a SIPp run received, with the time of each
/// (`-trace_msg`: a `----- <date> <time>` line, then `UDP message received`).
fn received(messages: &Path, method: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(messages).unwrap_or_default();
    let mut out = Vec::new();
    let mut stamp = String::new();
    let mut incoming = false;
    for l in text.lines() {
        if let Some(s) = l.strip_prefix("----------------------------------------------- ") {
            stamp = s.trim().to_owned();
            incoming = false;
        } else if l.contains("message received") {
            incoming = true;
        } else if incoming && l.trim_start().starts_with(&format!("{method} ")) {
            out.push((stamp.clone(), l.trim().to_owned()));
            incoming = false;
        }
    }
    out
}

fn invites(run: &SippRun) -> Vec<(String, String)> {
    received(run.messages_path(), "INVITE")
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn silent_registrar_target_fails_over_to_the_next_srv_target() {
    // A takes the INVITE and never answers: after the connection's
    // timeout_1xx_secs (1 s; the daemon's 20 s) B gets the call, and its
    // 200 reaches the internal side, which ACKs and hangs up through uacd
    // (both SIPp runs exit 0 only if B got that ACK and BYE and the
    // internal side the 200 of its own dialog and the BYE's 200).
    let mut s = setup("of-silent", 1);
    let mut a = s
        // -d: it stays up (absorbing retransmissions) past the 1 s, so
        // that no ICMP unreachable moves the call instead.
        .replace_a(Some("uas-silent.xml"), &["-d", "5000"])
        .expect("A's silent SIPp");
    let mut b = s.b();
    let mut c = s.call("internal-call.xml", &["-d", "200"]);
    s.wait_ok(&mut c, "internal side", &[&a, &b]);
    s.wait_ok(&mut b, "B", &[&a, &c]);
    let at_a = invites(&a);
    let at_b = invites(&b);
    assert!(
        !at_a.is_empty() && at_a[0].1.starts_with("INVITE sip:2000@pbx.test"),
        "the INVITE went to A first: {at_a:?}\n{}",
        s.report(&[&a])
    );
    assert_eq!(at_b.len(), 1, "B got the call once: {at_b:?}");
    assert!(
        at_b[0].1.starts_with("INVITE sip:2000@pbx.test"),
        "{at_b:?}"
    );
    assert!(at_a[0].0 < at_b[0].0, "A before B: A {at_a:?}, B {at_b:?}");
    let failed = s.targets_failed();
    assert_eq!(failed.len(), 1, "one target given up: {failed:#?}");
    assert!(
        failed[0].contains(&format!("target_addr={}:{}", a_ip(), s.a_port))
            && failed[0].contains("no provisional response"),
        "A was given up on for its silence: {}",
        failed[0]
    );
    let done = s.call_finished();
    assert_eq!(field(&done, "status="), "200", "{done}");
    assert_eq!(field(&done, "failovers="), "1", "{done}");
    let setup_ms: u64 = field(&done, "setup_ms=").parse().expect("setup_ms");
    assert!(
        (1000..20_000).contains(&setup_ms),
        "B tried after the connection's 1 s, not the daemon's 20 s: {done}"
    );
    assert_eq!(s.outbound_calls("answered"), 1.0);
    assert_eq!(s.metric("uacd_failovers_total", &[]), 1.0);
    a.child.terminate(Duration::from_secs(5));
}

#[test]
fn registrar_target_486_is_relayed_and_the_next_target_never_tried() {
    // A answers 486: the internal side gets that 486, and B, which would
    // answer, never sees an INVITE.
    let mut s = setup("of-busy", 1);
    let mut a = s
        .replace_a(Some("uas-busy.xml"), &[])
        .expect("A's busy SIPp");
    let mut b = s.b();
    let mut c = s.call("internal-expect-status.xml", &["-key", "status", "486"]);
    s.wait_ok(&mut c, "internal side", &[&a, &b]);
    s.wait_ok(&mut a, "A (486, then the ACK)", &[&b, &c]);
    let done = s.call_finished();
    assert_eq!(field(&done, "status="), "486", "{done}");
    assert_eq!(field(&done, "failovers="), "0", "{done}");
    assert_eq!(invites(&a).len(), 1, "{}", s.report(&[&a]));
    // The call is over (its final response relayed, A's ACK sent): nothing
    // can reach B any more.
    assert!(
        invites(&b).is_empty(),
        "B saw an INVITE after A's 486:\n{}",
        b.report()
    );
    assert!(s.targets_failed().is_empty(), "{:#?}", s.targets_failed());
    assert_eq!(s.outbound_calls("486"), 1.0);
    assert_eq!(s.metric("uacd_failovers_total", &[]), 0.0);
    b.child.terminate(Duration::from_secs(5));
}

#[test]
fn closed_registrar_port_fails_over_at_once_on_icmp_unreachable() {
    // A's SIPp is gone (ICMP port unreachable, RFC 3261 §18.4): B gets the
    // call well before the connection's 10 s timeout_1xx could move it.
    let mut s = setup("of-closed", 10);
    assert!(s.replace_a(None, &[]).is_none());
    let mut b = s.b();
    let mut c = s.call("internal-call.xml", &["-d", "200"]);
    s.wait_ok(&mut c, "internal side", &[&b]);
    s.wait_ok(&mut b, "B", &[&c]);
    assert_eq!(invites(&b).len(), 1, "{}", b.report());
    let failed = s.targets_failed();
    assert_eq!(failed.len(), 1, "one target given up: {failed:#?}");
    assert!(
        failed[0].contains(&format!("target_addr={}:{}", a_ip(), s.a_port))
            && failed[0].contains("transport error"),
        "A was given up on at the transport: {}",
        failed[0]
    );
    let done = s.call_finished();
    assert_eq!(field(&done, "status="), "200", "{done}");
    assert_eq!(field(&done, "failovers="), "1", "{done}");
    let setup_ms: u64 = field(&done, "setup_ms=").parse().expect("setup_ms");
    assert!(setup_ms < 10_000, "not the 10 s timeout: {done}");
    assert_eq!(s.outbound_calls("answered"), 1.0);
    assert_eq!(s.metric("uacd_failovers_total", &[]), 1.0);
}
