//! Log lines that the network causes (malformed messages, refused flows,
//! refused in-dialog requests), rate-limited per kind across every
//! transport and socket: an attacker who can make uacd log cannot fill the
//! disk or drown the lines that matter. One line per kind per
//! [`EVERY`]; the next line that gets through says how many were
//! suppressed since, and `uacd_log_lines_suppressed_total{kind}` counts
//! them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line per kind this often.
pub const EVERY: Duration = Duration::from_secs(5);

/// What caused a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A datagram or stream message that does not parse.
    Malformed,
    /// Bytes on a stream that cannot be framed (the flow is closed).
    Unframeable,
    /// An inbound flow refused at accept ([limits]).
    FlowRefused,
    /// An in-dialog request toward a hop its dialog did not advertise.
    InDialogRefused,
    /// A UDP receive queue overloaded (new requests answered 503).
    Overload,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Malformed,
        Kind::Unframeable,
        Kind::FlowRefused,
        Kind::InDialogRefused,
        Kind::Overload,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Malformed => "malformed",
            Kind::Unframeable => "unframeable",
            Kind::FlowRefused => "flow_refused",
            Kind::InDialogRefused => "in_dialog_refused",
            Kind::Overload => "receive_overload",
        }
    }
}

/// One kind's budget. Pure: time is an input (milliseconds on any
/// monotonic clock, 0 meaning "never logged").
#[derive(Debug, Default)]
pub struct Gate {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Gate {
    /// `Some(n)`: log now, `n` lines were suppressed since the last one;
    /// `None`: suppressed (and counted).
    pub fn allow(&self, now_ms: u64, every: Duration) -> Option<u64> {
        let now_ms = now_ms.max(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now_ms.saturating_sub(last) >= every)
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A gate that has logged nothing yet.
#[allow(clippy::declare_interior_mutable_const)]
const FRESH: Gate = Gate {
    last_ms: AtomicU64::new(0),
    suppressed: AtomicU64::new(0),
};

static GATES: [Gate; Kind::ALL.len()] = [FRESH; Kind::ALL.len()];

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether a line of `kind` may be logged now; `Some(suppressed)` to put in
/// it. A suppressed line is counted in the metric.
pub fn allow(kind: Kind) -> Option<u64> {
    let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let verdict = GATES[i].allow(now_ms(), EVERY);
    if verdict.is_none() {
        crate::metrics::log_suppressed(kind.label());
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_says_how_many_were_suppressed() {
        let g = Gate::default();
        let every = Duration::from_secs(5);
        assert_eq!(g.allow(1_000, every), Some(0));
        assert_eq!(g.allow(1_001, every), None);
        assert_eq!(g.allow(5_999, every), None);
        assert_eq!(g.allow(6_000, every), Some(2));
        assert_eq!(g.allow(6_001, every), None);
        assert_eq!(g.allow(60_000, every), Some(1));
        assert_eq!(g.allow(60_000, every), None);
    }

    #[test]
    fn time_zero_is_a_time_like_any_other() {
        let g = Gate::default();
        assert_eq!(g.allow(0, EVERY), Some(0));
        assert_eq!(g.allow(0, EVERY), None);
    }

    #[test]
    fn labels_are_the_exported_ones() {
        let labels: Vec<_> = Kind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels, crate::metrics::LOG_KINDS);
    }
}
