//! RFC 3263 resolution through dnsmasq configured as on edge boxes: its own
//! `srv-host`/`host-record` entries and no upstream, so it answers REFUSED
//! for every type it holds nothing of (NAPTR, the SRV of other transports,
//! AAAA). A failed NAPTR or SRV query is skipped like an empty one (RFC 3263
//! §4.1, §4.2): uacd registers to `sip:pbx.test` over TCP (SRV
//! `_sip._tcp.pbx.test` refused → A `pbx.test`, port 5060) and carries a
//! call from the PBX to `1006@dest.test` (NAPTR refused → SRV
//! `_sip._udp.dest.test` → A `sip1.dest.test`).
//!
//! | address | role |
//! |---|---|
//! | .140 | uacd |
//! | .141 | Kamailio (PBX: registrar, and router of the call to uacd) |
//! | .142 | SIPp caller (a phone on the PBX) |
//! | .143 | SIPp destination (`sip1.dest.test`) |
//! | .144 | dnsmasq |
//! | .145 | dnsmasq (dual-stack test) |
//! | .146, .147 | addresses it serves (nothing listens) |

mod api_client;
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::{
    Kamailio, KamailioOpts, Sipp, Uacd, free_tcp_port, free_udp_port, require_peer, temp_dir,
    test_ip,
};
use uacd::dns::lookup::{Hickory, Lookup, LookupError, ResponseCode};

const WAIT: Duration = Duration::from_secs(30);

fn uacd_ip() -> Ipv4Addr {
    test_ip(140)
}
fn pbx_ip() -> Ipv4Addr {
    test_ip(141)
}
fn caller_ip() -> Ipv4Addr {
    test_ip(142)
}
fn dest_ip() -> Ipv4Addr {
    test_ip(143)
}
fn dns_ip() -> Ipv4Addr {
    test_ip(144)
}

/// Runs `query` on uacd's own resolver, pointed at `dns` only.
fn with_resolver<T>(
    dns: SocketAddr,
    prefer_ipv6: bool,
    query: impl AsyncFnOnce(&Hickory) -> T,
) -> T {
    let config = uacd::config::DnsConfig {
        nameservers: vec![dns],
        greylist_sec: 0,
        prefer_ipv6,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let h = Hickory::new(&config).expect("resolver");
        query(&h).await
    })
}

/// What dnsmasq answers to `kind name`, asked with uacd's own resolver.
fn ask(dns: SocketAddr, kind: &str, name: &str) -> Result<usize, LookupError> {
    with_resolver(dns, false, async |h| match kind {
        "NAPTR" => h.naptr(name).await.map(|a| a.records.len()),
        "SRV" => h.srv(name).await.map(|a| a.records.len()),
        _ => h.ip(name).await.map(|a| a.records.len()),
    })
}

#[test]
fn registers_and_calls_through_a_dnsmasq_that_refuses_naptr() {
    require_peer("sipp");
    require_peer("kamailio");
    require_peer("kamcmd");
    let dir = temp_dir("dns-edge");
    let dest_port = free_udp_port(dest_ip());
    let dns = Dnsmasq::start(
        dns_ip(),
        &[
            format!("--srv-host=_sip._udp.dest.test,sip1.dest.test,{dest_port},10,0"),
            format!("--host-record=sip1.dest.test,{}", dest_ip()),
            format!("--host-record=pbx.test,{}", pbx_ip()),
        ],
        &dir,
    );
    // The edge box's answers, as uacd's resolver sees them.
    let refused = Err(LookupError::Rcode(ResponseCode::Refused));
    assert_eq!(ask(dns.addr, "NAPTR", "dest.test"), refused);
    assert_eq!(ask(dns.addr, "SRV", "_sip._tcp.dest.test"), refused);
    assert_eq!(ask(dns.addr, "SRV", "_sip._tcp.pbx.test"), refused);
    assert_eq!(ask(dns.addr, "SRV", "_sip._udp.dest.test"), Ok(1));
    assert_eq!(ask(dns.addr, "A", "pbx.test"), Ok(1));

    let kdir = dir.join("kamailio");
    std::fs::create_dir_all(&kdir).unwrap();
    let mut opts = KamailioOpts::new(pbx_ip(), 5060, "s3cret");
    opts.pbx = true;
    let kam = Kamailio::start(opts, &kdir);

    let uacd_port = free_udp_port(uacd_ip());
    let api = SocketAddr::from((uacd_ip(), free_tcp_port(uacd_ip())));
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:{uacd_port}", "tcp:{ip}:{uacd_port}"]
[dns]
nameservers = ["{dns}"]
[api]
listen = "{api}"
[[api.tokens]]
token = "test-token-0123456"
user_id = "1"
[registration]
retry_interval_sec = 2
max_retry_interval_sec = 2
[[connection]]
id = "c1"
connection_name = "PBX behind dnsmasq"
user_name = "uacd-c1"
[connection.external_uac_settings]
proxy = "sip:pbx.test"
transport = "TCP"
username = "telnyx-reg"
password = "s3cret"
expiration_sec = 600
[connection.internal_uac_settings]
destination_uri = "1006@dest.test"
"#,
        ip = uacd_ip(),
        dns = dns.addr,
    );
    let uacd = Uacd::start(&config, &dir);
    uacd.wait_for_log("status=success", WAIT);
    let status = api_client::Api::new(api, "test-token-0123456")
        .get("/v2/uac_connections/c1/registration_status")
        .json();
    assert_eq!(status["data"]["registration_status"], 4, "{status}");
    assert_eq!(
        status["data"]["last_registered_ip"],
        format!("{}:5060", pbx_ip()),
        "registered on pbx.test's A record, default port: {status}"
    );

    let mut dest = Sipp::new("uas-answer.xml", &dir)
        .name("dest")
        .local(dest_ip(), dest_port)
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    let mut caller = Sipp::new("pbx-call.xml", &dir)
        .name("caller")
        .local(caller_ip(), free_udp_port(caller_ip()))
        .remote(format!("{}:5060", pbx_ip()))
        .args(["-s", "telnyx-reg", "-key", "mf", "70"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    caller.wait_success(WAIT);
    dest.wait_success(WAIT);
    let dest_log = std::fs::read_to_string(dest.logs_path()).unwrap_or_default();
    assert!(
        dest_log.contains("RURI sip:1006@dest.test"),
        "{}",
        dest.report()
    );

    // uacd went through the refused queries, not around them.
    let log = std::fs::read_to_string(uacd.log_path()).unwrap_or_default();
    for (what, name) in [("NAPTR", "host=dest.test"), ("SRV", "_sip._tcp.pbx.test")] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{what} lookup failed"))
                    && l.contains(name)
                    && l.contains("Query Refused")),
            "no refused {what} {name} in uacd's log:\n{log}\n--- dnsmasq:\n{}",
            dns.log()
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("call finished") && l.contains("status=200")),
        "{log}"
    );
    drop(kam);
}

/// A host with A and AAAA records gives targets of both families, IPv4
/// first unless `dns.prefer_ipv6` (both queries are asked at once; dnsmasq
/// refusing one family for a name it holds only as IPv4 is that name's A).
#[test]
fn dual_stack_hosts_give_both_families_in_the_configured_order() {
    let dir = temp_dir("dns-dual");
    let dns = Dnsmasq::start(
        test_ip(145),
        &[
            "--host-record=dual.test,127.0.0.146,::1".to_owned(),
            "--host-record=v4only.test,127.0.0.147".to_owned(),
        ],
        &dir,
    );
    let resolve = |prefer_ipv6: bool, name: &str| -> Vec<std::net::IpAddr> {
        with_resolver(dns.addr, prefer_ipv6, async |h| {
            h.ip(name).await.expect("resolves").records
        })
    };
    let v4: std::net::IpAddr = "127.0.0.146".parse().unwrap();
    let v6: std::net::IpAddr = "::1".parse().unwrap();
    assert_eq!(resolve(false, "dual.test"), vec![v4, v6]);
    assert_eq!(resolve(true, "dual.test"), vec![v6, v4]);
    assert_eq!(
        resolve(true, "v4only.test"),
        vec!["127.0.0.147".parse::<std::net::IpAddr>().unwrap()],
        "AAAA refused: the A answer stands"
    );
}
