//! Registration (RFC 3261 §10): a pure state machine per connection
//! (`state`), the task that drives it (`driver`), the REGISTER it sends
//! (`request`) and the supervisor that owns every driver (`supervisor`).

mod driver;
mod request;
pub mod state;
mod supervisor;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::dns::Dns;
use crate::transaction::{Layer, client::Timers};
use crate::transport::Transports;

pub(crate) use driver::local_ip_towards;
pub use driver::{Snapshot, transport_for};
pub use state::RegStatus;
pub use supervisor::{Applied, ConnectionStatus, Supervisor};

/// What every driver shares.
pub struct Context {
    pub config: Arc<Config>,
    pub layer: Layer,
    pub transports: Transports,
    pub pacer: Pacer,
    pub timers: Timers,
    /// `sip.public_address`, parsed.
    pub public: Option<PublicAddress>,
    /// RFC 3263 resolution and target health, shared with routing.
    pub dns: Arc<Dns>,
    /// Common origin of the refresh and retry timer ticks ([`coalesce`]).
    pub epoch: Instant,
}

impl Context {
    pub fn new(
        config: Arc<Config>,
        layer: Layer,
        transports: Transports,
        dns: Arc<Dns>,
    ) -> Context {
        let public = config
            .sip
            .public_address
            .as_deref()
            .and_then(parse_host_port);
        Context {
            pacer: Pacer::new(config.registration.max_register_rate_per_sec),
            config,
            layer,
            transports,
            timers: Timers::default(),
            public,
            dns,
            epoch: Instant::now(),
        }
    }
}

/// Granularity of refresh and retry timers across all connections.
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// `deadline` rounded up to the next `tick` after `epoch`. Refreshes and
/// retries are jittered over seconds, so thousands of them would otherwise
/// each wake the runtime on its own millisecond; on a shared tick they are
/// handled in one wake-up. bench/register.sh 10000: the refresh cost per
/// REGISTER transaction was 1.5x the start-up burst's, with twice the time in
/// thread switches; 0.067-0.086 cpu-s per 1000 before, 0.055-0.060 with a
/// 20 ms tick, 0.043-0.051 with 100 ms. A tick holds ~expiry/10 s of jitter
/// spread: at 10k connections and 3600 s, ~3 REGISTERs per tick.
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

/// `sip.public_address`: the host as it goes into Via and Contact (IPv6
/// bracketed) and the optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddress {
    pub host: String,
    pub port: Option<u16>,
}

/// `1.2.3.4`, `1.2.3.4:5060`, `[::1]:5060`, `::1`, `edge.example.com[:5060]`.
fn parse_host_port(s: &str) -> Option<PublicAddress> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(PublicAddress {
            host: bracket(ip),
            port: None,
        });
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(PublicAddress {
            host: bracket(sa.ip()),
            port: Some(sa.port()),
        });
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse().ok().map(|ip| PublicAddress {
            host: bracket(ip),
            port: None,
        });
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some(PublicAddress {
            host: host.to_owned(),
            port: Some(port.parse().ok()?),
        }),
        None => Some(PublicAddress {
            host: s.to_owned(),
            port: None,
        }),
    }
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
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

    #[test]
    fn public_address_forms() {
        let p = |h: &str, port| {
            Some(PublicAddress {
                host: h.into(),
                port,
            })
        };
        assert_eq!(parse_host_port("203.0.113.10"), p("203.0.113.10", None));
        assert_eq!(
            parse_host_port("203.0.113.10:5070"),
            p("203.0.113.10", Some(5070))
        );
        assert_eq!(
            parse_host_port("[2001:db8::1]:5060"),
            p("[2001:db8::1]", Some(5060))
        );
        assert_eq!(parse_host_port("[2001:db8::1]"), p("[2001:db8::1]", None));
        assert_eq!(parse_host_port("2001:db8::1"), p("[2001:db8::1]", None));
        assert_eq!(
            parse_host_port("edge.example.com"),
            p("edge.example.com", None)
        );
        assert_eq!(
            parse_host_port("edge.example.com:5070"),
            p("edge.example.com", Some(5070))
        );
        assert_eq!(parse_host_port("edge.example.com:x"), None);
    }
}
