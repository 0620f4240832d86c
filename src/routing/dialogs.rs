//! The dialogs we record-routed, by Call-ID: which hosts each one's
//! in-dialog requests may be relayed to.
//!
//! The Record-Route token (HMAC of the Call-ID) proves that a route set was
//! made by us, but every party to the dialog has seen it: on its own it
//! would let a PBX send "in-dialog" requests through us to any host it
//! names in the Route or Request-URI. So a dialog's next hops are pinned to
//! what its two ends advertised (Contact and Record-Route of the INVITE and
//! of the 1xx/2xx that created it, then of target refreshes, §12.2), per
//! side: a request from the PBX (its source is the address the INVITE came
//! from, or the registrar's) may only go to the destination side's hosts,
//! and what the PBX advertises only ever becomes a PBX-side host. A PBX
//! therefore cannot point a dialog at a third party and use it; the
//! destination side (the trusted, internal one) may reach either side.
//!
//! Correctness does not depend on the table (RFC 3261 §16: the route set
//! carries the dialog): a dialog we do not know (the daemon restarted, or
//! it sat idle for [`IDLE`]) can still be torn down (BYE and ACK with a valid
//! token are relayed), while other requests get 481 (§12.2.2), which ends
//! the dialog cleanly at the UA (§14.1) rather than opening a relay.
//!
//! Time is an input; the proxy passes `Instant::now()`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sip::{Host, Message};

/// A confirmed dialog with no request through us for this long is
/// forgotten (a session timer, RFC 4028, refreshes it long before).
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// An early dialog (1xx with a To tag) not confirmed within this long.
pub const EARLY: Duration = Duration::from_secs(300);
/// How often a shard drops expired entries (on the next write to it).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many hosts per dialog (forks, long Record-Route sets).
const MAX_HOSTS: usize = 32;
const SHARDS: usize = 32;

/// What the table says about an in-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The dialog is known and the next hop is one of its ends.
    Allowed,
    /// The dialog is known and the next hop is not one of its ends.
    Forbidden,
    /// No such dialog here.
    Unknown,
}

/// The two ends of a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The customer's PBX (where the INVITE came from).
    Pbx,
    /// `destination_uri`'s side.
    Destination,
}

#[derive(Debug, Default)]
struct Entry {
    /// Addresses the PBX sends from.
    pbx_ips: Vec<IpAddr>,
    pbx_hosts: Vec<Host>,
    dest_hosts: Vec<Host>,
    confirmed: bool,
    expires: Option<Instant>,
}

impl Entry {
    fn hosts(&mut self, side: Side) -> &mut Vec<Host> {
        match side {
            Side::Pbx => &mut self.pbx_hosts,
            Side::Destination => &mut self.dest_hosts,
        }
    }

    fn add(&mut self, side: Side, hosts: impl IntoIterator<Item = Host>) {
        let list = self.hosts(side);
        for h in hosts {
            let h = normal(&h);
            if list.len() < MAX_HOSTS && !list.contains(&h) {
                list.push(h);
            }
        }
    }

    fn side_of(&self, source: IpAddr) -> Side {
        if self.pbx_ips.contains(&source) {
            Side::Pbx
        } else {
            Side::Destination
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e > now)
    }
}

/// What the PBX side of a new dialog is: where it sends from and what it
/// advertised in its INVITE.
#[derive(Debug, Clone, Default)]
pub struct PbxEnd {
    pub ips: Vec<IpAddr>,
    pub hosts: Vec<Host>,
}

#[derive(Debug)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
    swept: Instant,
}

/// What changed in the count of confirmed dialogs (for the gauge).
pub type Delta = i64;

#[derive(Debug)]
pub struct Dialogs {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Dialogs {
    fn default() -> Self {
        Dialogs::new(Instant::now())
    }
}

/// The hosts a message advertises for in-dialog requests: its Contact and
/// Record-Route URIs (§12.1.1, §12.1.2).
pub fn advertised_hosts(msg: &Message) -> Vec<Host> {
    let mut out = Vec::new();
    for na in msg
        .contacts()
        .unwrap_or_default()
        .into_iter()
        .chain(msg.record_routes().unwrap_or_default())
    {
        out.push(normal(&na.uri.host));
    }
    out
}

fn normal(h: &Host) -> Host {
    match h {
        Host::Domain(d) => Host::Domain(d.trim_end_matches('.').to_ascii_lowercase()),
        other => other.clone(),
    }
}

impl Dialogs {
    pub fn new(now: Instant) -> Dialogs {
        Dialogs {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        swept: now,
                    })
                })
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, call_id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(call_id) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a dialog of `call_id` created by a 1xx with a To tag or a
    /// 2xx (`confirmed`) from the destination side, which advertised
    /// `dest_hosts`. Returns the change in the number of confirmed dialogs.
    pub fn learn(
        &self,
        call_id: &str,
        pbx: &PbxEnd,
        dest_hosts: impl IntoIterator<Item = Host>,
        confirmed: bool,
        now: Instant,
    ) -> Delta {
        let mut shard = self.shard(call_id);
        let mut delta = sweep(&mut shard, now);
        let entry = shard.map.entry(call_id.into()).or_default();
        for ip in &pbx.ips {
            if entry.pbx_ips.len() < MAX_HOSTS && !entry.pbx_ips.contains(ip) {
                entry.pbx_ips.push(*ip);
            }
        }
        entry.add(Side::Pbx, pbx.hosts.iter().cloned());
        entry.add(Side::Destination, dest_hosts);
        if confirmed {
            if !entry.confirmed {
                delta += 1;
            }
            entry.confirmed = true;
            entry.expires = Some(now + IDLE);
        } else if !entry.confirmed {
            entry.expires = Some(now + EARLY);
        }
        delta
    }

    /// A target refresh (§12.2: a re-INVITE or UPDATE, or its 2xx, carries a
    /// new Contact) sent by `source` within a dialog we hold: its hosts join
    /// the sender's side. Unknown dialogs are left alone.
    pub fn refresh(&self, call_id: &str, source: IpAddr, hosts: impl IntoIterator<Item = Host>) {
        let mut shard = self.shard(call_id);
        if let Some(entry) = shard.map.get_mut(call_id) {
            let side = entry.side_of(source);
            entry.add(side, hosts);
        }
    }

    /// Whether an in-dialog request of `call_id` from `source` may go to
    /// `next`: from the PBX only to the destination side's hosts, from
    /// anywhere else to either side's. An allowed request keeps its dialog
    /// alive.
    pub fn check(&self, call_id: &str, source: IpAddr, next: &Host, now: Instant) -> Check {
        let next = normal(next);
        let mut shard = self.shard(call_id);
        let Some(entry) = shard.map.get_mut(call_id).filter(|e| e.live(now)) else {
            return Check::Unknown;
        };
        let allowed = match entry.side_of(source) {
            Side::Pbx => entry.dest_hosts.contains(&next),
            Side::Destination => {
                entry.dest_hosts.contains(&next) || entry.pbx_hosts.contains(&next)
            }
        };
        if !allowed {
            return Check::Forbidden;
        }
        if entry.confirmed {
            entry.expires = Some(now + IDLE);
        }
        Check::Allowed
    }

    /// The dialog ended (a final response to its BYE). Returns the change
    /// in the number of confirmed dialogs.
    pub fn forget(&self, call_id: &str) -> Delta {
        match self.shard(call_id).map.remove(call_id) {
            Some(e) if e.confirmed => -1,
            _ => 0,
        }
    }

    /// The INVITE failed: its early dialogs are gone (a confirmed dialog of
    /// the same Call-ID, from another fork, stays).
    pub fn forget_early(&self, call_id: &str) {
        let mut shard = self.shard(call_id);
        if shard.map.get(call_id).is_some_and(|e| !e.confirmed) {
            shard.map.remove(call_id);
        }
    }

    /// Number of dialogs held (early and confirmed).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops expired entries once per [`SWEEP_EVERY`]; returns the change in
/// confirmed dialogs.
fn sweep(shard: &mut Shard, now: Instant) -> Delta {
    if now.saturating_duration_since(shard.swept) < SWEEP_EVERY {
        return 0;
    }
    shard.swept = now;
    let mut delta = 0;
    shard.map.retain(|_, e| {
        let keep = e.live(now);
        if !keep && e.confirmed {
            delta -= 1;
        }
        keep
    });
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        match s.parse::<std::net::Ipv4Addr>() {
            Ok(a) => Host::V4(a),
            Err(_) => Host::Domain(s.into()),
        }
    }

    const PBX_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
    const DEST_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5));

    fn pbx() -> PbxEnd {
        PbxEnd {
            ips: vec![PBX_IP],
            hosts: vec![host("198.51.100.7"), host("Pbx.Example.")],
        }
    }

    #[test]
    fn pbx_requests_go_to_the_destination_side_only() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        let delta = d.learn("c1", &pbx(), [host("203.0.113.5")], true, t0);
        assert_eq!(delta, 1);
        assert_eq!(
            d.check("c1", PBX_IP, &host("203.0.113.5"), t0),
            Check::Allowed
        );
        assert_eq!(
            d.check("c1", PBX_IP, &host("pbx.example"), t0),
            Check::Forbidden,
            "the PBX cannot route to its own side through us"
        );
        assert_eq!(
            d.check("c1", PBX_IP, &host("192.0.2.66"), t0),
            Check::Forbidden
        );
        // The destination side reaches the PBX (case and root dot ignored).
        assert_eq!(
            d.check("c1", DEST_IP, &host("pbx.example"), t0),
            Check::Allowed
        );
        assert_eq!(
            d.check("c1", DEST_IP, &host("192.0.2.66"), t0),
            Check::Forbidden
        );
        assert_eq!(
            d.check("c2", PBX_IP, &host("203.0.113.5"), t0),
            Check::Unknown
        );
    }

    #[test]
    fn a_pbx_target_refresh_never_opens_a_third_party() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        d.learn("c1", &pbx(), [host("203.0.113.5")], true, t0);
        // The PBX re-INVITEs with Contact: victim. It joins the PBX side...
        d.refresh("c1", PBX_IP, [host("192.0.2.66")]);
        // ...so the destination can follow the PBX there, the PBX cannot.
        assert_eq!(
            d.check("c1", DEST_IP, &host("192.0.2.66"), t0),
            Check::Allowed
        );
        assert_eq!(
            d.check("c1", PBX_IP, &host("192.0.2.66"), t0),
            Check::Forbidden
        );
        // The destination moves its target: the PBX may follow.
        d.refresh("c1", DEST_IP, [host("203.0.113.9")]);
        assert_eq!(
            d.check("c1", PBX_IP, &host("203.0.113.9"), t0),
            Check::Allowed
        );
        // Unknown dialogs are not created by a refresh.
        d.refresh("unknown", DEST_IP, [host("203.0.113.9")]);
        assert_eq!(
            d.check("unknown", DEST_IP, &host("203.0.113.9"), t0),
            Check::Unknown
        );
    }

    #[test]
    fn confirming_twice_counts_once_and_forget_uncounts() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        assert_eq!(
            d.learn("c1", &pbx(), [host("10.0.0.1")], false, t0),
            0,
            "early"
        );
        assert_eq!(d.learn("c1", &pbx(), [host("10.0.0.2")], true, t0), 1);
        assert_eq!(
            d.learn("c1", &pbx(), [host("10.0.0.3")], true, t0),
            0,
            "second fork"
        );
        assert_eq!(
            d.check("c1", PBX_IP, &host("10.0.0.1"), t0),
            Check::Allowed,
            "early hosts kept"
        );
        assert_eq!(d.forget("c1"), -1);
        assert_eq!(d.forget("c1"), 0);
        assert_eq!(d.check("c1", PBX_IP, &host("10.0.0.1"), t0), Check::Unknown);
    }

    #[test]
    fn early_dialogs_go_when_the_invite_fails_confirmed_ones_stay() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        d.learn("early", &pbx(), [host("10.0.0.1")], false, t0);
        d.forget_early("early");
        assert!(d.is_empty());
        d.learn("up", &pbx(), [host("10.0.0.1")], true, t0);
        d.forget_early("up");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn idle_dialogs_expire_use_keeps_them() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        d.learn("busy", &pbx(), [host("10.0.0.1")], true, t0);
        d.learn("idle", &pbx(), [host("10.0.0.1")], true, t0);
        d.learn("early", &pbx(), [host("10.0.0.1")], false, t0);
        let t1 = t0 + EARLY + Duration::from_secs(1);
        assert_eq!(
            d.check("early", PBX_IP, &host("10.0.0.1"), t1),
            Check::Unknown
        );
        let t2 = t0 + IDLE - Duration::from_secs(1);
        assert_eq!(
            d.check("busy", PBX_IP, &host("10.0.0.1"), t2),
            Check::Allowed
        );
        let t3 = t0 + IDLE + Duration::from_secs(1);
        assert_eq!(
            d.check("busy", PBX_IP, &host("10.0.0.1"), t3),
            Check::Allowed
        );
        assert_eq!(
            d.check("idle", PBX_IP, &host("10.0.0.1"), t3),
            Check::Unknown
        );
        // The sweep on the next write drops the expired entries of a shard
        // and reports the confirmed ones.
        let mut gone = 0;
        for i in 0..(SHARDS * 32) {
            gone += d.learn(&format!("n{i}"), &PbxEnd::default(), [], false, t3);
        }
        assert_eq!(gone, -1, "only 'idle' was confirmed and expired");
        assert_eq!(d.len(), SHARDS * 32 + 1);
    }

    #[test]
    fn hosts_per_dialog_are_bounded() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0);
        let many: Vec<Host> = (0..200).map(|i| host(&format!("h{i}.example"))).collect();
        d.learn("c", &pbx(), many, true, t0);
        assert_eq!(
            d.check("c", PBX_IP, &host("h0.example"), t0),
            Check::Allowed
        );
        assert_eq!(
            d.check("c", PBX_IP, &host("h199.example"), t0),
            Check::Forbidden
        );
    }

    #[test]
    fn advertised_hosts_are_contact_and_record_route() {
        let msg = crate::routing::testdata::parse(
            "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-ua-1\r\n\
Record-Route: <sip:edge.example.net;lr>, <sip:192.0.2.10;lr;uacd=t>\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:1006@203.0.113.5:5070>\r\nContent-Length: 0\r\n\r\n",
        );
        let hosts = advertised_hosts(&msg);
        assert_eq!(
            hosts,
            vec![
                host("203.0.113.5"),
                host("edge.example.net"),
                host("192.0.2.10")
            ]
        );
    }
}
