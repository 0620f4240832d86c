//! Drives `state.rs`: one task per connection carries out its registration
//! machine's actions. It resolves the registrar, runs REGISTER
//! transactions, computes digest answers, keeps the refresh/retry/expiry
//! timers and publishes status snapshots. No thread, no lock on the message
//! path.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use super::Pacing;
use super::request::{RegisterRequest, build, stale_bindings, to_reply};
use super::state::{
    Action, AuthKind, Event, Machine, Published, RegStatus, RegTimer, Register, Reply, Settings,
};
use super::status::StatusCell;
use crate::config::{Connection, ProxyUri, Transport};
use crate::context::{Context, local_ip_towards};
use crate::dns::{Failure, Query, Target};
use crate::metrics::{self, RegisterOutcome};
use crate::sip::digest::{self, Credentials};
use crate::sip::{Host, Message, Method};
use crate::transaction::{TxError, new_branch};
use crate::transport::Hop;
use crate::transport::keepalive::KeepaliveGuard;

/// What the API and metrics read about a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: RegStatus,
    /// e.g. "200 OK", "401 Unauthorized", "408 Request Timeout".
    pub last_response: Option<String>,
    /// The registrar that accepted us.
    pub last_registered_ip: Option<SocketAddr>,
    pub updated_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    /// The TCP/TLS flow the binding lives on (calls from the PBX may come
    /// back over it).
    pub flow: Option<u64>,
}

impl Snapshot {
    pub fn new(status: RegStatus) -> Snapshot {
        Snapshot {
            status,
            last_response: None,
            last_registered_ip: None,
            updated_at: SystemTime::now(),
            expires_at: None,
            flow: None,
        }
    }
}

type Inflight = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Longest timer the driver arms.
const MAX_TIMER: Duration = Duration::from_secs(365 * 86_400);

/// Which target the next REGISTER goes to.
#[derive(Debug, Clone)]
enum Aim {
    /// A new attempt: resolve afresh; the target that accepted us goes
    /// first while DNS still lists it.
    Fresh { pinned: Option<Target> },
    /// `targets[index]`: the same target again (digest answer, 423) or the
    /// next one after a failure.
    At {
        targets: Arc<[Target]>,
        index: usize,
    },
}

/// Result of one REGISTER transaction, as the machine will see it.
struct Outcome {
    event: Event,
    /// The ordered targets of this attempt and the one used.
    targets: Option<(Arc<[Target]>, usize)>,
    /// The hop used (to watch a TCP/TLS flow for closure).
    hop: Option<Hop>,
    /// Our address as the registrar saw it (Via received/rport).
    seen_as: Option<SocketAddr>,
    /// The Contact address we advertised in this request.
    advertised: Option<SocketAddr>,
    /// The local IP the kernel routes towards the registrar, when the
    /// listener is a wildcard (cached so that a REGISTER costs no extra
    /// socket).
    route: Option<(SocketAddr, IpAddr)>,
    /// Cluster mode: bindings of earlier holders that the 2xx listed.
    stale: Vec<String>,
}

/// Cluster mode: what a driver continues from the connection's earlier
/// holders: the Call-ID every holder uses, and this holding's CSeq counter
/// (started above every CSeq of earlier holders: `cluster::lease::cseq_base`).
#[derive(Clone, Debug)]
pub struct Continuity {
    pub call_id: Arc<str>,
    pub cseq: Arc<AtomicU32>,
}

/// Cluster mode: what a driver of a connection this node holds keeps.
struct Holding {
    /// The CSeq counter of this node's holding, shared by every driver it
    /// starts for the connection (RFC 3261 §10.3 step 7).
    cseq: Arc<AtomicU32>,
    /// Earlier holders' Contacts to remove in the next REGISTER
    /// (`expires=0`), and those already removed once.
    remove: Vec<String>,
    removed: std::collections::HashSet<String>,
}

pub(super) struct Driver {
    ctx: Arc<Context>,
    pace: Arc<Pacing>,
    conn: Arc<Connection>,
    machine: Machine,
    call_id: Arc<str>,
    from_tag: Arc<str>,
    cseq: u32,
    /// Cluster mode only, so boxed: a driver lives as long as its
    /// connection, and at 10,000 connections every byte of it is 10 kB.
    holding: Option<Box<Holding>>,
    /// Where it publishes, and reads the supervisor's stop request.
    status: Arc<StatusCell>,
    refresh_at: Option<Instant>,
    retry_at: Option<Instant>,
    expiry_at: Option<Instant>,
    hop: Option<Hop>,
    /// Address learnt from the registrar's Via (RFC 3581) when no
    /// `sip.public_address` is set.
    learned: Option<SocketAddr>,
    /// Last `(registrar, local IP towards it)` found for a wildcard listener.
    route: Option<(SocketAddr, IpAddr)>,
    /// Target of the next REGISTER of this attempt, `targets[index]` (a
    /// digest answer, a 423, the next target after a failure); `None` when
    /// the next REGISTER begins an attempt ([`Aim::Fresh`]).
    aim: Option<(Arc<[Target]>, usize)>,
    /// The target that accepted the registration.
    pinned: Option<Target>,
    /// Keeps the NAT binding toward the registrar open while registered
    /// over UDP (`registration.udp_keepalive_sec`).
    keepalive: Option<KeepaliveGuard>,
}

impl Driver {
    pub(super) fn new(
        ctx: Arc<Context>,
        pace: Arc<Pacing>,
        conn: Arc<Connection>,
        status: Arc<StatusCell>,
        continuity: Option<Continuity>,
    ) -> Driver {
        let r = &ctx.config.registration;
        let settings = Settings {
            expires: conn.external_uac_settings.expiration_sec,
            retry: Duration::from_secs(r.retry_interval_sec),
            max_retry: Duration::from_secs(r.max_retry_interval_sec),
            forbidden_retry: Duration::from_secs(r.forbidden_retry_interval_sec),
            timer_f: ctx.timers.timeout(),
        };
        let seed: u64 = rand::random();
        Driver {
            machine: Machine::new(settings, seed),
            call_id: continuity.as_ref().map_or_else(
                || format!("{:032x}@uacd", rand::random::<u128>()).into(),
                |c| c.call_id.clone(),
            ),
            from_tag: format!("{:016x}", rand::random::<u64>()).into(),
            cseq: rand::random_range(1..10_000),
            holding: continuity.map(|c| {
                Box::new(Holding {
                    cseq: c.cseq,
                    remove: Vec::new(),
                    removed: std::collections::HashSet::new(),
                })
            }),
            ctx,
            pace,
            conn,
            status,
            refresh_at: None,
            retry_at: None,
            expiry_at: None,
            hop: None,
            learned: None,
            route: None,
            aim: None,
            pinned: None,
            keepalive: None,
        }
    }

    /// Boxed: an `async fn` taking `self` by value keeps two copies of it
    /// (argument and local, 680 bytes each) in its state for the life of the
    /// connection; with a box both are pointers.
    pub(super) async fn run(mut self: Box<Self>) {
        // Spread the start so thousands of connections do not register in
        // the same millisecond; the shared pacer caps the global rate.
        let delay = Duration::from_millis(rand::random_range(0..250));
        tokio::select! {
            _ = self.status.stopped() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        let mut inflight: Option<Inflight> = None;
        let mut stop_seen = false;
        let actions = if self.status.is_stopped() {
            stop_seen = true;
            self.machine.step(Event::Stop)
        } else {
            self.machine.step(Event::Start)
        };
        self.apply(actions, &mut inflight, true);
        while !self.machine.is_done() {
            // One sleep for the earliest of the three timers (one timer entry
            // per connection instead of three, re-armed per loop), and a
            // plain `Sleep` in the select: the task's future is as large as
            // this loop's futures, for as long as the connection lives.
            let next = crate::transaction::first_armed([
                (self.refresh_at, RegTimer::Refresh),
                (self.retry_at, RegTimer::Retry),
                (self.expiry_at, RegTimer::Expiry),
            ]);
            // (Not polled when no timer is armed.)
            let (due, timer) = next.unwrap_or((self.pace.epoch, RegTimer::Expiry));
            // The signal before the flag: a stop request in between still
            // wakes it.
            let stop_signal = self.status.stop_signal();
            let stop_now = !stop_seen && self.status.is_stopped();
            let (event, paced) = tokio::select! {
                _ = std::future::ready(()), if stop_now => {
                    stop_seen = true;
                    (Event::Stop, false)
                }
                outcome = poll_opt(&mut inflight) => {
                    inflight = None;
                    let rebind = self.absorb(&outcome);
                    let event = self.aim_after(outcome.event, outcome.targets);
                    let actions = self.machine.step(event);
                    self.apply(actions, &mut inflight, false);
                    if !rebind || self.machine.is_done() {
                        continue;
                    }
                    (Event::Rebind, true)
                }
                _ = stop_signal, if !stop_seen && !stop_now => {
                    if !self.status.is_stopped() {
                        continue; // a publication, not a stop
                    }
                    stop_seen = true;
                    (Event::Stop, false)
                }
                _ = tokio::time::sleep_until(due), if next.is_some() => {
                    *self.deadline(timer) = None;
                    (Event::Timer(timer), timer == RegTimer::Retry)
                }
                _ = flow_closed(self.hop.as_ref()), if inflight.is_none() => {
                    tracing::info!(connection_id = %self.conn.id, "flow to registrar closed");
                    self.hop = None;
                    (Event::Rebind, true)
                }
            };
            // Timers, stop and rebind begin a new attempt.
            self.aim = None;
            let actions = self.machine.step(event);
            self.apply(actions, &mut inflight, paced);
        }
    }

    /// Feeds the target's health to DNS and decides where the next REGISTER
    /// of this attempt goes; turns a failure into `Failover` while another
    /// target is left (RFC 3263 §4.3: timeout, transport error, 503).
    fn aim_after(&mut self, event: Event, targets: Option<(Arc<[Target]>, usize)>) -> Event {
        let Some((targets, index)) = targets else {
            return event;
        };
        let target = &targets[index];
        // A timeout or a transport error greylists the target; a 503 only
        // moves on (the target answered).
        let failure = match &event {
            Event::Timeout => Some(Failover::Down(Failure::Timeout)),
            Event::TransportError => Some(Failover::Down(Failure::TransportError)),
            Event::Reply(r) if r.code == 503 => Some(Failover::Unavailable),
            _ => None,
        };
        match failure {
            Some(Failover::Down(why)) => self.ctx.dns.failed(target, why),
            Some(Failover::Unavailable) => {}
            None => self.ctx.dns.answered(target),
        }
        if let Event::Reply(r) = &event
            && (200..300).contains(&r.code)
        {
            self.pinned = Some(target.clone());
        }
        let next = index + 1;
        if let Some(why) = failure
            && next < targets.len()
            && !self.machine.is_stopping()
        {
            tracing::info!(
                connection_id = %self.conn.id,
                from = %target,
                to = %targets[next],
                reason = why.label(),
                "REGISTER failing over to the next target"
            );
            metrics::failover();
            self.aim = Some((targets, next));
            return Event::Failover;
        }
        self.aim = Some((targets, index));
        event
    }

    /// Takes what a transaction taught us; true when our address as seen by
    /// the registrar changed under a binding (re-register at once).
    fn absorb(&mut self, outcome: &Outcome) -> bool {
        // Keep the hop only when the registrar answered over it: after a
        // timeout or transport error the next attempt resolves and connects
        // afresh, and a closed flow that never carried a binding must not
        // trigger an immediate Rebind (which would bypass the backoff).
        if outcome.route.is_some() {
            self.route = outcome.route;
        }
        self.hop = match outcome.event {
            Event::Reply(_) => outcome.hop.clone(),
            _ => None,
        };
        // Cluster mode: a 2xx that lists an earlier holder's binding (RFC
        // 3261 §10.3 step 8 lists them all) is followed at once by a
        // REGISTER that removes it, each at most once.
        if let Some(h) = self.holding.as_deref_mut() {
            let stale: Vec<String> = (outcome.stale.iter())
                .filter(|c| h.removed.insert((*c).clone()))
                .cloned()
                .collect();
            if !stale.is_empty() {
                tracing::info!(connection_id = %self.conn.id, bindings = ?stale, "removing an earlier holder's binding");
                h.remove = stale;
                return true;
            }
        }
        let (Some(seen), Some(advertised)) = (outcome.seen_as, outcome.advertised) else {
            return false;
        };
        if seen == advertised || self.learned == Some(seen) {
            return false;
        }
        tracing::info!(connection_id = %self.conn.id, %advertised, %seen, "registrar sees us at another address; updating Contact");
        self.learned = Some(seen);
        matches!(
            outcome.event,
            Event::Reply(Reply {
                code: 200..=299,
                ..
            })
        )
    }

    fn apply(&mut self, actions: Vec<Action>, inflight: &mut Option<Inflight>, paced: bool) {
        for action in actions {
            match action {
                Action::Send(register) => *inflight = Some(self.transaction(register, paced)),
                // Clamped so that no configured interval can overflow Instant.
                Action::Arm(timer, d) => {
                    let at = Instant::now() + d.min(MAX_TIMER);
                    // Expiry stays exact: it ends a binding.
                    let at = match timer {
                        RegTimer::Refresh | RegTimer::Retry => {
                            super::coalesce(self.pace.epoch, at, super::TIMER_TICK)
                        }
                        RegTimer::Expiry => at,
                    };
                    *self.deadline(timer) = Some(at)
                }
                Action::Disarm(timer) => *self.deadline(timer) = None,
                Action::Publish(p) => self.publish(p),
                Action::Finished => {}
            }
        }
    }

    fn deadline(&mut self, timer: RegTimer) -> &mut Option<Instant> {
        match timer {
            RegTimer::Refresh => &mut self.refresh_at,
            RegTimer::Retry => &mut self.retry_at,
            RegTimer::Expiry => &mut self.expiry_at,
        }
    }

    fn publish(&mut self, p: Published) {
        let now = SystemTime::now();
        let old = self.status.get();
        let snap = Snapshot {
            status: p.status,
            last_response: p.last_response,
            last_registered_ip: p.registered_target.or(old.last_registered_ip),
            updated_at: now,
            expires_at: p.expires_in.map(|d| now + d),
            flow: match (&self.hop, p.status) {
                (Some(Hop::Stream(f)), RegStatus::Success) => Some(f.id()),
                _ => None,
            },
        };
        self.keepalive = match (&self.hop, snap.status) {
            (Some(hop @ Hop::Udp { remote, .. }), RegStatus::Success) => {
                match self.keepalive.take() {
                    // Still the same registrar: keep the guard.
                    Some(g) if g.remote() == *remote => Some(g),
                    _ => self.ctx.transports.keep_udp_alive(hop),
                }
            }
            _ => None,
        };
        if snap.status != old.status {
            tracing::info!(
                connection_id = %self.conn.id,
                connection_name = %self.conn.connection_name,
                status = %snap.status.label(),
                code = snap.status.code(),
                last_response = %snap.last_response.as_deref().unwrap_or(""),
                registrar = %snap.last_registered_ip.map(|a| a.to_string()).unwrap_or_default(),
                "registration status changed"
            );
        } else {
            tracing::debug!(
                connection_id = %self.conn.id,
                status = %snap.status.label(),
                last_response = %snap.last_response.as_deref().unwrap_or(""),
                "registration updated"
            );
        }
        self.status.publish(snap);
    }

    /// Builds the future of one REGISTER transaction.
    fn transaction(&mut self, register: Register, paced: bool) -> Inflight {
        self.cseq = match &self.holding {
            Some(h) => h.cseq.fetch_add(1, Ordering::Relaxed),
            None => self.cseq.wrapping_add(1),
        };
        let job = Job {
            ctx: self.ctx.clone(),
            conn: self.conn.clone(),
            call_id: self.call_id.clone(),
            from_tag: self.from_tag.clone(),
            cseq: self.cseq,
            remove: (self.holding.as_deref_mut())
                .map_or_else(Vec::new, |h| std::mem::take(&mut h.remove)),
            register,
            hop: self.hop.clone().filter(|h| match h {
                Hop::Stream(f) => !f.is_closed(),
                Hop::Udp { .. } => true,
            }),
            learned: self.learned,
            route: self.route,
            aim: match &self.aim {
                Some((targets, index)) => Aim::At {
                    targets: targets.clone(),
                    index: *index,
                },
                None => Aim::Fresh {
                    pinned: self.pinned.clone(),
                },
            },
        };
        if !paced {
            return Box::pin(job.run());
        }
        // The pacer's slot is awaited before the transaction's own future
        // (~2.5 KB) exists: at start-up every connection waits here at once
        // (100,000 at 2000/s is 50 s of slots), and the allocator keeps the
        // peak it reached.
        let (pace, status) = (self.pace.clone(), self.status.clone());
        Box::pin(async move {
            // Slots may be far ahead at start-up: a stop while waiting must
            // not be followed by a REGISTER that creates a binding.
            tokio::select! {
                _ = status.stopped() => return Outcome::event(Event::TransportError),
                _ = pace.pacer.wait() => {}
            }
            Box::pin(job.run()).await
        })
    }
}

/// One REGISTER transaction with everything it needs, owned.
struct Job {
    ctx: Arc<Context>,
    conn: Arc<Connection>,
    call_id: Arc<str>,
    from_tag: Arc<str>,
    cseq: u32,
    remove: Vec<String>,
    register: Register,
    hop: Option<Hop>,
    learned: Option<SocketAddr>,
    route: Option<(SocketAddr, IpAddr)>,
    aim: Aim,
}

impl Job {
    async fn run(self) -> Outcome {
        let ext = &self.conn.external_uac_settings;
        let Some(proxy) = ext.proxy.as_ref() else {
            return Outcome::event(Event::TransportError);
        };
        let next_hop = ext.outbound_proxy.as_ref().unwrap_or(proxy);
        let (targets, index) = match self.targets(next_hop).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(connection_id = %self.conn.id, error = %e, "registrar does not resolve");
                return Outcome::event(Event::Unresolvable(e.to_string()));
            }
        };
        let target = targets[index].clone();
        let transport = target.transport;
        let failed = |event| Outcome {
            targets: Some((targets.clone(), index)),
            ..Outcome::event(event)
        };
        let hop = match self.hop.clone() {
            Some(h) if h.transport() == transport && h.remote() == target.addr => h,
            _ => match self
                .ctx
                .transports
                .hop(transport, target.addr, &target.server_name)
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(connection_id = %self.conn.id, target = %target, error = %e, "registrar unreachable");
                    metrics::register_result(RegisterOutcome::TransportError, None);
                    return failed(Event::TransportError);
                }
            },
        };
        let route = self.route_towards(&hop);
        let (sent_by, advertised) = self.advertised(&hop, transport, route);
        // `line` names the connection even when the PBX rewrites the user
        // part of the Request-URI, or many lines share one flow.
        let contact = format!(
            "sip:{}@{};transport={};line={}",
            self.conn.user_name,
            sent_by,
            transport.uri_param(),
            self.conn.id
        );
        let request_uri = proxy.request_uri(transport);
        let aor = format!("sip:{}@{}", ext.from_user(), proxy.host_for_aor());
        let password = ext.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let creds = Credentials {
            username: ext.auth_user(),
            password,
        };
        let auth: Vec<(&'static str, String)> = self
            .register
            .answers
            .iter()
            .map(|a| {
                let name = match a.kind {
                    AuthKind::Www => "Authorization",
                    AuthKind::Proxy => "Proxy-Authorization",
                };
                let value = digest::authorization(
                    &a.challenge,
                    &creds,
                    "REGISTER",
                    &request_uri,
                    b"",
                    &digest::new_cnonce(),
                    a.nc,
                );
                (name, value)
            })
            .collect();
        let branch = new_branch();
        let bytes = build(&RegisterRequest {
            request_uri: &request_uri,
            aor: &aor,
            from_tag: &self.from_tag,
            call_id: &self.call_id,
            cseq: self.cseq,
            transport,
            sent_by: &sent_by,
            branch: &branch,
            contact: &contact,
            remove: &self.remove,
            expires: self.register.expires,
            user_agent: &self.ctx.config.sip.user_agent,
            auth: &auth,
        });
        let sent_at = Instant::now();
        let result = self
            .ctx
            .layer
            .request(
                &hop,
                Method::Register,
                &branch,
                Bytes::from(bytes),
                self.ctx.timers,
            )
            .await;
        let took = Some(sent_at.elapsed());
        metrics::register_result(
            match &result {
                Ok(msg) => RegisterOutcome::Code(msg.status().unwrap_or(0)),
                Err(TxError::Timeout) => RegisterOutcome::Timeout,
                Err(_) => RegisterOutcome::TransportError,
            },
            took,
        );
        let event = match result {
            Ok(msg) => {
                let seen_as = (transport == Transport::Udp && self.ctx.public().is_none())
                    .then(|| seen_as(&msg))
                    .flatten();
                let reply = to_reply(&msg, &self.conn.user_name, hop.remote());
                let stale = stale_bindings(&msg, &self.conn.user_name, &sent_by);
                return Outcome {
                    event: Event::Reply(reply),
                    targets: Some((targets, index)),
                    hop: Some(hop),
                    seen_as,
                    advertised,
                    route,
                    stale,
                };
            }
            Err(TxError::Timeout) => Event::Timeout,
            Err(e) => {
                tracing::debug!(connection_id = %self.conn.id, error = %e, "REGISTER transport error");
                Event::TransportError
            }
        };
        Outcome {
            event,
            targets: Some((targets, index)),
            hop: Some(hop),
            seen_as: None,
            advertised,
            route,
            stale: Vec::new(),
        }
    }

    /// The ordered targets for this REGISTER and the index to use.
    async fn targets(&self, uri: &ProxyUri) -> Result<(Arc<[Target]>, usize), crate::dns::Error> {
        match &self.aim {
            Aim::At { targets, index } if *index < targets.len() => Ok((targets.clone(), *index)),
            Aim::At { .. } | Aim::Fresh { pinned: None } => {
                let q = Query::with_transport(uri, self.conn.external_uac_settings.transport);
                Ok((self.ctx.dns.resolve(&q).await?.into(), 0))
            }
            Aim::Fresh {
                pinned: Some(pinned),
            } => {
                let q = Query::with_transport(uri, self.conn.external_uac_settings.transport);
                let mut list = self.ctx.dns.resolve(&q).await?;
                // Stay where the binding lives while DNS still lists it and
                // it is not known to be failing.
                if let Some(i) = list.iter().position(|t| t == pinned)
                    && !self.ctx.dns.is_grey(pinned, Instant::now())
                {
                    let t = list.remove(i);
                    list.insert(0, t);
                }
                Ok((list.into(), 0))
            }
        }
    }

    /// For a wildcard-bound hop, the local IP the kernel routes towards the
    /// registrar: the driver's cached answer for this remote, or a fresh one.
    fn route_towards(&self, hop: &Hop) -> Option<(SocketAddr, IpAddr)> {
        if !hop.local().ip().is_unspecified() {
            return None;
        }
        let remote = hop.remote();
        match self.route {
            Some((r, ip)) if r == remote => Some((r, ip)),
            _ => local_ip_towards(remote).map(|ip| (remote, ip)),
        }
    }

    /// The `host:port` we put in Via and Contact, and the socket address it
    /// is when we chose it ourselves (None for a configured public address,
    /// which is never replaced by what the registrar reports). Over UDP an
    /// address the registrar reported (RFC 3581) wins over our own.
    fn advertised(
        &self,
        hop: &Hop,
        transport: Transport,
        route: Option<(SocketAddr, IpAddr)>,
    ) -> (String, Option<SocketAddr>) {
        let public = self.ctx.public().is_some();
        if !public && let Some(learned) = self.learned.filter(|_| transport == Transport::Udp) {
            return (learned.to_string(), Some(learned));
        }
        let iface = self.ctx.interface(
            transport,
            Some(hop.local()),
            hop.remote(),
            route.map(|(_, ip)| ip),
        );
        let addr = if public { None } else { iface.socket_addr() };
        (iface.host_port(), addr)
    }
}

/// Why a REGISTER moves on to the next target (RFC 3263 §4.3).
#[derive(Clone, Copy)]
enum Failover {
    /// No response: the target is greylisted.
    Down(Failure),
    /// 503: it answered, but is not serving.
    Unavailable,
}

impl Failover {
    fn label(self) -> &'static str {
        match self {
            Failover::Down(why) => why.label(),
            Failover::Unavailable => "503",
        }
    }
}

impl Outcome {
    fn event(event: Event) -> Outcome {
        Outcome {
            event,
            targets: None,
            hop: None,
            seen_as: None,
            advertised: None,
            route: None,
            stale: Vec::new(),
        }
    }
}

/// Our address per the top Via's `received` and `rport` (RFC 3581 §4).
fn seen_as(msg: &Message) -> Option<SocketAddr> {
    let via = msg.top_via().ok()?;
    let port = via.rport().flatten()?;
    let ip = match via.received() {
        Some(r) => r.parse().ok()?,
        None => match &via.host {
            Host::V4(ip) => IpAddr::V4(*ip),
            Host::V6(ip) => IpAddr::V6(*ip),
            Host::Domain(_) => return None,
        },
    };
    Some(SocketAddr::new(ip, port))
}

async fn poll_opt(f: &mut Option<Inflight>) -> Outcome {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn flow_closed(hop: Option<&Hop>) {
    match hop {
        Some(Hop::Stream(f)) => f.closed().await,
        _ => std::future::pending().await,
    }
}
