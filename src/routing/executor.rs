//! Drives `call.rs`: one task per proxied INVITE carries out its
//! [`Call`]'s actions (RFC 3261 §16.6-16.7): DNS targets (RFC 3263), a client
//! transaction slot and a hop per target, CANCEL transactions (§9.1),
//! timers, ICMP and flow-closure events (§18.4, §17.2.4), the dialog table
//! entry and the call's metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use super::call::{Call, CallAction, CallEvent, CallParams, CallTimer, Outbound, TowardPbx};
use super::calls::{Direction, Refused};
use super::failover::{Outcome, Policy};
use super::forward::query_for;
use super::outbound::Mapping;
use super::router::{Held, Shared};
use crate::config::{Connection, Secret, Transport};
use crate::dns::{Failure, Query, Target};
use crate::metrics::{self, CallResult};
use crate::sip::{Message, Method, Uri};
use crate::transaction::{ClientGuard, ServerGuard, Upstream};
use crate::transport::{Hop, Inbound, ReplyTo, UnreachableWatch};

/// Added to a call task's longest legitimate life (every target silent, then
/// ringing to `timeout_2xx`, then the transaction timers) before the task is
/// abandoned as stuck.
const LIFETIME_SLACK: Duration = Duration::from_secs(300);

/// What the router decided for a new call.
pub(super) struct NewCall {
    pub connection: Arc<Connection>,
    /// The new Request-URI: the connection's `destination_uri`, or the
    /// extension at the PBX for a call toward it.
    pub destination: Uri,
    /// Our Route entries to remove (§16.4).
    pub pop_routes: usize,
    /// Set for a call toward the PBX.
    pub toward_pbx: Option<PbxLeg>,
}

/// Where a call toward a PBX goes and as whom.
pub(super) struct PbxLeg {
    /// The registrar target the registration is using: tried first, over
    /// the registration's flow for TCP/TLS.
    pub registrar: Option<SocketAddr>,
    /// The user part of the internal Request-URI.
    pub extension: String,
}

/// The registration's targets for a call toward its PBX: the one in use
/// first, then the other targets of `outbound_proxy` (else `proxy`) in DNS
/// order, tried only when one fails at the transport or times out.
async fn pbx_targets(
    shared: &Shared,
    conn: &Connection,
    registrar: Option<SocketAddr>,
) -> Vec<Outbound> {
    let ext = &conn.external_uac_settings;
    let transport = ext.transport;
    let mut found: Vec<Target> = registrar
        .map(|addr| Target {
            addr,
            transport,
            // The name the registration checked the certificate against
            // (RFC 5922 §7: the host of the URI it connected for).
            server_name: ext
                .outbound_proxy
                .as_ref()
                .or(ext.proxy.as_ref())
                .map(|p| p.host.clone())
                .unwrap_or_default()
                .into(),
        })
        .into_iter()
        .collect();
    if let Some(uri) = ext.outbound_proxy.as_ref().or(ext.proxy.as_ref()) {
        match shared
            .ctx
            .dns
            .resolve(&Query::with_transport(uri, transport))
            .await
        {
            Ok(more) => found.extend(more.into_iter().filter(|t| Some(t.addr) != registrar)),
            Err(e) => {
                tracing::debug!(connection_id = %conn.id, error = %e, "PBX lookup failed; the registrar in use only")
            }
        }
    }
    found
        .into_iter()
        .map(|target| Outbound {
            local: shared.interface(target.transport, None, target.addr),
            target,
        })
        .collect()
}

/// The views and credentials of a call toward the PBX of `conn`.
fn toward_pbx(
    shared: &Shared,
    invite: &Message,
    conn: &Connection,
    leg: &PbxLeg,
) -> Option<TowardPbx> {
    let ext = &conn.external_uac_settings;
    let domain = ext.proxy.as_ref()?.host_for_aor();
    // Our Contact as the registration's (RFC 5626 aside, a phone's INVITE
    // carries the Contact it registered), on our interface toward the PBX.
    let registrar = leg.registrar?;
    let iface = shared.interface(ext.transport, None, registrar);
    let contact = format!(
        "sip:{}@{};transport={};line={}",
        conn.user_name,
        iface.host_port(),
        ext.transport.uri_param(),
        conn.id
    );
    let mapping =
        Mapping::for_invite(invite, ext.from_user(), &leg.extension, &domain, &contact).ok()?;
    let asserted_identity = shared
        .ctx
        .config
        .routing
        .assert_caller_identity
        .then(|| invite.from_header().ok())
        .flatten()
        .map(|f| format!("<{}>", f.uri));
    Some(TowardPbx {
        mapping,
        username: ext.auth_user().to_owned(),
        password: ext
            .password
            .clone()
            .unwrap_or_else(|| Secret::new(String::new())),
        asserted_identity,
    })
}

/// The timers of one direction of `conn`: its own where set, else the
/// daemon's; a call toward a PBX fails over only at the transport or on a
/// timeout, never on the PBX's answer.
fn policy_for(shared: &Shared, conn: &Connection, toward_pbx: bool) -> Policy {
    let mut p = shared.policy.clone();
    let settings = if toward_pbx {
        &conn.outbound
    } else {
        &conn.inbound
    };
    if let Some(s) = settings.timeout_1xx_secs {
        p.timeout_1xx = Duration::from_secs(u64::from(s));
    }
    if let Some(s) = settings.timeout_2xx_secs {
        p.timeout_2xx = Duration::from_secs(u64::from(s));
    }
    if toward_pbx {
        p.failover_codes.clear();
    }
    p
}

/// The targets of `uri` (RFC 3263), each with our interface toward it.
async fn targets(shared: &Shared, uri: &Uri) -> Result<Vec<Outbound>, crate::dns::Error> {
    let found = shared.ctx.dns.resolve(&query_for(uri)).await?;
    Ok(found
        .into_iter()
        .map(|target| Outbound {
            local: shared.interface(target.transport, None, target.addr),
            target,
        })
        .collect())
}

/// Runs one call from the INVITE to the end of its transactions.
pub(super) async fn run(
    shared: Arc<Shared>,
    inbound: Inbound,
    held: Held,
    permit: OwnedSemaphorePermit,
    new: NewCall,
) {
    let now = Instant::now();
    // Retransmissions, ACK and CANCEL from the PBX come to this task
    // (the server transaction was held when the INVITE arrived).
    let Held {
        _guard: server,
        upstream: mut up_rx,
    } = held;
    let conn = new.connection.clone();
    let call_id = inbound.msg.call_id().unwrap_or("").to_owned();
    let direction = if new.toward_pbx.is_some() {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    let toward = match &new.toward_pbx {
        Some(leg) => match toward_pbx(&shared, &inbound.msg, &conn, leg) {
            Some(t) => Some(t),
            None => {
                tracing::debug!(connection_id = %conn.id, "call toward the PBX cannot be mapped (no From tag or proxy)");
                shared.reply(&inbound, 400);
                return;
            }
        },
        None => None,
    };
    let settings = match direction {
        Direction::Inbound => &conn.inbound,
        Direction::Outbound => &conn.outbound,
    };
    let mapping = toward.as_ref().map(|t| t.mapping.clone());
    match shared.calls.admit(
        &call_id,
        &conn.id,
        direction,
        settings.channel_limit,
        mapping,
        now,
    ) {
        Ok(()) => {}
        Err(Refused::ChannelLimit) => {
            // The line is busy (RFC 3261 §21.4.24), not uacd: a 503 would make
            // many PBXes take the whole trunk out of service for Retry-After.
            tracing::info!(connection_id = %conn.id, direction = direction.label(), "channel limit reached: 486");
            metrics::call_result(direction.metric(), CallResult::Status(486), None);
            shared.reply(&inbound, 486);
            return;
        }
        Err(Refused::Held) => {
            tracing::debug!(connection_id = %conn.id, call_id = %call_id, "a second initial INVITE of a held call: 482");
            metrics::call_result(direction.metric(), CallResult::Status(482), None);
            shared.reply(&inbound, 482);
            return;
        }
    }
    let outbound = match &new.toward_pbx {
        Some(leg) => pbx_targets(&shared, &conn, leg.registrar).await,
        None => match targets(&shared, &new.destination).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(connection_id = %conn.id, destination = %new.destination, error = %e, "destination does not resolve");
                Vec::new()
            }
        },
    };
    let in_iface = shared.interface(inbound.transport, Some(inbound.local), inbound.source);
    let policy = &policy_for(&shared, &conn, new.toward_pbx.is_some());
    let timers = shared.ctx.timers;
    let params = CallParams {
        policy: policy.clone(),
        timers,
        inbound: in_iface,
        source: inbound.source,
        destination: new.destination,
        pop_routes: new.pop_routes,
        secret: shared.secret,
        epoch: super::token::now_epoch(),
        nonce: rand::random(),
        to_tag: format!("{:016x}", rand::random::<u64>()),
        toward_pbx: toward,
    };
    // A call toward a PBX resends once per challenge it answers.
    let resends = if new.toward_pbx.is_some() {
        super::outbound::MAX_ANSWERS
    } else {
        0
    };
    let attempts = u32::try_from(outbound.len().max(1) + resends).unwrap_or(u32::MAX);
    let reliable = inbound.transport.is_stream();
    let (mut call, actions) =
        match Call::start(inbound.msg.clone(), params, outbound, reliable, now) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "INVITE cannot be forwarded");
                shared.calls.end(&call_id);
                shared.reply(&inbound, 400);
                return;
            }
        };
    let (resp_tx, mut resp_rx) = mpsc::channel::<Box<Message>>(32);
    let lifetime = (policy.timeout_1xx + policy.timeout_2xx) * attempts
        + timers.timeout() * 2
        + LIFETIME_SLACK;
    let give_up = now + lifetime;
    let (icmp_tx, mut icmp_rx) = mpsc::channel::<SocketAddr>(8);
    let upstream = inbound.reply_to();
    // The call keeps its own copy of the INVITE (shed once answered);
    // the task needs only where responses go.
    drop(inbound);
    let mut task = CallTask {
        shared: shared.clone(),
        upstream,
        hops: HashMap::new(),
        clients: Vec::new(),
        held: Vec::new(),
        resp_tx,
        timers: HashMap::new(),
        connection_id: conn.id.clone(),
        direction,
        call_id,
        queue: Vec::new(),
        permit: Some(permit),
        icmp_tx,
        icmp_watches: Vec::new(),
        connect_timeout: policy.timeout_1xx,
    };
    task.run_actions(&mut call, actions).await;
    let upstream_flow = task.upstream.flow.clone();
    let mut upstream_gone = false;
    while !call.is_terminated() {
        let event = tokio::select! {
            Some(resp) = resp_rx.recv() => {
                learn_dialog(&task.shared, &task.call_id, &resp);
                CallEvent::Response(resp)
            }
            // ICMP unreachable for a UDP target (§18.4): fail over now.
            Some(addr) = icmp_rx.recv() => {
                match call.targets().position(|t| t.addr == addr && t.transport == Transport::Udp) {
                    Some(t) => CallEvent::TransportError(t),
                    None => continue,
                }
            }
            // The PBX's TCP/TLS connection went away: nobody is left to
            // answer, so the pending branches are cancelled (§17.2.4).
            _ = async {
                match &upstream_flow {
                    Some(f) => f.closed().await,
                    None => std::future::pending().await,
                }
            }, if !upstream_gone => {
                upstream_gone = true;
                tracing::info!(call_id = %task.call_id, "the PBX's connection closed during call setup; cancelling");
                CallEvent::UpstreamTransportError
            }
            // A safety net: the machine's timers end every call long
            // before this; a task still here is stuck, not busy.
            _ = tokio::time::sleep_until(give_up) => {
                tracing::warn!(call_id = %task.call_id, lifetime_sec = lifetime.as_secs(), "call task outlived every timer; abandoned");
                break;
            }
            Some(up) = up_rx.recv() => match up {
                Upstream::Retransmission => CallEvent::UpstreamRetransmission,
                Upstream::Ack => CallEvent::UpstreamAck,
                Upstream::Cancel => CallEvent::UpstreamCancel,
            },
            key = crate::transaction::sleep_until_first(
                task.timers.iter().map(|(k, at)| (Some(*at), *k)),
            ) => {
                task.timers.remove(&key);
                CallEvent::Timer(key)
            }
        };
        let actions = call.step(event, Instant::now());
        task.run_actions(&mut call, actions).await;
        if call.relays_2xx_only() && !call.is_terminated() {
            // The rest of the call's life (RFC 6026 Timers L and M, 32 s
            // over UDP) goes to a task a fraction of this one's size; the
            // server transaction stays held (its retransmissions are
            // absorbed by the layer once nobody reads `up_rx`).
            drop(up_rx);
            let accepted = Accepted {
                shared: task.shared.clone(),
                upstream: task.upstream.clone(),
                _server: server,
                _clients: std::mem::take(&mut task.clients),
                responses: resp_rx,
                timers: task.timers.drain().collect(),
                call_id: std::mem::take(&mut task.call_id),
                give_up,
            };
            super::router::spawn_boxed(accepted.run(call));
            return;
        }
    }
}

/// A response with a To tag to our INVITE (a provisional or a 2xx) creates
/// a dialog (§12.1); the dialog table counts the confirmed ones.
fn learn_dialog(shared: &Shared, call_id: &str, resp: &Message) {
    let Some(code) = resp.status() else {
        return;
    };
    if !(101..300).contains(&code)
        || !resp.cseq().is_ok_and(|c| c.method == Method::Invite)
        || !resp.to_header().is_ok_and(|t| t.tag().is_some())
    {
        return;
    }
    let delta = shared.dialogs.learn(call_id, code >= 200, Instant::now());
    if delta != 0 {
        metrics::dialogs_active(delta as f64);
    }
}

/// An answered call whose transactions are all Accepted
/// ([`Call::relays_2xx_only`]): relays 2xx retransmissions and forked 2xx
/// upstream until Timers L and M end it. Holds only the transaction slots,
/// the response channel and the (shed) [`Call`]: at 1000 calls/s, 32,000
/// calls are in this state at once, and the full task (its future, hops,
/// ICMP watches, timers) was ~12 KB a call.
struct Accepted {
    shared: Arc<Shared>,
    upstream: ReplyTo,
    _server: ServerGuard,
    _clients: Vec<ClientGuard>,
    responses: mpsc::Receiver<Box<Message>>,
    timers: Vec<(CallTimer, Instant)>,
    call_id: String,
    give_up: Instant,
}

impl Accepted {
    async fn run(mut self, mut call: Call) {
        while !call.is_terminated() {
            let event = tokio::select! {
                Some(resp) = self.responses.recv() => {
                    learn_dialog(&self.shared, &self.call_id, &resp);
                    CallEvent::Response(resp)
                }
                key = crate::transaction::sleep_until_first(
                    self.timers.iter().map(|(k, at)| (Some(*at), *k)),
                ) => {
                    self.timers.retain(|(k, _)| *k != key);
                    CallEvent::Timer(key)
                }
                _ = tokio::time::sleep_until(self.give_up) => {
                    tracing::warn!(call_id = %self.call_id, "answered call outlived its timers; abandoned");
                    return;
                }
            };
            for action in call.step(event, Instant::now()) {
                match action {
                    CallAction::SendUpstream(bytes) => {
                        self.shared.ctx.transports.reply_to(&self.upstream, bytes)
                    }
                    CallAction::Arm(key, d) => {
                        self.timers.retain(|(k, _)| *k != key);
                        self.timers.push((key, Instant::now() + d));
                    }
                    CallAction::Disarm(key) => self.timers.retain(|(k, _)| *k != key),
                    CallAction::Terminate => {}
                    other => {
                        tracing::debug!(call_id = %self.call_id, action = ?other, "unexpected action of an accepted call dropped")
                    }
                }
            }
        }
    }
}

/// The I/O around one [`Call`].
struct CallTask {
    shared: Arc<Shared>,
    /// Where responses to the PBX go.
    upstream: ReplyTo,
    hops: HashMap<usize, Hop>,
    /// Client transaction slots held per branch (responses come to `resp_tx`).
    clients: Vec<ClientGuard>,
    held: Vec<String>,
    resp_tx: mpsc::Sender<Box<Message>>,
    timers: HashMap<CallTimer, Instant>,
    connection_id: String,
    direction: Direction,
    call_id: String,
    /// Events produced while carrying out actions (send failures).
    queue: Vec<CallEvent>,
    /// Counts this call against [`super::MAX_IN_PROGRESS`] until its final response.
    permit: Option<OwnedSemaphorePermit>,
    /// Told of ICMP errors for the UDP targets we sent to.
    icmp_tx: mpsc::Sender<SocketAddr>,
    icmp_watches: Vec<(usize, UnreachableWatch)>,
    /// The call's `timeout_1xx` (the connection's own, if set), which also
    /// bounds a TCP connect or TLS handshake toward a target.
    connect_timeout: Duration,
}

impl CallTask {
    async fn run_actions(&mut self, call: &mut Call, mut actions: Vec<CallAction>) {
        loop {
            self.hold_clients(call);
            for action in actions.drain(..) {
                self.act(call, action).await;
            }
            let Some(event) = self.queue.pop() else {
                return;
            };
            actions = call.step(event, Instant::now());
        }
    }

    /// Responses for every attempt started so far reach this task; held
    /// before the request is sent, so that a fast answer is never a stray.
    fn hold_clients(&mut self, call: &Call) {
        for t in 0..call.targets().len() {
            if let Some(b) = call.branch_of(t)
                && !self.held.iter().any(|h| h == b)
            {
                self.held.push(b.to_owned());
                self.clients.push(self.shared.ctx.layer.hold_client(
                    b,
                    Method::Invite,
                    self.resp_tx.clone(),
                ));
            }
        }
    }

    async fn hop(&mut self, call: &Call, t: usize) -> Result<Hop, crate::transport::Error> {
        if let Some(h) = self.hops.get(&t).filter(|h| match h {
            Hop::Stream(f) => !f.is_closed(),
            Hop::Udp { .. } => true,
        }) {
            return Ok(h.clone());
        }
        let target = call.target(t);
        // A connect (TCP, TLS handshake) that hangs is a transport error
        // after timeout_1xx: the same time a silent target gets.
        let hop = tokio::time::timeout(
            self.connect_timeout,
            self.shared
                .ctx
                .transports
                .hop(target.transport, target.addr, &target.server_name),
        )
        .await
        .map_err(|_| crate::transport::Error::ConnectTimeout {
            transport: target.transport,
            remote: target.addr,
        })??;
        self.hops.insert(t, hop.clone());
        Ok(hop)
    }

    async fn act(&mut self, call: &Call, action: CallAction) {
        match action {
            CallAction::SendUpstream(bytes) => {
                self.shared.ctx.transports.reply_to(&self.upstream, bytes)
            }
            CallAction::SendToTarget(t, bytes) => {
                let sent = match self.hop(call, t).await {
                    Ok(hop) => {
                        if let Hop::Udp { remote, .. } = &hop
                            && !self.icmp_watches.iter().any(|(w, _)| *w == t)
                        {
                            let watch = self
                                .shared
                                .ctx
                                .transports
                                .watch_unreachable(*remote, self.icmp_tx.clone());
                            self.icmp_watches.push((t, watch));
                        }
                        hop.send(bytes).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(call_id = %self.call_id, target_addr = %call.target(t).addr, error = %e, "send to target failed");
                    self.queue.push(CallEvent::TransportError(t));
                }
            }
            CallAction::SendCancel(t, bytes) => {
                let Some(branch) = call.branch_of(t).map(str::to_owned) else {
                    return;
                };
                let Ok(hop) = self.hop(call, t).await else {
                    return;
                };
                let layer = self.shared.ctx.layer.clone();
                let timers = self.shared.ctx.timers;
                tokio::spawn(async move {
                    let _ = layer
                        .request(&hop, Method::Cancel, &branch, bytes, timers)
                        .await;
                });
            }
            CallAction::Arm(key, d) => {
                self.timers.insert(key, Instant::now() + d);
            }
            CallAction::Disarm(key) => {
                self.timers.remove(&key);
            }
            CallAction::TargetFailed(t, outcome) => {
                let target = call.target(t);
                let failure = match outcome {
                    Outcome::Status(code) => {
                        tracing::info!(call_id = %self.call_id, target_addr = %target.addr, code, "call target failed; trying the next");
                        None
                    }
                    Outcome::NoProvisional => Some(Failure::NoProvisional),
                    Outcome::TransportError => Some(Failure::TransportError),
                };
                if let Some(why) = failure {
                    tracing::info!(call_id = %self.call_id, target_addr = %target.addr, reason = why.label(), "call target failed; trying the next");
                    self.shared.ctx.dns.failed(target, why);
                }
            }
            CallAction::Finished(outcome) => {
                let answered = (200..300).contains(&outcome.status);
                let result = if answered {
                    CallResult::Answered
                } else {
                    CallResult::Status(outcome.status)
                };
                metrics::call_result(self.direction.metric(), result, Some(outcome.setup));
                for _ in 0..outcome.failovers {
                    metrics::failover();
                }
                if answered {
                    self.shared.calls.answered(&self.call_id, Instant::now());
                } else {
                    self.shared.dialogs.forget_early(&self.call_id);
                    self.shared.calls.end(&self.call_id);
                }
                self.permit = None;
                tracing::info!(
                    connection_id = %self.connection_id,
                    call_id = %self.call_id,
                    status = outcome.status,
                    setup_ms = outcome.setup.as_millis() as u64,
                    failovers = outcome.failovers,
                    "call finished"
                );
            }
            CallAction::CSeqOffset(offset) => {
                self.shared.calls.set_cseq_offset(&self.call_id, offset);
            }
            CallAction::Terminate => {}
        }
    }
}
