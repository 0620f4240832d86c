//! One proxied call as a pure state machine: the INVITE server transaction
//! facing the PBX (RFC 3261 §17.2.1, RFC 6026) and one INVITE client
//! transaction per attempted target (§17.1.1), tried one after the other
//! (sequential "forking", §16.6-16.7) with the failover rules of
//! [`super::failover`], CANCEL handling (§9, §16.10) and the response
//! context (§16.7).
//!
//! `step(event, now)` returns actions; the executor sends bytes, runs the
//! CANCEL client transactions, arms timers and reports failed targets to the
//! DNS greylist. Nothing here sleeps or touches a socket.

use std::net::IpAddr;

use bytes::Bytes;
use tokio::time::Instant;

use crate::dns::Target;
use crate::sip::reason::canonical_reason;
use crate::sip::{Message, response_to};
use crate::transaction::invite_client::{self, InviteClient, ack_for, cancel_for};
use crate::transaction::invite_server::{self, InviteServer};

pub use super::call_events::{
    CallAction, CallEvent, CallOutcome, CallParams, CallTimer, Outbound, TowardPbx,
};
use super::dialogs::pbx_end;
use super::failover::{Best, BestResponse, Outcome, Verdict, decide};
use super::forward::{
    Forward, ForwardError, branch, forward_request, loop_hash, relay_response, upstream_response,
};
use super::outbound::{Answered, Side};
use super::token::{self, Back, End, Grant, HopId};

mod toward_pbx;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for an answer.
    Trying,
    /// A 2xx went upstream.
    Answered,
    /// A non-2xx final went upstream.
    Failed,
}

#[derive(Debug)]
struct Attempt {
    target: usize,
    branch: String,
    /// The destination end's dialog token, in this attempt's Record-Route.
    token: String,
    /// What was sent, for retransmission, CANCEL and the ACK of a non-2xx;
    /// `None` (a shed attempt is small) once no longer needed ([`Call::shed`]).
    sent: Option<Box<Sent>>,
    tx: InviteClient,
    provisional: bool,
    /// CANCEL wanted but not sent yet (no provisional so far, §9.1).
    cancel_pending: bool,
    cancelled: bool,
    /// Gave up waiting (cancel guard fired).
    abandoned: bool,
    /// Challenges answered before this attempt (a call toward a PBX): how
    /// far its CSeq runs ahead of the caller's.
    cseq_offset: u32,
    /// The call has dealt with this attempt's end (final, failure, timeout).
    concluded: bool,
}

/// The forwarded INVITE of one attempt: parsed (to build CANCEL and ACK
/// from) and as sent (to retransmit).
#[derive(Debug)]
struct Sent {
    request: Message,
    bytes: Bytes,
}

impl Attempt {
    fn request(&self) -> Option<&Message> {
        self.sent.as_ref().map(|s| &s.request)
    }

    /// The client transaction still exists (for termination of the call).
    fn live(&self) -> bool {
        !self.abandoned && self.tx.state() != invite_client::State::Terminated
    }

    /// Still waiting for a final response.
    fn waiting(&self) -> bool {
        !self.abandoned
            && matches!(
                self.tx.state(),
                invite_client::State::Calling | invite_client::State::Proceeding
            )
    }
}

/// A proxied INVITE.
#[derive(Debug)]
pub struct Call {
    /// The INVITE as received; `None` once answered (see [`Call::shed`]).
    invite: Option<Message>,
    params: CallParams,
    targets: Vec<Outbound>,
    server: InviteServer,
    last_upstream: Option<Bytes>,
    attempts: Vec<Attempt>,
    /// Index in `targets` of the next target to try.
    next_target: usize,
    best: BestResponse,
    phase: Phase,
    upstream_cancelled: bool,
    started: Instant,
    loop_hash: u64,
    call_id: String,
    /// Where the destination's in-dialog requests go ([`pbx_end`]).
    pbx_end: (HopId, Option<Back>),
    /// The realms answered so far (a call toward a PBX).
    answered: Answered,
}

impl Call {
    /// Starts a call: 100 Trying upstream and the INVITE to the first target.
    /// With no target at all, the PBX gets a 503 at once.
    pub fn start(
        invite: Message,
        params: CallParams,
        targets: Vec<Outbound>,
        reliable_upstream: bool,
        now: Instant,
    ) -> Result<(Call, Vec<CallAction>), ForwardError> {
        let prev_via = invite.top_via()?;
        let loop_hash = loop_hash(&invite, Some(&prev_via))?;
        let call_id = invite.call_id()?.to_owned();
        let pbx_end = pbx_end(&invite, params.inbound.transport, params.source);
        let (server, server_actions) = InviteServer::start(reliable_upstream, params.timers);
        let mut call = Call {
            invite: Some(invite),
            params,
            targets,
            server,
            last_upstream: None,
            attempts: Vec::new(),
            next_target: 0,
            best: BestResponse::default(),
            phase: Phase::Trying,
            upstream_cancelled: false,
            started: now,
            loop_hash,
            call_id,
            pbx_end,
            answered: Answered::default(),
        };
        let mut out = Vec::new();
        call.server_actions(server_actions, None, &mut out);
        if call.targets.is_empty() {
            call.best.add_outcome(Outcome::TransportError);
            call.give_up(now, &mut out);
        } else {
            call.try_next(&mut out)?;
        }
        Ok((call, out))
    }

    /// Target `t` of this call, in DNS order.
    pub fn target(&self, t: usize) -> &Target {
        &self.targets[t].target
    }

    /// The targets of this call, in DNS order.
    pub fn targets(&self) -> impl ExactSizeIterator<Item = &Target> {
        self.targets.iter().map(|o| &o.target)
    }

    /// The branch of our Via toward target `t`, once it was tried.
    pub fn branch_of(&self, t: usize) -> Option<&str> {
        self.attempt_of_target(t)
            .map(|n| self.attempts[n].branch.as_str())
    }

    /// The latest attempt toward target `t` (an answered challenge makes
    /// a second one toward the same target).
    fn attempt_of_target(&self, t: usize) -> Option<usize> {
        self.attempts.iter().rposition(|a| a.target == t)
    }

    /// Which attempt a downstream response belongs to, by its top Via branch.
    fn attempt_for(&self, resp: &Message) -> Option<usize> {
        let via = resp.top_via().ok()?;
        let b = via.branch()?;
        self.attempts.iter().position(|a| a.branch == b)
    }

    /// Number of attempts started so far.
    pub fn attempts(&self) -> usize {
        self.attempts.len()
    }

    /// Whether a 2xx went upstream.
    pub fn answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    pub fn step(&mut self, event: CallEvent, now: Instant) -> Vec<CallAction> {
        let mut out = Vec::new();
        match event {
            CallEvent::Response(resp) => {
                if let (Some(n), Some(code)) = (self.attempt_for(&resp), resp.status()) {
                    let acts = self.attempts[n]
                        .tx
                        .step(invite_client::Event::Response(code));
                    self.client_actions(n, acts, Some(&resp), now, &mut out);
                }
            }
            CallEvent::TransportError(t) => {
                if let Some(n) = self.attempt_of_target(t) {
                    let acts = self.attempts[n]
                        .tx
                        .step(invite_client::Event::TransportError);
                    self.client_actions(n, acts, None, now, &mut out);
                }
            }
            CallEvent::Timer(t) => self.on_timer(t, now, &mut out),
            CallEvent::UpstreamRetransmission => {
                let acts = self.server.step(invite_server::Event::Retransmission);
                self.server_actions(acts, None, &mut out);
            }
            CallEvent::UpstreamAck => {
                let acts = self.server.step(invite_server::Event::Ack);
                self.server_actions(acts, None, &mut out);
            }
            CallEvent::UpstreamTransportError => {
                let acts = self.server.step(invite_server::Event::TransportError);
                self.server_actions(acts, None, &mut out);
                self.cancel_all(&mut out);
            }
            CallEvent::UpstreamCancel => self.on_upstream_cancel(now, &mut out),
        }
        self.check_done(&mut out);
        self.shed();
        out
    }

    /// Drops what an answered call no longer needs. An answered call lives
    /// on for 64·T1 (RFC 6026 Accepted state: absorb INVITE retransmissions,
    /// relay 2xx retransmissions) and, at 1000 calls/s, 32,000 calls are in
    /// that state at once: the received INVITE and each attempt's forwarded
    /// copy (parsed and as bytes, several KB a call) are dead weight there.
    /// Only attempts whose transaction is Accepted or Terminated lose theirs:
    /// one still waiting may yet need a CANCEL or the ACK of a non-2xx.
    fn shed(&mut self) {
        if self.phase == Phase::Answered {
            self.invite = None;
        }
        if matches!(
            self.server.state(),
            invite_server::State::Accepted | invite_server::State::Terminated
        ) {
            // Accepted absorbs retransmissions; nothing is sent again.
            self.last_upstream = None;
        }
        for a in &mut self.attempts {
            if matches!(
                a.tx.state(),
                invite_client::State::Accepted | invite_client::State::Terminated
            ) {
                a.sent = None;
            }
        }
        if self.relays_2xx_only() {
            self.attempts.shrink_to_fit();
        }
    }

    /// Answered, and every transaction Accepted or over (RFC 6026): until
    /// Timers L and M, `step` only relays 2xx (`SendUpstream`), arms and
    /// disarms timers and terminates, so a smaller task can run the call.
    pub fn relays_2xx_only(&self) -> bool {
        self.phase == Phase::Answered
            && matches!(
                self.server.state(),
                invite_server::State::Accepted | invite_server::State::Terminated
            )
            && self.attempts.iter().all(|a| {
                matches!(
                    a.tx.state(),
                    invite_client::State::Accepted | invite_client::State::Terminated
                )
            })
    }

    /// Memory held for retransmission, CANCEL and ACK (for tests: zero once
    /// an answered call has shed it).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.invite.as_ref().map_or(0, |m| m.to_bytes().len())
            + self.last_upstream.as_ref().map_or(0, Bytes::len)
            + self
                .attempts
                .iter()
                .filter_map(|a| a.sent.as_ref())
                .map(|s| s.bytes.len())
                .sum::<usize>()
    }

    fn on_timer(&mut self, t: CallTimer, now: Instant, out: &mut Vec<CallAction>) {
        match t {
            CallTimer::Server(st) => {
                let acts = self.server.step(invite_server::Event::TimerFired(st));
                self.server_actions(acts, None, out);
            }
            CallTimer::Client(n, ct) if n < self.attempts.len() => {
                let acts = self.attempts[n]
                    .tx
                    .step(invite_client::Event::TimerFired(ct));
                self.client_actions(n, acts, None, now, out);
            }
            CallTimer::NoProvisional(n) if self.is_current(n) && !self.attempts[n].provisional => {
                // No provisional within timeout_1xx: the target is abandoned. It cannot be
                // CANCELled before a provisional (§9.1), so the CANCEL waits.
                let a = &mut self.attempts[n];
                a.cancel_pending = true;
                out.push(CallAction::Disarm(CallTimer::Client(
                    n,
                    invite_client::Timer::A,
                )));
                out.push(CallAction::TargetFailed(a.target, Outcome::NoProvisional));
                self.attempt_failed(Outcome::NoProvisional, now, out);
            }
            CallTimer::NoAnswer(n) if self.is_current(n) => {
                // Ringing past timeout_2xx: CANCEL and 408, no failover.
                self.cancel_attempt(n, out);
                self.finish_generated(408, now, out);
            }
            CallTimer::CancelGuard(n) if n < self.attempts.len() => {
                self.attempts[n].abandoned = true;
                if self.phase == Phase::Trying && self.upstream_cancelled {
                    self.finish_generated(487, now, out);
                }
            }
            _ => {}
        }
    }

    fn is_current(&self, n: usize) -> bool {
        self.phase == Phase::Trying
            && !self.upstream_cancelled
            && n + 1 == self.attempts.len()
            && !self.attempts[n].concluded
            && !self.attempts[n].abandoned
    }

    fn on_upstream_cancel(&mut self, now: Instant, out: &mut Vec<CallAction>) {
        if self.phase != Phase::Trying || self.upstream_cancelled {
            return;
        }
        self.upstream_cancelled = true;
        let waiting = self.attempts.iter().any(Attempt::waiting);
        self.cancel_all(out);
        if !waiting {
            self.finish_generated(487, now, out);
        }
    }

    /// CANCEL every attempt still waiting for a final response (§16.10).
    fn cancel_all(&mut self, out: &mut Vec<CallAction>) {
        for n in 0..self.attempts.len() {
            self.cancel_attempt(n, out);
        }
    }

    fn cancel_attempt(&mut self, n: usize, out: &mut Vec<CallAction>) {
        let timeout = self.params.timers.timeout();
        let a = &mut self.attempts[n];
        if !a.waiting() || a.cancelled {
            return;
        }
        out.push(CallAction::Disarm(CallTimer::NoProvisional(n)));
        out.push(CallAction::Disarm(CallTimer::NoAnswer(n)));
        if a.tx.may_cancel() {
            a.cancelled = true;
            if let Some(Ok(c)) = a.request().map(|r| cancel_for(r, None)) {
                out.push(CallAction::SendCancel(a.target, Bytes::from(c)));
            }
            out.push(CallAction::Arm(CallTimer::CancelGuard(n), timeout));
        } else {
            a.cancel_pending = true;
            out.push(CallAction::Arm(CallTimer::CancelGuard(n), timeout));
        }
    }

    fn client_actions(
        &mut self,
        n: usize,
        acts: Vec<invite_client::Action>,
        resp: Option<&Message>,
        now: Instant,
        out: &mut Vec<CallAction>,
    ) {
        use invite_client::Action as A;
        for act in acts {
            let target = self.attempts[n].target;
            match act {
                A::Retransmit => {
                    if let Some(sent) = &self.attempts[n].sent {
                        out.push(CallAction::SendToTarget(target, sent.bytes.clone()));
                    }
                }
                A::SendAck => {
                    if let Some(ack) = resp
                        .zip(self.attempts[n].request())
                        .and_then(|(r, req)| ack_for(req, r).ok())
                    {
                        out.push(CallAction::SendToTarget(target, Bytes::from(ack)));
                    }
                }
                A::Arm(t, d) => out.push(CallAction::Arm(CallTimer::Client(n, t), d)),
                A::Cancel(t) => out.push(CallAction::Disarm(CallTimer::Client(n, t))),
                A::PassUp(code) => {
                    if let Some(r) = resp {
                        self.on_response(n, code, r, now, out);
                    }
                }
                A::ReportTimeout | A::ReportTransportError => {
                    let outcome = if act == A::ReportTimeout {
                        Outcome::NoProvisional
                    } else {
                        Outcome::TransportError
                    };
                    out.push(CallAction::Disarm(CallTimer::NoProvisional(n)));
                    out.push(CallAction::Disarm(CallTimer::NoAnswer(n)));
                    let current = self.is_current(n);
                    self.attempts[n].concluded = true;
                    if current {
                        out.push(CallAction::TargetFailed(target, outcome));
                        self.attempt_failed(outcome, now, out);
                    } else if self.upstream_cancelled && self.phase == Phase::Trying {
                        self.finish_generated(487, now, out);
                    }
                }
                A::Terminate => {}
            }
        }
    }

    fn on_response(
        &mut self,
        n: usize,
        code: u16,
        resp: &Message,
        now: Instant,
        out: &mut Vec<CallAction>,
    ) {
        let current = self.is_current(n);
        if code < 200 {
            let a = &mut self.attempts[n];
            if !a.provisional {
                a.provisional = true;
                out.push(CallAction::Disarm(CallTimer::NoProvisional(n)));
                if a.cancel_pending && !a.cancelled {
                    // §9.1: the CANCEL that had to wait for a provisional.
                    a.cancel_pending = false;
                    a.cancelled = true;
                    if let Some(Ok(c)) = a.request().map(|r| cancel_for(r, None)) {
                        out.push(CallAction::SendCancel(a.target, Bytes::from(c)));
                    }
                } else if current {
                    out.push(CallAction::Arm(
                        CallTimer::NoAnswer(n),
                        self.params.policy.timeout_2xx,
                    ));
                }
            }
            if current && let Some(r) = self.upstream_copy(n, resp) {
                self.send_upstream(code, r.to_bytes(), out);
            }
            return;
        }
        self.attempts[n].concluded = true;
        out.push(CallAction::Disarm(CallTimer::NoProvisional(n)));
        out.push(CallAction::Disarm(CallTimer::NoAnswer(n)));
        out.push(CallAction::Disarm(CallTimer::CancelGuard(n)));
        if matches!(code, 401 | 407)
            && current
            && !self.upstream_cancelled
            && self.params.toward_pbx.is_some()
        {
            // RFC 3261 §22.2: answered here, never relayed; a challenge
            // that cannot be answered (wrong credentials) is a 403.
            if let Err(e) = self.authenticate(n, resp, out) {
                tracing::info!(call_id = %self.call_id, reason = ?e, "the PBX refused the connection's credentials for the call");
                self.finish_generated(403, now, out);
            }
            return;
        }
        if code < 300 {
            // §16.7 item 10 / RFC 6026: every 2xx goes upstream, even from an
            // attempt we gave up on; the other attempts are cancelled.
            let Some(r) = self.upstream_copy(n, resp) else {
                return;
            };
            let first = self.phase == Phase::Trying;
            if first && self.params.toward_pbx.is_some() {
                // The dialog is the answering attempt's: its CSeq offset is
                // the one the caller's in-dialog requests get.
                out.push(CallAction::CSeqOffset(self.attempts[n].cseq_offset));
            }
            self.send_upstream(code, r.to_bytes(), out);
            if first {
                self.phase = Phase::Answered;
                out.push(CallAction::Finished(self.outcome(code, now)));
                self.cancel_all(out);
            }
            return;
        }
        if self.phase != Phase::Trying {
            return; // ACKed by the client transaction; nothing more to do.
        }
        if self.upstream_cancelled {
            // The cancelled attempt's final answer (normally 487) goes up as is.
            if !self.attempts.iter().any(|a| a.waiting() && a.cancelled) {
                self.finish_relayed(n, resp, now, out);
            }
            return;
        }
        if !current {
            return;
        }
        let target = self.attempts[n].target;
        match decide(
            &self.params.policy,
            Outcome::Status(code),
            self.next_target < self.targets.len(),
        ) {
            Verdict::Relay => self.finish_relayed(n, resp, now, out),
            Verdict::NextTarget | Verdict::GiveUp => {
                out.push(CallAction::TargetFailed(target, Outcome::Status(code)));
                if let Some(r) = relay_response(resp) {
                    self.best.add_response(self.upstream_view(n, r));
                }
                self.next_or_give_up(now, out);
            }
        }
    }

    /// A response of attempt `n` as relayed to the PBX (§16.7), with the
    /// PBX end's token in our Record-Route ([`upstream_response`]).
    fn upstream_copy(&self, n: usize, resp: &Message) -> Option<Message> {
        let r = upstream_response(resp, &self.attempts[n].token, |dest_hop| {
            self.token(End::Pbx, self.params.source.ip(), dest_hop, None)
        })?;
        Some(self.upstream_view(n, r))
    }

    /// Our token for the `holder` end of this call's dialog ([`token`]).
    fn token(&self, holder: End, from: IpAddr, to: &HopId, back: Option<Back>) -> String {
        let grant = Grant {
            call_id: &self.call_id,
            holder,
            from,
            to,
            back,
        };
        token::issue(&self.params.secret, self.params.epoch, &grant)
    }

    /// The current attempt failed over with no response (timeout, transport).
    fn attempt_failed(&mut self, outcome: Outcome, now: Instant, out: &mut Vec<CallAction>) {
        self.best.add_outcome(outcome);
        self.next_or_give_up(now, out);
    }

    fn next_or_give_up(&mut self, now: Instant, out: &mut Vec<CallAction>) {
        while self.next_target < self.targets.len() {
            match self.try_next(out) {
                Ok(()) => return,
                Err(_) => self.best.add_outcome(Outcome::TransportError),
            }
        }
        self.give_up(now, out);
    }

    fn try_next(&mut self, out: &mut Vec<CallAction>) -> Result<(), ForwardError> {
        let t = self.next_target;
        self.next_target += 1;
        let n = self.attempts.len();
        let Outbound { target, local } = &self.targets[t];
        let branch = branch(self.loop_hash, &format!("{:x}.{n}", self.params.nonce));
        let (pbx_hop, back) = &self.pbx_end;
        let token = self.token(End::Destination, target.addr.ip(), pbx_hop, *back);
        // Only reached while Trying: the INVITE is shed once answered.
        let Some(invite) = &self.invite else {
            return Err(ForwardError::Answered);
        };
        let mut request = forward_request(
            invite,
            Some(&self.params.destination),
            self.params.pop_routes,
            &Forward {
                source: self.params.source,
                inbound: &self.params.inbound,
                outbound: local,
                branch: &branch,
                record_route: Some(&token),
            },
        )?;
        if let Some(tp) = &self.params.toward_pbx {
            // The caller's identity headers are gone (`apply`); RFC 3325
            // §9.1: ours is asserted only when the config trusts the PBX.
            tp.mapping.apply(&mut request, Side::Pbx);
            if let Some(id) = &tp.asserted_identity {
                request.append_header("P-Asserted-Identity", id);
            }
            // A new target starts from the caller's CSeq and answers its
            // own challenges: what an earlier target asked does not carry.
            if self.attempts.iter().any(|a| a.cseq_offset != 0) {
                out.push(CallAction::CSeqOffset(0));
            }
            self.answered = Answered::default();
        }
        self.start_attempt(t, branch, token, request, 0, out);
        Ok(())
    }

    /// Sends `request` to target `t` as attempt number `attempts.len()`.
    fn start_attempt(
        &mut self,
        t: usize,
        branch: String,
        token: String,
        request: Message,
        cseq_offset: u32,
        out: &mut Vec<CallAction>,
    ) {
        let n = self.attempts.len();
        let bytes = Bytes::from(request.to_bytes());
        let (tx, acts) = InviteClient::start(
            self.targets[t].target.transport.is_stream(),
            self.params.timers,
        );
        self.attempts.push(Attempt {
            target: t,
            branch,
            token,
            sent: Some(Box::new(Sent {
                request,
                bytes: bytes.clone(),
            })),
            tx,
            provisional: false,
            cancel_pending: false,
            cancelled: false,
            abandoned: false,
            concluded: false,
            cseq_offset,
        });
        out.push(CallAction::SendToTarget(t, bytes));
        out.push(CallAction::Arm(
            CallTimer::NoProvisional(n),
            self.params.policy.timeout_1xx,
        ));
        for a in acts {
            match a {
                invite_client::Action::Arm(timer, d) => {
                    out.push(CallAction::Arm(CallTimer::Client(n, timer), d))
                }
                invite_client::Action::Cancel(timer) => {
                    out.push(CallAction::Disarm(CallTimer::Client(n, timer)))
                }
                _ => {}
            }
        }
    }

    fn give_up(&mut self, now: Instant, out: &mut Vec<CallAction>) {
        match self.best.choose() {
            Best::Relay(m) => {
                let m = *m;
                let code = m.status().unwrap_or(500);
                self.finish_bytes(code, m.to_bytes(), now, out);
            }
            Best::Generate(code) => self.finish_generated(code, now, out),
        }
    }

    fn finish_relayed(
        &mut self,
        n: usize,
        resp: &Message,
        now: Instant,
        out: &mut Vec<CallAction>,
    ) {
        if let Some(r) = relay_response(resp).map(|r| self.upstream_view(n, r)) {
            let code = r.status().unwrap_or(500);
            self.finish_bytes(code, r.to_bytes(), now, out);
        }
    }

    fn finish_generated(&mut self, code: u16, now: Instant, out: &mut Vec<CallAction>) {
        // Once answered nothing more is generated (and the INVITE is shed).
        let Some(invite) = &self.invite else {
            return;
        };
        let bytes = response_to(
            invite,
            code,
            canonical_reason(code),
            Some(&self.params.to_tag),
        )
        .build();
        self.finish_bytes(code, bytes, now, out);
    }

    fn finish_bytes(&mut self, code: u16, bytes: Vec<u8>, now: Instant, out: &mut Vec<CallAction>) {
        if self.phase != Phase::Trying {
            return;
        }
        self.phase = Phase::Failed;
        self.send_upstream(code, bytes, out);
        out.push(CallAction::Finished(self.outcome(code, now)));
        self.cancel_all(out);
    }

    fn outcome(&self, status: u16, now: Instant) -> CallOutcome {
        CallOutcome {
            status,
            setup: now.saturating_duration_since(self.started),
            // A resend with credentials (a call toward a PBX) is a new
            // attempt at the same target: only a change of target counts.
            failovers: self
                .attempts
                .windows(2)
                .filter(|w| w[0].target != w[1].target)
                .count() as u32,
        }
    }

    /// Gives a response to the server transaction and sends it. A 2xx the
    /// server transaction no longer takes (it already sent a final) is still
    /// forwarded, statelessly (§16.7 item 10).
    fn send_upstream(&mut self, code: u16, bytes: Vec<u8>, out: &mut Vec<CallAction>) {
        let acts = self.server.step(invite_server::Event::TuResponse(code));
        let bytes = Bytes::from(bytes);
        let sent = acts.contains(&invite_server::Action::Send);
        self.server_actions(acts, Some(&bytes), out);
        if !sent && (200..300).contains(&code) {
            out.push(CallAction::SendUpstream(bytes));
        }
    }

    fn server_actions(
        &mut self,
        acts: Vec<invite_server::Action>,
        given: Option<&Bytes>,
        out: &mut Vec<CallAction>,
    ) {
        use invite_server::Action as S;
        for act in acts {
            match act {
                S::SendTrying => {
                    let Some(invite) = &self.invite else {
                        continue;
                    };
                    let trying = Bytes::from(response_to(invite, 100, "Trying", None).build());
                    self.last_upstream = Some(trying.clone());
                    out.push(CallAction::SendUpstream(trying));
                }
                S::Send => {
                    if let Some(b) = given {
                        self.last_upstream = Some(b.clone());
                        out.push(CallAction::SendUpstream(b.clone()));
                    }
                }
                S::Resend => {
                    if let Some(b) = &self.last_upstream {
                        out.push(CallAction::SendUpstream(b.clone()));
                    }
                }
                S::Arm(t, d) => out.push(CallAction::Arm(CallTimer::Server(t), d)),
                S::Cancel(t) => out.push(CallAction::Disarm(CallTimer::Server(t))),
                S::ReportTimeout | S::ReportTransportError | S::Terminate => {}
            }
        }
    }

    fn check_done(&mut self, out: &mut Vec<CallAction>) {
        if out.contains(&CallAction::Terminate) {
            return;
        }
        let server_done = self.server.state() == invite_server::State::Terminated;
        if server_done && self.attempts.iter().all(|a| !a.live()) {
            out.push(CallAction::Terminate);
        }
    }

    /// Whether the call is over (the task may drop it).
    pub fn is_terminated(&self) -> bool {
        self.server.state() == invite_server::State::Terminated
            && self.attempts.iter().all(|a| !a.live())
    }
}
