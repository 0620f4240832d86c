//! INVITE client transaction as a pure state machine (RFC 3261 §17.1.1 with
//! the RFC 6026 "Accepted" state and Timer M), plus the two requests it
//! derives from the INVITE it sends: the hop-by-hop ACK for a non-2xx final
//! response (§17.1.1.3) and the CANCEL (§9.1).
//!
//! Like [`super::client`], the machine owns no socket and no clock: the
//! runner feeds events and carries out the actions, and timers are durations
//! to arm. The machine does not hold the bytes either: the runner keeps the
//! INVITE (for [`Action::Retransmit`]) and builds the ACK with [`ack_for`].

use std::time::Duration;

use crate::sip::{HeaderName, Message, Method, ParseError, RequestBuilder};

pub use super::client::Timers;

/// States of RFC 3261 figure 5 as amended by RFC 6026 figure 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Calling,
    Proceeding,
    /// A non-2xx final response was received and ACKed.
    Completed,
    /// RFC 6026 §7.2: a 2xx was received; further 2xx are passed to the TU.
    Accepted,
    Terminated,
}

/// The timers an INVITE client transaction arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE retransmission (unreliable transports only), T1 doubling.
    A,
    /// Transaction timeout while Calling, 64·T1.
    B,
    /// Wait for final-response retransmissions in Completed: ≥ 32 s on UDP, 0 on streams.
    D,
    /// RFC 6026: wait for 2xx retransmissions (and forked 2xx) in Accepted, 64·T1.
    M,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A response with this status code matched the transaction (§17.1.3).
    Response(u16),
    TimerFired(Timer),
    /// The transport reported a failure sending the INVITE or the ACK (§17.1.4).
    TransportError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// (Re)send the INVITE bytes.
    Retransmit,
    /// Send (or re-send) the ACK built by [`ack_for`] from the INVITE and the
    /// non-2xx final response just received (§17.1.1.3).
    SendAck,
    Arm(Timer, Duration),
    Cancel(Timer),
    /// Hand the response to the TU (provisional, first non-2xx final, every 2xx).
    PassUp(u16),
    /// Timer B fired in Calling: the TU treats it as 408 (§8.1.3.1).
    ReportTimeout,
    /// The transport failed before a final response: the TU treats it as 503.
    ReportTransportError,
    /// The transaction is over; its key can be forgotten.
    Terminate,
}

/// Timer D: at least 32 s on unreliable transports (§17.1.1.2), zero on streams.
const TIMER_D_UDP: Duration = Duration::from_secs(32);

/// INVITE client transaction (RFC 3261 figure 5, RFC 6026 figure 3).
#[derive(Debug, Clone)]
pub struct InviteClient {
    state: State,
    reliable: bool,
    timers: Timers,
    /// Current interval of timer A.
    interval_a: Duration,
}

impl InviteClient {
    /// Starts the transaction: the caller sends the INVITE once, then applies
    /// the returned actions (A on UDP, and B).
    pub fn start(reliable: bool, timers: Timers) -> (Self, Vec<Action>) {
        let mut actions = Vec::with_capacity(2);
        if !reliable {
            actions.push(Action::Arm(Timer::A, timers.t1));
        }
        actions.push(Action::Arm(Timer::B, timers.timeout()));
        let machine = InviteClient {
            state: State::Calling,
            reliable,
            timers,
            interval_a: timers.t1,
        };
        (machine, actions)
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a provisional response was received, which is what allows a
    /// CANCEL to be sent (§9.1).
    pub fn may_cancel(&self) -> bool {
        self.state == State::Proceeding
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        match (self.state, event) {
            (State::Calling, Event::Response(code)) if code < 200 => {
                // §17.1.1.2: no more retransmissions, and B applies only while Calling.
                self.state = State::Proceeding;
                let mut out = Vec::with_capacity(3);
                if !self.reliable {
                    out.push(Cancel(Timer::A));
                }
                out.push(Cancel(Timer::B));
                out.push(PassUp(code));
                out
            }
            (State::Proceeding, Event::Response(code)) if code < 200 => vec![PassUp(code)],
            (State::Calling | State::Proceeding, Event::Response(code)) if code < 300 => {
                // RFC 6026 §8.4: 2xx → Accepted, Timer M.
                let mut out = self.leave_calling();
                self.state = State::Accepted;
                out.push(PassUp(code));
                out.push(Arm(Timer::M, self.timers.timeout()));
                out
            }
            (State::Calling | State::Proceeding, Event::Response(code)) => {
                let mut out = self.leave_calling();
                out.push(SendAck);
                out.push(PassUp(code));
                if self.reliable {
                    self.state = State::Terminated;
                    out.push(Terminate);
                } else {
                    self.state = State::Completed;
                    out.push(Arm(Timer::D, TIMER_D_UDP));
                }
                out
            }
            (State::Calling, Event::TimerFired(Timer::A)) => {
                // §17.1.1.2: A doubles without the T2 cap of non-INVITE.
                self.interval_a *= 2;
                vec![Retransmit, Arm(Timer::A, self.interval_a)]
            }
            (State::Calling, Event::TimerFired(Timer::B)) => {
                self.state = State::Terminated;
                let mut out = Vec::with_capacity(3);
                if !self.reliable {
                    out.push(Cancel(Timer::A));
                }
                out.extend([ReportTimeout, Terminate]);
                out
            }
            (State::Calling | State::Proceeding, Event::TransportError) => {
                let mut out = self.leave_calling();
                self.state = State::Terminated;
                out.extend([ReportTransportError, Terminate]);
                out
            }
            // §17.1.1.2: a retransmitted final response re-sends the ACK and is not passed up.
            (State::Completed, Event::Response(code)) if code >= 300 => vec![SendAck],
            (State::Completed, Event::TimerFired(Timer::D)) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            (State::Completed, Event::TransportError) => {
                // Figure 5: Completed --transport error--> Terminated. The TU
                // already has the final response, so nothing is reported.
                self.state = State::Terminated;
                vec![Cancel(Timer::D), Terminate]
            }
            // RFC 6026 §8.4: every 2xx in Accepted goes to the TU (the proxy
            // forwards it statelessly, §16.7 item 10 forked 2xx).
            (State::Accepted, Event::Response(code)) if (200..300).contains(&code) => {
                vec![PassUp(code)]
            }
            (State::Accepted, Event::TimerFired(Timer::M)) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            // Late provisional responses, non-2xx after a 2xx, stale timers
            // and anything after termination are absorbed.
            _ => Vec::new(),
        }
    }

    /// Cancels A and B when a final response or an error ends Calling/Proceeding.
    fn leave_calling(&self) -> Vec<Action> {
        let mut out = Vec::with_capacity(5);
        if self.state == State::Calling {
            if !self.reliable {
                out.push(Action::Cancel(Timer::A));
            }
            out.push(Action::Cancel(Timer::B));
        }
        out
    }
}

/// The Route values of `req`, one per entry, in order.
fn route_values(req: &Message) -> Vec<String> {
    req.header_values(HeaderName::Route)
        .into_iter()
        .map(|v| v.into_owned())
        .collect()
}

fn request_uri_text(req: &Message) -> Result<String, ParseError> {
    req.request_uri()
        .map(ToString::to_string)
        .ok_or(ParseError::NotARequest)
}

fn required_value(msg: &Message, name: HeaderName) -> Result<String, ParseError> {
    msg.header(name)
        .map(|h| h.value().into_owned())
        .ok_or(ParseError::MissingHeader(name.as_str()))
}

fn top_via_value(req: &Message) -> Result<String, ParseError> {
    req.header_values(HeaderName::Via)
        .into_iter()
        .next()
        .map(|v| v.into_owned())
        .ok_or(ParseError::MissingHeader("Via"))
}

/// The ACK for a non-2xx final response `resp` to the INVITE `invite`
/// (RFC 3261 §17.1.1.3): the INVITE's Request-URI, its top Via only (same
/// branch), From, Call-ID and Route set; the response's To (with its tag);
/// `CSeq: <INVITE number> ACK`; no body.
pub fn ack_for(invite: &Message, resp: &Message) -> Result<Vec<u8>, ParseError> {
    let cseq = invite.cseq()?;
    let mut b = RequestBuilder::new(Method::Ack, &request_uri_text(invite)?)
        .header("Via", top_via_value(invite)?);
    for route in route_values(invite) {
        b = b.header("Route", route);
    }
    Ok(b.header("Max-Forwards", 70)
        .header("From", required_value(invite, HeaderName::From)?)
        .header("To", required_value(resp, HeaderName::To)?)
        .header("Call-ID", invite.call_id()?)
        .header("CSeq", format!("{} ACK", cseq.seq))
        .build())
}

/// The CANCEL of the INVITE `invite` (RFC 3261 §9.1): same Request-URI,
/// Call-ID, From, To (no tag added), CSeq number with method CANCEL, a single
/// Via equal to the INVITE's top Via (so it shares the branch), and the same
/// Route set. `reason` adds an RFC 3326 Reason header (e.g. `SIP;cause=408`).
pub fn cancel_for(invite: &Message, reason: Option<&str>) -> Result<Vec<u8>, ParseError> {
    let cseq = invite.cseq()?;
    let mut b = RequestBuilder::new(Method::Cancel, &request_uri_text(invite)?)
        .header("Via", top_via_value(invite)?);
    for route in route_values(invite) {
        b = b.header("Route", route);
    }
    b = b
        .header("Max-Forwards", 70)
        .header("From", required_value(invite, HeaderName::From)?)
        .header("To", required_value(invite, HeaderName::To)?)
        .header("Call-ID", invite.call_id()?)
        .header("CSeq", format!("{} CANCEL", cseq.seq));
    if let Some(r) = reason {
        b = b.header("Reason", r);
    }
    Ok(b.build())
}

#[cfg(test)]
#[path = "invite_client_tests.rs"]
mod tests;
