//! The calls a connection has open, by Call-ID: what `inbound.channel_limit`
//! and `outbound.channel_limit` count, and the views of each call toward a
//! PBX ([`Mapping`]) that its in-dialog requests and responses need.
//!
//! A call is held from its INVITE until its dialog ends (a final response
//! to a BYE), its INVITE fails, or it expires: unanswered after
//! [`SETUP`], idle after [`super::dialogs::IDLE`]. Only calls that need an
//! entry get one (a connection with a limit, a call toward a PBX). Bounded
//! by `limits.dialogs`: when full, expired entries go first, then the one
//! closest to expiring. A call forgotten (a restart, an eviction) no longer
//! counts against its limit; a call toward a PBX whose views are forgotten
//! gets 481 for its in-dialog requests rather than the wrong CSeq.
//!
//! Time is an input; the proxy passes `Instant::now()`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::dialogs::IDLE;
use super::outbound::Mapping;

/// An unanswered call is forgotten after this long (longer than the
/// longest legitimate setup: every target silent, then ringing to
/// `timeout_2xx`, 600 s at most).
pub const SETUP: Duration = Duration::from_secs(30 * 60);
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long a call's views outlive its BYE: 64·T1, a non-INVITE
/// transaction's longest life (RFC 3261 §17.1.2.2).
pub const HANG_UP: Duration = Duration::from_secs(32);

/// Which way a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the PBX to `destination_uri`.
    Inbound,
    /// From the internal side toward the PBX.
    Outbound,
}

impl Direction {
    /// The `direction` label of `uacd_calls_total`.
    pub fn label(self) -> &'static str {
        self.metric().label()
    }

    pub fn metric(self) -> crate::metrics::CallDirection {
        match self {
            Direction::Inbound => crate::metrics::CallDirection::Inbound,
            Direction::Outbound => crate::metrics::CallDirection::Outbound,
        }
    }
}

#[derive(Debug)]
struct Entry {
    connection: Arc<str>,
    direction: Direction,
    /// Counted against the connection's limit of `direction`.
    counted: bool,
    mapping: Option<Mapping>,
    /// The caller's in-dialog requests toward the PBX still unanswered
    /// (a call toward a PBX), oldest first, at most [`MAX_PENDING`].
    pending: Vec<Pending>,
    answered: bool,
    expires: Instant,
}

/// At most this many in-dialog requests of one call wait for the PBX's
/// answer at once (RFC 3261 §14.1 allows one INVITE, plus BYE, INFO...).
pub const MAX_PENDING: usize = 4;

/// An in-dialog request relayed toward a PBX, kept until its final
/// response so that a challenge to it can be answered (§22.2).
#[derive(Clone, Debug)]
pub struct Pending {
    /// The branch of the caller's Via: its retransmissions carry it.
    pub origin_branch: String,
    /// The branch of our Via on what was sent last.
    pub branch: String,
    /// What was sent last (in the PBX's view, with our Via).
    pub request: crate::sip::Message,
    pub target: crate::dns::Target,
    /// Resent with credentials: a retransmission from the caller is
    /// answered with `request` again, not mapped anew.
    pub resent: bool,
    pub answered: super::outbound::Answered,
}

#[derive(Debug)]
struct Inner {
    map: HashMap<Box<str>, Entry>,
    /// Counted calls per connection and direction.
    open: HashMap<(Arc<str>, Direction), u32>,
    swept: Instant,
}

impl Inner {
    fn remove(&mut self, call_id: &str) -> Option<Entry> {
        let e = self.map.remove(call_id)?;
        self.uncount(&e);
        Some(e)
    }

    fn uncount(&mut self, e: &Entry) {
        if !e.counted {
            return;
        }
        let key = (e.connection.clone(), e.direction);
        if let Some(n) = self.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    fn sweep(&mut self, now: Instant, force: bool) {
        if !force && now < self.swept + SWEEP_EVERY {
            return;
        }
        self.swept = now;
        let dead: Vec<Box<str>> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.remove(&k);
        }
    }
}

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The connection has `channel_limit` calls of that direction open.
    ChannelLimit,
    /// A call with this Call-ID is held already: a second initial INVITE
    /// of it (retransmissions are absorbed by the server transaction,
    /// RFC 6026) is a loop or a merged request (RFC 3261 §8.2.2.2), and
    /// counting it apart would let one Call-ID take several channels.
    Held,
}

#[derive(Debug)]
pub struct Calls {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Calls {
    /// A table of at most `capacity` calls.
    pub fn new(now: Instant, capacity: usize) -> Calls {
        Calls {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                open: HashMap::new(),
                swept: now,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits the INVITE of `call_id` for `connection`: refused when the
    /// connection has `limit` calls of `direction` open, or when a call
    /// with that Call-ID is held already.
    pub fn admit(
        &self,
        call_id: &str,
        connection: &str,
        direction: Direction,
        limit: Option<u32>,
        mapping: Option<Mapping>,
        now: Instant,
    ) -> Result<(), Refused> {
        if limit.is_none() && mapping.is_none() {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.sweep(now, false);
        if inner.map.contains_key(call_id) {
            return Err(Refused::Held);
        }
        let connection: Arc<str> = connection.into();
        let key = (connection.clone(), direction);
        if let Some(limit) = limit {
            let open = inner.open.get(&key).copied().unwrap_or(0);
            if open >= limit {
                return Err(Refused::ChannelLimit);
            }
        }
        if inner.map.len() >= self.capacity {
            inner.sweep(now, true);
            if inner.map.len() >= self.capacity
                && let Some(victim) = inner
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                inner.remove(&victim);
            }
        }
        let counted = limit.is_some();
        if counted {
            *inner.open.entry(key).or_insert(0) += 1;
        }
        inner.map.insert(
            call_id.into(),
            Entry {
                connection,
                direction,
                counted,
                mapping,
                pending: Vec::new(),
                answered: false,
                expires: now + SETUP,
            },
        );
        Ok(())
    }

    /// The call was answered: held until idle for [`IDLE`].
    pub fn answered(&self, call_id: &str, now: Instant) {
        if let Some(e) = self.lock().map.get_mut(call_id) {
            e.answered = true;
            e.expires = now + IDLE;
        }
    }

    /// A request of the call went through.
    pub fn touch(&self, call_id: &str, now: Instant) {
        if let Some(e) = self.lock().map.get_mut(call_id).filter(|e| e.answered) {
            e.expires = now + IDLE;
        }
    }

    /// A BYE of the call went through: the dialog is over for both ends
    /// (RFC 3261 §15.1.1), so its channel is free at once, whether or not
    /// the BYE is ever answered; its views stay for the BYE's responses
    /// (and a challenge to it) until [`HANG_UP`] later.
    pub fn hang_up(&self, call_id: &str, now: Instant) {
        let mut inner = self.lock();
        let Some(e) = inner.map.get_mut(call_id) else {
            return;
        };
        let was_counted = std::mem::replace(&mut e.counted, false);
        e.expires = e.expires.min(now + HANG_UP);
        let key = (e.connection.clone(), e.direction);
        if was_counted && let Some(n) = inner.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.open.remove(&key);
            }
        }
    }

    /// The call is over (its INVITE failed, or its BYE was answered).
    pub fn end(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    /// The views of a call toward a PBX, if it is one still held.
    pub fn mapping(&self, call_id: &str, now: Instant) -> Option<Mapping> {
        self.lock()
            .map
            .get(call_id)
            .filter(|e| e.expires > now)
            .and_then(|e| e.mapping.clone())
    }

    /// Challenges answered so far in the call toward a PBX `call_id`
    /// ([`Mapping::cseq_offset`]).
    pub fn set_cseq_offset(&self, call_id: &str, offset: u32) {
        if let Some(m) = self
            .lock()
            .map
            .get_mut(call_id)
            .and_then(|e| e.mapping.as_mut())
        {
            m.cseq_offset = offset;
        }
    }

    /// The caller of a call toward a PBX moved its target ([`Mapping::follow_caller`]).
    pub fn follow_caller(&self, call_id: &str, msg: &crate::sip::Message) {
        if let Some(m) = self
            .lock()
            .map
            .get_mut(call_id)
            .and_then(|e| e.mapping.as_mut())
        {
            m.follow_caller(msg);
        }
    }

    /// The connection of a held call.
    pub fn connection(&self, call_id: &str) -> Option<Arc<str>> {
        self.lock().map.get(call_id).map(|e| e.connection.clone())
    }

    /// Keeps `p` until its final response; the oldest goes beyond
    /// [`MAX_PENDING`].
    pub fn add_pending(&self, call_id: &str, p: Pending) {
        if let Some(e) = self.lock().map.get_mut(call_id) {
            e.pending.retain(|q| q.origin_branch != p.origin_branch);
            if e.pending.len() >= MAX_PENDING {
                e.pending.remove(0);
            }
            e.pending.push(p);
        }
    }

    /// The pending request a retransmission from the caller (its Via
    /// branch `origin_branch`) stands for, once it was resent.
    pub fn resent(&self, call_id: &str, origin_branch: &str) -> Option<Pending> {
        self.lock()
            .map
            .get(call_id)?
            .pending
            .iter()
            .find(|p| p.resent && p.origin_branch == origin_branch)
            .cloned()
    }

    /// Removes and returns the pending request whose last copy went out
    /// with our branch `branch`.
    pub fn take_pending(&self, call_id: &str, branch: &str) -> Option<Pending> {
        let mut inner = self.lock();
        let e = inner.map.get_mut(call_id)?;
        let i = e.pending.iter().position(|p| p.branch == branch)?;
        Some(e.pending.remove(i))
    }

    /// Open calls of `connection` in `direction` (counted ones).
    pub fn open(&self, connection: &str, direction: Direction) -> u32 {
        let key: (Arc<str>, Direction) = (connection.into(), direction);
        self.lock().open.get(&key).copied().unwrap_or(0)
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_limit_counts_open_calls_and_ending_one_frees_it() {
        let now = t0();
        let c = Calls::new(now, 100);
        let d = Direction::Inbound;
        assert_eq!(c.admit("a", "conn", d, Some(2), None, now), Ok(()));
        assert_eq!(c.admit("b", "conn", d, Some(2), None, now), Ok(()));
        assert_eq!(
            c.admit("c", "conn", d, Some(2), None, now),
            Err(Refused::ChannelLimit)
        );
        // Other connections and the other direction have their own count.
        assert_eq!(c.admit("c", "other", d, Some(2), None, now), Ok(()));
        assert_eq!(
            c.admit("d", "conn", Direction::Outbound, Some(1), None, now),
            Ok(())
        );
        c.end("a");
        assert_eq!(c.open("conn", d), 1);
        assert_eq!(c.admit("e", "conn", d, Some(2), None, now), Ok(()));
    }

    #[test]
    fn a_bye_frees_the_channel_even_if_never_answered() {
        let now = t0();
        let c = Calls::new(now, 100);
        let d = Direction::Inbound;
        c.admit("a", "conn", d, Some(1), None, now).unwrap();
        c.answered("a", now);
        c.hang_up("a", now);
        assert_eq!(c.open("conn", d), 0);
        assert_eq!(c.admit("b", "conn", d, Some(1), None, now), Ok(()));
        // Its answer (or none) then changes nothing.
        c.end("a");
        assert_eq!(c.open("conn", d), 1);
        c.hang_up("a", now);
        assert_eq!(c.open("conn", d), 1);
    }

    #[test]
    fn the_same_call_id_is_refused_not_counted_twice() {
        let now = t0();
        let c = Calls::new(now, 100);
        let d = Direction::Outbound;
        c.admit("a", "conn", d, Some(1), None, now).unwrap();
        assert_eq!(
            c.admit("a", "conn", d, Some(1), None, now),
            Err(Refused::Held)
        );
        assert_eq!(c.open("conn", d), 1);
        // With room left too: one Call-ID never takes two channels, and the
        // refusal leaves the held call in place.
        assert_eq!(
            c.admit("a", "conn", d, Some(5), None, now),
            Err(Refused::Held)
        );
        assert_eq!(c.open("conn", d), 1);
        c.end("a");
        assert_eq!(c.open("conn", d), 0);
    }

    #[test]
    fn without_a_limit_or_views_nothing_is_held() {
        let now = t0();
        let c = Calls::new(now, 100);
        c.admit("a", "conn", Direction::Inbound, None, None, now)
            .unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn unanswered_calls_expire_after_setup_answered_ones_when_idle() {
        let now = t0();
        let c = Calls::new(now, 100);
        let d = Direction::Inbound;
        c.admit("a", "conn", d, Some(1), None, now).unwrap();
        c.admit("b", "other", d, Some(1), None, now).unwrap();
        c.answered("b", now);
        let later = now + SETUP + Duration::from_secs(1);
        // The sweep on the next admission frees the stale call's channel.
        assert_eq!(c.admit("x", "conn", d, Some(1), None, later), Ok(()));
        assert_eq!(
            c.admit("y", "other", d, Some(1), None, later),
            Err(Refused::ChannelLimit)
        );
        c.touch("b", later);
        let idle = later + IDLE + Duration::from_secs(1);
        assert_eq!(c.admit("z", "other", d, Some(1), None, idle), Ok(()));
    }

    #[test]
    fn a_full_table_evicts_the_call_closest_to_expiring() {
        let now = t0();
        let c = Calls::new(now, 2);
        let d = Direction::Inbound;
        c.admit("a", "conn", d, Some(10), None, now).unwrap();
        c.admit("b", "conn", d, Some(10), None, now + Duration::from_secs(1))
            .unwrap();
        c.answered("a", now + Duration::from_secs(2));
        c.admit("c", "conn", d, Some(10), None, now + Duration::from_secs(3))
            .unwrap();
        assert_eq!(c.len(), 2);
        // b (unanswered, oldest deadline) went, and its channel with it.
        assert_eq!(c.open("conn", d), 2);
        c.end("b");
        assert_eq!(c.open("conn", d), 2);
    }

    #[test]
    fn views_are_kept_and_their_offset_updated() {
        let now = t0();
        let c = Calls::new(now, 10);
        let invite = crate::sip::Message::parse_datagram(bytes::Bytes::from_static(
            b"INVITE sip:2000@u1.uac.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:app@10.0.0.1>;tag=ft\r\nTo: <sip:2000@u1.uac.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let m = Mapping::for_invite(&invite, "reg", "2000", "pbx.test", "sip:u1@192.0.2.10:5060")
            .unwrap();
        c.admit("c1", "conn", Direction::Outbound, None, Some(m), now)
            .unwrap();
        c.set_cseq_offset("c1", 1);
        assert_eq!(c.mapping("c1", now).map(|m| m.cseq_offset), Some(1));
        c.end("c1");
        assert_eq!(c.mapping("c1", now), None);
    }

    fn pending(origin: &str, ours: &str, resent: bool) -> Pending {
        let text = format!(
            "BYE sip:2000@pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch={ours}\r\n\
             Call-ID: a\r\nCSeq: 3 BYE\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\n\r\n"
        );
        Pending {
            origin_branch: origin.into(),
            branch: ours.into(),
            request: crate::sip::Message::parse_datagram(text.into_bytes().into()).unwrap(),
            target: crate::dns::Target {
                addr: "192.0.2.2:5060".parse().unwrap(),
                transport: crate::config::Transport::Udp,
                server_name: "pbx.example.com".into(),
            },
            resent,
            answered: Default::default(),
        }
    }

    #[test]
    fn a_retransmission_finds_the_resend_and_the_answer_takes_it() {
        let now = t0();
        let c = Calls::new(now, 100);
        c.admit("a", "conn", Direction::Outbound, Some(1), None, now)
            .unwrap();
        c.add_pending("a", pending("z9hG4bKcaller", "z9hG4bKours1", false));
        // Not resent yet: a retransmission is mapped and sent anew.
        assert!(c.resent("a", "z9hG4bKcaller").is_none());
        // Resent with credentials under a new branch of ours: it replaces
        // the first copy, and a retransmission gets that resend.
        c.add_pending("a", pending("z9hG4bKcaller", "z9hG4bKours2", true));
        let p = c.resent("a", "z9hG4bKcaller").expect("the resend");
        assert_eq!(p.branch, "z9hG4bKours2");
        assert!(c.resent("a", "z9hG4bKother").is_none());
        // The final response to the resend takes it; the first branch is gone.
        assert!(c.take_pending("a", "z9hG4bKours1").is_none());
        assert!(c.take_pending("a", "z9hG4bKours2").is_some());
        assert!(c.resent("a", "z9hG4bKcaller").is_none());
    }

    #[test]
    fn pending_requests_of_a_call_are_bounded() {
        let now = t0();
        let c = Calls::new(now, 100);
        c.admit("a", "conn", Direction::Outbound, Some(1), None, now)
            .unwrap();
        for i in 0..=MAX_PENDING {
            c.add_pending("a", pending(&format!("o{i}"), &format!("b{i}"), true));
        }
        // The oldest went; the newest MAX_PENDING stay.
        assert!(c.take_pending("a", "b0").is_none());
        for i in 1..=MAX_PENDING {
            assert!(c.take_pending("a", &format!("b{i}")).is_some(), "b{i}");
        }
        // A call that is not held keeps nothing.
        c.add_pending("zz", pending("o", "b", true));
        assert!(c.take_pending("zz", "b").is_none());
    }
}
