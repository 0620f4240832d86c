//! Proves the interop harness in tests/common without uacd: SIPp registrar
//! scenarios against the SIPp test UAC (sipp-scenarios/uac-register.xml), and
//! Kamailio (tests/kamailio/registrar.cfg) registering that UAC. Addresses
//! 127.0.0.10..=19 (see tests/common/mod.rs).

mod common;

use std::time::Duration;

use common::{
    Kamailio, KamailioOpts, Sipp, require_peer, temp_dir, test_ip, wait_for_udp_listener,
};

const WAIT: Duration = Duration::from_secs(40);

/// registrar-digest.xml passes a well-behaved UAC through the initial
/// registration and two challenged refreshes on one Call-ID.
#[test]
fn sipp_registrar_digest_accepts_a_well_behaved_uac() {
    require_peer("sipp");
    let dir = temp_dir("registrar-digest-ok");
    let (reg_ip, uac_ip) = (test_ip(10), test_ip(11));
    let mut registrar = Sipp::new("registrar-digest.xml", &dir)
        .local(reg_ip, 5060)
        .key("realm", "pbx.test")
        .set("pw", "s3cret")
        .key("expires_grant", "3")
        .args(["-m", "1", "-timeout", "30", "-timeout_error"])
        .start();
    wait_for_udp_listener(reg_ip, 5060, Duration::from_secs(5)).unwrap();
    let mut uac = Sipp::new("uac-register.xml", &dir)
        .remote(format!("{reg_ip}:5060"))
        .local(uac_ip, 5060)
        .args(["-s", "alice", "-au", "alice", "-ap", "s3cret"])
        .key("domain", "pbx.test")
        .set("refreshes", "2")
        .set("refresh_ms", "300")
        .args(["-m", "1", "-timeout", "30", "-timeout_error"])
        .start();
    registrar.wait_success(WAIT);
    uac.wait_success(WAIT);
    let log = std::fs::read_to_string(registrar.logs_path()).unwrap();
    assert_eq!(
        log.matches("refresh arrived").count(),
        2,
        "two refreshes:\n{log}"
    );
}

/// A wrong password makes registrar-digest.xml exit non-zero.
#[test]
fn sipp_registrar_digest_fails_on_a_wrong_password() {
    require_peer("sipp");
    let dir = temp_dir("registrar-digest-wrong-pw");
    let (reg_ip, uac_ip) = (test_ip(12), test_ip(13));
    let mut registrar = Sipp::new("registrar-digest.xml", &dir)
        .local(reg_ip, 5060)
        .key("realm", "pbx.test")
        .set("pw", "s3cret")
        .key("expires_grant", "3")
        .args(["-m", "1", "-timeout", "30", "-timeout_error"])
        .start();
    wait_for_udp_listener(reg_ip, 5060, Duration::from_secs(5)).unwrap();
    let _uac = Sipp::new("uac-register.xml", &dir)
        .remote(format!("{reg_ip}:5060"))
        .local(uac_ip, 5060)
        .args(["-s", "alice", "-au", "alice", "-ap", "wrong"])
        .key("domain", "pbx.test")
        .args(["-m", "1", "-timeout", "10"])
        .start();
    registrar.wait_failure(WAIT);
    let errors = registrar.report();
    assert!(errors.contains("CHECK FAILED: digest"), "{errors}");
}

/// Kamailio registers the SIPp UAC after a digest challenge; the binding and
/// its expiry show in ul.dump, and usrloc counts one user.
#[test]
fn kamailio_registrar_accepts_digest_and_shows_the_binding() {
    require_peer("kamailio");
    require_peer("sipp");
    let dir = temp_dir("kamailio-registrar");
    let (kam_ip, uac_ip) = (test_ip(14), test_ip(15));
    let kam = Kamailio::start(KamailioOpts::new(kam_ip, 5060, "s3cret"), &dir);
    let mut uac = Sipp::new("uac-register.xml", &dir)
        .remote(format!("{kam_ip}:5060"))
        .local(uac_ip, 5060)
        .args(["-s", "alice", "-au", "alice", "-ap", "s3cret"])
        .key("domain", "pbx.test")
        .set("exp", "120")
        .args(["-m", "1", "-timeout", "10", "-timeout_error"])
        .start();
    uac.wait_success(WAIT);
    let dump = kam
        .wait_for_binding(&format!("sip:alice@{uac_ip}:5060"), Duration::from_secs(5))
        .unwrap();
    assert!(
        dump.contains("Expires: 1"),
        "granted expiry ~120 s:\n{dump}"
    );
    assert_eq!(kam.stat("usrloc:registered_users"), Some(1));
}
