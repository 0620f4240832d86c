//! Registration failover between the targets of an SRV record (RFC 3263,
//! RFC 2782) against a real DNS server (hickory-server, in this process) and
//! Kamailio registrars, on 127.0.0.90..99. The daemon runs in-process with
//! T1 = 20 ms, so Timer F is 1.28 s; Kamailio grants 6 s, so refreshes come
//! every ~3 s. Every wait is on a status change with a deadline.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::dns::{DnsServer, Rr, a, cname, srv};
use common::{Kamailio, KamailioOpts, require_peer, temp_dir, test_ip};
use uacd::app::App;
use uacd::registration::{RegStatus, Snapshot};
use uacd::transaction::client::Timers;

const WAIT: Duration = Duration::from_secs(30);

fn timers() -> Timers {
    Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(200),
        t4: Duration::from_millis(200),
    }
}

/// One connection per `(id, proxy, transport)`, resolved through `dns`.
fn config(listen: Ipv4Addr, dns: SocketAddr, conns: &[(&str, &str, &str)]) -> uacd::config::Config {
    let mut text = format!(
        "[sip]\nlisten = [\"udp:{listen}:0\", \"tcp:{listen}:0\"]\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"1\"\n\
         [registration]\nretry_interval_sec = 1\nmax_retry_interval_sec = 2\nunregister_timeout_sec = 2\n"
    );
    for (id, proxy, transport) in conns {
        text.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nconnection_name = \"{id}\"\nuser_name = \"u-{id}\"\n\
             [connection.external_uac_settings]\nproxy = \"{proxy}\"\ntransport = \"{transport}\"\n\
             username = \"telnyx-reg\"\npassword = \"s3cret\"\nexpiration_sec = 60\n"
        ));
    }
    uacd::config::parse(&text, "test.toml").expect("test config is valid")
}

/// Kamailio registrar for `pbx.test` on `ip:5060` (UDP and TCP), granting 6 s.
fn kamailio(ip: Ipv4Addr, dir: &Path) -> Kamailio {
    require_peer("kamailio");
    require_peer("kamcmd");
    let dir = dir.join(ip.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let mut opts = KamailioOpts::new(ip, 5060, "s3cret");
    opts.max_expires = Some(6);
    tokio::task::block_in_place(|| Kamailio::start(opts, &dir))
}

fn stop(mut k: Kamailio) {
    tokio::task::block_in_place(|| k.child.terminate(Duration::from_secs(5)));
}

/// SRV for `service` (e.g. `_sip._udp.pbx.test`): priority 10 → sip1 (`first`),
/// priority 20 → sip2 (`second`).
fn two_targets(service: &str, ttl: u32, first: Ipv4Addr, second: Ipv4Addr) -> Vec<Rr> {
    vec![
        srv(service, ttl, 10, 5060, "sip1.pbx.test"),
        srv(service, ttl, 20, 5060, "sip2.pbx.test"),
        a("sip1.pbx.test", ttl, first),
        a("sip2.pbx.test", ttl, second),
    ]
}

async fn start(cfg: uacd::config::Config) -> App {
    App::start_with_timers(cfg, timers())
        .await
        .expect("daemon starts")
}

async fn wait_for(app: &App, id: &str, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let status = app.supervisor.watch(id).expect("connection exists");
    tokio::time::timeout(WAIT, status.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("{id}: never {what}; last: {:?}", status.get()))
}

fn registered_on(ip: Ipv4Addr) -> impl Fn(&Snapshot) -> bool {
    let want = std::net::SocketAddr::from((ip, 5060));
    move |s| s.status == RegStatus::Success && s.last_registered_ip == Some(want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_fails_over_after_timer_f_and_follows_the_registrar_back() {
    let dir = temp_dir("dns-udp");
    let (dead, live) = (test_ip(90), test_ip(91));
    let mut dns = DnsServer::start(test_ip(99), "pbx.test").await;
    dns.set(&two_targets("_sip._udp.pbx.test", 60, dead, live))
        .await;
    // The first target swallows every datagram (no ICMP): only Timer F
    // moves the REGISTER on.
    let blackhole = std::net::UdpSocket::bind((dead, 5060)).expect("blackhole on the first target");
    let second = kamailio(live, &dir);
    let t0 = Instant::now();
    let app = start(config(
        test_ip(96),
        dns.addr,
        &[("u1", "sip:pbx.test", "UDP")],
    ))
    .await;
    wait_for(
        &app,
        "u1",
        "registered on the second target",
        registered_on(live),
    )
    .await;
    eprintln!(
        "UDP failover: registered on the second target {:.2} s after start (Timer F = 1.28 s)",
        t0.elapsed().as_secs_f64()
    );
    // The second registrar dies and the first comes up: the next refresh
    // gets an ICMP port unreachable from the second (nothing listens there
    // any more), a transport error, and moves to the first at once.
    drop(blackhole);
    let first = kamailio(dead, &dir);
    stop(second);
    let t1 = Instant::now();
    wait_for(&app, "u1", "back on the first target", registered_on(dead)).await;
    eprintln!(
        "UDP failover back (ICMP unreachable from the second): registered on the first target {:.2} s after the second died",
        t1.elapsed().as_secs_f64()
    );
    app.stop().await;
    stop(first);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_fails_over_at_once_on_connection_refused() {
    let dir = temp_dir("dns-tcp");
    let (dead, live) = (test_ip(92), test_ip(93));
    let mut dns = DnsServer::start(test_ip(99), "pbx.test").await;
    dns.set(&two_targets("_sip._tcp.pbx.test", 60, dead, live))
        .await;
    let second = kamailio(live, &dir);
    let t0 = Instant::now();
    let app = start(config(
        test_ip(97),
        dns.addr,
        &[("t1", "sip:pbx.test", "TCP")],
    ))
    .await;
    wait_for(
        &app,
        "t1",
        "registered on the second target",
        registered_on(live),
    )
    .await;
    let took = t0.elapsed();
    eprintln!(
        "TCP failover: registered on the second target {:.3} s after start (incl. 0-250 ms start spread)",
        took.as_secs_f64()
    );
    // The flow to the second closes when it dies: uacd re-registers at
    // once, and the second refuses, so the first gets it.
    let first = kamailio(dead, &dir);
    stop(second);
    wait_for(&app, "t1", "back on the first target", registered_on(dead)).await;
    app.stop().await;
    stop(first);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_changed_answer_after_its_ttl_and_survives_dns_down() {
    let dir = temp_dir("dns-ttl");
    let (one, two) = (test_ip(94), test_ip(95));
    let mut dns = DnsServer::start(test_ip(99), "pbx.test").await;
    dns.set(&[
        srv("_sip._udp.pbx.test", 1, 10, 5060, "sip1.pbx.test"),
        a("sip1.pbx.test", 1, one),
        a("sip2.pbx.test", 1, two),
    ])
    .await;
    let k1 = kamailio(one, &dir);
    let k2 = kamailio(two, &dir);
    let app = start(config(
        test_ip(98),
        dns.addr,
        &[("d1", "sip:pbx.test", "UDP")],
    ))
    .await;
    wait_for(&app, "d1", "registered on sip1", registered_on(one)).await;
    // The operator moves the service to sip2: once the 1 s TTL has run
    // out, the next refresh goes there.
    dns.set(&[
        srv("_sip._udp.pbx.test", 1, 10, 5060, "sip2.pbx.test"),
        a("sip2.pbx.test", 1, two),
    ])
    .await;
    wait_for(&app, "d1", "moved to sip2", registered_on(two)).await;
    // DNS goes away: the registration keeps refreshing on the last good
    // answer and never leaves Success.
    dns.stop().await;
    let status = app.supervisor.watch("d1").unwrap();
    let mut refreshes = 0;
    // The publications so far (returns at once: the move was one).
    let mut seen = status.changed(0).await.1;
    let deadline = tokio::time::Instant::now() + WAIT;
    while refreshes < 3 {
        let (s, n) = tokio::time::timeout_at(deadline, status.changed(seen))
            .await
            .expect("refreshes continue without DNS");
        seen = n;
        assert_eq!(s.status, RegStatus::Success, "stays registered: {s:?}");
        if s.last_response.as_deref() == Some("200 OK") {
            refreshes += 1;
        }
    }
    app.stop().await;
    stop(k1);
    stop(k2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_give_a_clear_status_and_no_panic() {
    let mut dns = DnsServer::start(test_ip(99), "pbx.test").await;
    let mut zone = vec![
        // RFC 2782: target "." means the service is not available.
        srv("_sip._udp.none.pbx.test", 60, 0, 0, "."),
        // SRV target with no address record.
        srv("_sip._udp.ghost.pbx.test", 60, 0, 5060, "nowhere.pbx.test"),
        // CNAME loop.
        cname("loop1.pbx.test", 60, "loop2.pbx.test"),
        cname("loop2.pbx.test", 60, "loop1.pbx.test"),
    ];
    // A huge answer (truncated over UDP, fetched again over TCP): 120 SRV
    // records towards closed TCP ports, and a last one that is not there
    // either; the daemon walks them without crashing.
    for i in 0..120u16 {
        zone.push(srv(
            "_sip._tcp.big.pbx.test",
            60,
            i,
            20_000 + i,
            "many.pbx.test",
        ));
    }
    zone.push(a("many.pbx.test", 60, test_ip(99)));
    dns.set(&zone).await;
    let app = start(config(
        test_ip(99),
        dns.addr,
        &[
            ("none", "sip:none.pbx.test", "UDP"),
            ("ghost", "sip:ghost.pbx.test", "UDP"),
            ("loop", "sip:loop1.pbx.test", "UDP"),
            ("absent", "sip:absent.pbx.test", "UDP"),
            ("big", "sip:big.pbx.test", "TCP"),
        ],
    ))
    .await;
    let failed = |s: &Snapshot| s.status == RegStatus::Failed;
    let none = wait_for(&app, "none", "failed", failed).await;
    assert!(
        none.last_response
            .as_deref()
            .unwrap()
            .contains("not available"),
        "{none:?}"
    );
    let ghost = wait_for(&app, "ghost", "failed", failed).await;
    assert!(
        ghost
            .last_response
            .as_deref()
            .unwrap()
            .contains("no SIP server found"),
        "{ghost:?}"
    );
    let looped = wait_for(&app, "loop", "failed", failed).await;
    assert!(
        looped.last_response.as_deref().unwrap().starts_with("503"),
        "{looped:?}"
    );
    let absent = wait_for(&app, "absent", "failed", failed).await;
    assert!(
        absent
            .last_response
            .as_deref()
            .unwrap()
            .contains("absent.pbx.test"),
        "{absent:?}"
    );
    let big = wait_for(&app, "big", "failed after walking every target", failed).await;
    assert_eq!(
        big.last_response.as_deref(),
        Some("503 Service Unavailable"),
        "{big:?}"
    );
    app.stop().await;
    dns.stop().await;
}
