//! Pure core of cluster ownership (driven by `cluster/node.rs`): which live
//! node should hold each connection (rendezvous hashing with bounded loads),
//! what a node must claim, release or give up given its view, and until when
//! its leases are valid. Time is an input; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// 64-bit FNV-1a of `node`, a separator and `id`: the rendezvous score of
/// the pair (stable across versions and platforms, unlike std's hasher).
fn score(node: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly on short inputs: finish like splitmix64.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The owner of each connection among `live` nodes: every node gets
/// ⌊N/k⌋ or ⌈N/k⌉ (the extra ones go to the first nodes by id), and each
/// connection goes to its highest-scoring node that still has room, the
/// pairs taken in descending score order. Deterministic: every node with
/// the same view computes the same map. A joining node takes about N/(k+1)
/// connections (those it scores highest), and a leaving node's share
/// spreads over the others, with few other moves (see the tests).
pub fn assign<'a>(ids: &[&'a str], live: &[&'a str]) -> HashMap<&'a str, &'a str> {
    let mut nodes: Vec<&str> = live.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    if nodes.is_empty() {
        return out;
    }
    let mut ids: Vec<&str> = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let (n, k) = (ids.len(), nodes.len());
    let mut room: Vec<usize> = (0..k).map(|i| n / k + usize::from(i < n % k)).collect();
    let mut pairs: Vec<(u64, u32, u32)> = Vec::with_capacity(n * k);
    for (c, id) in ids.iter().enumerate() {
        for (j, node) in nodes.iter().enumerate() {
            pairs.push((score(node, id), c as u32, j as u32));
        }
    }
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    for (_, c, j) in pairs {
        let (c, j) = (c as usize, j as usize);
        if room[j] == 0 || out.contains_key(ids[c]) {
            continue;
        }
        room[j] -= 1;
        out.insert(ids[c], nodes[j]);
        if out.len() == n {
            break;
        }
    }
    out
}

/// What one node does after a tick of the cluster loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Assigned to us and not running here: claim (a claim that returns
    /// nothing means another node still holds it).
    pub claim: Vec<String>,
    /// Running here but assigned to another live node, or deleted: stop
    /// (without unregistering) and release so that it is claimed at once.
    pub release: Vec<String>,
    /// Running here but the database no longer says we hold it (we were
    /// taken for dead): stop at once, never unregister.
    pub lost: Vec<String>,
}

/// Compares the desired assignment with what runs here (`running`) and
/// what the database says we hold (`held`).
pub fn plan(
    me: &str,
    desired: &HashMap<&str, &str>,
    running: &BTreeSet<String>,
    held: &BTreeMap<String, u64>,
) -> Plan {
    let mut p = Plan::default();
    for id in running {
        if !held.contains_key(id) {
            p.lost.push(id.clone());
        } else if desired.get(id.as_str()).is_none_or(|owner| *owner != me) {
            p.release.push(id.clone());
        }
    }
    let mut want: Vec<&str> = desired
        .iter()
        .filter(|(id, owner)| **owner == me && !running.contains(**id))
        .map(|(id, _)| *id)
        .collect();
    want.sort_unstable();
    p.claim = want.into_iter().map(str::to_owned).collect();
    // Held in the database but not running (a driver that ended, a lapse
    // that we recovered from) and not ours any more: hand it back.
    for id in held.keys() {
        if !running.contains(id) && desired.get(id.as_str()).is_none_or(|o| *o != me) {
            p.release.push(id.clone());
        }
    }
    p
}

/// How long our leases last as this node can know it: the database counts
/// `lease` from its own `now()` at our heartbeat's commit, which is after we
/// sent it; so we count from the send, and stop `margin` earlier still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    lease: Duration,
    margin: Duration,
    until: Option<Instant>,
}

impl Validity {
    pub fn new(lease: Duration) -> Validity {
        Validity {
            lease,
            margin: margin(lease),
            until: None,
        }
    }

    /// A heartbeat sent at `sent` was committed.
    pub fn renewed(&mut self, sent: Instant) {
        let until = sent + self.lease.saturating_sub(self.margin);
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// Whether this node may act on its leases at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Until when this node may act on its leases (none before a renewal).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Forgets the renewal (after giving everything up).
    pub fn reset(&mut self) {
        self.until = None;
    }
}

/// The safety margin before a lease's expiry: a fifth of it, at least
/// 500 ms (clock rate differences, scheduling delay).
pub fn margin(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_millis(500))
}

/// The interval of the cluster loop: a third of the lease, so that two
/// heartbeats in a row may fail before the margin is reached.
pub fn tick(lease: Duration) -> Duration {
    lease / 3
}

/// The first CSeq of a holder at fencing `epoch` (RFC 3261 §10.3 step 7: a
/// registrar refuses a REGISTER whose CSeq is not above the binding's for
/// the same Call-ID). Every claim raises the epoch, so the new holder starts
/// above anything an earlier holder sent, as long as one holder sends fewer
/// than 65,536 REGISTERs. CSeq stays below 2^31 (§8.1.1.5): epochs wrap at
/// 32,768.
pub fn cseq_base(epoch: u64) -> u32 {
    (((epoch & 0x7fff) as u32) << 16) | 1
}

#[cfg(test)]
mod tests;
