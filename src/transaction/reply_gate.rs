//! Who may get the daemon's own answers, and how many (issue: no
//! reflection, no amplification). Over UDP a source address is whatever the
//! sender wrote, so an answer is a packet aimed at whoever that is:
//! - a source that is not a verified party (a PBX of some connection,
//!   127.0.0.1 or ::1, a `sip.monitors` block) never gets more bytes than
//!   it sent: a larger answer is dropped;
//! - OPTIONS to the daemon is answered only for verified parties;
//! - error answers (4xx-6xx) to unverified sources are limited per source
//!   IP by a token bucket of `limits.error_replies_per_ip_per_sec` (one
//!   second's worth of burst), in a map bounded to [`MAX_TRACKED_IPS`], the
//!   stalest forgotten first. A PBX's own errors are not limited: a busy
//!   PBX during a registration outage must get its 480s at once, not after
//!   Timer B; and since answers copy the request's Via lines, a request
//!   forged with a PBX's address gets that PBX about as many bytes as the
//!   forger sent, no more.
//!
//! Pure: time is an input, nothing here sends.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Source IPs whose error budget is remembered at once.
pub const MAX_TRACKED_IPS: usize = 65_536;

/// The loopback exemption: exactly 127.0.0.1 and ::1 (and ::ffff:127.0.0.1),
/// where local health checks come from. The rest of 127.0.0.0/8 is treated
/// like any other address, so tests can play strangers there.
pub fn is_local_probe(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == std::net::Ipv6Addr::LOCALHOST
                || v6.to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

/// What to do with one answer the daemon built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Larger than the request, to an unverified source.
    TooLarge,
    /// An OPTIONS answer to an unverified source.
    NotVerified,
    /// Over the source's error budget.
    RateLimited,
}

impl Verdict {
    /// A bounded label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Send => "send",
            Verdict::TooLarge => "larger_than_request",
            Verdict::NotVerified => "unverified_source",
            Verdict::RateLimited => "error_rate_limited",
        }
    }
}

/// One answer to judge.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// The source is a verified party.
    pub verified: bool,
    /// The request is an OPTIONS (answered only to verified parties).
    pub options: bool,
    pub code: u16,
    pub request_len: usize,
    pub response_len: usize,
}

/// The size and OPTIONS rules; `take_error_token` is asked only for an
/// error answer that passed them (so a dropped answer costs no token).
pub fn judge(a: Answer, take_error_token: impl FnOnce() -> bool) -> Verdict {
    if !a.verified {
        if a.options && a.code < 300 {
            return Verdict::NotVerified;
        }
        if a.response_len > a.request_len {
            return Verdict::TooLarge;
        }
    }
    if a.code >= 400 && !a.verified && !take_error_token() {
        return Verdict::RateLimited;
    }
    Verdict::Send
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens in thousandths (integer arithmetic, no drift).
    milli: u64,
    refilled: Instant,
    /// Recency stamp in `ErrorBudget::order`.
    stamp: u64,
}

/// Per-IP token buckets for error answers, at most `cap` IPs.
#[derive(Debug)]
pub struct ErrorBudget {
    per_sec: u64,
    cap: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Recency stamp → IP, stalest first.
    order: BTreeMap<u64, IpAddr>,
    tick: u64,
}

impl ErrorBudget {
    /// `per_sec` answers a second per IP (at least 1), burst `per_sec`.
    pub fn new(per_sec: u32, cap: usize) -> ErrorBudget {
        ErrorBudget {
            per_sec: u64::from(per_sec.max(1)),
            cap: cap.max(1),
            buckets: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// IPs tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes one token for an answer to `ip` at `now`; false when none is left.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        let full = self.per_sec * 1000;
        self.tick += 1;
        let stamp = self.tick;
        let bucket = match self.buckets.get_mut(&ip) {
            Some(b) => {
                self.order.remove(&b.stamp);
                let elapsed = now.saturating_duration_since(b.refilled);
                let gained = refill(elapsed, self.per_sec);
                b.milli = (b.milli + gained).min(full);
                b.refilled = now;
                b.stamp = stamp;
                b
            }
            None => {
                while self.buckets.len() >= self.cap {
                    let Some((_, stalest)) = self.order.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&stalest);
                }
                self.buckets.entry(ip).or_insert(Bucket {
                    milli: full,
                    refilled: now,
                    stamp,
                })
            }
        };
        self.order.insert(stamp, ip);
        if bucket.milli >= 1000 {
            bucket.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Thousandths of a token gained over `elapsed` at `per_sec` a second.
fn refill(elapsed: Duration, per_sec: u64) -> u64 {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    ms.saturating_mul(per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn answer(verified: bool, code: u16, request_len: usize, response_len: usize) -> Answer {
        Answer {
            verified,
            options: false,
            code,
            request_len,
            response_len,
        }
    }

    #[test]
    fn only_the_two_loopback_addresses_are_exempt() {
        assert!(is_local_probe(ip("127.0.0.1")));
        assert!(is_local_probe(ip("::1")));
        assert!(is_local_probe(ip("::ffff:127.0.0.1")));
        assert!(!is_local_probe(ip("127.0.0.2")));
        assert!(!is_local_probe(ip("192.0.2.1")));
    }

    #[test]
    fn an_unverified_source_never_gets_more_than_it_sent() {
        assert_eq!(
            judge(answer(false, 404, 300, 301), || true),
            Verdict::TooLarge
        );
        assert_eq!(judge(answer(false, 404, 300, 300), || true), Verdict::Send);
        assert_eq!(
            judge(answer(false, 200, 100, 400), || true),
            Verdict::TooLarge
        );
        // A verified party gets its full answer.
        assert_eq!(judge(answer(true, 404, 300, 900), || true), Verdict::Send);
    }

    #[test]
    fn options_is_answered_only_to_verified_parties() {
        let mut a = answer(false, 200, 500, 300);
        a.options = true;
        assert_eq!(judge(a, || true), Verdict::NotVerified);
        a.verified = true;
        assert_eq!(judge(a, || true), Verdict::Send);
        // An error answer to a stranger's OPTIONS follows the error rules.
        let mut e = answer(false, 420, 500, 300);
        e.options = true;
        assert_eq!(judge(e, || true), Verdict::Send);
    }

    #[test]
    fn error_answers_spend_tokens_and_others_do_not() {
        let mut asked = 0;
        assert_eq!(
            judge(answer(false, 481, 300, 200), || {
                asked += 1;
                false
            }),
            Verdict::RateLimited
        );
        assert_eq!(
            judge(answer(false, 200, 300, 200), || {
                asked += 1;
                false
            }),
            Verdict::Send
        );
        // A dropped (too large) answer takes no token.
        assert_eq!(
            judge(answer(false, 403, 100, 200), || {
                asked += 1;
                true
            }),
            Verdict::TooLarge
        );
        assert_eq!(asked, 1);
        // Verified parties are not limited (and spend no token).
        assert_eq!(
            judge(answer(true, 503, 1, 900), || {
                asked += 1;
                false
            }),
            Verdict::Send
        );
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_bucket_allows_its_rate_then_refills_with_time() {
        let t0 = Instant::now();
        let mut b = ErrorBudget::new(10, 100);
        let a = ip("192.0.2.1");
        let allowed = (0..25).filter(|_| b.take(a, t0)).count();
        assert_eq!(allowed, 10, "one second's worth of burst");
        assert!(!b.take(a, t0 + Duration::from_millis(50)));
        // 100 ms is one token at 10/s.
        assert!(b.take(a, t0 + Duration::from_millis(150)));
        assert!(!b.take(a, t0 + Duration::from_millis(150)));
        // Refill stops at the burst size.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| b.take(a, later)).count(), 10);
        // Another IP has its own bucket.
        assert!(b.take(ip("192.0.2.2"), t0));
    }

    #[test]
    fn the_map_is_bounded_and_forgets_the_stalest_ip() {
        let t0 = Instant::now();
        let mut b = ErrorBudget::new(1, 3);
        let (x, y, z, w) = (
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
            ip("10.0.0.4"),
        );
        assert!(b.take(x, t0));
        assert!(b.take(y, t0));
        assert!(b.take(z, t0));
        // x is used again (denied: its token is spent), so y is the stalest.
        assert!(!b.take(x, t0));
        assert!(b.take(w, t0));
        assert_eq!(b.len(), 3);
        // y was forgotten: it starts with a full bucket; x was kept, still empty.
        assert!(b.take(y, t0));
        assert!(!b.take(x, t0));
        for i in 0..10_000u32 {
            b.take(IpAddr::from(i.to_be_bytes()), t0);
            assert!(b.len() <= 3);
        }
        assert_eq!(b.order.len(), b.buckets.len());
    }
}
