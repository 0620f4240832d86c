//! Target health, pure: a target that timed out or failed at the transport
//! is "grey" for a while, so requests try the others first; a target that
//! answered is healthy again at once. Time is an input.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Transport;

pub type Key = (SocketAddr, Transport);

#[derive(Debug)]
pub struct Greylist {
    period: Duration,
    until: HashMap<Key, Instant>,
}

impl Greylist {
    pub fn new(period: Duration) -> Greylist {
        Greylist {
            period,
            until: HashMap::new(),
        }
    }

    /// Marks `key` as failed at `now`; true when it was not grey before
    /// (the caller logs the transition once).
    pub fn fail(&mut self, key: Key, now: Instant) -> bool {
        let was_grey = self.is_grey(key, now);
        self.until.insert(key, now + self.period);
        // Bounded: expired entries are dropped whenever the map grows.
        if self.until.len() > 1024 {
            self.until.retain(|_, t| *t > now);
        }
        !was_grey
    }

    /// The target answered: healthy again. True when it was grey.
    pub fn succeed(&mut self, key: Key, now: Instant) -> bool {
        self.until.remove(&key).is_some_and(|t| t > now)
    }

    pub fn is_grey(&self, key: Key, now: Instant) -> bool {
        self.until.get(&key).is_some_and(|t| *t > now)
    }
}

/// Moves the grey items to the end, keeping the relative order of both
/// groups (a stable partition): they stay available as a last resort.
pub fn demote<T>(items: &mut Vec<T>, mut grey: impl FnMut(&T) -> bool) {
    let (mut ok, bad): (Vec<T>, Vec<T>) = items.drain(..).partition(|t| !grey(t));
    ok.extend(bad);
    *items = ok;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8) -> Key {
        (SocketAddr::from(([127, 0, 0, last], 5060)), Transport::Udp)
    }

    #[test]
    fn grey_for_the_period_then_back() {
        let t0 = Instant::now();
        let mut g = Greylist::new(Duration::from_secs(30));
        assert!(!g.is_grey(key(1), t0));
        assert!(g.fail(key(1), t0));
        assert!(!g.fail(key(1), t0 + Duration::from_secs(1)), "already grey");
        assert!(g.is_grey(key(1), t0 + Duration::from_secs(30)));
        assert!(!g.is_grey(key(1), t0 + Duration::from_secs(32)));
        assert!(!g.is_grey(key(2), t0));
        // Same address, other transport: a different target.
        assert!(!g.is_grey((key(1).0, Transport::Tcp), t0));
    }

    #[test]
    fn an_answer_clears_it() {
        let t0 = Instant::now();
        let mut g = Greylist::new(Duration::from_secs(30));
        g.fail(key(1), t0);
        assert!(g.succeed(key(1), t0 + Duration::from_secs(2)));
        assert!(!g.is_grey(key(1), t0 + Duration::from_secs(2)));
        assert!(!g.succeed(key(1), t0 + Duration::from_secs(3)));
    }

    #[test]
    fn demote_is_a_stable_partition() {
        let mut v = vec![1, 2, 3, 4, 5, 6];
        demote(&mut v, |x| x % 2 == 0);
        assert_eq!(v, [1, 3, 5, 2, 4, 6]);
        let mut all = vec![1, 2];
        demote(&mut all, |_| true);
        assert_eq!(all, [1, 2]);
    }

    #[test]
    fn map_stays_bounded() {
        let t0 = Instant::now();
        let mut g = Greylist::new(Duration::from_secs(1));
        for i in 0..5000u32 {
            let k = (
                SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 5060)),
                Transport::Udp,
            );
            g.fail(k, t0 + Duration::from_secs(u64::from(i / 100)));
        }
        assert!(g.until.len() <= 1100, "{}", g.until.len());
    }
}
