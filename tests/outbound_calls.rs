//! Calls toward the PBX through the registration (issue 17), on
//! 127.0.0.180..189: uacd registers to Kamailio (tests/kamailio/pbx.cfg), an
//! internal application (SIPp) calls `2000@uacd-o1.uac.test` through uacd,
//! and the PBX, which challenges INVITEs from its registered user, routes the
//! call to the extension (SIPp). Every SIPp run checks its side of the dialog
//! (its own CSeq and tags) and exits 0 only if all held; the PBX logs one line
//! per request it saw (`PBX saw INVITE from <ip:port> <proto> cseq=.. ...`),
//! which the tests read for what reached the PBX.
//!
//! | address | role |
//! |---|---|
//! | .180 | uacd |
//! | .181 | internal SIPp (the only `routing.internal_sources`) |
//! | .182 | SIPp outside `internal_sources` |
//! | .183 | extension 2000 (SIPp behind the PBX) |
//! | .184 | Kamailio (PBX), or a silent registrar |
//! | .185 | phone on the PBX calling the registration (PBX → destination) |
//! | .186 | uacd's `destination_uri` (SIPp) |
//!
//! Tests of this file run in parallel: each uses its own ports.

mod api_client;
mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Kamailio, KamailioOpts, Sipp, SippRun, Uacd, free_udp_port, poll_until, require_peer, tail,
    temp_dir, test_ip, wait_for_line, wait_for_udp_listener,
};

const WAIT: Duration = Duration::from_secs(30);
const FQDN: &str = "uacd-o1.uac.test";

fn uacd_ip() -> Ipv4Addr {
    test_ip(180)
}
fn internal_ip() -> Ipv4Addr {
    test_ip(181)
}
fn outsider_ip() -> Ipv4Addr {
    test_ip(182)
}
fn ext_ip() -> Ipv4Addr {
    test_ip(183)
}
fn pbx_ip() -> Ipv4Addr {
    test_ip(184)
}
fn phone_ip() -> Ipv4Addr {
    test_ip(185)
}
fn dest_ip() -> Ipv4Addr {
    test_ip(186)
}

/// What the registrar side is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pbx {
    /// tests/kamailio/pbx.cfg
    Kamailio,
    /// A UDP socket that takes every datagram and answers nothing (the
    /// registration never succeeds).
    Silent,
    /// SIPp registrar-digest.xml: accepts the registration, and says
    /// nothing to anything else (a PBX silent to INVITEs).
    SippRegistrar,
}

struct Opts {
    pbx: Pbx,
    /// The password the PBX checks REGISTER against (uacd has `s3cret`).
    pbx_password: &'static str,
    /// `UDP` or `TCP`: the registration's (and the call's) transport.
    transport: &'static str,
    /// `-A` defines for pbx.cfg besides the addresses (`WITH_407`, ...).
    kam_defines: Vec<String>,
    /// Lines for `[routing]`.
    routing: &'static str,
    /// `routing.assert_caller_identity`
    assert_identity: bool,
    /// Tables after the connection (`[connection.outbound]` ...).
    connection: &'static str,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            pbx: Pbx::Kamailio,
            pbx_password: "s3cret",
            transport: "UDP",
            kam_defines: Vec::new(),
            routing: "",
            assert_identity: false,
            connection: "",
        }
    }
}

/// Datagrams a silent registrar received, and the thread that reads them.
struct Silent {
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start(ip: Ipv4Addr, port: u16) -> Silent {
        let sock = UdpSocket::bind((ip, port)).expect("bind the silent registrar");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65535];
            while !st2.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    s2.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Silent {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self, method: &str) -> usize {
        let start = format!("{method} ");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.starts_with(&start))
            .count()
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Setup {
    dir: PathBuf,
    uacd: Uacd,
    uacd_port: u16,
    kam: Option<Kamailio>,
    silent: Option<Silent>,
    _registrar: Option<SippRun>,
    kam_port: u16,
    ext_port: u16,
    dest_port: u16,
    api_port: u16,
}

fn setup(name: &str, o: Opts) -> Setup {
    require_peer("sipp");
    let dir = temp_dir(name);
    let uacd_port = free_udp_port(uacd_ip());
    let kam_port = free_udp_port(pbx_ip());
    let ext_port = free_udp_port(ext_ip());
    let dest_port = free_udp_port(dest_ip());
    let api_port = common::free_tcp_port(uacd_ip());
    let registrar = (o.pbx == Pbx::SippRegistrar).then(|| {
        Sipp::new("registrar-digest.xml", &dir)
            .local(pbx_ip(), kam_port)
            .key("realm", "pbx.test")
            .set("pw", "s3cret")
            .key("expires_grant", "600")
            .args(["-m", "1", "-timeout", "60"])
            .start()
    });
    let (kam, silent) = match o.pbx {
        Pbx::Kamailio => {
            require_peer("kamailio");
            require_peer("kamcmd");
            let kdir = dir.join("kamailio");
            std::fs::create_dir_all(&kdir).unwrap();
            let mut opts = KamailioOpts::new(pbx_ip(), kam_port, o.pbx_password);
            opts.cfg = "pbx.cfg";
            // INVITE_PASSWORD defaults to s3cret, uacd's password
            opts.defines = vec![format!("EXT_ADDR=\"{}:{ext_port}\"", ext_ip())];
            opts.defines.extend(o.kam_defines);
            (Some(Kamailio::start(opts, &kdir)), None)
        }
        Pbx::Silent => (None, Some(Silent::start(pbx_ip(), kam_port))),
        Pbx::SippRegistrar => {
            wait_for_udp_listener(pbx_ip(), kam_port, WAIT).expect("SIPp registrar listens");
            (None, None)
        }
    };
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:{uacd_port}", "tcp:{ip}:{uacd_port}"]
domain = "uac.test"
[api]
listen = "{ip}:{api_port}"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[registration]
retry_interval_sec = 2
max_retry_interval_sec = 2
[routing]
internal_sources = ["{internal}/32"]
assert_caller_identity = {assert_identity}
{routing}
[[connection]]
id = "o1"
connection_name = "Kamailio PBX"
user_name = "uacd-o1"
[connection.external_uac_settings]
proxy = "sip:{pbx}:{kam_port}"
transport = "{transport}"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "sip:1006@{dest}:{dest_port}"
{connection}
"#,
        ip = uacd_ip(),
        internal = internal_ip(),
        routing = o.routing,
        assert_identity = o.assert_identity,
        pbx = pbx_ip(),
        transport = o.transport,
        dest = dest_ip(),
        connection = o
            .connection
            .replace("PBX_ADDR", &format!("{}:{kam_port}", pbx_ip())),
    );
    let uacd = Uacd::start(&config, &dir);
    if o.pbx != Pbx::Silent && o.pbx_password == "s3cret" {
        uacd.wait_for_log("status=success", WAIT);
    }
    Setup {
        dir,
        uacd,
        uacd_port,
        kam,
        silent,
        _registrar: registrar,
        kam_port,
        ext_port,
        dest_port,
        api_port,
    }
}

/// One `PBX saw ...` line of pbx.cfg's log.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// ip:port the request came from
    src: String,
    proto: String,
    f: HashMap<String, String>,
}

impl Seen {
    fn get(&self, k: &str) -> &str {
        self.f.get(k).map(String::as_str).unwrap_or("")
    }
    fn cseq(&self) -> u32 {
        self.get("cseq")
            .parse()
            .unwrap_or_else(|_| panic!("no cseq in {self:?}"))
    }
}

fn parse_seen(line: &str) -> Option<Seen> {
    let rest = line.split("PBX saw ").nth(1)?;
    let mut it = rest.split_whitespace();
    let method = it.next()?.to_owned();
    if it.next()? != "from" {
        return None;
    }
    let src = it.next()?.to_owned();
    let proto = it.next()?.to_owned();
    let f = it
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(Seen {
        method,
        src,
        proto,
        f,
    })
}

impl Setup {
    fn kam(&self) -> &Kamailio {
        self.kam.as_ref().expect("this setup has Kamailio")
    }

    fn pbx_log(&self) -> String {
        std::fs::read_to_string(self.kam().log_path()).unwrap_or_default()
    }

    /// The requests of `method` the PBX saw, in order.
    fn pbx_saw(&self, method: &str) -> Vec<Seen> {
        self.pbx_log()
            .lines()
            .filter_map(parse_seen)
            .filter(|s| s.method == method)
            .collect()
    }

    fn uacd_log(&self) -> String {
        std::fs::read_to_string(self.uacd.log_path()).unwrap_or_default()
    }

    /// What each side saw, for failure messages.
    fn report(&self) -> String {
        let pbx = match &self.kam {
            Some(k) => tail(k.log_path(), 40),
            None if self._registrar.is_some() => self._registrar.as_ref().unwrap().report(),
            None => format!(
                "silent registrar got {} REGISTER, {} INVITE",
                self.silent.as_ref().map_or(0, |s| s.requests("REGISTER")),
                self.silent.as_ref().map_or(0, |s| s.requests("INVITE"))
            ),
        };
        format!(
            "--- PBX log:\n{pbx}\n--- uacd log:\n{}",
            tail(self.uacd.log_path(), 60)
        )
    }

    /// "uacd-ip:port": where the PBX sees our UDP requests come from.
    fn uacd_addr(&self) -> String {
        format!("{}:{}", uacd_ip(), self.uacd_port)
    }

    /// The extension 2000 behind the PBX; waits until it listens.
    fn ext(&self, step: &str, scenario: &str, extra: &[&str]) -> SippRun {
        let run = Sipp::new(scenario, &self.dir)
            .name(&format!("{step}-ext-{}", scenario.trim_end_matches(".xml")))
            .local(ext_ip(), self.ext_port)
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start();
        wait_for_udp_listener(ext_ip(), self.ext_port, WAIT).expect("extension SIPp listens");
        run
    }

    /// uacd's destination for PBX → destination calls; waits until it listens.
    fn dest(&self, step: &str, scenario: &str, extra: &[&str]) -> SippRun {
        let run = Sipp::new(scenario, &self.dir)
            .name(&format!(
                "{step}-dest-{}",
                scenario.trim_end_matches(".xml")
            ))
            .local(dest_ip(), self.dest_port)
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start();
        wait_for_udp_listener(dest_ip(), self.dest_port, WAIT).expect("destination SIPp listens");
        run
    }

    /// An internal application at `from` calling extension 2000 through uacd.
    fn call_from(&self, from: Ipv4Addr, step: &str, scenario: &str, extra: &[&str]) -> SippRun {
        Sipp::new(scenario, &self.dir)
            .name(&format!("{step}-int-{}", scenario.trim_end_matches(".xml")))
            .local(from, free_udp_port(from))
            .remote(format!("{}:{}", uacd_ip(), self.uacd_port))
            .args(["-s", "2000", "-key", "fqdn", FQDN])
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start()
    }

    fn call(&self, step: &str, scenario: &str, extra: &[&str]) -> SippRun {
        self.call_from(internal_ip(), step, scenario, extra)
    }

    /// A phone on the PBX calling the registration (`telnyx-reg` at the PBX):
    /// the PBX looks it up and sends the call to uacd.
    fn phone(&self, step: &str, scenario: &str, extra: &[&str]) -> SippRun {
        Sipp::new(scenario, &self.dir)
            .name(&format!(
                "{step}-phone-{}",
                scenario.trim_end_matches(".xml")
            ))
            .local(phone_ip(), free_udp_port(phone_ip()))
            .remote(format!("{}:{}", pbx_ip(), self.kam_port))
            .args(["-s", "telnyx-reg", "-key", "fqdn"])
            .arg(format!("{}:{}", pbx_ip(), self.kam_port))
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start()
    }

    /// The extension plays `ext`, the internal side calls it with `caller`
    /// (step "1" both); both must end with success. Returns (caller, extension).
    fn call_through(
        &self,
        (ext, ext_args): (&str, &[&str]),
        (caller, caller_args): (&str, &[&str]),
    ) -> (SippRun, SippRun) {
        let mut e = self.ext("1", ext, ext_args);
        let mut c = self.call("1", caller, caller_args);
        self.wait_ok(&mut c, "internal side");
        self.wait_ok(&mut e, "extension");
        (c, e)
    }

    fn wait_ok(&self, run: &mut SippRun, who: &str) {
        let s = run.wait(WAIT);
        assert!(
            s.success(),
            "{who} failed: {s}\n{}\n{}",
            run.report(),
            self.report()
        );
    }
}

fn sipp_log(run: &SippRun) -> String {
    std::fs::read_to_string(run.logs_path()).unwrap_or_default()
}

fn sipp_messages(run: &SippRun) -> String {
    std::fs::read_to_string(run.messages_path()).unwrap_or_default()
}

/// `key=value` of the first `<prefix> ...` line of a SIPp `-trace_logs` file.
fn logged(run: &SippRun, prefix: &str, key: &str) -> String {
    let log = sipp_log(run);
    let line = log
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in the SIPp log:\n{}", run.report()));
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_owned()
}

fn final_status(run: &SippRun) -> String {
    sipp_log(run)
        .lines()
        .find_map(|l| l.split("FINAL ").nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no FINAL in the SIPp log:\n{}", run.report()))
}

/// Waits until the SIPp run logged a line starting with `prefix`.
fn wait_logged(s: &Setup, run: &SippRun, prefix: &str) {
    if poll_until(WAIT, || {
        sipp_log(run).lines().any(|l| l.starts_with(prefix))
    })
    .is_err()
    {
        panic!("no {prefix:?} from SIPp\n{}\n{}", run.report(), s.report());
    }
}

/// Sends an INFO straight to `internal-call-held.xml` (not through uacd):
/// its trigger to hang up. The Call-ID is read from its message log.
fn release_held_call(run: &SippRun, ip: Ipv4Addr) {
    let msgs = sipp_messages(run);
    let call_id = msgs
        .lines()
        .find_map(|l| l.trim().strip_prefix("Call-ID: "))
        .expect("the held call's Call-ID in its message log")
        .to_owned();
    let port: u16 = msgs
        .lines()
        .find_map(|l| l.trim().strip_prefix("Contact: <sip:app@"))
        .and_then(|rest| rest.split(';').next())
        .and_then(|hp| hp.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the held call's port in its Contact");
    let sock = UdpSocket::bind((ip, 0)).expect("bind trigger socket");
    let me = sock.local_addr().unwrap();
    let info = format!(
        "INFO sip:app@{ip}:{port} SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-test-trigger\r\n\
From: <sip:test@{ip}>;tag=trigger\r\nTo: <sip:app@{ip}>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(info.as_bytes(), (ip, port))
        .expect("send INFO");
}

/// Checks the two INVITEs of an authenticated call at the PBX: the first
/// without credentials, the second with `hdr` (`Authorization` or
/// `Proxy-Authorization`) as telnyx-reg, CSeq one above, same From tag; both
/// as a registered phone sends them, from the registration's address.
fn assert_authenticated_invites(s: &Setup, hdr: &str) -> (Seen, Seen) {
    let inv = s.pbx_saw("INVITE");
    assert_eq!(
        inv.len(),
        2,
        "one challenged INVITE and one answer:\n{inv:#?}\n{}",
        s.report()
    );
    let (a, b) = (inv[0].clone(), inv[1].clone());
    assert_eq!(a.get("auth"), "no", "{a:?}");
    assert_eq!(b.get("auth"), "yes", "{b:?}");
    assert_eq!(b.get("hdr"), hdr, "{b:?}");
    assert_eq!(b.get("au"), "telnyx-reg", "{b:?}");
    assert_eq!(
        b.cseq(),
        a.cseq() + 1,
        "CSeq + 1 on the resend: {a:?} {b:?}"
    );
    for i in [&a, &b] {
        assert_eq!(
            i.get("ruri"),
            format!("sip:2000@{}:{}", pbx_ip(), s.kam_port),
            "{i:?}"
        );
        assert_eq!(
            i.get("from"),
            format!("sip:telnyx-reg@{}", pbx_ip()),
            "{i:?}"
        );
        assert_eq!(i.get("to"), format!("sip:2000@{}", pbx_ip()), "{i:?}");
        assert_eq!(i.get("ttag"), "<null>", "{i:?}");
        assert_eq!(i.get("callid"), a.get("callid"), "one Call-ID: {i:?}");
    }
    assert_eq!(a.get("ftag"), b.get("ftag"));
    assert!(
        s.pbx_log()
            .contains("PBX authenticated INVITE from telnyx-reg"),
        "{}",
        s.report()
    );
    (a, b)
}

/// The internal side saw none of the PBX's challenges.
fn assert_no_challenge_seen(run: &SippRun) {
    let m = sipp_messages(run);
    assert!(
        !m.contains("SIP/2.0 401") && !m.contains("SIP/2.0 407"),
        "a challenge reached the internal side:\n{m}"
    );
}

fn assert_no_secret(s: &Setup) {
    assert!(!s.uacd_log().contains("s3cret"), "password in uacd's log");
}

#[test]
fn pbx_config_takes_a_call_from_its_registered_phone() {
    // The PBX config alone (no uacd): a SIPp phone registers with digest,
    // calls 2000, answers the INVITE challenge and reaches the extension.
    require_peer("sipp");
    require_peer("kamailio");
    let dir = temp_dir("ob-pbx-selftest");
    let port = free_udp_port(pbx_ip());
    let ext_port = free_udp_port(ext_ip());
    let mut opts = KamailioOpts::new(pbx_ip(), port, "s3cret");
    opts.cfg = "pbx.cfg";
    opts.defines = vec![format!("EXT_ADDR=\"{}:{ext_port}\"", ext_ip())];
    let kam = Kamailio::start(opts, &dir);
    let mut ext = Sipp::new("uas-answer.xml", &dir)
        .local(ext_ip(), ext_port)
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    wait_for_udp_listener(ext_ip(), ext_port, WAIT).unwrap();
    let mut phone = Sipp::new("phone-register-call.xml", &dir)
        .local(phone_ip(), free_udp_port(phone_ip()))
        .remote(format!("{}:{port}", pbx_ip()))
        .args(["-s", "2000", "-key", "user", "telnyx-reg"])
        .args(["-au", "telnyx-reg", "-ap", "s3cret"])
        // SIPp's digest uri is sip:<remote_ip>:<remote_port> unless told;
        // pbx.cfg wants the Request-URI
        .arg("-auth_uri")
        .arg(format!("2000@{}:{port}", pbx_ip()))
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    phone.wait_success(WAIT);
    ext.wait_success(WAIT);
    let log = std::fs::read_to_string(kam.log_path()).unwrap();
    assert!(
        log.contains("PBX challenges INVITE from telnyx-reg cseq=1"),
        "{log}"
    );
    assert!(
        log.contains("PBX authenticated INVITE from telnyx-reg cseq=2"),
        "{log}"
    );
}

#[test]
fn scenario_pairs_work_through_the_pbx_alone() {
    // The internal-side and extension scenarios against each other through
    // Kamailio without INVITE auth (no uacd): proves the scenarios and their
    // checks with a real record-routing proxy in the middle.
    require_peer("sipp");
    require_peer("kamailio");
    let dir = temp_dir("ob-scenario-pairs");
    let port = free_udp_port(pbx_ip());
    let ext_port = free_udp_port(ext_ip());
    let mut opts = KamailioOpts::new(pbx_ip(), port, "s3cret");
    opts.cfg = "pbx.cfg";
    opts.defines = vec![
        format!("EXT_ADDR=\"{}:{ext_port}\"", ext_ip()),
        "WITHOUT_INVITE_AUTH".into(),
    ];
    let kam = Kamailio::start(opts, &dir);
    let pairs: [(&str, &str, &[&str]); 6] = [
        ("internal-call.xml", "uas-answer.xml", &[]),
        ("internal-call-remote-bye.xml", "uas-hangup.xml", &[]),
        ("internal-reinvite.xml", "uas-answer-reinvite.xml", &[]),
        ("internal-reinvited.xml", "uas-reinvite.xml", &[]),
        (
            "internal-expect-status.xml",
            "uas-busy.xml",
            &["-key", "status", "486"],
        ),
        ("internal-call-held.xml", "uas-answer.xml", &[]),
    ];
    for (n, (int, ext, extra)) in pairs.into_iter().enumerate() {
        let mut e = Sipp::new(ext, &dir)
            .name(&format!("{n}-ext"))
            .local(ext_ip(), ext_port)
            .args(["-m", "1", "-timeout", "20", "-timeout_error", "-d", "100"])
            .start();
        wait_for_udp_listener(ext_ip(), ext_port, WAIT).unwrap();
        let mut c = Sipp::new(int, &dir)
            .name(&format!("{n}-int"))
            .local(internal_ip(), free_udp_port(internal_ip()))
            .remote(format!("{}:{port}", pbx_ip()))
            .args(["-s", "2000", "-key", "fqdn", FQDN])
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(extra.iter().copied())
            .start();
        if int == "internal-call-held.xml" {
            poll_until(WAIT, || sipp_log(&c).contains("ANSWERED")).expect("held call answered");
            release_held_call(&c, internal_ip());
        }
        let kam_log = || tail(kam.log_path(), 30);
        let s = c.wait(WAIT);
        assert!(s.success(), "{int}: {s}\n{}\n{}", c.report(), kam_log());
        let s = e.wait(WAIT);
        assert!(s.success(), "{ext}: {s}\n{}\n{}", e.report(), kam_log());
    }
}

#[test]
fn call_answered_and_hung_up_by_the_internal_side() {
    let s = setup("ob-internal-bye", Opts::default());
    let (c, ext) = s.call_through(
        ("uas-answer.xml", &[]),
        ("internal-call.xml", &["-d", "200"]),
    );
    let (_, inv) = assert_authenticated_invites(&s, "Authorization");
    assert_eq!(inv.src, s.uacd_addr(), "{inv:?}");
    assert_eq!(inv.proto, "udp");
    // the PBX leg keeps the internal caller's From tag
    assert_eq!(inv.get("ftag"), logged(&c, "ANSWERED", "mytag"));
    assert_eq!(
        sipp_log(&ext)
            .lines()
            .find_map(|l| l.strip_prefix("RURI "))
            .map(str::trim),
        Some(format!("sip:2000@{}:{}", pbx_ip(), s.kam_port).as_str())
    );
    let bye = s.pbx_saw("BYE");
    assert_eq!(bye.len(), 1, "{bye:#?}\n{}", s.report());
    assert_eq!(bye[0].src, s.uacd_addr());
    assert!(
        bye[0].cseq() > inv.cseq(),
        "the PBX leg's CSeq goes on from the authenticated INVITE: {bye:?} {inv:?}"
    );
    assert_eq!(bye[0].get("callid"), inv.get("callid"));
    assert_eq!(bye[0].get("ftag"), inv.get("ftag"));
    assert_no_secret(&s);
}

#[test]
fn call_answered_and_hung_up_by_the_extension() {
    let s = setup("ob-remote-bye", Opts::default());
    let (c, _ext) = s.call_through(
        ("uas-hangup.xml", &["-d", "200"]),
        ("internal-call-remote-bye.xml", &[]),
    );
    let (_, inv) = assert_authenticated_invites(&s, "Authorization");
    let bye = s.pbx_saw("BYE");
    assert_eq!(bye.len(), 1, "{bye:#?}\n{}", s.report());
    assert_eq!(bye[0].src, format!("{}:{}", ext_ip(), s.ext_port));
    // the extension's BYE is for the PBX leg's dialog: To tag = our From tag
    assert_eq!(bye[0].get("ttag"), inv.get("ftag"));
    // and reaches the internal side in its own dialog (the scenario checks
    // the tags)
    assert!(sipp_log(&c).contains("BYE cseq="), "{}", c.report());
}

#[test]
fn invite_challenged_with_401_is_answered_once_with_the_credentials() {
    let s = setup("ob-401", Opts::default());
    let (c, _ext) = s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    assert_authenticated_invites(&s, "Authorization");
    assert_no_challenge_seen(&c);
    assert_eq!(logged(&c, "ANSWERED", "cseq"), "1");
    assert_no_secret(&s);
    // The resend went to the same target: answered, and not a failover.
    assert_eq!(calls_total(&s, "outbound", "answered"), 1.0);
    assert_eq!(metric(&s, "uacd_failovers_total"), 0.0);
}

#[test]
fn invite_challenged_with_407_is_answered_with_proxy_authorization() {
    let s = setup(
        "ob-407",
        Opts {
            kam_defines: vec!["WITH_407".into()],
            ..Opts::default()
        },
    );
    let (c, _ext) = s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    assert_authenticated_invites(&s, "Proxy-Authorization");
    assert_no_challenge_seen(&c);
    assert_eq!(logged(&c, "ANSWERED", "cseq"), "1");
}

#[test]
fn wrong_invite_password_gives_403_without_a_loop() {
    // REGISTER is accepted; every INVITE is checked against another password.
    let s = setup(
        "ob-wrong-password",
        Opts {
            kam_defines: vec!["INVITE_PASSWORD=\"not-s3cret\"".into()],
            ..Opts::default()
        },
    );
    let mut c = s.call(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "403"],
    );
    s.wait_ok(&mut c, "internal side");
    assert_eq!(final_status(&c), "403");
    assert_no_challenge_seen(&c);
    let inv = s.pbx_saw("INVITE");
    assert!(
        inv.len() <= 2,
        "at most one answer to the challenge:\n{inv:#?}"
    );
    assert_eq!(
        inv.len(),
        2,
        "the first challenge is answered once:\n{inv:#?}\n{}",
        s.report()
    );
    assert_eq!(inv[1].get("auth"), "yes");
    assert_eq!(inv[1].cseq(), inv[0].cseq() + 1);
    assert_eq!(s.pbx_log().matches("PBX challenges INVITE").count(), 2);
    assert_no_secret(&s);
}

#[test]
fn reinvite_from_the_internal_side() {
    let s = setup("ob-reinvite-internal", Opts::default());
    let (c, ext) = s.call_through(
        ("uas-answer-reinvite.xml", &[]),
        ("internal-reinvite.xml", &[]),
    );
    assert_eq!(logged(&c, "REANSWERED", "cseq"), "2");
    let first: u32 = logged(&ext, "INVITE", "cseq").parse().unwrap();
    let again: u32 = logged(&ext, "REINVITE", "cseq").parse().unwrap();
    assert_eq!(
        again,
        first + 1,
        "the internal side's CSeq 1 → 2 is 2 → 3 on the PBX leg"
    );
    let inv = s.pbx_saw("INVITE");
    assert_eq!(inv.len(), 3, "{inv:#?}");
    assert_eq!(inv[2].src, s.uacd_addr());
    assert_ne!(inv[2].get("ttag"), "<null>", "in-dialog: {:?}", inv[2]);
}

#[test]
fn reinvite_from_the_extension() {
    let s = setup("ob-reinvite-ext", Opts::default());
    let (c, _ext) = s.call_through(("uas-reinvite.xml", &[]), ("internal-reinvited.xml", &[]));
    let inv = s.pbx_saw("INVITE");
    assert_eq!(inv.len(), 3, "{inv:#?}");
    assert_eq!(inv[2].src, format!("{}:{}", ext_ip(), s.ext_port));
    // the internal side saw the re-INVITE in its own dialog (the scenario
    // checks To = its tag, From = the far end's)
    assert!(sipp_log(&c).contains("REINVITE cseq="), "{}", c.report());
    let bye = s.pbx_saw("BYE");
    assert_eq!(bye.len(), 1, "{bye:#?}");
    assert_eq!(bye[0].src, s.uacd_addr());
}

#[test]
fn cancel_before_answer_gives_487() {
    let s = setup("ob-cancel", Opts::default());
    let (c, _ext) = s.call_through(("uas-ring-cancel.xml", &[]), ("internal-cancel.xml", &[]));
    assert_eq!(final_status(&c), "487");
    let (_, inv) = assert_authenticated_invites(&s, "Authorization");
    let cancel = s.pbx_saw("CANCEL");
    assert_eq!(cancel.len(), 1, "{cancel:#?}\n{}", s.report());
    assert_eq!(
        cancel[0].cseq(),
        inv.cseq(),
        "the CANCEL matches the authenticated INVITE (RFC 3261 9.1)"
    );
    assert_eq!(cancel[0].src, s.uacd_addr());
}

#[test]
fn busy_extension_486_is_relayed() {
    let s = setup("ob-busy", Opts::default());
    let mut ext = s.ext("1", "uas-busy.xml", &[]);
    let mut c = s.call(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "486"],
    );
    s.wait_ok(&mut c, "internal side");
    s.wait_ok(&mut ext, "extension");
    assert_eq!(final_status(&c), "486");
    assert_eq!(s.pbx_saw("INVITE").len(), 2, "{}", s.report());
}

#[test]
fn call_goes_over_the_registration_tcp_flow() {
    let s = setup(
        "ob-tcp",
        Opts {
            transport: "TCP",
            ..Opts::default()
        },
    );
    s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    let reg = s.pbx_saw("REGISTER");
    let reg = reg.last().expect("a REGISTER");
    assert_eq!(reg.proto, "tcp", "{reg:?}");
    let (a, b) = assert_authenticated_invites(&s, "Authorization");
    for i in [&a, &b] {
        assert_eq!(i.proto, "tcp", "{i:?}");
        assert_eq!(
            i.src,
            reg.src,
            "the INVITE comes over the REGISTER's connection\n{}",
            s.report()
        );
    }
    let bye = s.pbx_saw("BYE");
    assert_eq!(bye.len(), 1, "{bye:#?}");
    assert_eq!(bye[0].src, reg.src);
}

#[test]
fn not_registered_gives_480_and_sends_nothing() {
    let s = setup(
        "ob-not-registered",
        Opts {
            pbx: Pbx::Silent,
            ..Opts::default()
        },
    );
    let silent = s.silent.as_ref().unwrap();
    // the registration is under way (the registrar got a REGISTER) and
    // never answered
    poll_until(WAIT, || silent.requests("REGISTER") >= 1)
        .unwrap_or_else(|_| panic!("no REGISTER\n{}", s.report()));
    let mut c = s.call(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "480"],
    );
    s.wait_ok(&mut c, "internal side");
    assert_eq!(final_status(&c), "480");
    assert_eq!(silent.requests("INVITE"), 0, "{}", s.report());
}

#[test]
fn registration_refused_gives_480_and_sends_nothing() {
    let s = setup(
        "ob-refused",
        Opts {
            pbx_password: "another",
            ..Opts::default()
        },
    );
    s.uacd.wait_for_log("status=failed", WAIT);
    let mut c = s.call(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "480"],
    );
    s.wait_ok(&mut c, "internal side");
    assert_eq!(final_status(&c), "480");
    assert!(s.pbx_saw("INVITE").is_empty(), "{}", s.report());
}

#[test]
fn source_outside_internal_sources_gets_403_and_nothing_reaches_the_pbx() {
    let s = setup("ob-outsider", Opts::default());
    let mut c = s.call_from(
        outsider_ip(),
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "403"],
    );
    s.wait_ok(&mut c, "outsider");
    assert_eq!(final_status(&c), "403");
    assert!(s.pbx_saw("INVITE").is_empty(), "{}", s.report());
}

/// Which way a channel-limit case calls: its caller and its answerer.
#[derive(Clone, Copy)]
enum Way {
    /// The internal side calls the extension through the PBX.
    TowardPbx,
    /// A phone on the PBX calls the destination through uacd.
    FromPbx,
}

/// With `channel_limit = 1` for `way`: while one call is up, the next two
/// get 486 (a refused call gives no slot back); once it ends, a call goes
/// through again (the ended call gave its slot back).
fn one_channel(s: &Setup, way: Way) {
    let (caller_ip, what) = match way {
        Way::TowardPbx => (internal_ip(), "call"),
        Way::FromPbx => (phone_ip(), "PBX call"),
    };
    let answerer = |step| match way {
        Way::TowardPbx => s.ext(step, "uas-answer.xml", &[]),
        Way::FromPbx => s.dest(step, "uas-answer.xml", &[]),
    };
    let caller = |step, scenario, extra: &[&str]| match way {
        Way::TowardPbx => s.call(step, scenario, extra),
        Way::FromPbx => s.phone(step, scenario, extra),
    };
    let busy = ["-key", "status", "486"];
    let mut answering = answerer("1");
    let mut held = caller("1", "internal-call-held.xml", &[]);
    wait_logged(s, &held, "ANSWERED");
    for step in ["2", "3"] {
        let mut refused = caller(step, "internal-expect-status.xml", &busy);
        s.wait_ok(&mut refused, &format!("{what} {step}, the first still up"));
        assert_eq!(final_status(&refused), "486");
    }
    release_held_call(&held, caller_ip);
    s.wait_ok(&mut held, &format!("first {what}"));
    s.wait_ok(&mut answering, "answerer");
    let mut answering = answerer("4");
    let mut fourth = caller("4", "internal-call.xml", &[]);
    s.wait_ok(&mut fourth, &format!("a {what} after the first ended"));
    s.wait_ok(&mut answering, "answerer");
}

#[test]
fn outbound_channel_limit_rejects_the_second_call_with_486() {
    let s = setup(
        "ob-outbound-limit",
        Opts {
            connection: "[connection.outbound]\nchannel_limit = 1\n",
            ..Opts::default()
        },
    );
    one_channel(&s, Way::TowardPbx);
    let calls: std::collections::HashSet<String> = s
        .pbx_saw("INVITE")
        .iter()
        .map(|i| i.get("callid").to_owned())
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "only the first and the fourth call reached the PBX\n{}",
        s.report()
    );
}

#[test]
fn inbound_channel_limit_rejects_the_second_pbx_call_with_486() {
    let s = setup(
        "ob-inbound-limit",
        Opts {
            connection: "[connection.inbound]\nchannel_limit = 1\n",
            ..Opts::default()
        },
    );
    one_channel(&s, Way::FromPbx);
    let log = s.pbx_log();
    assert_eq!(
        log.matches(&format!("PBX got reply 486 INVITE from {}", s.uacd_addr()))
            .count(),
        2,
        "both 486 came from uacd:\n{}",
        s.report()
    );
}

#[test]
fn inbound_timeout_1xx_of_the_connection_overrides_the_global_one() {
    // routing.timeout_1xx_sec = 20, the connection's 1: the silent destination
    // must be given up on well within the phone's 10 s. The PBX's own timer
    // is set beyond that (FR_TIMER) so that the 408 is uacd's.
    let s = setup(
        "ob-inbound-1xx",
        Opts {
            kam_defines: vec!["FR_TIMER=30000".into()],
            routing: "timeout_1xx_sec = 20",
            connection: "[connection.inbound]\ntimeout_1xx_secs = 1\n",
            ..Opts::default()
        },
    );
    let _dest = s.dest("1", "uas-silent.xml", &["-d", "25000"]);
    let mut c = s.phone(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "408", "-timeout", "10"],
    );
    s.wait_ok(&mut c, "phone");
    assert_eq!(final_status(&c), "408");
    assert!(
        s.pbx_log()
            .contains(&format!("PBX got reply 408 INVITE from {}", s.uacd_addr())),
        "the 408 came from uacd:\n{}",
        s.report()
    );
}

#[test]
fn bye_challenged_by_the_pbx_is_authenticated() {
    // The PBX challenges in-dialog requests of its registered user too.
    let s = setup(
        "ob-bye-auth",
        Opts {
            kam_defines: vec!["WITH_INDIALOG_AUTH".into()],
            ..Opts::default()
        },
    );
    let (c, _ext) = s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    let bye = s.pbx_saw("BYE");
    assert_eq!(
        bye.len(),
        2,
        "challenged once, answered once:\n{bye:#?}\n{}",
        s.report()
    );
    assert_eq!(bye[0].get("auth"), "no");
    assert_eq!(bye[1].get("auth"), "yes");
    assert_eq!(bye[1].cseq(), bye[0].cseq() + 1);
    assert_no_challenge_seen(&c);
}

#[test]
fn challenged_reinvite_keeps_the_pbx_leg_cseq_going_up() {
    // In-dialog requests toward the PBX are challenged too: each answer
    // shifts the PBX leg's CSeq once more; the ACK of a re-INVITE's 2xx
    // carries the CSeq of the authenticated re-INVITE (RFC 3261 13.2.2.4),
    // and the internal side keeps seeing its own numbers.
    let s = setup(
        "ob-reinvite-auth",
        Opts {
            kam_defines: vec!["WITH_INDIALOG_AUTH".into()],
            ..Opts::default()
        },
    );
    let (c, ext) = s.call_through(
        ("uas-answer-reinvite.xml", &[]),
        ("internal-reinvite.xml", &[]),
    );
    assert_eq!(logged(&c, "REANSWERED", "cseq"), "2");
    let inv = s.pbx_saw("INVITE");
    let seq: Vec<(u32, &str)> = inv.iter().map(|i| (i.cseq(), i.get("auth"))).collect();
    assert_eq!(inv.len(), 4, "{seq:?}\n{}", s.report());
    assert_eq!(inv[2].get("auth"), "no", "{seq:?}");
    assert_eq!(inv[3].get("auth"), "yes", "{seq:?}");
    assert_eq!(inv[3].cseq(), inv[2].cseq() + 1, "{seq:?}");
    assert!(inv[2].cseq() > inv[1].cseq(), "{seq:?}");
    assert_eq!(
        logged(&ext, "REINVITE", "cseq"),
        inv[3].cseq().to_string(),
        "the extension got the authenticated re-INVITE"
    );
    // the 2xx ACKs carry their INVITE's CSeq; the only other ACK is the
    // hop-by-hop one for the challenge to the re-INVITE (RFC 3261 17.1.1.3)
    let acks: Vec<u32> = s.pbx_saw("ACK").iter().map(Seen::cseq).collect();
    for want in [inv[1].cseq(), inv[3].cseq()] {
        assert!(
            acks.contains(&want),
            "no ACK with CSeq {want}: {acks:?}\n{}",
            s.report()
        );
    }
    assert!(
        acks.iter()
            .all(|a| [inv[1].cseq(), inv[2].cseq(), inv[3].cseq()].contains(a)),
        "{acks:?} {seq:?}"
    );
    let bye = s.pbx_saw("BYE");
    assert!(!bye.is_empty(), "{}", s.report());
    assert!(
        bye[0].cseq() > inv[3].cseq(),
        "the BYE goes on from the authenticated re-INVITE: {bye:?} {seq:?}"
    );
    assert_eq!(bye.last().unwrap().get("auth"), "yes");
    assert_no_challenge_seen(&c);
}

/// The INVITE as the extension received it (through the PBX).
fn invite_at_the_extension(ext: &SippRun) -> String {
    sipp_messages(ext)
        .split("-----------------------------------------------")
        .find(|m| m.contains("\nINVITE sip:"))
        .expect("the extension got the INVITE")
        .to_owned()
}

fn identity_test(name: &str, assert_identity: bool) -> String {
    let s = setup(
        name,
        Opts {
            assert_identity,
            ..Opts::default()
        },
    );
    let (_c, ext) = s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    invite_at_the_extension(&ext)
}

#[test]
fn caller_identity_stays_internal_by_default() {
    let invite = identity_test("ob-no-pai", false);
    assert!(
        !invite.to_ascii_lowercase().contains("p-asserted-identity"),
        "{invite}"
    );
    // (the Contact is invite_to_the_pbx_carries_our_contact's business)
    let leaks: Vec<&str> = invite
        .lines()
        .filter(|l| l.contains("sip:app@") && !l.starts_with("Contact:"))
        .collect();
    assert!(
        leaks.is_empty(),
        "the internal caller's identity reached the PBX: {leaks:?}\n{invite}"
    );
}

#[test]
fn caller_identity_is_asserted_when_allowed() {
    let invite = identity_test("ob-pai", true);
    let pai = invite
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("p-asserted-identity:"))
        .unwrap_or_else(|| panic!("no P-Asserted-Identity:\n{invite}"));
    assert!(
        pai.contains(&format!("sip:app@{}", internal_ip())),
        "the internal From in P-Asserted-Identity (RFC 3325): {pai}"
    );
}

#[test]
fn invite_to_the_pbx_carries_our_contact() {
    // Issue 17: "Contact at our address, our Via" — the PBX sees a call
    // from its registered endpoint, not the internal application's address.
    let s = setup("ob-contact", Opts::default());
    let (_c, ext) = s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    let invite = invite_at_the_extension(&ext);
    let contact = invite
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .expect("a Contact");
    assert!(
        contact.contains(&format!("@{}:{}", uacd_ip(), s.uacd_port))
            || contact.contains(&format!("<sip:{}:{}", uacd_ip(), s.uacd_port)),
        "the PBX leg's Contact is at uacd ({}:{}), not the internal side's: {contact}\n{invite}",
        uacd_ip(),
        s.uacd_port
    );
    assert!(
        !invite.contains("Contact: <sip:app@"),
        "the internal application's Contact reached the PBX:\n{invite}"
    );
}

#[test]
fn extension_hangs_up_over_the_registration_tcp_flow() {
    // The extension's BYE follows the record-route back to uacd over TCP
    // and reaches the internal side.
    let s = setup(
        "ob-tcp-remote-bye",
        Opts {
            transport: "TCP",
            ..Opts::default()
        },
    );
    s.call_through(
        ("uas-hangup.xml", &["-d", "200"]),
        ("internal-call-remote-bye.xml", &[]),
    );
    let reg = s.pbx_saw("REGISTER");
    let reg = reg.last().expect("a REGISTER");
    let (_, inv) = assert_authenticated_invites(&s, "Authorization");
    assert_eq!(inv.src, reg.src, "{}", s.report());
    assert_eq!(s.pbx_saw("BYE").len(), 1, "{}", s.report());
    assert!(
        s.pbx_log().contains("PBX got reply 200 BYE"),
        "uacd answered the BYE\n{}",
        s.report()
    );
}

#[test]
fn internal_side_over_tcp() {
    // The internal application reaches uacd over TCP; the PBX leg stays UDP.
    let s = setup("ob-internal-tcp", Opts::default());
    let mut ext = s.ext("1", "uas-answer.xml", &[]);
    let mut c = Sipp::new("internal-call.xml", &s.dir)
        .name("1-int-tcp")
        .local(internal_ip(), common::free_tcp_port(internal_ip()))
        .remote(format!("{}:{}", uacd_ip(), s.uacd_port))
        .args(["-t", "t1", "-s", "2000", "-key", "fqdn", FQDN])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    s.wait_ok(&mut c, "internal side");
    s.wait_ok(&mut ext, "extension");
    let (_, inv) = assert_authenticated_invites(&s, "Authorization");
    assert_eq!(inv.proto, "udp");
    assert_eq!(inv.src, s.uacd_addr());
}

/// The value of `uacd_calls_total{direction=..,result=..}` in /metrics.
/// The value of the unlabelled series `name` in `/metrics`.
fn metric(s: &Setup, name: &str) -> f64 {
    let addr = std::net::SocketAddr::from((uacd_ip(), s.api_port));
    let resp = api_client::Api::new(addr, "test-token-0123456").get("/metrics");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", resp.body))
}

fn calls_total(s: &Setup, direction: &str, result: &str) -> f64 {
    let addr = std::net::SocketAddr::from((uacd_ip(), s.api_port));
    let resp = api_client::Api::new(addr, "test-token-0123456").get("/metrics");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let d = format!("direction=\"{direction}\"");
    let r = format!("result=\"{result}\"");
    resp.body
        .lines()
        .find(|l| l.starts_with("uacd_calls_total{") && l.contains(&d) && l.contains(&r))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no uacd_calls_total{{{d},{r}}}:\n{}", resp.body))
}

#[test]
fn calls_are_counted_by_direction() {
    let s = setup("ob-metrics", Opts::default());
    s.call_through(("uas-answer.xml", &[]), ("internal-call.xml", &[]));
    let mut ext = s.ext("2", "uas-busy.xml", &[]);
    let mut c = s.call(
        "2",
        "internal-expect-status.xml",
        &["-key", "status", "486"],
    );
    s.wait_ok(&mut c, "internal side, busy");
    s.wait_ok(&mut ext, "extension, busy");
    let mut dest = s.dest("3", "uas-answer.xml", &[]);
    let mut phone = s.phone("3", "internal-call.xml", &[]);
    s.wait_ok(&mut phone, "phone");
    s.wait_ok(&mut dest, "destination");
    assert_eq!(calls_total(&s, "outbound", "answered"), 1.0);
    assert_eq!(calls_total(&s, "outbound", "486"), 1.0);
    assert_eq!(calls_total(&s, "inbound", "answered"), 1.0);
    assert_eq!(calls_total(&s, "inbound", "486"), 0.0);
}

#[test]
fn pbx_failure_response_is_relayed_as_is() {
    // An extension the PBX does not know: its own 404 (with its reason
    // phrase) reaches the internal side unchanged.
    let s = setup("ob-pbx-404", Opts::default());
    let mut c = Sipp::new("internal-expect-status.xml", &s.dir)
        .name("1-int-404")
        .local(internal_ip(), free_udp_port(internal_ip()))
        .remote(format!("{}:{}", uacd_ip(), s.uacd_port))
        .args(["-s", "3999", "-key", "fqdn", FQDN, "-key", "status", "404"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    s.wait_ok(&mut c, "internal side");
    assert!(
        sipp_messages(&c).contains("SIP/2.0 404 Not registered"),
        "{}",
        c.report()
    );
    let inv = s.pbx_saw("INVITE");
    assert_eq!(inv.len(), 1, "no challenge for a 404: {inv:#?}");
    assert!(inv[0].get("ruri").starts_with("sip:3999@"), "{inv:?}");
}

#[test]
fn outbound_timeout_1xx_of_the_connection_for_a_silent_pbx() {
    // The PBX takes the registration and never answers the INVITE:
    // routing.timeout_1xx_sec = 20, the connection's outbound 1 s, so the
    // call must be given up on well within the internal side's 10 s.
    let s = setup(
        "ob-outbound-1xx",
        Opts {
            pbx: Pbx::SippRegistrar,
            routing: "timeout_1xx_sec = 20",
            connection: "[connection.outbound]\ntimeout_1xx_secs = 1\n",
            ..Opts::default()
        },
    );
    let mut c = s.call(
        "1",
        "internal-expect-status.xml",
        &["-key", "status", "408", "-timeout", "10"],
    );
    s.wait_ok(&mut c, "internal side");
    assert_eq!(final_status(&c), "408");
}

#[test]
fn fqdn_matches_whatever_its_case() {
    // Host names compare case-insensitively (RFC 3261 19.1.4).
    let s = setup("ob-fqdn-case", Opts::default());
    let mut ext = s.ext("1", "uas-answer.xml", &[]);
    let mut c = Sipp::new("internal-call.xml", &s.dir)
        .name("1-int-upper")
        .local(internal_ip(), free_udp_port(internal_ip()))
        .remote(format!("{}:{}", uacd_ip(), s.uacd_port))
        .args(["-s", "2000", "-key", "fqdn", "UACD-O1.Uac.Test"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    s.wait_ok(&mut c, "internal side");
    s.wait_ok(&mut ext, "extension");
    assert_authenticated_invites(&s, "Authorization");
}

#[test]
fn each_connection_calls_with_its_own_credentials() {
    // Two connections registered to the same PBX: a call to the second
    // one's fqdn goes out as its registered user.
    let s = setup(
        "ob-two-connections",
        Opts {
            connection: r#"
[[connection]]
id = "o2"
connection_name = "second line"
user_name = "uacd-o2"
[connection.external_uac_settings]
proxy = "sip:PBX_ADDR"
transport = "UDP"
username = "other-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "sip:1007@127.0.0.186:5060"
"#,
            ..Opts::default()
        },
    );
    wait_for_line(s.kam().log_path(), "PBX REGISTER ok: other-reg", WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", s.report()));
    let mut ext = s.ext("1", "uas-answer.xml", &[]);
    let mut c = Sipp::new("internal-call.xml", &s.dir)
        .name("1-int-o2")
        .local(internal_ip(), free_udp_port(internal_ip()))
        .remote(format!("{}:{}", uacd_ip(), s.uacd_port))
        .args(["-s", "2000", "-key", "fqdn", "uacd-o2.uac.test"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    s.wait_ok(&mut c, "internal side");
    s.wait_ok(&mut ext, "extension");
    let inv = s.pbx_saw("INVITE");
    assert_eq!(inv.len(), 2, "{inv:#?}\n{}", s.report());
    for i in &inv {
        assert_eq!(
            i.get("from"),
            format!("sip:other-reg@{}", pbx_ip()),
            "{i:?}"
        );
    }
    assert_eq!(inv[1].get("au"), "other-reg");
}

#[test]
fn outsider_cannot_use_an_outbound_dialog_route() {
    // A source outside internal_sources replays the internal side's Route
    // (with uacd's token) in a BYE: 403, and the PBX sees no BYE from it.
    let s = setup("ob-outsider-bye", Opts::default());
    let mut ext = s.ext("1", "uas-answer.xml", &[]);
    let mut held = s.call("1", "internal-call-held.xml", &[]);
    wait_logged(&s, &held, "ANSWERED");
    let msgs = sipp_messages(&held);
    let rr = msgs
        .lines()
        .find(|l| l.starts_with("Record-Route:"))
        .expect("a Record-Route in the 200");
    let ours = rr
        .trim_start_matches("Record-Route:")
        .split(',')
        .map(str::trim)
        .find(|r| r.contains(&uacd_ip().to_string()))
        .expect("uacd's Record-Route entry")
        .to_owned();
    let call_id = msgs
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap()
        .to_owned();
    let from_tag = logged(&held, "ANSWERED", "mytag");
    let to_tag = logged(&held, "ANSWERED", "ttag");
    let sock = UdpSocket::bind((outsider_ip(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap();
    let bye = format!(
        "BYE sip:dest@{ext}:{ep};transport=UDP SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-outsider-bye;rport\r\n\
Route: {ours}\r\n\
From: \"Internal app\" <sip:app@{me}>;tag={from_tag}\r\n\
To: <sip:2000@{FQDN}>;tag={to_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: 99 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ext = ext_ip(),
        ep = s.ext_port,
    );
    sock.send_to(bye.as_bytes(), (uacd_ip(), s.uacd_port))
        .unwrap();
    let mut buf = [0u8; 4096];
    let code = loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to the outsider's BYE: {e}\n{}", s.report()));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text[8..11].parse().unwrap();
        if code >= 200 {
            break code;
        }
    };
    assert_eq!(code, 403, "{}", s.report());
    release_held_call(&held, internal_ip());
    s.wait_ok(&mut held, "internal side");
    s.wait_ok(&mut ext, "extension");
    let bye = s.pbx_saw("BYE");
    assert_eq!(bye.len(), 1, "only the internal side's BYE: {bye:#?}");
    assert_eq!(bye[0].src, s.uacd_addr());
    assert!(bye[0].cseq() < 99, "{bye:?}");
}

#[test]
fn channel_limits_count_each_direction_apart() {
    // inbound and outbound limits of 1: an outbound call up does not take
    // the inbound slot.
    let s = setup(
        "ob-limits-apart",
        Opts {
            connection: "[connection.inbound]\nchannel_limit = 1\n\
                         [connection.outbound]\nchannel_limit = 1\n",
            ..Opts::default()
        },
    );
    let mut ext = s.ext("1", "uas-answer.xml", &[]);
    let mut held = s.call("1", "internal-call-held.xml", &[]);
    wait_logged(&s, &held, "ANSWERED");
    let mut dest = s.dest("2", "uas-answer.xml", &[]);
    let mut phone = s.phone("2", "internal-call.xml", &[]);
    s.wait_ok(&mut phone, "inbound call while an outbound one is up");
    s.wait_ok(&mut dest, "destination");
    release_held_call(&held, internal_ip());
    s.wait_ok(&mut held, "outbound call");
    s.wait_ok(&mut ext, "extension");
}
