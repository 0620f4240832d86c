//! uacd against Kamailio as a digest-checking registrar (tests/kamailio/
//! registrar.cfg) over UDP, TCP and TLS, on 127.0.0.170..179. The binding is
//! read back from Kamailio's usrloc; SIGTERM must remove it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Kamailio, KamailioOpts, Uacd, require_peer, temp_dir, test_ip};

const WAIT: Duration = Duration::from_secs(20);

fn config(ip: &str, proxy: &str, transport: &str, tls: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:{ip}:5070", "tcp:{ip}:5070"]
[tls]
{tls}
[api]
listen = "127.0.0.1:0"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[registration]
retry_interval_sec = 30
[[connection]]
id = "k1"
connection_name = "Kamailio PBX"
user_name = "uacd-k1"
[connection.external_uac_settings]
proxy = "{proxy}"
transport = "{transport}"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
"#
    )
}

fn kamailio(n: u8, tls: Option<(std::path::PathBuf, std::path::PathBuf)>, dir: &Path) -> Kamailio {
    require_peer("kamailio");
    require_peer("kamcmd");
    let mut opts = KamailioOpts::new(test_ip(n), 5060, "s3cret");
    if tls.is_some() {
        opts.tls_port = Some(5061);
        opts.tls_cert = tls;
    }
    Kamailio::start(opts, dir)
}

/// Registers, checks the binding (and its transport) in usrloc, stops uacd and checks that the
/// binding is gone.
fn register_and_unregister(kam: &Kamailio, mut uacd: Uacd, contact: &str, transport: &str) {
    uacd.wait_for_log("status=success", WAIT);
    let dump = kam
        .wait_for_binding(contact, WAIT)
        .unwrap_or_else(|e| panic!("{e}\nuacd log:\n{}", common::tail(uacd.log_path(), 40)));
    // usrloc counts down from the granted 600 s: 599 a second later.
    let expires = dump
        .lines()
        .find_map(|l| l.trim().strip_prefix("Expires: "))
        .and_then(|v| v.trim().parse::<u32>().ok());
    assert!(
        expires.is_some_and(|e| (590..=600).contains(&e)),
        "granted ~600 s:\n{dump}"
    );
    assert!(
        dump.contains(&format!(";transport={transport}")),
        "binding over {transport}:\n{dump}"
    );
    assert!(
        dump.contains(";line=k1"),
        "the Contact names the connection with line:\n{dump}"
    );
    let status = uacd.terminate(Duration::from_secs(10)).expect("uacd exits");
    assert_eq!(status.code(), Some(0));
    let dump = kam.ul_dump();
    assert!(
        !dump.contains(contact),
        "binding removed by Expires: 0:\n{dump}"
    );
}

#[test]
fn registers_over_udp() {
    let dir = temp_dir("kam-udp");
    let ip = test_ip(170).to_string();
    let kam = kamailio(170, None, &dir);
    let uacd = Uacd::start(&config(&ip, &format!("sip:{ip}:5060"), "UDP", ""), &dir);
    register_and_unregister(&kam, uacd, &format!("sip:uacd-k1@{ip}:5070;"), "udp");
}

#[test]
fn registers_over_tcp() {
    let dir = temp_dir("kam-tcp");
    let ip = test_ip(171).to_string();
    let kam = kamailio(171, None, &dir);
    let uacd = Uacd::start(&config(&ip, &format!("sip:{ip}:5060"), "TCP", ""), &dir);
    register_and_unregister(&kam, uacd, &format!("sip:uacd-k1@{ip}:5070;"), "tcp");
}

/// A private CA and a PBX certificate it signed, valid for `pbx.test` and
/// the PBX's IP; returns (ca.pem, cert.pem, key.pem).
fn pki(dir: &Path, ip: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["pbx.test".to_owned(), ip.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (dir.join("ca.pem"), dir.join("pbx.pem"), dir.join("pbx.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn registers_over_tls_verifying_the_pbx_certificate() {
    let dir = temp_dir("kam-tls");
    let ip = test_ip(172).to_string();
    let (ca, cert, key) = pki(&dir, &ip);
    let kam = kamailio(172, Some((cert, key)), &dir);
    let tls = format!("ca_file = \"{}\"", ca.display());
    let uacd = Uacd::start(&config(&ip, &format!("sips:{ip}:5061"), "TLS", &tls), &dir);
    // No tls: listener, so the Contact names the flow itself (its local
    // port): the PBX reaches us back over the registration's connection.
    register_and_unregister(&kam, uacd, &format!("sip:uacd-k1@{ip}:"), "tls");
}

#[test]
fn tls_to_an_unknown_certificate_fails_by_default() {
    let dir = temp_dir("kam-tls-unverified");
    let ip = test_ip(173).to_string();
    let (_ca, cert, key) = pki(&dir, &ip);
    let kam = kamailio(173, Some((cert, key)), &dir);
    // No ca_file: the private CA is unknown, so the handshake must fail.
    let uacd = Uacd::start(&config(&ip, &format!("sips:{ip}:5061"), "TLS", ""), &dir);
    let line = uacd.wait_for_log("status=failed", WAIT);
    assert!(line.contains("503 Service Unavailable"), "{line}");
    assert!(
        !kam.ul_dump().contains("uacd-k1"),
        "no binding without verification"
    );
}

#[test]
fn wrong_password_is_tried_once_per_forbidden_interval_not_until_a_ban() {
    let dir = temp_dir("kam-wrong-password");
    let ip = test_ip(174).to_string();
    let kam = kamailio(174, None, &dir);
    // A 1 s backoff, so that a retry before the 3 s forbidden interval
    // would show.
    let cfg = config(&ip, &format!("sip:{ip}:5060"), "UDP", "")
        .replace("password = \"s3cret\"", "password = \"wrong\"")
        .replace(
            "retry_interval_sec = 30",
            "retry_interval_sec = 1\nmax_retry_interval_sec = 1\nforbidden_retry_interval_sec = 3",
        );
    let uacd = Uacd::start(&cfg, &dir);
    let line = uacd.wait_for_log("status=failed", WAIT);
    assert!(
        line.contains("last_response=401 Unauthorized (credentials refused)"),
        "{line}"
    );
    // Kamailio answers every REGISTER with a fresh nonce: we must have sent
    // exactly two (the first, and one answer), then waited.
    let challenges = || {
        std::fs::read_to_string(kam.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("challenging"))
            .count()
    };
    assert_eq!(challenges(), 2, "{}", common::tail(kam.log_path(), 20));
    // The next attempt is refused in turn, forbidden_retry_interval_sec
    // after the first refusal, by the daemon's own clock.
    let mut refusals = Vec::new();
    let seen = common::poll_until(WAIT, || {
        refusals = refusal_times(uacd.log_path());
        refusals.len() >= 2
    });
    assert!(
        seen.is_ok(),
        "no second refusal: {}",
        common::tail(uacd.log_path(), 30)
    );
    let waited = (refusals[1] - refusals[0]).rem_euclid(86_400.0);
    assert!(
        (3.0..5.0).contains(&waited),
        "{waited} s between refusals:\n{}",
        common::tail(uacd.log_path(), 30)
    );
    assert_eq!(challenges(), 4, "{}", common::tail(kam.log_path(), 20));
    assert!(!kam.ul_dump().contains("uacd-k1"));
}

/// When uacd published each "credentials refused", in seconds of the day
/// from its log's timestamps (`2026-01-02T03:04:05.678901Z ...`).
fn refusal_times(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("last_response=401 Unauthorized (credentials refused)"))
        .filter_map(|l| {
            let time = l.split_whitespace().next()?.split('T').nth(1)?;
            let mut hms = time.trim_end_matches('Z').split(':');
            let h: f64 = hms.next()?.parse().ok()?;
            let m: f64 = hms.next()?.parse().ok()?;
            let s: f64 = hms.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .collect()
}
