//! The inputs and outputs of a proxied call's state machine
//! ([`super::call::Call`]): its parameters, events, actions and timers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Secret;
use crate::context::Interface;
use crate::dns::Target;
use crate::sip::{Message, Uri};
use crate::transaction::client::Timers;
use crate::transaction::invite_client;
use crate::transaction::invite_server;

use super::failover::{Outcome, Policy};
use super::outbound::Mapping;

/// Where one attempt may go, in DNS order (RFC 3263, RFC 2782): the
/// target and our interface toward it (Via, Record-Route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub target: Target,
    pub local: Interface,
}

/// Everything a call needs besides the INVITE and the targets.
#[derive(Clone, Debug)]
pub struct CallParams {
    pub policy: Policy,
    pub timers: Timers,
    /// The interface the INVITE arrived on.
    pub inbound: Interface,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The new Request-URI (the connection's destination_uri).
    pub destination: Uri,
    /// Our Route entries to remove (from [`super::route::Decision::NewCall`]).
    pub pop_routes: usize,
    /// Keys the dialog tokens of our Record-Route ([`super::token`]).
    pub secret: [u8; 16],
    /// The epoch the tokens are issued at ([`token::now_epoch`]).
    pub epoch: u32,
    /// Random per call: makes each branch unique.
    pub nonce: u64,
    /// The To tag of responses we generate (408, 480, 487, 500, 503).
    pub to_tag: String,
    /// Set for a call from the internal side toward a PBX.
    pub toward_pbx: Option<TowardPbx>,
}

/// What a call toward a PBX needs besides a proxied call's parameters
/// (see [`super::outbound`]).
#[derive(Clone, Debug)]
pub struct TowardPbx {
    /// The dialog as each side sees it.
    pub mapping: Mapping,
    /// The connection's digest credentials (answering 401/407).
    pub username: String,
    pub password: Secret,
    /// `P-Asserted-Identity` for the PBX (RFC 3325): the internal caller,
    /// when `routing.assert_caller_identity` allows it.
    pub asserted_identity: Option<String>,
}

/// Timers of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallTimer {
    /// A timer of the server transaction facing the PBX.
    Server(invite_server::Timer),
    /// A timer of the client transaction of attempt `n`.
    Client(usize, invite_client::Timer),
    /// `timeout_1xx` of attempt `n`.
    NoProvisional(usize),
    /// `timeout_2xx` of attempt `n` (armed at its first provisional).
    NoAnswer(usize),
    /// 64·T1 after attempt `n` was cancelled: stop waiting for its final response.
    CancelGuard(usize),
}

/// The outcome of a call, once known: what `uacd_calls_total`,
/// `uacd_call_setup_seconds` and `uacd_failovers_total` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The final status sent upstream.
    pub status: u16,
    /// From the INVITE to that final status.
    pub setup: Duration,
    /// Targets tried after the first.
    pub failovers: u32,
}

#[derive(Clone, Debug)]
pub enum CallEvent {
    /// A response from downstream whose top Via branch is one of ours.
    Response(Box<Message>),
    Timer(CallTimer),
    /// Sending to target `t` failed (ICMP unreachable, refused, TLS failure).
    TransportError(usize),
    /// The PBX retransmitted the INVITE.
    UpstreamRetransmission,
    /// The PBX ACKed our non-2xx final response (same branch, §17.2.3).
    UpstreamAck,
    /// The PBX sent a matching CANCEL; the task has answered it 200 (§9.2).
    UpstreamCancel,
    /// Sending upstream failed.
    UpstreamTransportError,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallAction {
    /// Send to the PBX over the hop the INVITE came from.
    SendUpstream(Bytes),
    /// Send to target `n` (INVITE, retransmission, ACK for a non-2xx).
    SendToTarget(usize, Bytes),
    /// Run a CANCEL non-INVITE client transaction toward target `n` (§9.1).
    SendCancel(usize, Bytes),
    Arm(CallTimer, Duration),
    Disarm(CallTimer),
    /// Target `n` failed over: report it to the DNS greylist.
    TargetFailed(usize, Outcome),
    /// The final answer went upstream.
    Finished(CallOutcome),
    /// A call toward a PBX answered a challenge: the PBX's CSeq of the
    /// caller's requests now runs this far ahead ([`Mapping::cseq_offset`]).
    CSeqOffset(u32),
    /// Every transaction is over: forget the call.
    Terminate,
}
