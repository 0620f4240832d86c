//! The resolution logic against a fake DNS: RFC 3263 decision table,
//! lookups that fail on the way (skipped like empty answers), caching and
//! TTLs, the stale-answer grace, single flight, greylisting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::lookup::{LookupFuture, ResponseCode};
use super::rfc3263::NaptrRecord;
use super::*;

#[derive(Default)]
struct Fake {
    naptr: Mutex<HashMap<String, Vec<NaptrRecord>>>,
    srv: Mutex<HashMap<String, Vec<SrvRecord>>>,
    ip: Mutex<HashMap<String, Vec<IpAddr>>>,
    ttl: Mutex<Duration>,
    down: Mutex<bool>,
    /// Address lookups fail (SRV and NAPTR still answer).
    addresses_down: Mutex<bool>,
    /// Queries ("NAPTR name", "SRV name", "A name") that fail this way.
    errors: Mutex<HashMap<String, LookupError>>,
    queries: Mutex<Vec<String>>,
    delay: Mutex<Duration>,
    inflight_max: AtomicUsize,
    inflight: AtomicUsize,
}

impl Fake {
    fn new() -> Arc<Fake> {
        let f = Fake::default();
        *f.ttl.lock().unwrap() = Duration::from_secs(60);
        Arc::new(f)
    }
    fn srv(&self, name: &str, recs: &[(u16, u16, u16, &str)]) {
        self.srv.lock().unwrap().insert(
            name.into(),
            recs.iter()
                .map(|&(priority, weight, port, target)| SrvRecord {
                    priority,
                    weight,
                    port,
                    target: target.into(),
                })
                .collect(),
        );
    }
    fn a(&self, name: &str, ips: &[&str]) {
        self.ip.lock().unwrap().insert(
            name.into(),
            ips.iter().map(|i| i.parse().unwrap()).collect(),
        );
    }
    fn naptr(&self, name: &str, recs: &[(u16, &str, &str)]) {
        self.naptr.lock().unwrap().insert(
            name.into(),
            recs.iter()
                .map(|&(order, services, replacement)| NaptrRecord {
                    order,
                    preference: 10,
                    flags: "s".into(),
                    services: services.into(),
                    replacement: replacement.into(),
                })
                .collect(),
        );
    }
    /// The query `kind name` fails with `e` from now on.
    fn fail(&self, kind: &str, name: &str, e: LookupError) {
        self.errors
            .lock()
            .unwrap()
            .insert(format!("{kind} {name}"), e);
    }
    fn fail_addresses(&self) {
        *self.addresses_down.lock().unwrap() = true;
    }
    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
    fn answer<T: Clone + Send + 'static>(
        &self,
        kind: &str,
        name: &str,
        table: &Mutex<HashMap<String, Vec<T>>>,
    ) -> LookupFuture<'_, T> {
        let key = format!("{kind} {name}");
        let injected = self.errors.lock().unwrap().get(&key).cloned();
        self.queries.lock().unwrap().push(key);
        let res = if *self.down.lock().unwrap()
            || (kind == "A" && *self.addresses_down.lock().unwrap())
        {
            Err(LookupError::Timeout)
        } else if let Some(e) = injected {
            Err(e)
        } else {
            match table.lock().unwrap().get(name) {
                Some(r) => Ok(Answer {
                    records: r.clone(),
                    valid_until: Instant::now() + *self.ttl.lock().unwrap(),
                }),
                None => Err(LookupError::NoRecords),
            }
        };
        let delay = *self.delay.lock().unwrap();
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            res
        })
    }
}

impl Lookup for Fake {
    fn naptr<'a>(&'a self, name: &'a str) -> LookupFuture<'a, NaptrRecord> {
        self.answer("NAPTR", name, &self.naptr)
    }
    fn srv<'a>(&'a self, name: &'a str) -> LookupFuture<'a, SrvRecord> {
        self.answer("SRV", name, &self.srv)
    }
    fn ip<'a>(&'a self, name: &'a str) -> LookupFuture<'a, IpAddr> {
        let n = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.inflight_max.fetch_max(n, Ordering::SeqCst);
        let f = self.answer("A", name, &self.ip);
        Box::pin(async move {
            let r = f.await;
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

fn dns(f: &Arc<Fake>) -> Dns {
    Dns::with_lookup(f.clone(), Duration::from_secs(30), ALL.to_vec())
}

fn q(host: &str, port: Option<u16>, transport: Option<Transport>) -> Query {
    Query {
        host: host.into(),
        port,
        transport,
        sips: false,
    }
}

fn addrs(t: &[Target]) -> Vec<String> {
    t.iter()
        .map(|t| format!("{}/{}", t.addr, t.transport.via_token()))
        .collect()
}

fn two_ips(f: &Fake) {
    f.srv(
        "_sip._udp.pbx.test",
        &[
            (10, 0, 5060, "sip1.pbx.test"),
            (20, 0, 5070, "sip2.pbx.test"),
        ],
    );
    f.a("sip1.pbx.test", &["127.0.0.20"]);
    f.a("sip2.pbx.test", &["127.0.0.21", "127.0.0.22"]);
}

#[tokio::test(start_paused = true)]
async fn numeric_ip_makes_no_query() {
    let f = Fake::new();
    let t = dns(&f)
        .resolve(&q("127.0.0.9", None, Some(Transport::Tcp)))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.9:5060/TCP"]);
    assert_eq!(&*t[0].server_name, "127.0.0.9");
    assert!(f.queries().is_empty());
}

#[tokio::test(start_paused = true)]
async fn srv_priority_order_then_addresses_in_order() {
    let f = Fake::new();
    two_ips(&f);
    let t = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Udp)))
        .await
        .unwrap();
    assert_eq!(
        addrs(&t),
        [
            "127.0.0.20:5060/UDP",
            "127.0.0.21:5070/UDP",
            "127.0.0.22:5070/UDP"
        ]
    );
    assert_eq!(
        &*t[1].server_name, "pbx.test",
        "TLS name is the URI host, not the SRV target"
    );
    assert_eq!(f.queries()[0], "SRV _sip._udp.pbx.test");
}

#[tokio::test(start_paused = true)]
async fn explicit_port_queries_addresses_only() {
    let f = Fake::new();
    two_ips(&f);
    f.a("pbx.test", &["127.0.0.30"]);
    let t = dns(&f)
        .resolve(&q("pbx.test", Some(5080), None))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.30:5080/UDP"]);
    assert_eq!(f.queries(), ["A pbx.test"]);
}

#[tokio::test(start_paused = true)]
async fn no_srv_falls_back_to_address_on_default_port() {
    let f = Fake::new();
    f.a("pbx.test", &["127.0.0.30"]);
    let t = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Tls)))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.30:5061/TLS"]);
    assert_eq!(f.queries(), ["SRV _sips._tcp.pbx.test", "A pbx.test"]);
}

#[tokio::test(start_paused = true)]
async fn naptr_picks_services_in_order_filtered_by_transport() {
    let f = Fake::new();
    f.naptr(
        "example.test",
        &[
            (20, "SIP+D2U", "_sip._udp.example.test"),
            (10, "SIP+D2T", "_sip._tcp.example.test"),
        ],
    );
    f.srv(
        "_sip._tcp.example.test",
        &[(0, 0, 5060, "tcp.example.test")],
    );
    f.srv(
        "_sip._udp.example.test",
        &[(0, 0, 5060, "udp.example.test")],
    );
    f.a("tcp.example.test", &["127.0.0.40"]);
    f.a("udp.example.test", &["127.0.0.41"]);
    let t = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.40:5060/TCP", "127.0.0.41:5060/UDP"]);
    // UDP only: the TCP record is not for us.
    let udp_only = Dns::with_lookup(f.clone(), Duration::from_secs(30), vec![Transport::Udp]);
    let t = udp_only
        .resolve(&q("example.test", None, None))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.41:5060/UDP"]);
}

#[tokio::test(start_paused = true)]
async fn transport_param_skips_naptr() {
    let f = Fake::new();
    f.naptr("example.test", &[(10, "SIP+D2T", "_sip._tcp.example.test")]);
    f.srv(
        "_sip._udp.example.test",
        &[(0, 0, 5060, "udp.example.test")],
    );
    f.a("udp.example.test", &["127.0.0.41"]);
    let t = dns(&f)
        .resolve(&q("example.test", None, Some(Transport::Udp)))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.41:5060/UDP"]);
    assert!(!f.queries().iter().any(|q| q.starts_with("NAPTR")));
}

#[tokio::test(start_paused = true)]
async fn no_naptr_tries_srv_per_transport_then_address() {
    let f = Fake::new();
    f.srv(
        "_sip._tcp.example.test",
        &[(0, 0, 5062, "tcp.example.test")],
    );
    f.a("tcp.example.test", &["127.0.0.42"]);
    let t = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.42:5062/TCP"]);
    assert_eq!(
        f.queries(),
        [
            "NAPTR example.test",
            "SRV _sip._udp.example.test",
            "SRV _sip._tcp.example.test",
            "A tcp.example.test",
            "SRV _sips._tcp.example.test"
        ]
    );
    let g = Fake::new();
    g.a("plain.test", &["127.0.0.43"]);
    let t = dns(&g).resolve(&q("plain.test", None, None)).await.unwrap();
    assert_eq!(addrs(&t), ["127.0.0.43:5060/UDP"]);
}

#[tokio::test(start_paused = true)]
async fn sips_means_tls_srv() {
    let f = Fake::new();
    f.srv("_sips._tcp.pbx.test", &[(0, 0, 5061, "tls.pbx.test")]);
    f.a("tls.pbx.test", &["127.0.0.44"]);
    let mut query = q("pbx.test", None, None);
    query.sips = true;
    let t = dns(&f).resolve(&query).await.unwrap();
    assert_eq!(addrs(&t), ["127.0.0.44:5061/TLS"]);
}

#[tokio::test(start_paused = true)]
async fn dot_target_is_service_not_available() {
    let f = Fake::new();
    f.srv("_sip._udp.pbx.test", &[(0, 0, 0, ".")]);
    f.a("pbx.test", &["127.0.0.30"]);
    let e = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Udp)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAvailable { .. }), "{e}");
    assert!(e.to_string().contains("not available"));
}

#[tokio::test(start_paused = true)]
async fn unresolvable_srv_target_is_skipped() {
    let f = Fake::new();
    f.srv(
        "_sip._udp.pbx.test",
        &[
            (10, 0, 5060, "ghost.pbx.test"),
            (20, 0, 5060, "sip2.pbx.test"),
        ],
    );
    f.a("sip2.pbx.test", &["127.0.0.21"]);
    let t = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Udp)))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.21:5060/UDP"]);
    let g = Fake::new();
    g.srv("_sip._udp.pbx.test", &[(10, 0, 5060, "ghost.pbx.test")]);
    let e = dns(&g)
        .resolve(&q("pbx.test", None, Some(Transport::Udp)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn nothing_at_all_is_not_found() {
    let f = Fake::new();
    let e = dns(&f)
        .resolve(&q("nowhere.test", None, None))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "nowhere.test: no SIP server found (no NAPTR, SRV or A/AAAA record)"
    );
}

#[tokio::test(start_paused = true)]
async fn answers_are_cached_for_their_ttl_and_then_followed() {
    let f = Fake::new();
    two_ips(&f);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    d.resolve(&query).await.unwrap();
    let n = f.queries().len();
    d.resolve(&query).await.unwrap();
    assert_eq!(f.queries().len(), n, "served from the cache");
    // The zone changes; the old answer is used until its TTL runs out.
    f.srv("_sip._udp.pbx.test", &[(10, 0, 5060, "sip2.pbx.test")]);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(d.resolve(&query).await.unwrap().len(), 3);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap()),
        ["127.0.0.21:5060/UDP", "127.0.0.22:5060/UDP"]
    );
}

#[tokio::test(start_paused = true)]
async fn dns_down_uses_last_good_answer_within_grace() {
    let f = Fake::new();
    two_ips(&f);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    d.resolve(&query).await.unwrap();
    *f.down.lock().unwrap() = true;
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(d.resolve(&query).await.unwrap().len(), 3, "stale answer");
    tokio::time::advance(STALE_GRACE).await;
    let e = d.resolve(&query).await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    // Never resolved and DNS down: an error, not an empty list.
    let e = d
        .resolve(&q("other.test", None, Some(Transport::Udp)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    // DNS back: the failure is remembered for NEGATIVE_TTL (no query per
    // request while a name fails), then fresh answers.
    *f.down.lock().unwrap() = false;
    let before = f.queries().len();
    assert!(d.resolve(&query).await.is_err(), "negative answer cached");
    assert_eq!(
        f.queries().len(),
        before,
        "no query while negatively cached"
    );
    tokio::time::advance(NEGATIVE_TTL).await;
    assert_eq!(d.resolve(&query).await.unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn srv_targets_that_all_fail_to_resolve_are_an_outage_not_a_missing_service() {
    let f = Fake::new();
    two_ips(&f);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    d.resolve(&query).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    // The SRV answers but none of its targets' address lookups does.
    f.fail_addresses();
    assert_eq!(
        d.resolve(&query).await.unwrap().len(),
        3,
        "stale answer kept"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_resolves_share_one_query() {
    let f = Fake::new();
    two_ips(&f);
    *f.delay.lock().unwrap() = Duration::from_millis(50);
    let d = Arc::new(dns(&f));
    let query = q("pbx.test", None, Some(Transport::Udp));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let d = d.clone();
            let query = query.clone();
            tokio::spawn(async move { d.resolve(&query).await.unwrap().len() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 3);
    }
    assert_eq!(f.queries().len(), 3, "{:?}", f.queries());
}

#[tokio::test(start_paused = true)]
async fn greylisted_targets_go_last_until_the_period_ends() {
    let f = Fake::new();
    two_ips(&f);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    let t = d.resolve(&query).await.unwrap();
    d.failed(&t[0], Failure::Timeout);
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap()),
        [
            "127.0.0.21:5070/UDP",
            "127.0.0.22:5070/UDP",
            "127.0.0.20:5060/UDP"
        ]
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap())[0],
        "127.0.0.20:5060/UDP"
    );
    d.failed(&t[0], Failure::Timeout);
    d.answered(&t[0]);
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap())[0],
        "127.0.0.20:5060/UDP"
    );
}

#[tokio::test(start_paused = true)]
async fn weights_spread_first_choice() {
    let f = Fake::new();
    f.srv(
        "_sip._udp.pbx.test",
        &[(10, 1, 5060, "a.pbx.test"), (10, 1, 5060, "b.pbx.test")],
    );
    f.a("a.pbx.test", &["127.0.0.50"]);
    f.a("b.pbx.test", &["127.0.0.51"]);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..64 {
        firsts.insert(d.resolve(&query).await.unwrap()[0].addr);
    }
    assert_eq!(firsts.len(), 2, "each call draws anew");
}

#[tokio::test(start_paused = true)]
async fn slow_dns_does_not_hold_back_a_cached_answer() {
    let f = Fake::new();
    two_ips(&f);
    let d = dns(&f);
    let query = q("pbx.test", None, Some(Transport::Udp));
    d.resolve(&query).await.unwrap();
    // The zone changes and the nameserver becomes slow.
    f.srv("_sip._udp.pbx.test", &[(10, 0, 5060, "sip2.pbx.test")]);
    *f.delay.lock().unwrap() = Duration::from_secs(10);
    tokio::time::advance(Duration::from_secs(61)).await;
    let t0 = Instant::now();
    assert_eq!(
        d.resolve(&query).await.unwrap().len(),
        3,
        "last good answer"
    );
    assert_eq!(Instant::now() - t0, STALE_ANSWER_WAIT);
    // Meanwhile: served at once from the stale answer, no second query.
    let n = f.queries().len();
    let t1 = Instant::now();
    assert_eq!(d.resolve(&query).await.unwrap().len(), 3);
    assert_eq!(Instant::now(), t1);
    assert_eq!(f.queries().len(), n);
    // The background resolution completes (two queries of 10 s): its
    // answer is used.
    for _ in 0..30 {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap()),
        ["127.0.0.21:5060/UDP", "127.0.0.22:5060/UDP"]
    );
}

/// Every way a lookup can fail without saying that the records do not exist.
fn failures() -> Vec<LookupError> {
    vec![
        LookupError::Rcode(ResponseCode::Refused),
        LookupError::Rcode(ResponseCode::ServFail),
        LookupError::Timeout,
        LookupError::Rcode(ResponseCode::NotImp),
        LookupError::Rcode(ResponseCode::FormErr),
        LookupError::Rcode(ResponseCode::Unknown(3841)),
        LookupError::Failed("no connections available".into()),
    ]
}

fn refused() -> LookupError {
    LookupError::Rcode(ResponseCode::Refused)
}

#[tokio::test(start_paused = true)]
async fn naptr_failure_of_any_kind_goes_on_to_srv() {
    for e in failures() {
        let f = Fake::new();
        f.fail("NAPTR", "example.test", e.clone());
        f.srv(
            "_sip._udp.example.test",
            &[(0, 0, 5070, "sip1.example.test")],
        );
        f.a("sip1.example.test", &["127.0.0.60"]);
        let t = dns(&f)
            .resolve(&q("example.test", None, None))
            .await
            .unwrap_or_else(|err| panic!("NAPTR {e}: {err}"));
        assert_eq!(addrs(&t), ["127.0.0.60:5070/UDP"], "NAPTR {e}");
        assert_eq!(
            f.queries()[..3],
            [
                "NAPTR example.test",
                "SRV _sip._udp.example.test",
                "A sip1.example.test"
            ],
            "NAPTR {e}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dnsmasq_without_upstream_resolves_through_srv_and_address_records() {
    // dnsmasq serving srv-host/host-record entries with no upstream answers
    // REFUSED for every type it holds nothing of.
    let f = Fake::new();
    f.fail("NAPTR", "dest.test", refused());
    f.srv("_sip._udp.dest.test", &[(10, 0, 5070, "sip1.dest.test")]);
    f.fail("SRV", "_sip._tcp.dest.test", refused());
    f.fail("SRV", "_sips._tcp.dest.test", refused());
    f.a("sip1.dest.test", &["127.0.0.60"]);
    let t = dns(&f).resolve(&q("dest.test", None, None)).await.unwrap();
    assert_eq!(addrs(&t), ["127.0.0.60:5070/UDP"]);
    // A registrar over TCP with only an address record.
    f.fail("SRV", "_sip._tcp.pbx.test", refused());
    f.a("pbx.test", &["127.0.0.61"]);
    let t = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Tcp)))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.61:5060/TCP"]);
}

#[tokio::test(start_paused = true)]
async fn srv_failure_of_any_kind_falls_back_to_address_on_default_port() {
    for e in failures() {
        for (transport, port) in [
            (Transport::Udp, 5060),
            (Transport::Tcp, 5060),
            (Transport::Tls, 5061),
        ] {
            let f = Fake::new();
            let name = rfc3263::srv_name("pbx.test", transport);
            f.fail("SRV", &name, e.clone());
            f.a("pbx.test", &["127.0.0.30"]);
            let t = dns(&f)
                .resolve(&q("pbx.test", None, Some(transport)))
                .await
                .unwrap_or_else(|err| panic!("SRV {e}: {err}"));
            assert_eq!(
                addrs(&t),
                [format!("127.0.0.30:{port}/{}", transport.via_token())],
                "SRV {e}"
            );
            assert_eq!(f.queries(), [format!("SRV {name}"), "A pbx.test".into()]);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn naptr_and_every_srv_failing_fall_back_to_address() {
    for e in failures() {
        let f = Fake::new();
        f.fail("NAPTR", "example.test", e.clone());
        for name in [
            "_sip._udp.example.test",
            "_sip._tcp.example.test",
            "_sips._tcp.example.test",
        ] {
            f.fail("SRV", name, e.clone());
        }
        f.a("example.test", &["127.0.0.43"]);
        let t = dns(&f)
            .resolve(&q("example.test", None, None))
            .await
            .unwrap_or_else(|err| panic!("{e}: {err}"));
        assert_eq!(addrs(&t), ["127.0.0.43:5060/UDP"], "{e}");
        assert_eq!(
            f.queries(),
            [
                "NAPTR example.test",
                "SRV _sip._udp.example.test",
                "SRV _sip._tcp.example.test",
                "SRV _sips._tcp.example.test",
                "A example.test"
            ]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failed_naptr_service_is_skipped_and_its_srv_asked_once() {
    let f = Fake::new();
    f.naptr("example.test", &[(10, "SIP+D2T", "_sip._tcp.example.test")]);
    f.fail(
        "SRV",
        "_sip._tcp.example.test",
        LookupError::Rcode(ResponseCode::ServFail),
    );
    f.srv(
        "_sip._udp.example.test",
        &[(0, 0, 5060, "udp.example.test")],
    );
    f.a("udp.example.test", &["127.0.0.41"]);
    let t = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap();
    assert_eq!(addrs(&t), ["127.0.0.41:5060/UDP"]);
    assert_eq!(
        f.queries(),
        [
            "NAPTR example.test",
            "SRV _sip._tcp.example.test",
            "SRV _sip._udp.example.test",
            "A udp.example.test",
            "SRV _sips._tcp.example.test"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn everything_failing_is_an_error_naming_the_most_telling_failure() {
    // Refused everywhere (dnsmasq asked for a name it does not hold): the
    // address lookup's own failure.
    let f = Fake::new();
    f.fail("NAPTR", "example.test", refused());
    for t in ALL {
        f.fail("SRV", &rfc3263::srv_name("example.test", t), refused());
    }
    f.fail("A", "example.test", refused());
    let e = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "example.test: DNS lookup failed: server answered Query Refused (rcode 5)"
    );
    // Only the NAPTR query failed and nothing else exists: that failure,
    // since the NAPTR records could have named services elsewhere.
    let f = Fake::new();
    f.fail("NAPTR", "example.test", LookupError::Timeout);
    let e = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::Unreachable {
            host: "example.test".into(),
            reason: "NAPTR: timed out".into()
        }
    );
    // The SRV query failed and the host has no address: the SRV failure.
    let f = Fake::new();
    f.fail(
        "SRV",
        "_sip._udp.pbx.test",
        LookupError::Rcode(ResponseCode::ServFail),
    );
    let e = dns(&f)
        .resolve(&q("pbx.test", None, Some(Transport::Udp)))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "_sip._udp.pbx.test: DNS lookup failed: server answered Server Failure (rcode 2)"
    );
    // The address lookup timing out after a refused NAPTR: the timeout.
    let f = Fake::new();
    f.fail("NAPTR", "example.test", refused());
    f.fail("A", "example.test", LookupError::Timeout);
    let e = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "example.test: DNS lookup failed: timed out");
    // No failure, but an SRV "." tells more than a missing address.
    let f = Fake::new();
    f.srv("_sip._udp.example.test", &[(0, 0, 0, ".")]);
    let e = dns(&f)
        .resolve(&q("example.test", None, None))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::NotAvailable {
            host: "_sip._udp.example.test".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn failing_everywhere_is_an_outage_that_keeps_the_last_good_answer() {
    let f = Fake::new();
    f.fail("NAPTR", "dest.test", refused());
    f.srv("_sip._udp.dest.test", &[(10, 0, 5070, "sip1.dest.test")]);
    f.a("sip1.dest.test", &["127.0.0.60"]);
    let d = dns(&f);
    let query = q("dest.test", None, None);
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap()),
        ["127.0.0.60:5070/UDP"]
    );
    // The resolver now refuses everything (restarted without its records).
    for t in ALL {
        f.fail("SRV", &rfc3263::srv_name("dest.test", t), refused());
    }
    f.fail("A", "dest.test", refused());
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        addrs(&d.resolve(&query).await.unwrap()),
        ["127.0.0.60:5070/UDP"],
        "last good answer"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cache_holds_at_most_its_bound_of_names() {
    let f = Fake::new();
    let d = dns(&f).with_cache_entries(5);
    for i in 0..50 {
        let name = format!("n{i}.test");
        f.a(&name, &["127.0.0.21"]);
        d.resolve(&q(&name, Some(5060), Some(Transport::Udp)))
            .await
            .unwrap();
        assert!(d.cached_names() <= 5, "{} names cached", d.cached_names());
    }
    // The most recent name is still cached: no new query for it.
    let n = f.queries().len();
    d.resolve(&q("n49.test", Some(5060), Some(Transport::Udp)))
        .await
        .unwrap();
    assert_eq!(f.queries().len(), n);
}
