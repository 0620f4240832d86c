//! Cluster mode end to end: three uacd nodes (127.0.0.31..=33) on one
//! PostgreSQL (tests/common/postgres.rs) register 12 connections at a
//! registrar run by the test on 127.0.0.34 that records the source node,
//! Call-ID and CSeq of every REGISTER and refuses, like a real one (RFC 3261
//! §10.3 step 7), a CSeq that is not above the binding's for its Call-ID.
//! Checked: every connection registered by exactly one node with ~N/k each,
//! one live binding at the registrar (a new holder removes the old one);
//! an API write on one node applied by the holder; kill -9 of a node → its
//! connections registered by the others, with no refused CSeq and no
//! `Expires: 0`; SIGTERM → handed over without unregistering; a node added
//! → rebalanced; a call to a taken-over connection is routed by its new
//! holder; PostgreSQL down for less than the lease → nothing changes
//! at the registrar, for longer → the nodes stop refreshing (no REGISTER
//! until it is back) and recover. Every wait is a condition with a deadline; the times are
//! printed, never asserted.

mod api_client;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api_client::Api;
use bytes::Bytes;
use common::postgres::Postgres;
use common::{
    Sipp, Uacd, free_tcp_port, free_udp_port, poll_until, temp_dir, test_ip, wait_for_tcp_listener,
};
use serde_json::json;
use uacd::sip::Message;
use uacd::sip::builder::response_to;

const TOKEN: &str = "cluster-test-token";
const LEASE_SEC: u64 = 3;
/// What the registrar grants: a refresh every 3.2–4 s.
const GRANT: u32 = 8;
const WAIT: Duration = Duration::from_secs(40);
const FILE_CONNECTIONS: usize = 9;

/// One REGISTER as the registrar saw it.
#[derive(Clone, Debug)]
struct Seen {
    user: String,
    from: Ipv4Addr,
    expires: u32,
    at: Instant,
}

#[derive(Default)]
struct Book {
    seen: Vec<Seen>,
    /// (user, Call-ID) → (last CSeq, its branch).
    bindings: HashMap<(String, String), (u32, String)>,
    refused: Vec<String>,
    /// user → Contact URI → when the binding expires (RFC 3261 §10.3:
    /// bindings are per Contact).
    live: HashMap<String, HashMap<String, Instant>>,
}

impl Book {
    /// The bindings of `user` alive now.
    fn live_bindings(&self, user: &str) -> usize {
        let now = Instant::now();
        self.live
            .get(user)
            .map_or(0, |m| m.values().filter(|t| **t > now).count())
    }
}

/// A UDP registrar that answers every REGISTER itself.
struct Registrar {
    addr: SocketAddr,
    book: Arc<Mutex<Book>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Registrar {
    fn start(ip: Ipv4Addr) -> Registrar {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let book = Arc::new(Mutex::new(Book::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (book.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = Message::parse_datagram(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                if let Some(reply) = answer(&m, peer, &b) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Registrar {
            addr,
            book,
            stop,
            thread: Some(thread),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap()
    }

    /// Connection user → the nodes it was registered from since `since`.
    fn sources(&self, since: Instant) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
        let mut out: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for s in self
            .book()
            .seen
            .iter()
            .filter(|s| s.at >= since && s.expires > 0)
        {
            out.entry(s.user.clone()).or_default().insert(s.from);
        }
        out
    }

    /// Connection user → the node of its latest REGISTER.
    fn latest(&self) -> BTreeMap<String, Ipv4Addr> {
        let mut out = BTreeMap::new();
        for s in self.book().seen.iter().filter(|s| s.expires > 0) {
            out.insert(s.user.clone(), s.from);
        }
        out
    }

    fn unregistrations(&self) -> usize {
        self.book().seen.iter().filter(|s| s.expires == 0).count()
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(m: &Message, peer: SocketAddr, book: &Mutex<Book>) -> Option<Vec<u8>> {
    let SocketAddr::V4(peer) = peer else {
        return None;
    };
    let to = m.header(uacd::sip::HeaderName::To)?.value().to_string();
    let user = to.split("sip:").nth(1)?.split('@').next()?.to_owned();
    let call_id = m.call_id().ok()?.to_owned();
    let cseq = m.cseq().ok()?.seq;
    let branch = m.top_via().ok()?.branch().unwrap_or_default().to_owned();
    let header_expires: u32 = m
        .header(uacd::sip::HeaderName::Expires)
        .and_then(|h| h.value().trim().parse().ok())
        .unwrap_or(3600);
    // (Contact URI, its expires) of each Contact value.
    let contacts: Vec<(String, u32)> = m
        .contacts()
        .ok()?
        .iter()
        .map(|c| {
            let e = c
                .params
                .get("expires")
                .flatten()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(header_expires);
            (c.uri.to_string(), e)
        })
        .collect();
    let expires = contacts.first()?.1;
    let mut b = book.lock().unwrap();
    let key = (user.clone(), call_id.clone());
    let retransmission = b.bindings.get(&key).is_some_and(|(_, br)| *br == branch);
    if !retransmission {
        if let Some(last) = b.bindings.get(&key).map(|(l, _)| *l)
            && cseq <= last
        {
            b.refused.push(format!(
                "{user} from {peer}: CSeq {cseq} after {last} on {call_id}"
            ));
            return Some(response_to(m, 500, "Server Internal Error", Some("reg")).build());
        }
        b.bindings.insert(key, (cseq, branch));
        b.seen.push(Seen {
            user: user.clone(),
            from: *peer.ip(),
            expires,
            at: Instant::now(),
        });
        let live = b.live.entry(user.clone()).or_default();
        for (uri, e) in &contacts {
            if *e == 0 {
                live.remove(uri);
            } else {
                let granted = (*e).min(GRANT);
                live.insert(
                    uri.clone(),
                    Instant::now() + Duration::from_secs(u64::from(granted)),
                );
            }
        }
    }
    // The 200 lists every live binding of the AoR (§10.3 step 8).
    let now = Instant::now();
    let mut reply = response_to(m, 200, "OK", Some("reg"));
    for (uri, until) in b.live.get(&user).into_iter().flatten() {
        if *until > now {
            let left = until.duration_since(now).as_secs().max(1);
            reply = reply.header("Contact", format!("<{uri}>;expires={left}"));
        }
    }
    Some(reply.build())
}

fn connections(registrar: SocketAddr, dest: SocketAddr) -> String {
    (0..FILE_CONNECTIONS)
        .map(|i| {
            format!(
                r#"
[[connection]]
id = "c{i}"
connection_name = "PBX {i}"
user_name = "uacd-c{i}"
[connection.external_uac_settings]
proxy = "sip:{registrar}"
username = "reg-c{i}"
password = "s3cret"
expiration_sec = 60
[connection.internal_uac_settings]
destination_uri = "sip:1006@{dest}"
"#
            )
        })
        .collect()
}

struct Node {
    ip: Ipv4Addr,
    uacd: Uacd,
    api: Api,
}

/// Where the connections' calls go: a SIPp destination on 127.0.0.38.
fn dest_addr() -> SocketAddr {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let port = *PORT.get_or_init(|| free_udp_port(test_ip(38)));
    SocketAddr::from((test_ip(38), port))
}

fn start_node(n: u8, pg: &Postgres, registrar: SocketAddr) -> Node {
    start_node_with(n, pg, registrar, LEASE_SEC)
}

fn start_node_with(n: u8, pg: &Postgres, registrar: SocketAddr, lease_sec: u64) -> Node {
    let ip = test_ip(30 + n);
    let api_port = free_tcp_port(ip);
    let dir = temp_dir(&format!("cluster-n{n}"));
    let cfg = format!(
        r#"[sip]
listen = ["udp:{ip}:5060"]
[api]
listen = "{ip}:{api_port}"
[[api.tokens]]
token = "{TOKEN}"
user_id = "1"
[store]
url = "{url}"
[cluster]
node_id = "n{n}"
lease_sec = {lease_sec}
[registration]
retry_interval_sec = 1
max_retry_interval_sec = 2
{conns}"#,
        url = pg.url(),
        conns = connections(registrar, dest_addr()),
    );
    let uacd = Uacd::start(&cfg, &dir);
    if let Err(e) = wait_for_tcp_listener(ip, api_port, WAIT) {
        panic!("{e}\n{}", common::tail(uacd.log_path(), 40));
    }
    Node {
        ip,
        uacd,
        api: Api::new(SocketAddr::from((ip, api_port)), TOKEN),
    }
}

/// Waits until every one of `users` was registered, over the last refresh
/// period, by exactly one node, and that node is among `nodes`, with shares
/// that differ by at most one; returns user → node.
fn converged(
    reg: &Registrar,
    users: &BTreeSet<String>,
    nodes: &[Ipv4Addr],
    what: &str,
) -> BTreeMap<String, Ipv4Addr> {
    let window = Duration::from_millis(u64::from(GRANT) * 500 + 700);
    let mut last = BTreeMap::new();
    let ok = poll_until(WAIT + WAIT, || {
        let Some(since) = Instant::now().checked_sub(window) else {
            return false;
        };
        let src = reg.sources(since);
        let latest = reg.latest();
        let mut share: BTreeMap<Ipv4Addr, usize> = nodes.iter().map(|n| (*n, 0)).collect();
        for u in users {
            let Some(s) = src.get(u) else { return false };
            if s.len() != 1 || latest.get(u) != s.iter().next() || reg.book().live_bindings(u) != 1
            {
                return false;
            }
            let Some(n) = share.get_mut(s.iter().next().unwrap()) else {
                return false;
            };
            *n += 1;
        }
        let (lo, hi) = (share.values().min().unwrap(), share.values().max().unwrap());
        last = latest;
        hi - lo <= 1
    });
    assert!(
        ok.is_ok(),
        "{what}: not converged; latest sources {:?}; refused {:?}",
        reg.latest(),
        reg.book().refused
    );
    last.retain(|u, _| users.contains(u));
    last
}

fn status(api: &Api, id: &str) -> serde_json::Value {
    let r = api.get(&format!("/v2/uac_connections/{id}/registration_status"));
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()["data"].clone()
}

#[test]
fn three_nodes_share_the_connections_take_over_hand_over_and_rebalance() {
    let pg = Postgres::start("cluster-pg");
    let reg = Registrar::start(test_ip(34));
    let n1 = start_node(1, &pg, reg.addr);
    let mut n2 = start_node(2, &pg, reg.addr);
    let mut n3 = start_node(3, &pg, reg.addr);
    let all = [n1.ip, n2.ip, n3.ip];
    // Three more through node 1's API: live apply to the holders.
    let mut users: BTreeSet<String> = (0..FILE_CONNECTIONS).map(|i| format!("reg-c{i}")).collect();
    for i in 0..3 {
        let r = n1.api.post(
            "/v2/uac_connections",
            &json!({
                "connection_name": format!("API {i}"),
                "user_name": format!("uacd-api{i}"),
                "external_uac_settings": {
                    "proxy": format!("sip:{}", reg.addr),
                    "username": format!("reg-api{i}"),
                    "password": "s3cret",
                    "expiration_sec": 60
                }
            }),
        );
        assert_eq!(r.status, 201, "{}", r.json());
        users.insert(format!("reg-api{i}"));
    }
    let owners = converged(&reg, &users, &all, "3 nodes");
    // Every node answers the same holder for a connection.
    let view = |api: &Api| {
        (0..FILE_CONNECTIONS)
            .map(|i| status(api, &format!("c{i}"))["node_id"].clone())
            .collect::<Vec<_>>()
    };
    assert!(
        poll_until(WAIT, || {
            let v = view(&n1.api);
            v.iter().all(|n| n.is_string()) && v == view(&n2.api) && v == view(&n3.api)
        })
        .is_ok(),
        "nodes disagree on holders: {:?} / {:?} / {:?}",
        view(&n1.api),
        view(&n2.api),
        view(&n3.api)
    );
    // A node's view is that of its last heartbeat: it shows the share once
    // the others' claims are a tick old.
    let counts = || -> Vec<u64> {
        n2.api.get("/v2/cluster/nodes").json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["connections"].as_u64().unwrap())
            .collect()
    };
    assert!(
        poll_until(WAIT, || counts() == [4, 4, 4]).is_ok(),
        "GET /v2/cluster/nodes: {:?}",
        n2.api.get("/v2/cluster/nodes").json()
    );

    // kill -9 of node 3: its connections move to 1 and 2.
    let on3: Vec<String> = owners
        .iter()
        .filter(|(_, n)| **n == n3.ip)
        .map(|(u, _)| u.clone())
        .collect();
    assert!(!on3.is_empty());
    let killed = Instant::now();
    n3.uacd.child.signal("KILL");
    n3.uacd.child.wait_timeout(WAIT).expect("node 3 dies");
    assert!(
        poll_until(WAIT, || {
            let latest = reg.latest();
            on3.iter()
                .all(|u| latest.get(u).is_some_and(|n| *n != n3.ip))
        })
        .is_ok(),
        "node 3's connections not taken over: {:?}",
        reg.latest()
    );
    eprintln!(
        "takeover after kill -9: {} connections registered by the others {:?} after the kill (lease_sec {LEASE_SEC})",
        on3.len(),
        killed.elapsed()
    );
    let after_kill = converged(&reg, &users, &[n1.ip, n2.ip], "after kill -9");

    // A call from the PBX to a taken-over connection, sent to its new
    // holder (where its Contact now points), is routed as on one node.
    // (A file connection: those created through the API have no destination.)
    let user = on3
        .iter()
        .find(|u| u.starts_with("reg-c"))
        .expect("node 3 held a file connection");
    let holder = after_kill[user];
    let dir = temp_dir("cluster-call");
    let dest = dest_addr();
    let mut d = Sipp::new("uas-answer.xml", &dir)
        .name("dest")
        .local(test_ip(38), dest.port())
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    let service = format!("uacd-{}", user.trim_start_matches("reg-"));
    let mut c = Sipp::new("pbx-call.xml", &dir)
        .name("caller")
        .local(test_ip(34), free_udp_port(test_ip(34)))
        .remote(format!("{holder}:5060"))
        .args(["-s", &service, "-key", "mf", "70"])
        .args(["-m", "1", "-timeout", "20", "-timeout_error"])
        .start();
    c.wait_success(WAIT);
    d.wait_success(WAIT);

    // SIGTERM of node 2: handed over to node 1 without unregistering.
    let before = reg.unregistrations();
    let on2: Vec<String> = reg
        .latest()
        .iter()
        .filter(|(_, n)| **n == n2.ip)
        .map(|(u, _)| u.clone())
        .collect();
    let stopped = Instant::now();
    let status = n2.uacd.terminate(WAIT).expect("node 2 stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        poll_until(WAIT, || {
            let latest = reg.latest();
            on2.iter().all(|u| latest.get(u) == Some(&n1.ip))
        })
        .is_ok(),
        "node 2's connections not handed over: {:?}",
        reg.latest()
    );
    eprintln!(
        "hand-over after SIGTERM: {} connections registered by node 1 {:?} after the signal",
        on2.len(),
        stopped.elapsed()
    );
    assert_eq!(
        reg.unregistrations(),
        before,
        "a hand-over sends no Expires: 0"
    );
    converged(&reg, &users, &[n1.ip], "after SIGTERM");

    // Node 3 comes back: it takes its share again.
    n3 = start_node(3, &pg, reg.addr);
    let owners = converged(&reg, &users, &[n1.ip, n3.ip], "node added");
    assert_eq!(owners.values().filter(|n| **n == n3.ip).count(), 6);

    // An API write on the node that does not hold a connection reaches
    // its holder: deactivating it there unregisters it from the holder.
    let list = n1.api.get("/v2/uac_connections").json();
    let api_conn = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["connection_name"]
                .as_str()
                .unwrap_or("")
                .starts_with("API")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no API connection in {list}"));
    let cid = api_conn["id"].as_str().unwrap();
    let user = api_conn["external_uac_settings"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let holder = owners[&user];
    let writer = if holder == n1.ip { &n3.api } else { &n1.api };
    let mark = reg.unregistrations();
    let r = writer.patch(
        &format!("/v2/uac_connections/{cid}"),
        &json!({"active": false}),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(
        poll_until(WAIT, || reg.unregistrations() > mark).is_ok(),
        "deactivating on one node did not unregister at the holder {holder}"
    );
    let last_unreg = reg
        .book()
        .seen
        .iter()
        .rev()
        .find(|s| s.expires == 0)
        .cloned()
        .unwrap();
    assert_eq!(last_unreg.user, user);
    assert_eq!(
        last_unreg.from, holder,
        "the holder unregisters, not the writer"
    );
    assert!(
        reg.book().refused.is_empty(),
        "refused: {:?}",
        reg.book().refused
    );
    drop(n1);
    drop(n3);
}

#[test]
fn a_database_outage_changes_nothing_within_the_lease_and_stops_refreshing_beyond_it() {
    // lease_sec 10: the nodes act until 8 s after their last heartbeat, so
    // a restart of PostgreSQL (about a second) fits well inside it.
    let mut pg = Postgres::start("cluster-outage-pg");
    let reg = Registrar::start(test_ip(37));
    let a = start_node_with(5, &pg, reg.addr, 10);
    let b = start_node_with(6, &pg, reg.addr, 10);
    let users: BTreeSet<String> = (0..FILE_CONNECTIONS).map(|i| format!("reg-c{i}")).collect();
    let owners = converged(&reg, &users, &[a.ip, b.ip], "2 nodes");

    // Short: stop and start again at once.
    pg.stop();
    pg.resume();
    // Let every connection refresh at least once more after the outage.
    let after = Instant::now();
    assert!(
        poll_until(WAIT, || {
            let src = reg.sources(after);
            users.iter().all(|u| src.contains_key(u))
        })
        .is_ok()
    );
    assert_eq!(
        converged(&reg, &users, &[a.ip, b.ip], "after a short outage"),
        owners,
        "a short outage moves nothing"
    );
    assert_eq!(reg.unregistrations(), 0);

    // Long: both nodes give up their registrations without unregistering.
    pg.stop();
    for n in [&a, &b] {
        n.uacd.wait_for_log(
            "database unreachable until our leases may have expired",
            WAIT,
        );
    }
    // An absence needs an observation window: one whole refresh period
    // (every binding would have been refreshed in it), database still down.
    let quiet_from = Instant::now();
    let window = Duration::from_millis(u64::from(GRANT) * 500 + 700);
    let _ = poll_until(window + Duration::from_secs(1), || {
        quiet_from.elapsed() > window
    });
    pg.resume();
    let resumed = Instant::now();
    let during: Vec<Seen> = reg
        .book()
        .seen
        .iter()
        .filter(|s| s.at >= quiet_from && s.at < resumed)
        .cloned()
        .collect();
    assert!(
        during.is_empty(),
        "REGISTERs sent with no valid lease: {during:?}"
    );
    assert_eq!(reg.unregistrations(), 0, "nothing unregistered");
    converged(&reg, &users, &[a.ip, b.ip], "after a long outage");
    assert!(
        reg.book().refused.is_empty(),
        "refused: {:?}",
        reg.book().refused
    );
}
