//! Pure core of the stream flow policy, driven by `stream.rs`: how many
//! inbound TCP/TLS flows are admitted (in total and per source), and when a
//! flow is pinged or closed (idle inbound flows, a message whose headers do
//! not arrive in time, a keepalive ping that gets no pong: RFC 5626 §4.4.1).
//! Time is an input; nothing here touches a socket or a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitsConfig;

/// RFC 5626 §4.4.1: a ping without a pong within 10 s means the flow failed.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an inbound flow was turned away at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.inbound_flows` flows are open already.
    Total,
    /// `limits.inbound_flows_per_ip` flows from this source are open already.
    PerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "inbound_flows",
            Refusal::PerIp => "inbound_flows_per_ip",
        }
    }
}

/// The key one source is counted under: an IPv4 address, or the /64 of an
/// IPv6 one (a single host usually holds a whole /64, RFC 4291 §2.5.1), so
/// that one host cannot take every slot by rotating its interface IDs.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct SourceKey(u128);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => SourceKey((u128::from(v6) >> 64) << 64 | 1 << 63),
        }
    }
}

/// Inbound flows open now, in total and per source.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_source: usize,
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Admission {
        Admission {
            max_total,
            max_per_source,
            total: 0,
            per_source: HashMap::new(),
        }
    }

    /// Counts a new flow from `ip`, or says why it must be closed. Each
    /// `Ok` must be matched by one [`Admission::release`].
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = self.per_source.entry(SourceKey::of(ip)).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// A flow admitted from `ip` has ended.
    pub fn release(&mut self, ip: IpAddr) {
        let key = SourceKey::of(ip);
        if let Some(n) = self.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&key);
            }
            self.total -= 1;
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Flows open from `ip`'s source (its /64 for IPv6).
    pub fn from_source(&self, ip: IpAddr) -> usize {
        self.per_source
            .get(&SourceKey::of(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Sources with at least one flow (the map never holds more).
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

/// Who opened the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepted from a remote: closed when idle, never pinged (a ping would
    /// keep a stranger's flow alive for it).
    Inbound,
    /// Connected by us (towards a registrar or a destination): pinged when
    /// idle, and failed when a ping it has answered before goes unanswered.
    Outbound,
}

/// The deadlines of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Inbound: nothing received for this long closes the flow.
    pub idle: Duration,
    /// A message's first byte to its last (headers and announced body).
    pub message: Duration,
    /// Outbound: nothing received for this long sends a CRLFCRLF ping.
    pub keepalive: Duration,
    /// Outbound: a ping unanswered for this long fails the flow.
    pub pong: Duration,
}

impl Timeouts {
    pub fn from_limits(l: &LimitsConfig, keepalive: Duration) -> Timeouts {
        Timeouts {
            idle: Duration::from_secs(l.inbound_flow_idle_sec),
            message: Duration::from_secs(l.header_timeout_sec),
            keepalive,
            pong: PONG_TIMEOUT,
        }
    }
}

/// Why the policy closes a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// An inbound flow received nothing for `idle` and no registration uses it.
    Idle,
    /// A message begun on the flow was not complete within `message`.
    MessageTimeout,
    /// A ping went unanswered for `pong` on a flow that answers pings.
    PongTimeout,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::MessageTimeout => "header_timeout",
            CloseReason::PongTimeout => "pong_timeout",
        }
    }
}

/// What the driver does when [`FlowClock::deadline`] has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet (a deadline moved); ask again at the new deadline.
    Nothing,
    /// Send `\r\n\r\n` and call [`FlowClock::pinged`].
    Ping,
    /// Inbound and idle: close it unless a registration uses it; if one
    /// does, call [`FlowClock::in_use`].
    IdleCheck,
    /// Close the flow.
    Close(CloseReason),
}

/// What one read brought, as the framer saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Complete messages (and keepalives) taken off the buffer.
    pub frames: usize,
    /// Of those, pongs (`\r\n` alone).
    pub pongs: usize,
    /// The buffer now holds the start of a message not yet complete (a
    /// partial `\r\n\r\n` does not count: RFC 5626 §4.4.1 keepalives are
    /// not messages).
    pub mid_message: bool,
}

/// The deadlines of one flow and what they lead to.
#[derive(Clone, Debug)]
pub struct FlowClock {
    role: Role,
    t: Timeouts,
    /// Last time bytes arrived (or a registration was found using it).
    idle_from: Instant,
    /// When the first byte of the message being received arrived.
    message_since: Option<Instant>,
    /// When our last ping went out.
    last_ping: Option<Instant>,
    /// A ping was sent and nothing arrived since.
    awaiting_pong: bool,
    /// The peer has answered a ping on this flow: it does CRLF keepalives,
    /// so a missing pong means the flow is gone. A peer that never answered
    /// one (not every registrar implements RFC 5626) is pinged for the NAT
    /// binding's sake but not failed for silence.
    answers_pings: bool,
}

impl FlowClock {
    pub fn new(role: Role, t: Timeouts, now: Instant) -> FlowClock {
        FlowClock {
            role,
            t,
            idle_from: now,
            message_since: None,
            last_ping: None,
            awaiting_pong: false,
            answers_pings: false,
        }
    }

    /// Bytes arrived at `now` and were framed into `rx`.
    pub fn received(&mut self, now: Instant, rx: Received) {
        self.idle_from = now;
        // Any bytes show the flow is alive (a message may come before the pong).
        self.awaiting_pong = false;
        if rx.pongs > 0 {
            self.answers_pings = true;
        }
        self.message_since = match (rx.mid_message, rx.frames, self.message_since) {
            (false, _, _) => None,
            // The same message is still arriving: its clock keeps running.
            (true, 0, Some(since)) => Some(since),
            // A new message began in this read.
            (true, _, _) => Some(now),
        };
    }

    /// A ping was sent at `now`.
    pub fn pinged(&mut self, now: Instant) {
        self.last_ping = Some(now);
        self.awaiting_pong = true;
    }

    /// An idle inbound flow is used by a registration: keep it for another
    /// idle period.
    pub fn in_use(&mut self, now: Instant) {
        self.idle_from = now;
    }

    /// When [`FlowClock::due`] must next be asked.
    pub fn deadline(&self) -> Instant {
        let mut at = match self.role {
            Role::Inbound => self.idle_from + self.t.idle,
            Role::Outbound => self.next_ping(),
        };
        if let Some(since) = self.message_since {
            at = at.min(since + self.t.message);
        }
        if let Some(pong_by) = self.pong_deadline() {
            at = at.min(pong_by);
        }
        at
    }

    /// What to do at `now` (called once `now >= deadline()`, or earlier,
    /// which yields `Nothing`).
    pub fn due(&self, now: Instant) -> Due {
        if self
            .message_since
            .is_some_and(|since| now >= since + self.t.message)
        {
            return Due::Close(CloseReason::MessageTimeout);
        }
        if self.pong_deadline().is_some_and(|by| now >= by) {
            return Due::Close(CloseReason::PongTimeout);
        }
        match self.role {
            Role::Inbound if now >= self.idle_from + self.t.idle => Due::IdleCheck,
            Role::Outbound if now >= self.next_ping() => Due::Ping,
            _ => Due::Nothing,
        }
    }

    fn next_ping(&self) -> Instant {
        let last = match self.last_ping {
            Some(p) => p.max(self.idle_from),
            None => self.idle_from,
        };
        last + self.t.keepalive
    }

    fn pong_deadline(&self) -> Option<Instant> {
        match (self.role, self.awaiting_pong && self.answers_pings) {
            (Role::Outbound, true) => self.last_ping.map(|p| p + self.t.pong),
            _ => None,
        }
    }
}

/// How long to wait before restarting a listener loop that stopped: at
/// once the first time, then doubling up to 5 s while it keeps stopping
/// within a minute of starting (so a loop that always fails cannot spin).
pub fn restart_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    const MAX: Duration = Duration::from_secs(5);
    const STABLE: Duration = Duration::from_secs(60);
    match previous {
        _ if ran_for >= STABLE => Duration::ZERO,
        None => Duration::ZERO,
        Some(d) if d.is_zero() => Duration::from_millis(100),
        Some(d) => (d * 2).min(MAX),
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
