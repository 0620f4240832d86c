//! Registration state machine, pure: `(state, event) -> actions` (RFC 3261 §10.2).
//!
//! It decides what to send and when (initial REGISTER, digest answers per
//! §22.2, 423 Min-Expires per §10.2.8, refresh before the granted expiry,
//! backoff after failures, `Expires: 0` on stop). The driver in `driver.rs`
//! performs the I/O and turns responses and timers into [`Event`]s.

use std::net::SocketAddr;
use std::time::Duration;

use crate::sip::digest::{Challenge, NonceCounts};
use crate::sip::reason::canonical_reason;

/// The product's `registration_status` values, as the status endpoint
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegStatus {
    NotApplicable = 0,
    NotRegistered = 1,
    Failed = 2,
    Expired = 3,
    Success = 4,
    Unregistered = 5,
}

impl RegStatus {
    pub const ALL: [RegStatus; 6] = [
        RegStatus::NotApplicable,
        RegStatus::NotRegistered,
        RegStatus::Failed,
        RegStatus::Expired,
        RegStatus::Success,
        RegStatus::Unregistered,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// Human name as the product documents it.
    pub fn name(self) -> &'static str {
        match self {
            RegStatus::NotApplicable => "Not Applicable",
            RegStatus::NotRegistered => "Not Registered",
            RegStatus::Failed => "Failed",
            RegStatus::Expired => "Expired",
            RegStatus::Success => "Success",
            RegStatus::Unregistered => "Unregistered",
        }
    }

    /// Label value used in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            RegStatus::NotApplicable => "not_applicable",
            RegStatus::NotRegistered => "not_registered",
            RegStatus::Failed => "failed",
            RegStatus::Expired => "expired",
            RegStatus::Success => "success",
            RegStatus::Unregistered => "unregistered",
        }
    }
}

/// Which challenge header a digest answer goes back in (RFC 3261 §22.2/§22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// 401 WWW-Authenticate → Authorization.
    Www,
    /// 407 Proxy-Authenticate → Proxy-Authorization.
    Proxy,
}

/// One digest answer the driver must compute and attach (it adds the cnonce).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub kind: AuthKind,
    pub challenge: Challenge,
    pub nc: u32,
}

/// "Send a new REGISTER" (new branch, next CSeq, same Call-ID).
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub expires: u32,
    pub answers: Vec<Answer>,
}

/// Timers owned by the registration (the transaction timers are elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegTimer {
    /// Send the refresh REGISTER.
    Refresh,
    /// Try again after a failure.
    Retry,
    /// The granted binding runs out.
    Expiry,
}

/// A status snapshot to publish; the driver stamps it with wall-clock time.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub status: RegStatus,
    /// e.g. "200 OK", "408 Request Timeout".
    pub last_response: Option<String>,
    /// The target that accepted the registration.
    pub registered_target: Option<SocketAddr>,
    /// Time left on the binding, when registered.
    pub expires_in: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send(Register),
    Arm(RegTimer, Duration),
    Disarm(RegTimer),
    Publish(Published),
    /// Nothing more to do (stopped).
    Finished,
}

/// What the driver learnt from a final response to our REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: u16,
    /// Challenges from WWW-/Proxy-Authenticate that we can answer, already
    /// reduced to the strongest per realm.
    pub challenges: Vec<(AuthKind, Challenge)>,
    /// 2xx: expiry granted to our binding (Contact `expires`, else Expires).
    pub granted: Option<u32>,
    /// 2xx listed Contacts, but none of them is ours.
    pub binding_missing: bool,
    pub min_expires: Option<u32>,
    pub retry_after: Option<u32>,
    /// The peer that answered.
    pub source: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin registering.
    Start,
    Reply(Reply),
    /// Timer F fired on the REGISTER transaction.
    Timeout,
    /// Connect/send failure or the flow broke under the transaction.
    TransportError,
    Timer(RegTimer),
    /// The binding became unreachable: the TCP/TLS flow it lives on closed,
    /// or the address the registrar sees us at changed (RFC 3581).
    Rebind,
    /// Unregister (`Expires: 0`) and finish.
    Stop,
    /// The request in flight failed in a way that calls for the next DNS
    /// target (timeout, transport error, 503: RFC 3263 §4.3) and there is
    /// one: send it again there (new branch, same Call-ID, next CSeq).
    Failover,
    /// The registrar's name did not resolve (the reason says why).
    Unresolvable(String),
}

/// Policy knobs, from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub expires: u32,
    pub retry: Duration,
    pub max_retry: Duration,
    pub forbidden_retry: Duration,
    /// Timer F of the REGISTER transaction: refreshes leave room for it.
    pub timer_f: Duration,
}

/// [`Settings`]' waits as a machine keeps them, in `u32`s instead of a
/// 16-byte `Duration` each, because a machine lives as long as its
/// connection: the retry intervals in whole seconds, as the config gives
/// them (136 years before they saturate), Timer F in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waits {
    retry_s: u32,
    max_retry_s: u32,
    forbidden_retry_s: u32,
    timer_f_ms: u32,
}

impl Waits {
    fn new(s: &Settings) -> Waits {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Waits {
            retry_s: secs(s.retry),
            max_retry_s: secs(s.max_retry),
            forbidden_retry_s: secs(s.forbidden_retry),
            timer_f_ms: u32::try_from(s.timer_f.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// Digest answers allowed within one attempt before we call it a failure
/// (guards against a registrar that changes the nonce forever).
const MAX_AUTH_ROUNDS: u32 = 4;
/// Longest wait we honour from Retry-After.
const MAX_RETRY_AFTER: u32 = 86_400;

/// How long a failure waits before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Exponential backoff with jitter, or the registrar's Retry-After.
    Backoff { retry_after: Option<u32> },
    /// `forbidden_retry`: the registrar turned us away, with a 403 or by
    /// refusing our credentials. Trying sooner only adds failed
    /// authentications for a fail2ban to count (its defaults on Asterisk
    /// and FreePBX ban after 5 in 10 minutes).
    Refused,
}

const BACKOFF: Wait = Wait::Backoff { retry_after: None };

impl Wait {
    /// After a final response that is a failure.
    fn after(code: u16, retry_after: Option<u32>) -> Wait {
        match code {
            403 => Wait::Refused,
            _ => Wait::Backoff { retry_after },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// A REGISTER (or unregister) transaction is in flight.
    Sending,
    /// Between transactions: waiting for a refresh or retry timer.
    Waiting,
    Done,
}

/// The registration machine of one connection.
#[derive(Debug)]
pub struct Machine {
    waits: Waits,
    phase: Phase,
    /// Expires we ask for: configured value, raised by 423 Min-Expires.
    expires: u32,
    /// Highest Min-Expires a registrar demanded; never go below it again.
    expires_floor: u32,
    /// The registrar holds a binding of ours that has not expired yet.
    bound: bool,
    status: RegStatus,
    last_response: Option<String>,
    registered_target: Option<SocketAddr>,
    /// Last challenges, answered pre-emptively on refresh. Their nonces
    /// are also the ones the request in flight answered: the cache changes
    /// only on a challenge, after the refusal check, and then a new request
    /// goes out.
    challenges: Vec<(AuthKind, Challenge)>,
    nonces: NonceCounts,
    /// (kind, realm) answered in the request in flight from a challenge of
    /// this attempt (not a pre-emptive answer from the cache).
    in_flight_fresh: Vec<(AuthKind, String)>,
    /// Challenges received in this attempt.
    fresh: Vec<(AuthKind, String)>,
    in_flight_expires: u32,
    auth_rounds: u32,
    failures: u32,
    stopping: bool,
    rng: SplitMix64,
}

impl Machine {
    /// `seed` drives the jitter; give each connection its own.
    pub fn new(settings: Settings, seed: u64) -> Self {
        Machine {
            waits: Waits::new(&settings),
            phase: Phase::Idle,
            expires: settings.expires,
            expires_floor: 0,
            bound: false,
            status: RegStatus::NotRegistered,
            last_response: None,
            registered_target: None,
            challenges: Vec::new(),
            nonces: NonceCounts::default(),
            in_flight_fresh: Vec::new(),
            fresh: Vec::new(),
            in_flight_expires: settings.expires,
            auth_rounds: 0,
            failures: 0,
            stopping: false,
            rng: SplitMix64(seed),
        }
    }

    pub fn status(&self) -> RegStatus {
        self.status
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// True while the registrar holds an unexpired binding of ours.
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// The Expires value we currently ask for.
    pub fn requested_expires(&self) -> u32 {
        self.expires
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        match event {
            Event::Start => match self.phase {
                Phase::Idle => self.begin_attempt(),
                _ => Vec::new(),
            },
            Event::Reply(reply) if self.phase == Phase::Sending => self.on_reply(reply),
            Event::Timeout if self.phase == Phase::Sending => {
                self.on_failure(408, None, true, BACKOFF)
            }
            Event::TransportError if self.phase == Phase::Sending => {
                self.on_failure(503, None, true, BACKOFF)
            }
            Event::Unresolvable(why) if self.phase == Phase::Sending => {
                self.on_failure(503, Some(&why), true, BACKOFF)
            }
            Event::Failover if self.phase == Phase::Sending => self.on_failover(),
            Event::Timer(RegTimer::Expiry) => self.on_expiry(),
            Event::Timer(RegTimer::Refresh | RegTimer::Retry) if self.phase == Phase::Waiting => {
                self.begin_attempt()
            }
            Event::Rebind if self.phase == Phase::Waiting && self.bound => {
                // The binding is reachable only over that flow: register again
                // at once on a new one.
                let mut out = vec![Action::Disarm(RegTimer::Refresh)];
                out.extend(self.begin_attempt());
                out
            }
            Event::Stop => self.on_stop(),
            _ => Vec::new(),
        }
    }

    fn on_stop(&mut self) -> Vec<Action> {
        if self.stopping {
            return Vec::new();
        }
        self.stopping = true;
        match self.phase {
            // The reply to the request in flight decides (see on_reply).
            Phase::Sending => Vec::new(),
            Phase::Waiting if self.bound => {
                let mut out = vec![
                    Action::Disarm(RegTimer::Refresh),
                    Action::Disarm(RegTimer::Retry),
                ];
                self.auth_rounds = 0;
                self.fresh.clear();
                out.push(self.send(0));
                out
            }
            _ => self.finish(),
        }
    }

    /// True once told to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    fn on_failover(&mut self) -> Vec<Action> {
        if self.stopping {
            // Unregistering is bounded: the binding lives on the target that
            // failed, so there is nothing to remove elsewhere.
            return self.finish();
        }
        // Another server: its challenges are its own (RFC 3261 §22.2); the
        // cached answers are sent pre-emptively and may be refused once.
        self.auth_rounds = 0;
        self.fresh.clear();
        let expires = self.in_flight_expires;
        vec![self.send(expires)]
    }

    fn finish(&mut self) -> Vec<Action> {
        self.phase = Phase::Done;
        self.bound = false;
        self.status = RegStatus::Unregistered;
        vec![
            Action::Disarm(RegTimer::Refresh),
            Action::Disarm(RegTimer::Retry),
            Action::Disarm(RegTimer::Expiry),
            Action::Publish(self.published(None)),
            Action::Finished,
        ]
    }

    fn begin_attempt(&mut self) -> Vec<Action> {
        self.auth_rounds = 0;
        self.fresh.clear();
        let expires = self.expires;
        vec![self.send(expires)]
    }

    /// Builds a Send, answering the cached challenges pre-emptively.
    fn send(&mut self, expires: u32) -> Action {
        self.phase = Phase::Sending;
        self.in_flight_expires = expires;
        // Lives as long as the connection: sized to what it holds (one
        // challenge as a rule), not to a growing Vec's four. A refresh
        // starts with no challenge of its own, so it holds no allocation.
        self.in_flight_fresh = self.fresh.clone();
        let mut answers = Vec::with_capacity(self.challenges.len());
        for (kind, ch) in &self.challenges {
            let nc = self.nonces.next(&ch.realm, &ch.nonce);
            answers.push(Answer {
                kind: *kind,
                challenge: ch.clone(),
                nc,
            });
        }
        Action::Send(Register { expires, answers })
    }

    fn on_reply(&mut self, reply: Reply) -> Vec<Action> {
        let code = reply.code;
        let unregistering = self.in_flight_expires == 0;
        match code {
            100..=199 => Vec::new(),
            200..=299 if unregistering => {
                self.last_response = Some(response_text(code));
                self.finish()
            }
            200..=299 if self.stopping => {
                // We were told to stop while registering: remove what we just
                // created.
                self.bound = true;
                self.auth_rounds = 0;
                self.fresh.clear();
                vec![self.send(0)]
            }
            200..=299 => self.on_registered(reply),
            401 | 407 => self.on_challenge(reply),
            423 if !unregistering => match reply.min_expires {
                Some(min) if min > self.expires && min <= 86_400 => {
                    // RFC 3261 §10.2.8: retry at once with Min-Expires, and
                    // never ask for less later on.
                    self.expires_floor = self.expires_floor.max(min);
                    self.expires = self.expires.max(self.expires_floor);
                    let expires = self.expires;
                    vec![self.send(expires)]
                }
                _ => self.on_failure(code, None, false, Wait::after(code, reply.retry_after)),
            },
            _ => self.on_failure(code, None, false, Wait::after(code, reply.retry_after)),
        }
    }

    fn on_registered(&mut self, reply: Reply) -> Vec<Action> {
        let requested = self.in_flight_expires;
        if reply.binding_missing {
            return self.on_failure(reply.code, Some("binding missing"), false, BACKOFF);
        }
        // A registrar may shorten the expiry but not lengthen it (§10.2.4).
        let granted = reply.granted.unwrap_or(requested).min(requested);
        if granted == 0 {
            return self.on_failure(reply.code, Some("granted expiry 0"), false, BACKOFF);
        }
        self.phase = Phase::Waiting;
        self.bound = true;
        self.failures = 0;
        self.status = RegStatus::Success;
        self.last_response = Some(response_text(reply.code));
        self.registered_target = Some(reply.source);
        let expires_in = Duration::from_secs(u64::from(granted));
        let refresh = refresh_delay(
            granted,
            Duration::from_millis(u64::from(self.waits.timer_f_ms)),
            self.rng.unit(),
        );
        vec![
            Action::Disarm(RegTimer::Retry),
            Action::Arm(RegTimer::Expiry, expires_in),
            Action::Arm(RegTimer::Refresh, refresh),
            Action::Publish(self.published(Some(expires_in))),
        ]
    }

    fn on_challenge(&mut self, reply: Reply) -> Vec<Action> {
        if reply.challenges.is_empty() {
            // Nothing we can answer (unknown algorithm or scheme).
            return self.on_failure(reply.code, Some("no usable challenge"), false, BACKOFF);
        }
        // Refused again without stale=true: the same nonce, or a new one for
        // a realm we already answered in this attempt (registrars such as
        // Kamailio and Asterisk send a fresh nonce with every 401). The
        // credentials are wrong: answer once, and wait as after a 403, not
        // until fail2ban notices (RFC 3261 §22.2, RFC 7616 §3.4). stale=true
        // says only the nonce was old: answered at once (RFC 7616 §3.3).
        // A pre-emptive answer from the cache may be refused once.
        let refused = reply.challenges.iter().any(|(kind, ch)| {
            !ch.stale
                && (self.challenges.iter().any(|(_, c)| c.nonce == ch.nonce)
                    || self
                        .in_flight_fresh
                        .iter()
                        .any(|(k, realm)| k == kind && *realm == ch.realm))
        });
        if refused {
            self.challenges.clear();
            return self.on_failure(
                reply.code,
                Some("credentials refused"),
                false,
                Wait::Refused,
            );
        }
        if self.auth_rounds >= MAX_AUTH_ROUNDS {
            self.challenges.clear();
            return self.on_failure(reply.code, Some("too many challenges"), false, BACKOFF);
        }
        self.auth_rounds += 1;
        // Merge by (kind, realm): a 401 from the registrar must not drop the
        // answer to the outbound proxy's 407 (RFC 3261 §22.3).
        for (kind, ch) in reply.challenges {
            let key = (kind, ch.realm.clone());
            if !self.fresh.contains(&key) {
                self.fresh.reserve_exact(1);
                self.fresh.push(key);
            }
            match self
                .challenges
                .iter_mut()
                .find(|(k, c)| *k == kind && c.realm == ch.realm)
            {
                Some(slot) => slot.1 = ch,
                None => {
                    // Usually one challenge for the connection's lifetime:
                    // room for one, not Vec's default four (~330 bytes
                    // per connection).
                    self.challenges.reserve_exact(1);
                    self.challenges.push((kind, ch));
                }
            }
        }
        let expires = self.in_flight_expires;
        vec![self.send(expires)]
    }

    /// `soft`: a timeout or transport error (the binding, if any, may still
    /// be alive) rather than a final answer from the registrar.
    fn on_failure(&mut self, code: u16, why: Option<&str>, soft: bool, wait: Wait) -> Vec<Action> {
        self.last_response = Some(match why {
            Some(w) => format!("{} ({w})", response_text(code)),
            None => response_text(code),
        });
        if self.stopping {
            return self.finish();
        }
        self.phase = Phase::Waiting;
        self.failures = self.failures.saturating_add(1);
        let delay = match wait {
            Wait::Refused => secs(self.waits.forbidden_retry_s),
            Wait::Backoff {
                retry_after: Some(secs),
            } if secs > 0 => Duration::from_secs(u64::from(secs.min(MAX_RETRY_AFTER))),
            Wait::Backoff { .. } => backoff(
                self.failures,
                secs(self.waits.retry_s),
                secs(self.waits.max_retry_s),
                self.rng.unit(),
            ),
        };
        // A binding that is still alive keeps status Success until it
        // expires, unless the registrar itself refused us.
        if !(soft && self.bound) {
            self.status = RegStatus::Failed;
        }
        vec![
            Action::Disarm(RegTimer::Refresh),
            Action::Arm(RegTimer::Retry, delay),
            Action::Publish(self.published(None)),
        ]
    }

    fn on_expiry(&mut self) -> Vec<Action> {
        if !self.bound {
            return Vec::new();
        }
        self.bound = false;
        if self.status == RegStatus::Success {
            self.status = RegStatus::Expired;
            return vec![Action::Publish(self.published(None))];
        }
        Vec::new()
    }

    fn published(&self, expires_in: Option<Duration>) -> Published {
        Published {
            status: self.status,
            last_response: self.last_response.clone(),
            registered_target: self.registered_target,
            expires_in,
        }
    }
}

fn response_text(code: u16) -> String {
    format!("{code} {}", canonical_reason(code))
}

/// When to refresh a binding granted for `granted` seconds: on long expiries
/// leave room for two Timer F periods (a refresh that times out still has a
/// retry before expiry) plus up to 10 % jitter; refresh at 40–50 % on short
/// ones (the two formulas meet at 4·F), so connections do not synchronise.
/// `r` is uniform in [0, 1).
pub fn refresh_delay(granted: u32, timer_f: Duration, r: f64) -> Duration {
    let g = f64::from(granted);
    let f = timer_f.as_secs_f64();
    let secs = if g >= 4.0 * f {
        g - 2.0 * f - g * 0.1 * r
    } else {
        g * (0.5 - 0.1 * r)
    };
    Duration::from_secs_f64(secs.max(1.0))
}

/// Exponential backoff with ±25 % jitter: retry·2^(n-1), capped at `max`.
pub fn backoff(failures: u32, retry: Duration, max: Duration, r: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = retry.saturating_mul(1u32 << exp).min(max);
    let jittered = base.as_secs_f64() * (0.75 + 0.5 * r);
    Duration::from_secs_f64(jittered.clamp(1.0, max.as_secs_f64().max(1.0)))
}

/// Tiny deterministic generator (SplitMix64) so the machine stays pure.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
