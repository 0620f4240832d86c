//! Receive-queue overload of a UDP socket (pure; time is an input).
//!
//! When the receive loop falls behind, datagrams wait in the socket's
//! receive queue, and once that queue is full the kernel drops new ones
//! without a word: an INVITE lost there costs its caller Timer B (32 s),
//! and its retransmissions add to the load. The kernel says both things with
//! every datagram it hands over, if asked: when the datagram arrived
//! (`SO_TIMESTAMPNS`, socket(7)) and how many datagrams it has dropped on
//! that socket so far (`SO_RXQ_OVFL`). From those the [`Detector`] decides
//! whether the socket is overloaded; while it is, new requests are refused
//! with 503 and Retry-After (RFC 3261 §21.5.4, the server is "temporarily
//! overloaded"), which is cheap and tells the caller at once, and everything
//! that finishes the calls already admitted (responses, ACK, BYE, CANCEL,
//! in-dialog requests) still goes through.

use std::time::Duration;

use tokio::time::Instant;

/// A datagram that waited longer than this in the receive queue means the
/// loop is behind. Far below T1 (500 ms), so callers are answered before
/// they retransmit; far above what scheduling jitter adds on a busy box.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);

/// How long new requests are refused after the last sign of overload: long
/// enough for the queue to drain, short enough that a burst costs little.
pub const HOLD: Duration = Duration::from_millis(500);

/// What the kernel said about one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// How long it waited in the receive queue (`None`: no timestamp).
    pub queued: Option<Duration>,
    /// The socket's drop counter when it was queued (0 until the first
    /// drop: the kernel attaches the counter only once it is nonzero).
    pub drops: u32,
}

/// What the receive loop does with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not overloaded: everything goes through.
    Normal,
    /// Overloaded: new requests are refused.
    Shed {
        /// Datagrams the kernel dropped since the previous reading.
        lost: u32,
        /// This reading started an episode (the socket was not overloaded
        /// before it): the moment to say so in the log.
        onset: bool,
    },
}

impl Verdict {
    pub fn overloaded(self) -> bool {
        matches!(self, Verdict::Shed { .. })
    }
}

/// One socket's overload state; owned by its receive loop.
#[derive(Debug, Default)]
pub struct Detector {
    drops: u32,
    until: Option<Instant>,
}

impl Detector {
    pub fn observe(&mut self, now: Instant, r: Reading) -> Verdict {
        // The counter only grows; it wraps after 2^32 drops.
        let lost = r.drops.wrapping_sub(self.drops);
        self.drops = r.drops;
        let late = r.queued.is_some_and(|q| q > MAX_QUEUE_DELAY);
        let active = self.until.is_some_and(|u| now < u);
        if lost > 0 || late {
            self.until = Some(now + HOLD);
            return Verdict::Shed {
                lost,
                onset: !active,
            };
        }
        if active {
            return Verdict::Shed {
                lost: 0,
                onset: false,
            };
        }
        self.until = None;
        Verdict::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(queued_ms: u64, drops: u32) -> Reading {
        Reading {
            queued: Some(Duration::from_millis(queued_ms)),
            drops,
        }
    }

    const fn shed(lost: u32, onset: bool) -> Verdict {
        Verdict::Shed { lost, onset }
    }

    #[test]
    fn a_prompt_socket_without_drops_is_never_overloaded() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i * 7);
            assert_eq!(d.observe(now, reading(i % 50, 0)), Verdict::Normal);
        }
        // No timestamp at all (the option could not be set): drops decide.
        let none = Reading {
            queued: None,
            drops: 0,
        };
        assert_eq!(
            d.observe(t0 + Duration::from_secs(1), none),
            Verdict::Normal
        );
    }

    #[test]
    fn a_late_datagram_starts_an_episode_that_lasts_hold_after_the_last_sign() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        assert_eq!(d.observe(t0, reading(51, 0)), shed(0, true));
        // Prompt again, but within HOLD of the last late one: still shed.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(d.observe(t1, reading(1, 0)), shed(0, false));
        // Another late one extends the episode from its own time.
        let t2 = t0 + Duration::from_millis(400);
        assert_eq!(d.observe(t2, reading(80, 0)), shed(0, false));
        assert_eq!(
            d.observe(t2 + HOLD - Duration::from_millis(1), reading(1, 0)),
            shed(0, false)
        );
        assert_eq!(d.observe(t2 + HOLD, reading(1, 0)), Verdict::Normal);
        // The next late one is a new episode.
        assert_eq!(d.observe(t2 + HOLD * 3, reading(60, 0)), shed(0, true));
    }

    #[test]
    fn the_queue_delay_limit_itself_is_not_late() {
        let mut d = Detector::default();
        let at_limit = Reading {
            queued: Some(MAX_QUEUE_DELAY),
            drops: 0,
        };
        assert_eq!(d.observe(Instant::now(), at_limit), Verdict::Normal);
    }

    #[test]
    fn kernel_drops_start_an_episode_whatever_the_delay_and_are_counted_once() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        assert_eq!(d.observe(t0, reading(0, 0)), Verdict::Normal);
        assert_eq!(d.observe(t0, reading(0, 7)), shed(7, true));
        // The same counter on the next datagram: nothing new was lost.
        assert_eq!(d.observe(t0, reading(0, 7)), shed(0, false));
        assert_eq!(d.observe(t0, reading(0, 10)), shed(3, false));
        let later = t0 + HOLD;
        assert_eq!(d.observe(later, reading(0, 10)), Verdict::Normal);
    }

    #[test]
    fn the_drop_counter_wraps() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        assert_eq!(
            d.observe(t0, reading(0, u32::MAX - 1)),
            shed(u32::MAX - 1, true)
        );
        assert_eq!(d.observe(t0, reading(0, 2)), shed(4, false));
    }
}
