//! The dialogs we record-routed, by Call-ID: what the tokens cannot carry.
//!
//! Routing does not depend on this table: a dialog token
//! ([`super::token`]) proves by itself that an in-dialog request comes from
//! one end of a dialog and names the next hop the other end advertised when
//! the dialog was created, so BYE and ACK reach the right party after a
//! restart or once an entry is evicted. The route set cannot change during a
//! dialog (RFC 3261 §12.2.1.2), but the remote target can: a target refresh
//! (re-INVITE, UPDATE, or its 2xx; §12.2, RFC 3311) moves an end to a new
//! Contact that no token names. That move, made by a verified end in a
//! message we relayed, is what is kept here, together with whether the
//! dialog is confirmed (for `uacd_dialogs_active`).
//!
//! Bounded: at most `limits.dialogs` entries; when full, expired entries go
//! first, then the one closest to expiring. A dialog evicted or forgotten by
//! a restart keeps working toward its original targets; only a refreshed
//! target is then refused (403), which the UA answers like any failed
//! in-dialog request.
//!
//! Time is an input; the proxy passes `Instant::now()`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use std::net::SocketAddr;

use super::token::{Back, End, HopId, TOKEN_PARAM};
use crate::config::Transport;
use crate::sip::Message;

/// A confirmed dialog with no request through us for this long is
/// forgotten (a session timer, RFC 4028, refreshes it long before).
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// An early dialog (1xx with a To tag) not confirmed within this long.
pub const EARLY: Duration = Duration::from_secs(300);
/// How often a shard drops expired entries (on the next write to it).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many moved targets per end of a dialog.
const MAX_MOVES: usize = 8;
const SHARDS: usize = 32;

#[derive(Debug)]
struct Entry {
    confirmed: bool,
    expires: Instant,
    /// Targets each end moved to: `[Pbx, Destination]`.
    moved: [Vec<HopId>; 2],
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            confirmed: false,
            expires: now + EARLY,
            moved: [Vec::new(), Vec::new()],
        }
    }

    fn moved(&mut self, end: End) -> &mut Vec<HopId> {
        &mut self.moved[index(end)]
    }

    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

fn index(end: End) -> usize {
    match end {
        End::Pbx => 0,
        End::Destination => 1,
    }
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
    per_shard: usize,
}

/// The next hop a message advertises for requests toward its sender
/// (§12.1.1, §12.1.2): the Record-Route entry nearest to us among those the
/// sender's side added, else its Contact. `ours` tells our own Record-Route
/// entries; `request`: the message is a request (its sender's entries come
/// after ours) rather than a response (before ours).
pub fn advertised_hop(
    msg: &Message,
    request: bool,
    ours: impl Fn(&crate::sip::Uri) -> bool,
) -> HopId {
    let rr = msg.record_routes().unwrap_or_default();
    let theirs = if request {
        rr.iter().find(|r| !ours(&r.uri))
    } else {
        rr.iter().take_while(|r| !ours(&r.uri)).last()
    };
    if let Some(r) = theirs {
        return HopId::of(&r.uri);
    }
    msg.contacts()
        .ok()
        .and_then(|c| c.into_iter().next())
        .map_or_else(HopId::none, |c| HopId::of(&c.uri))
}

/// Where the destination's in-dialog requests go (its token names it): the
/// hop the PBX advertised in its INVITE ([`advertised_hop`]) and, for a PBX
/// behind NAT, the way back: the transport and source its INVITE came from.
/// A PBX behind NAT advertises a private Contact that nobody outside can
/// reach; requests to it go back where it sends from (the flow for TCP/TLS,
/// the address and port for UDP, as RFC 3581 does for responses). It is
/// behind NAT when its own Via names another address than the one its
/// INVITE came from (what makes a proxy add `received`, §18.2.1) and no
/// proxy of its side record-routed; a proxy in front of phones writes its
/// own address in Via, and requests then go to the phone's Contact.
pub fn pbx_end(
    invite: &Message,
    transport: Transport,
    source: SocketAddr,
) -> (HopId, Option<Back>) {
    let ours = |u: &crate::sip::Uri| u.params.contains(TOKEN_PARAM);
    let proxied = invite
        .record_routes()
        .is_ok_and(|rr| rr.iter().any(|r| !ours(&r.uri)));
    let natted = invite
        .top_via()
        .is_ok_and(|v| v.host.ip().map(|ip| ip.to_canonical()) != Some(source.ip().to_canonical()));
    let back = (natted && !proxied).then_some(Back {
        transport,
        addr: source,
    });
    (advertised_hop(invite, true, ours), back)
}

/// The Contact targets of a target refresh.
pub fn contact_hops(msg: &Message) -> Vec<HopId> {
    msg.contacts()
        .unwrap_or_default()
        .iter()
        .map(|c| HopId::of(&c.uri))
        .collect()
}

impl Dialogs {
    /// A table of at most `capacity` dialogs.
    pub fn new(now: Instant, capacity: usize) -> Dialogs {
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
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, call_id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(call_id) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of `call_id`, made room for and created when absent;
    /// `delta` gets the confirmed dialogs that had to go.
    fn entry<'s>(
        &self,
        shard: &'s mut Shard,
        call_id: &str,
        now: Instant,
        delta: &mut Delta,
    ) -> &'s mut Entry {
        *delta += sweep(shard, now, false);
        if !shard.map.contains_key(call_id) && shard.map.len() >= self.per_shard {
            *delta += sweep(shard, now, true);
            if shard.map.len() >= self.per_shard
                && let Some(victim) = shard
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                && shard.map.remove(&victim).is_some_and(|e| e.confirmed)
            {
                *delta -= 1;
            }
        }
        shard
            .map
            .entry(call_id.into())
            .or_insert_with(|| Entry::new(now))
    }

    /// A 1xx with a To tag or a 2xx (`confirmed`) to the INVITE of
    /// `call_id` created a dialog. Returns the change in the number of
    /// confirmed dialogs.
    pub fn learn(&self, call_id: &str, confirmed: bool, now: Instant) -> Delta {
        let mut shard = self.shard(call_id);
        let mut delta = 0;
        let entry = self.entry(&mut shard, call_id, now, &mut delta);
        if confirmed {
            if !entry.confirmed {
                delta += 1;
            }
            entry.confirmed = true;
            entry.expires = now + IDLE;
        }
        delta
    }

    /// `end` moved its target to `hops` in a target refresh we relayed from
    /// it (its token verified). A dialog we did not hold (a restart) is
    /// known from then on, as confirmed. Returns the change in the number of
    /// confirmed dialogs.
    pub fn moved(&self, call_id: &str, end: End, hops: Vec<HopId>, now: Instant) -> Delta {
        let mut shard = self.shard(call_id);
        let mut delta = 0;
        let entry = self.entry(&mut shard, call_id, now, &mut delta);
        if !entry.confirmed {
            entry.confirmed = true;
            delta += 1;
        }
        entry.expires = now + IDLE;
        let list = entry.moved(end);
        for h in hops {
            if !list.contains(&h) {
                if list.len() == MAX_MOVES {
                    list.remove(0);
                }
                list.push(h);
            }
        }
        delta
    }

    /// Whether a request of `call_id` from `holder` (its token verified but
    /// naming another hop) may go to `next`: a target the other end moved
    /// to. Use keeps the dialog alive.
    pub fn may_reach(&self, call_id: &str, holder: End, next: &HopId, now: Instant) -> bool {
        let mut shard = self.shard(call_id);
        let Some(entry) = shard.map.get_mut(call_id).filter(|e| e.live(now)) else {
            return false;
        };
        let ok = entry.moved(holder.other()).contains(next);
        if ok && entry.confirmed {
            entry.expires = now + IDLE;
        }
        ok
    }

    /// An in-dialog request of `call_id` went through: the dialog is alive.
    pub fn touch(&self, call_id: &str, now: Instant) {
        if let Some(e) = self.shard(call_id).map.get_mut(call_id)
            && e.confirmed
        {
            e.expires = now + IDLE;
        }
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

/// Drops expired entries, once per [`SWEEP_EVERY`] unless `now_anyway`;
/// returns the change in confirmed dialogs.
fn sweep(shard: &mut Shard, now: Instant, now_anyway: bool) -> Delta {
    if !now_anyway && now.saturating_duration_since(shard.swept) < SWEEP_EVERY {
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

    fn hop(s: &str) -> HopId {
        HopId::of(&s.parse().unwrap())
    }

    #[test]
    fn a_moved_target_is_reachable_from_the_other_end_only() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 1000);
        assert_eq!(d.learn("c1", true, t0), 1);
        // The destination re-INVITEs with a new Contact: the PBX may follow.
        assert_eq!(
            d.moved("c1", End::Destination, vec![hop("sip:203.0.113.9")], t0),
            0
        );
        assert!(d.may_reach("c1", End::Pbx, &hop("sip:203.0.113.9"), t0));
        assert!(
            !d.may_reach("c1", End::Destination, &hop("sip:203.0.113.9"), t0),
            "not to itself"
        );
        assert!(!d.may_reach("c1", End::Pbx, &hop("sip:192.0.2.66"), t0));
        assert!(!d.may_reach("c2", End::Pbx, &hop("sip:203.0.113.9"), t0));
    }

    #[test]
    fn a_refresh_after_a_restart_makes_the_dialog_known() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 1000);
        assert_eq!(
            d.moved("c1", End::Pbx, vec![hop("sip:198.51.100.7:5080")], t0),
            1
        );
        assert!(d.may_reach("c1", End::Destination, &hop("sip:198.51.100.7:5080"), t0));
        assert_eq!(d.forget("c1"), -1);
        assert!(!d.may_reach("c1", End::Destination, &hop("sip:198.51.100.7:5080"), t0));
    }

    #[test]
    fn confirming_twice_counts_once_and_forget_uncounts() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 1000);
        assert_eq!(d.learn("c1", false, t0), 0, "early");
        assert_eq!(d.learn("c1", true, t0), 1);
        assert_eq!(d.learn("c1", true, t0), 0, "second fork");
        assert_eq!(d.forget("c1"), -1);
        assert_eq!(d.forget("c1"), 0);
    }

    #[test]
    fn early_dialogs_go_when_the_invite_fails_confirmed_ones_stay() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 1000);
        d.learn("early", false, t0);
        d.forget_early("early");
        assert!(d.is_empty());
        d.learn("up", true, t0);
        d.forget_early("up");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn idle_dialogs_expire_use_keeps_them() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 100_000);
        let to = hop("sip:10.0.0.1");
        for c in ["busy", "idle"] {
            d.learn(c, true, t0);
            d.moved(c, End::Destination, vec![to.clone()], t0);
        }
        d.learn("early", false, t0);
        let t2 = t0 + IDLE - Duration::from_secs(1);
        assert!(d.may_reach("busy", End::Pbx, &to, t2));
        let t3 = t0 + IDLE + Duration::from_secs(1);
        assert!(d.may_reach("busy", End::Pbx, &to, t3));
        assert!(!d.may_reach("idle", End::Pbx, &to, t3));
        // The sweep on the next write drops the expired entries of a shard
        // and reports the confirmed ones.
        let mut gone = 0;
        for i in 0..(SHARDS * 32) {
            gone += d.learn(&format!("n{i}"), false, t3);
        }
        assert_eq!(gone, -1, "only 'idle' was confirmed and expired");
        assert_eq!(d.len(), SHARDS * 32 + 1);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_stalest() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, SHARDS * 2);
        let mut delta = 0;
        for i in 0..(SHARDS * 50) {
            delta += d.learn(&format!("c{i}"), true, t0 + Duration::from_secs(i as u64));
        }
        assert!(d.len() <= SHARDS * 2, "{}", d.len());
        assert_eq!(delta, d.len() as i64, "the gauge follows evictions");
        // The newest survive.
        let last = format!("c{}", SHARDS * 50 - 1);
        assert_eq!(d.forget(&last), -1);
    }

    #[test]
    fn moves_per_end_are_bounded() {
        let t0 = Instant::now();
        let d = Dialogs::new(t0, 1000);
        for i in 0..200 {
            d.moved(
                "c",
                End::Destination,
                vec![hop(&format!("sip:h{i}.example"))],
                t0,
            );
        }
        assert!(d.may_reach("c", End::Pbx, &hop("sip:h199.example"), t0));
        assert!(!d.may_reach("c", End::Pbx, &hop("sip:h0.example"), t0));
    }

    #[test]
    fn only_a_pbx_behind_nat_gets_a_way_back() {
        let source: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        let invite = |via: &str, rr: &str| {
            crate::routing::testdata::parse(format!(
                "INVITE sip:u@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP {via};rport;branch=z9hG4bK1\r\n\
{rr}From: <sip:a@b>;tag=1\r\nTo: <sip:u@d>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:200@10.1.2.3:5060>\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        let contact = hop("sip:10.1.2.3:5060");
        // Its Via names its private address: behind NAT.
        let (to, back) = pbx_end(&invite("10.1.2.3:5060", ""), Transport::Udp, source);
        assert_eq!(to, contact);
        assert_eq!(
            back,
            Some(Back {
                transport: Transport::Udp,
                addr: source
            })
        );
        // Its Via names where it sends from: its Contact is reachable.
        let (to, back) = pbx_end(&invite("203.0.113.7:40001", ""), Transport::Udp, source);
        assert_eq!((to, back), (contact, None));
        // A proxy of its side record-routed: requests go to that proxy.
        let rr = "Record-Route: <sip:edge.pbx.example;lr>\r\n";
        let (to, back) = pbx_end(&invite("10.1.2.3:5060", rr), Transport::Tcp, source);
        assert_eq!((to, back), (hop("sip:edge.pbx.example"), None));
    }

    #[test]
    fn advertised_hop_is_the_nearest_foreign_record_route_else_contact() {
        let ours = |u: &crate::sip::Uri| u.params.contains("uacd");
        let resp = crate::routing::testdata::parse(
            "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-ua-1\r\n\
Record-Route: <sip:far.example.net;lr>, <sip:Edge.Example.net;lr>, <sip:192.0.2.10;lr;uacd=t>\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:1006@203.0.113.5:5070>\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            advertised_hop(&resp, false, ours),
            hop("sip:edge.example.net")
        );
        let req = crate::routing::testdata::parse(
            "INVITE sip:1006@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1\r\n\
Record-Route: <sip:192.0.2.10;lr;uacd=t>, <sip:pbx-edge.example;lr>, <sip:far.example;lr>\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:200@198.51.100.7>\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            advertised_hop(&req, true, ours),
            hop("sip:pbx-edge.example")
        );
        let bare = crate::routing::testdata::parse(
            "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-ua-1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:1006@203.0.113.5:5070;transport=tcp>\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            advertised_hop(&bare, false, ours),
            hop("sip:203.0.113.5:5070;transport=tcp")
        );
    }
}
