//! Non-INVITE client transaction as a pure state machine (RFC 3261 §17.1.2).
//!
//! The machine never touches a socket or a clock: the runner in
//! `transaction::runner` feeds it events (timer fired, response, transport
//! error) and carries out the actions it returns. Timers E, F and K follow
//! §17.1.2.2; retransmissions happen only over unreliable transports.

use std::time::Duration;

/// RFC 3261 §17.1.1.1 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (T1, default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests (T2, default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (T4, default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F (and B): 64·T1, the transaction timeout.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// States of §17.1.2.2, figure 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// The timers a non-INVITE client transaction arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Retransmission (unreliable transports only).
    E,
    /// Transaction timeout.
    F,
    /// Wait time for response retransmissions after a final response.
    K,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A response arrived with this status code.
    Response(u16),
    TimerFired(Timer),
    /// The transport reported a failure sending the request (§17.1.4).
    TransportError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// (Re)send the request bytes.
    Retransmit,
    Arm(Timer, Duration),
    Cancel(Timer),
    /// Hand a response to the transaction user (TU).
    PassUp(u16),
    /// Timer F fired: the TU gets a timeout (treated as 408, §8.1.3.1).
    ReportTimeout,
    /// The transport failed: the TU gets a transport error (treated as 503).
    ReportTransportError,
    /// The transaction is over; its key can be forgotten.
    Terminate,
}

/// Non-INVITE client transaction (figure 6 of RFC 3261).
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    state: State,
    reliable: bool,
    timers: Timers,
    /// Current value of timer E's interval.
    interval_e: Duration,
}

impl NonInviteClient {
    /// Starts the transaction: the caller sends the request once, then applies
    /// the returned actions (arms E on UDP, and F).
    pub fn start(reliable: bool, timers: Timers) -> (Self, Vec<Action>) {
        let mut actions = Vec::with_capacity(2);
        if !reliable {
            actions.push(Action::Arm(Timer::E, timers.t1));
        }
        actions.push(Action::Arm(Timer::F, timers.timeout()));
        let machine = NonInviteClient {
            state: State::Trying,
            reliable,
            timers,
            interval_e: timers.t1,
        };
        (machine, actions)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn step(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        match (self.state, event) {
            (State::Trying | State::Proceeding, Event::Response(code)) if code < 200 => {
                self.state = State::Proceeding;
                vec![PassUp(code)]
            }
            (State::Trying | State::Proceeding, Event::Response(code)) => {
                self.state = State::Completed;
                // Timer K is T4 on unreliable transports, zero on reliable ones.
                let k = if self.reliable {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                let mut out = vec![PassUp(code), Cancel(Timer::F)];
                if !self.reliable {
                    out.push(Cancel(Timer::E));
                }
                if k.is_zero() {
                    self.state = State::Terminated;
                    out.push(Terminate);
                } else {
                    out.push(Arm(Timer::K, k));
                }
                out
            }
            (State::Trying, Event::TimerFired(Timer::E)) => {
                // §17.1.2.2: E doubles up to T2 while Trying.
                self.interval_e = (self.interval_e * 2).min(self.timers.t2);
                vec![Retransmit, Arm(Timer::E, self.interval_e)]
            }
            (State::Proceeding, Event::TimerFired(Timer::E)) => {
                // In Proceeding the interval is always T2.
                self.interval_e = self.timers.t2;
                vec![Retransmit, Arm(Timer::E, self.timers.t2)]
            }
            (State::Trying | State::Proceeding, Event::TimerFired(Timer::F)) => {
                self.state = State::Terminated;
                vec![Cancel(Timer::E), ReportTimeout, Terminate]
            }
            (State::Trying | State::Proceeding, Event::TransportError) => {
                self.state = State::Terminated;
                vec![
                    Cancel(Timer::E),
                    Cancel(Timer::F),
                    ReportTransportError,
                    Terminate,
                ]
            }
            (State::Completed, Event::TimerFired(Timer::K)) => {
                self.state = State::Terminated;
                vec![Terminate]
            }
            // Retransmitted final responses in Completed are absorbed; stale
            // timers and events after termination are ignored.
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

    #[test]
    fn udp_start_arms_e_and_f() {
        let (m, a) = NonInviteClient::start(false, Timers::default());
        assert_eq!(m.state(), State::Trying);
        assert_eq!(
            a,
            vec![
                Action::Arm(Timer::E, ms(500)),
                Action::Arm(Timer::F, ms(32_000))
            ]
        );
    }

    #[test]
    fn tcp_start_arms_only_f() {
        let (_, a) = NonInviteClient::start(true, Timers::default());
        assert_eq!(a, vec![Action::Arm(Timer::F, ms(32_000))]);
    }

    #[test]
    fn timer_e_doubles_up_to_t2_in_trying() {
        let (mut m, _) = NonInviteClient::start(false, Timers::default());
        let mut seen = Vec::new();
        for _ in 0..6 {
            let a = m.step(Event::TimerFired(Timer::E));
            assert_eq!(a[0], Action::Retransmit);
            if let Action::Arm(Timer::E, d) = a[1] {
                seen.push(d.as_millis());
            }
        }
        assert_eq!(seen, vec![1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn provisional_moves_to_proceeding_and_e_becomes_t2() {
        let (mut m, _) = NonInviteClient::start(false, Timers::default());
        assert_eq!(m.step(Event::Response(100)), vec![Action::PassUp(100)]);
        assert_eq!(m.state(), State::Proceeding);
        let a = m.step(Event::TimerFired(Timer::E));
        assert_eq!(a, vec![Action::Retransmit, Action::Arm(Timer::E, ms(4000))]);
    }

    #[test]
    fn final_on_udp_waits_timer_k_and_absorbs_retransmissions() {
        let (mut m, _) = NonInviteClient::start(false, Timers::default());
        let a = m.step(Event::Response(200));
        assert_eq!(
            a,
            vec![
                Action::PassUp(200),
                Action::Cancel(Timer::F),
                Action::Cancel(Timer::E),
                Action::Arm(Timer::K, ms(5000))
            ]
        );
        assert_eq!(m.state(), State::Completed);
        assert!(m.step(Event::Response(200)).is_empty());
        assert!(m.step(Event::TimerFired(Timer::E)).is_empty());
        assert_eq!(m.step(Event::TimerFired(Timer::K)), vec![Action::Terminate]);
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn final_on_tcp_terminates_at_once() {
        let (mut m, _) = NonInviteClient::start(true, Timers::default());
        let a = m.step(Event::Response(401));
        assert_eq!(
            a,
            vec![
                Action::PassUp(401),
                Action::Cancel(Timer::F),
                Action::Terminate
            ]
        );
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn timer_f_reports_timeout_from_trying_and_proceeding() {
        for provisional in [false, true] {
            let (mut m, _) = NonInviteClient::start(false, Timers::default());
            if provisional {
                m.step(Event::Response(180));
            }
            let a = m.step(Event::TimerFired(Timer::F));
            assert_eq!(
                a,
                vec![
                    Action::Cancel(Timer::E),
                    Action::ReportTimeout,
                    Action::Terminate
                ]
            );
            assert!(
                m.step(Event::Response(200)).is_empty(),
                "late response ignored"
            );
        }
    }

    #[test]
    fn transport_error_terminates() {
        let (mut m, _) = NonInviteClient::start(true, Timers::default());
        let a = m.step(Event::TransportError);
        assert!(a.contains(&Action::ReportTransportError));
        assert_eq!(m.state(), State::Terminated);
    }

    #[test]
    fn stale_timers_are_ignored() {
        let (mut m, _) = NonInviteClient::start(false, Timers::default());
        m.step(Event::Response(200));
        m.step(Event::TimerFired(Timer::K));
        for t in [Timer::E, Timer::F, Timer::K] {
            assert!(m.step(Event::TimerFired(t)).is_empty());
        }
    }
}
