//! uacd against SIPp registrars (sipp-scenarios/), on 127.0.0.20..29.
//! Each scenario checks our REGISTERs on the wire (no To tag, one Contact,
//! Expires present, same Call-ID, CSeq increasing, digest verified) and
//! exits 0 only if all held; the daemon's side is checked in its log.

mod common;

use std::time::Duration;

use common::{Sipp, Uacd, require_peer, temp_dir, test_ip};

const SIPP_WAIT: Duration = Duration::from_secs(60);
const LOG_WAIT: Duration = Duration::from_secs(20);

/// uacd config: listens on `ip:5060`, one connection to `ip:5070`.
fn config(ip: &str, transport: &str, password: &str, expires: u32, retry: u32) -> String {
    format!(
        r#"[sip]
listen = ["udp:{ip}:5060", "tcp:{ip}:5060"]
[api]
listen = "127.0.0.1:0"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[registration]
retry_interval_sec = {retry}
max_retry_interval_sec = {retry}
unregister_timeout_sec = 5
[[connection]]
id = "c1"
connection_name = "SIPp registrar"
user_name = "uacd-c1"
[connection.external_uac_settings]
proxy = "sip:{ip}:5070"
transport = "{transport}"
username = "telnyx-reg"
password = "{password}"
expiration_sec = {expires}
"#
    )
}

fn registrar(scenario: &str, n: u8, dir: &std::path::Path) -> Sipp {
    require_peer("sipp");
    Sipp::new(scenario, dir)
        .local(test_ip(n), 5070)
        .key("realm", "pbx.test")
        .set("pw", "s3cret")
        .args(["-m", "1", "-timeout", "50", "-timeout_error"])
}

#[test]
fn digest_register_and_two_refreshes_over_udp() {
    let dir = temp_dir("sipp-digest-udp");
    let ip = test_ip(20).to_string();
    let mut sipp = registrar("registrar-digest.xml", 20, &dir)
        .key("expires_grant", "10")
        .start();
    let uacd = Uacd::start(&config(&ip, "UDP", "s3cret", 3600, 30), &dir);
    uacd.wait_for_log("status=success", LOG_WAIT);
    sipp.wait_success(SIPP_WAIT);
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(log.contains(r#"last_response=200 OK"#), "{log}");
    assert!(!log.contains("s3cret"), "password leaked into the log");
}

#[test]
fn digest_register_and_two_refreshes_over_tcp() {
    let dir = temp_dir("sipp-digest-tcp");
    let ip = test_ip(21).to_string();
    let mut sipp = registrar("registrar-digest.xml", 21, &dir)
        .key("expires_grant", "10")
        .args(["-t", "t1"])
        .start();
    let uacd = Uacd::start(&config(&ip, "TCP", "s3cret", 3600, 30), &dir);
    uacd.wait_for_log("status=success", LOG_WAIT);
    sipp.wait_success(SIPP_WAIT);
}

#[test]
fn interval_too_brief_adopts_min_expires() {
    let dir = temp_dir("sipp-423");
    let ip = test_ip(22).to_string();
    let mut sipp = registrar("registrar-423.xml", 22, &dir).start();
    let uacd = Uacd::start(&config(&ip, "UDP", "s3cret", 60, 30), &dir);
    uacd.wait_for_log("status=success", LOG_WAIT);
    sipp.wait_success(SIPP_WAIT);
}

#[test]
fn stale_nonce_is_answered_again() {
    let dir = temp_dir("sipp-stale");
    let ip = test_ip(23).to_string();
    let mut sipp = registrar("registrar-stale.xml", 23, &dir).start();
    let uacd = Uacd::start(&config(&ip, "UDP", "s3cret", 3600, 30), &dir);
    uacd.wait_for_log("status=success", LOG_WAIT);
    sipp.wait_success(SIPP_WAIT);
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(
        !log.contains("status=failed"),
        "stale=true is not a failure:\n{log}"
    );
}

#[test]
fn wrong_password_is_failed_with_the_registrars_answer() {
    let dir = temp_dir("sipp-reject");
    let ip = test_ip(24).to_string();
    let mut sipp = registrar("registrar-reject.xml", 24, &dir).start();
    let uacd = Uacd::start(&config(&ip, "UDP", "not-the-password", 3600, 30), &dir);
    let line = uacd.wait_for_log("status=failed", LOG_WAIT);
    assert!(line.contains("last_response=403 Forbidden"), "{line}");
    sipp.wait_success(SIPP_WAIT);
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(
        !log.contains("not-the-password"),
        "password leaked into the log"
    );
}

#[test]
fn same_nonce_refused_twice_is_failed() {
    let dir = temp_dir("sipp-same-nonce");
    let ip = test_ip(25).to_string();
    let mut sipp = registrar("registrar-same-nonce.xml", 25, &dir).start();
    let uacd = Uacd::start(&config(&ip, "UDP", "wrong", 3600, 30), &dir);
    let line = uacd.wait_for_log("status=failed", LOG_WAIT);
    assert!(
        line.contains("last_response=401 Unauthorized (credentials refused)"),
        "{line}"
    );
    sipp.wait_success(SIPP_WAIT);
}

#[test]
fn sigterm_unregisters_with_expires_zero_and_exits_zero() {
    let dir = temp_dir("sipp-unregister");
    let ip = test_ip(26).to_string();
    let mut sipp = registrar("registrar-unregister.xml", 26, &dir).start();
    let mut uacd = Uacd::start(&config(&ip, "UDP", "s3cret", 3600, 30), &dir);
    uacd.wait_for_log("status=success", LOG_WAIT);
    let status = uacd
        .terminate(Duration::from_secs(10))
        .expect("uacd exits within its deadline");
    assert_eq!(status.code(), Some(0));
    sipp.wait_success(SIPP_WAIT);
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(log.contains("status=unregistered"), "{log}");
}
