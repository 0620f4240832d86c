//! INVITE server transaction as a pure state machine (RFC 3261 §17.2.1,
//! figure 7, with RFC 6026 figure 5: the Accepted state and Timer L).
//!
//! The runner keeps the last response bytes the TU gave and carries out the
//! actions: [`Action::Send`] sends the response just given by the TU,
//! [`Action::Resend`] sends the last one again (INVITE retransmission or
//! timer G). Timers are durations to arm; the machine has no clock.

use std::time::Duration;

pub use super::client::Timers;

/// States of RFC 6026 figure 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    /// A 300-699 was sent; waiting for the ACK.
    Completed,
    /// The ACK arrived; absorbing its retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026 §7.1).
    Accepted,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Final non-2xx retransmission (unreliable transports only).
    G,
    /// Wait for the ACK, 64·T1.
    H,
    /// Absorb ACK retransmissions: T4 on UDP, 0 on streams.
    I,
    /// RFC 6026: absorb INVITE retransmissions after a 2xx, 64·T1.
    L,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The INVITE was received again (same branch).
    Retransmission,
    /// The TU gives a response with this status code.
    TuResponse(u16),
    /// An ACK matched the transaction (an ACK for a non-2xx, §17.2.3).
    Ack,
    TimerFired(Timer),
    /// The transport failed sending a response (§17.2.4).
    TransportError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a `100 Trying` built by the TU (§17.2.1: at once, unless the TU
    /// answers within 200 ms).
    SendTrying,
    /// Send the response the TU just gave (and remember it as the last one).
    Send,
    /// Send the last response again.
    Resend,
    Arm(Timer, Duration),
    Cancel(Timer),
    /// Timer H fired: the ACK never came (the TU may count it; §17.2.1).
    ReportTimeout,
    /// A transport error ended the transaction (§17.2.4).
    ReportTransportError,
    Terminate,
}

/// INVITE server transaction.
#[derive(Debug, Clone)]
pub struct InviteServer {
    state: State,
    reliable: bool,
    timers: Timers,
    interval_g: Duration,
}

impl InviteServer {
    /// A new transaction for a received INVITE; the first action is always
    /// [`Action::SendTrying`].
    pub fn start(reliable: bool, timers: Timers) -> (Self, Vec<Action>) {
        let machine = InviteServer {
            state: State::Proceeding,
            reliable,
            timers,
            interval_g: timers.t1,
        };
        (machine, vec![Action::SendTrying])
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a final response was given (the TU must not give another non-2xx).
    pub fn is_final(&self) -> bool {
        !matches!(self.state, State::Proceeding)
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        match (self.state, event) {
            // The 100 is sent at start, so there is always a last response.
            (State::Proceeding, Event::Retransmission) => vec![Resend],
            (State::Proceeding, Event::TuResponse(code)) if code < 200 => vec![Send],
            (State::Proceeding, Event::TuResponse(code)) if code < 300 => {
                self.state = State::Accepted;
                vec![Send, Arm(Timer::L, self.timers.timeout())]
            }
            (State::Proceeding, Event::TuResponse(_)) => {
                self.state = State::Completed;
                let mut out = vec![Send];
                if !self.reliable {
                    out.push(Arm(Timer::G, self.interval_g));
                }
                out.push(Arm(Timer::H, self.timers.timeout()));
                out
            }
            (State::Proceeding | State::Completed | State::Accepted, Event::TransportError) => {
                self.state = State::Terminated;
                vec![
                    Cancel(Timer::G),
                    Cancel(Timer::H),
                    Cancel(Timer::L),
                    ReportTransportError,
                    Terminate,
                ]
            }
            (State::Completed, Event::Retransmission) => vec![Resend],
            (State::Completed, Event::TimerFired(Timer::G)) => {
                self.interval_g = (self.interval_g * 2).min(self.timers.t2);
                vec![Resend, Arm(Timer::G, self.interval_g)]
            }
            (State::Completed, Event::TimerFired(Timer::H)) => {
                self.state = State::Terminated;
                vec![Cancel(Timer::G), ReportTimeout, Terminate]
            }
            (State::Completed, Event::Ack) => {
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                let mut out = vec![Cancel(Timer::G), Cancel(Timer::H)];
                if i.is_zero() {
                    self.state = State::Terminated;
                    out.push(Terminate);
                } else {
                    self.state = State::Confirmed;
                    out.push(Arm(Timer::I, i));
                }
                out
            }
            (State::Confirmed, Event::TimerFired(Timer::I)) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            // RFC 6026 §7.1: 2xx retransmissions from the TU are sent in Accepted.
            (State::Accepted, Event::TuResponse(code)) if (200..300).contains(&code) => {
                vec![Send]
            }
            (State::Accepted, Event::TimerFired(Timer::L)) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            // INVITE retransmissions in Accepted, ACK retransmissions in
            // Confirmed, a non-2xx from the TU after a final, stale timers:
            // absorbed.
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn udp() -> InviteServer {
        InviteServer::start(false, Timers::default()).0
    }

    #[test]
    fn rfc3261_17_2_1_trying_sent_at_once() {
        let (m, a) = InviteServer::start(false, Timers::default());
        assert_eq!(a, vec![Action::SendTrying]);
        assert_eq!(m.state(), State::Proceeding);
        assert!(!m.is_final());
    }

    #[test]
    fn rfc3261_17_2_1_retransmission_in_proceeding_resends_last_provisional() {
        let mut m = udp();
        assert_eq!(m.step(Event::TuResponse(180)), vec![Action::Send]);
        assert_eq!(m.step(Event::Retransmission), vec![Action::Resend]);
        assert_eq!(m.state(), State::Proceeding);
    }

    #[test]
    fn rfc3261_17_2_1_non_2xx_on_udp_retransmits_on_g_until_h() {
        let mut m = udp();
        assert_eq!(
            m.step(Event::TuResponse(486)),
            vec![
                Action::Send,
                Action::Arm(Timer::G, ms(500)),
                Action::Arm(Timer::H, ms(32_000))
            ]
        );
        assert_eq!(m.state(), State::Completed);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let a = m.step(Event::TimerFired(Timer::G));
            assert_eq!(a[0], Action::Resend);
            if let Action::Arm(Timer::G, d) = a[1] {
                seen.push(d.as_millis());
            }
        }
        assert_eq!(seen, vec![1000, 2000, 4000, 4000, 4000], "G capped at T2");
        assert_eq!(m.step(Event::Retransmission), vec![Action::Resend]);
        assert_eq!(
            m.step(Event::TimerFired(Timer::H)),
            vec![
                Action::Cancel(Timer::G),
                Action::ReportTimeout,
                Action::Terminate
            ]
        );
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn rfc3261_17_2_1_non_2xx_on_stream_arms_only_h() {
        let (mut m, _) = InviteServer::start(true, Timers::default());
        assert_eq!(
            m.step(Event::TuResponse(404)),
            vec![Action::Send, Action::Arm(Timer::H, ms(32_000))]
        );
    }

    #[test]
    fn rfc3261_17_2_1_ack_confirms_and_timer_i_absorbs_retransmissions() {
        let mut m = udp();
        m.step(Event::TuResponse(487));
        assert_eq!(
            m.step(Event::Ack),
            vec![
                Action::Cancel(Timer::G),
                Action::Cancel(Timer::H),
                Action::Arm(Timer::I, ms(5000))
            ]
        );
        assert_eq!(m.state(), State::Confirmed);
        assert!(m.step(Event::Ack).is_empty(), "ACK retransmission absorbed");
        assert!(
            m.step(Event::Retransmission).is_empty(),
            "INVITE absorbed in Confirmed"
        );
        assert!(m.step(Event::TimerFired(Timer::G)).is_empty(), "stale G");
        assert_eq!(m.step(Event::TimerFired(Timer::I)), vec![Action::Terminate]);
    }

    #[test]
    fn rfc3261_17_2_1_ack_on_stream_terminates_at_once() {
        let (mut m, _) = InviteServer::start(true, Timers::default());
        m.step(Event::TuResponse(603));
        assert_eq!(
            m.step(Event::Ack),
            vec![
                Action::Cancel(Timer::G),
                Action::Cancel(Timer::H),
                Action::Terminate
            ]
        );
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn rfc6026_7_1_2xx_enters_accepted_passes_tu_retransmissions_absorbs_invites() {
        let mut m = udp();
        m.step(Event::TuResponse(180));
        assert_eq!(
            m.step(Event::TuResponse(200)),
            vec![Action::Send, Action::Arm(Timer::L, ms(32_000))]
        );
        assert_eq!(m.state(), State::Accepted);
        assert!(m.is_final());
        assert_eq!(m.step(Event::TuResponse(200)), vec![Action::Send]);
        assert!(
            m.step(Event::Retransmission).is_empty(),
            "INVITE retransmission absorbed"
        );
        assert!(
            m.step(Event::TuResponse(487)).is_empty(),
            "no non-2xx after 2xx"
        );
        assert!(m.step(Event::Ack).is_empty());
        assert_eq!(m.step(Event::TimerFired(Timer::L)), vec![Action::Terminate]);
    }

    #[test]
    fn rfc3261_17_2_4_transport_error_terminates() {
        let mut m = udp();
        m.step(Event::TuResponse(500));
        let a = m.step(Event::TransportError);
        assert!(a.ends_with(&[Action::ReportTransportError, Action::Terminate]));
        assert_eq!(m.state(), State::Terminated);
        assert!(m.step(Event::Retransmission).is_empty());
    }

    #[test]
    fn second_final_from_tu_is_ignored_in_completed() {
        let mut m = udp();
        m.step(Event::TuResponse(480));
        assert!(m.step(Event::TuResponse(200)).is_empty());
        assert_eq!(m.state(), State::Completed);
    }
}
