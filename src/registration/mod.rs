//! Registration (RFC 3261 §10): a pure state machine per connection
//! (`state`), the task that drives it (`driver`), the REGISTER it sends
//! (`request`) and the supervisor that owns every driver (`supervisor`).

mod driver;
mod request;
pub mod state;
mod status;
mod supervisor;

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub use driver::{Continuity, Snapshot};
pub use state::RegStatus;
pub use status::StatusCell;
pub use supervisor::{Applied, ConnectionStatus, Supervisor};

/// What every driver shares besides the daemon's context: the pace of new
/// attempts and the origin of the timer ticks.
pub(crate) struct Pacing {
    pub pacer: Pacer,
    /// Common origin of the refresh and retry timer ticks ([`coalesce`]).
    pub epoch: Instant,
}

/// Granularity of refresh and retry timers across all connections.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// `deadline` rounded up to the next `tick` after `epoch`. Refreshes and
/// retries are jittered over seconds, so thousands of them would otherwise
/// each wake the runtime on its own millisecond; on a shared tick they are
/// handled in one wake-up (a tick holds ~expiry/10 s of jitter spread: at
/// 10k connections and 3600 s, ~3 REGISTERs per tick).
/// Only ever later, by less than one tick; never earlier.
pub fn coalesce(epoch: Instant, deadline: Instant, tick: Duration) -> Instant {
    let Some(since) = deadline.checked_duration_since(epoch) else {
        return deadline;
    };
    let tick_ns = tick.as_nanos().max(1);
    let ticks = since.as_nanos().div_ceil(tick_ns);
    match u64::try_from(ticks * tick_ns) {
        Ok(ns) => epoch + Duration::from_nanos(ns),
        Err(_) => deadline,
    }
}

/// Spaces new registration attempts across all connections: at most
/// `rate` per second (`registration.max_register_rate_per_sec`). The lock
/// is held for a few instructions, never across an await.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(rate_per_sec: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / rate_per_sec.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// The instant of the next free slot, reserving it.
    pub fn reserve(&self) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let at = (*next).max(now);
        *next = at + self.interval;
        at
    }

    pub async fn wait(&self) {
        tokio::time::sleep_until(self.reserve()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_rounds_up_to_the_next_tick_and_never_earlier() {
        let epoch = Instant::now();
        let tick = Duration::from_millis(20);
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        assert_eq!(coalesce(epoch, at(0), tick), at(0));
        assert_eq!(coalesce(epoch, at(1), tick), at(20));
        assert_eq!(coalesce(epoch, at(20), tick), at(20));
        assert_eq!(coalesce(epoch, at(21), tick), at(40));
        assert_eq!(
            coalesce(epoch, epoch + Duration::from_micros(24_000_001), tick),
            at(24_020)
        );
        // Before the epoch (cannot happen for a timer armed later): as is.
        let early = epoch.checked_sub(Duration::from_millis(5)).unwrap();
        assert_eq!(coalesce(epoch, early, tick), early);
        for ns in [1u64, 7, 19_999_999, 20_000_001, 987_654_321] {
            let d = epoch + Duration::from_nanos(ns);
            let c = coalesce(epoch, d, tick);
            assert!(c >= d && c - d < tick, "{ns}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_slots_by_the_rate() {
        let p = Pacer::new(200);
        let t0 = Instant::now();
        let slots: Vec<_> = (0..5).map(|_| p.reserve() - t0).collect();
        assert_eq!(
            slots,
            (0..5)
                .map(|i| Duration::from_millis(5 * i))
                .collect::<Vec<_>>()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            p.reserve(),
            Instant::now(),
            "idle pacer does not bank slots"
        );
    }
}
