//! Non-INVITE server transaction as a pure state machine (RFC 3261 §17.2.2,
//! figure 8): used for the CANCEL the proxy answers itself (§16.10) and for
//! relayed BYE and other in-dialog requests. Timer J is 64·T1 on UDP, 0 on
//! streams. The runner keeps the last response bytes.

use std::time::Duration;

pub use super::client::Timers;

/// States of figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The request was received again.
    Retransmission,
    /// The TU gives a response with this code.
    TuResponse(u16),
    /// Timer J fired.
    TimerFired,
    TransportError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the response the TU just gave (and remember it).
    Send,
    /// Send the last response again.
    Resend,
    ArmJ(Duration),
    ReportTransportError,
    Terminate,
}

/// Non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct NonInviteServer {
    state: State,
    reliable: bool,
    timers: Timers,
}

impl NonInviteServer {
    pub fn new(reliable: bool, timers: Timers) -> NonInviteServer {
        NonInviteServer {
            state: State::Trying,
            reliable,
            timers,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        match (self.state, event) {
            (State::Trying | State::Proceeding, Event::TuResponse(code)) if code < 200 => {
                self.state = State::Proceeding;
                vec![Send]
            }
            (State::Trying | State::Proceeding, Event::TuResponse(_)) => {
                if self.reliable {
                    self.state = State::Terminated;
                    vec![Send, Terminate]
                } else {
                    self.state = State::Completed;
                    vec![Send, ArmJ(self.timers.timeout())]
                }
            }
            // §17.2.2: absorbed in Trying, answered with the last response after.
            (State::Proceeding | State::Completed, Event::Retransmission) => vec![Resend],
            (State::Proceeding | State::Completed, Event::TransportError) => {
                self.state = State::Terminated;
                vec![ReportTransportError, Terminate]
            }
            (State::Completed, Event::TimerFired) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3261_17_2_2_retransmission_absorbed_in_trying() {
        let mut m = NonInviteServer::new(false, Timers::default());
        assert!(m.step(Event::Retransmission).is_empty());
        assert_eq!(m.state(), State::Trying);
    }

    #[test]
    fn rfc3261_17_2_2_final_on_udp_arms_j_and_answers_retransmissions() {
        let mut m = NonInviteServer::new(false, Timers::default());
        assert_eq!(m.step(Event::TuResponse(100)), vec![Action::Send]);
        assert_eq!(m.step(Event::Retransmission), vec![Action::Resend]);
        assert_eq!(
            m.step(Event::TuResponse(200)),
            vec![Action::Send, Action::ArmJ(Duration::from_secs(32))]
        );
        assert_eq!(m.step(Event::Retransmission), vec![Action::Resend]);
        assert!(
            m.step(Event::TuResponse(500)).is_empty(),
            "one final response"
        );
        assert_eq!(m.step(Event::TimerFired), vec![Action::Terminate]);
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn rfc3261_17_2_2_timer_j_zero_on_streams() {
        let mut m = NonInviteServer::new(true, Timers::default());
        assert_eq!(
            m.step(Event::TuResponse(200)),
            vec![Action::Send, Action::Terminate]
        );
    }

    #[test]
    fn rfc3261_17_2_4_transport_error() {
        let mut m = NonInviteServer::new(false, Timers::default());
        m.step(Event::TuResponse(481));
        assert_eq!(
            m.step(Event::TransportError),
            vec![Action::ReportTransportError, Action::Terminate]
        );
    }
}
