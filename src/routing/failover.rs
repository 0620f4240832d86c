//! The failover rules of design.md (next target on the
//! configured codes, on no provisional within `timeout_1xx_sec` and on
//! transport errors; any other final response is relayed as is) and the
//! choice of the best final response when every target failed (RFC 3261
//! §16.7 item 6, with the 401/407 challenge merge of item 7).

use std::time::Duration;

use crate::config::RoutingConfig;
use crate::sip::{HeaderName, Message};

/// The routing settings the decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub failover_codes: Vec<u16>,
    /// No provisional response by then: next target.
    pub timeout_1xx: Duration,
    /// Ringing with no final response by then: CANCEL and 408.
    pub timeout_2xx: Duration,
}

impl Policy {
    pub fn from_config(c: &RoutingConfig) -> Policy {
        Policy {
            failover_codes: c.failover_codes.clone(),
            timeout_1xx: Duration::from_secs(c.timeout_1xx_sec),
            timeout_2xx: Duration::from_secs(c.timeout_2xx_sec),
        }
    }

    /// Whether a final response with this code moves on to the next target.
    pub fn fails_over(&self, code: u16) -> bool {
        code >= 300 && self.failover_codes.contains(&code)
    }
}

impl Default for Policy {
    /// design.md defaults: 2 s, 120 s, 408/480/503/504.
    fn default() -> Self {
        Policy {
            failover_codes: vec![408, 480, 503, 504],
            timeout_1xx: Duration::from_secs(2),
            timeout_2xx: Duration::from_secs(120),
        }
    }
}

/// How one attempt (branch) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A final response with this code.
    Status(u16),
    /// No provisional response within `timeout_1xx` (or Timer B).
    NoProvisional,
    /// The transport failed (ICMP unreachable, connection refused, TLS failure).
    TransportError,
}

/// What to do after an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Relay this response upstream: the call has its answer.
    Relay,
    /// Try the next target.
    NextTarget,
    /// Every target failed: answer with the best response.
    GiveUp,
}

/// The failover decision for one ended attempt.
pub fn decide(policy: &Policy, outcome: Outcome, has_next: bool) -> Verdict {
    let retry = match outcome {
        Outcome::Status(code) => policy.fails_over(code),
        Outcome::NoProvisional | Outcome::TransportError => true,
    };
    match (retry, has_next) {
        (false, _) => Verdict::Relay,
        (true, true) => Verdict::NextTarget,
        (true, false) => Verdict::GiveUp,
    }
}

/// The answer chosen by [`BestResponse::choose`].
#[derive(Clone, Debug)]
pub enum Best {
    /// Relay this received response (already without our Via).
    Relay(Box<Message>),
    /// Generate a response with this code ourselves.
    Generate(u16),
}

#[derive(Clone, Debug)]
enum Candidate {
    Received(Box<Message>),
    /// A timeout (408) or transport error (503) recorded as a code.
    Synthetic(u16),
}

impl Candidate {
    fn code(&self) -> u16 {
        match self {
            Candidate::Received(m) => m.status().unwrap_or(500),
            Candidate::Synthetic(c) => *c,
        }
    }
}

/// The final responses of the failed attempts of one call (§16.7 "response
/// context").
#[derive(Clone, Debug, Default)]
pub struct BestResponse {
    candidates: Vec<Candidate>,
}

impl BestResponse {
    /// Records a received final response (our Via already removed).
    pub fn add_response(&mut self, resp: Message) {
        self.candidates.push(Candidate::Received(Box::new(resp)));
    }

    /// Records an attempt that ended without a response.
    pub fn add_outcome(&mut self, outcome: Outcome) {
        let code = match outcome {
            Outcome::Status(c) => c,
            Outcome::NoProvisional => 408,
            Outcome::TransportError => 503,
        };
        self.candidates.push(Candidate::Synthetic(code));
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// §16.7 item 6: a 6xx wins; otherwise the lowest class. Within a class
    /// a received 401/407 comes first (so the caller can authenticate), then
    /// any received response, then our own timeouts; ties go to the earliest.
    /// A received 503 becomes a generated 500 (a 503 would tell the PBX that
    /// *we* are unavailable). A chosen 401/407 carries the challenges of every
    /// 401/407 received (item 7). Nothing recorded: 408.
    pub fn choose(&self) -> Best {
        let rank = |c: &Candidate| {
            let code = c.code();
            let class = if code >= 600 { 0 } else { code / 100 };
            let within = match c {
                Candidate::Received(_) if code == 401 || code == 407 => 0,
                Candidate::Received(_) => 1,
                Candidate::Synthetic(_) => 2,
            };
            (class, within)
        };
        let Some(best) = self
            .candidates
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (rank(c), *i))
            .map(|(_, c)| c)
        else {
            return Best::Generate(408);
        };
        match best {
            Candidate::Synthetic(code) => Best::Generate(*code),
            Candidate::Received(m) if m.status() == Some(503) => Best::Generate(500),
            Candidate::Received(m) => {
                let code = m.status().unwrap_or(500);
                if code != 401 && code != 407 {
                    return Best::Relay(m.clone());
                }
                let mut out = m.clone();
                for other in &self.candidates {
                    let Candidate::Received(o) = other else {
                        continue;
                    };
                    if std::ptr::eq(o.as_ref(), m.as_ref())
                        || !matches!(o.status(), Some(401 | 407))
                    {
                        continue;
                    }
                    for name in [HeaderName::WwwAuthenticate, HeaderName::ProxyAuthenticate] {
                        for v in o.header_values(name) {
                            out.append_header(name.as_str(), &v);
                        }
                    }
                }
                Best::Relay(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn resp(code: u16, extra: &str) -> Message {
        let text = format!(
            "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKpbx\r\n\
From: <sip:a@pbx>;tag=1\r\nTo: <sip:b@us>;tag=d{code}\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse_datagram(Bytes::from(text)).expect("parse")
    }

    fn code_of(b: &Best) -> (u16, bool) {
        match b {
            Best::Relay(m) => (m.status().unwrap_or(0), true),
            Best::Generate(c) => (*c, false),
        }
    }

    #[test]
    fn failover_codes_and_timeouts_move_on() {
        let p = Policy::default();
        for code in [408, 480, 503, 504] {
            assert_eq!(
                decide(&p, Outcome::Status(code), true),
                Verdict::NextTarget,
                "{code}"
            );
            assert_eq!(decide(&p, Outcome::Status(code), false), Verdict::GiveUp);
        }
        for o in [Outcome::NoProvisional, Outcome::TransportError] {
            assert_eq!(decide(&p, o, true), Verdict::NextTarget);
            assert_eq!(decide(&p, o, false), Verdict::GiveUp);
        }
    }

    #[test]
    fn other_finals_are_relayed_without_failover() {
        let p = Policy::default();
        for code in [
            200, 202, 302, 400, 401, 403, 404, 486, 487, 500, 502, 600, 603,
        ] {
            assert_eq!(
                decide(&p, Outcome::Status(code), true),
                Verdict::Relay,
                "{code}"
            );
        }
    }

    #[test]
    fn failover_codes_come_from_config() {
        let c = RoutingConfig {
            timeout_1xx_sec: 5,
            timeout_2xx_sec: 60,
            failover_codes: vec![486, 500],
            ..RoutingConfig::default()
        };
        let p = Policy::from_config(&c);
        assert_eq!(p.timeout_1xx, Duration::from_secs(5));
        assert_eq!(p.timeout_2xx, Duration::from_secs(60));
        assert_eq!(decide(&p, Outcome::Status(486), true), Verdict::NextTarget);
        assert_eq!(decide(&p, Outcome::Status(503), true), Verdict::Relay);
        assert!(!p.fails_over(180), "provisional never fails over");
    }

    #[test]
    fn rfc3261_16_7_6xx_wins() {
        let mut b = BestResponse::default();
        b.add_response(resp(480, ""));
        b.add_response(resp(603, ""));
        b.add_response(resp(302, ""));
        assert_eq!(code_of(&b.choose()), (603, true));
    }

    #[test]
    fn rfc3261_16_7_lowest_class_wins() {
        let mut b = BestResponse::default();
        b.add_response(resp(504, ""));
        b.add_response(resp(480, ""));
        assert_eq!(code_of(&b.choose()), (480, true));
    }

    #[test]
    fn rfc3261_16_7_received_beats_our_timeout_in_the_same_class() {
        let mut b = BestResponse::default();
        b.add_outcome(Outcome::NoProvisional);
        b.add_response(resp(480, ""));
        assert_eq!(code_of(&b.choose()), (480, true));
    }

    #[test]
    fn rfc3261_16_7_only_timeouts_give_408_only_transport_errors_503() {
        let mut b = BestResponse::default();
        assert_eq!(code_of(&b.choose()), (408, false), "nothing at all");
        b.add_outcome(Outcome::TransportError);
        assert_eq!(code_of(&b.choose()), (503, false));
        b.add_outcome(Outcome::NoProvisional);
        assert_eq!(code_of(&b.choose()), (408, false), "4xx below 5xx");
    }

    #[test]
    fn rfc3261_16_7_a_received_503_becomes_500() {
        let mut b = BestResponse::default();
        b.add_response(resp(503, "Retry-After: 30\r\n"));
        b.add_outcome(Outcome::TransportError);
        assert_eq!(code_of(&b.choose()), (500, false));
    }

    #[test]
    fn rfc3261_16_7_item7_challenges_are_merged() {
        let mut b = BestResponse::default();
        b.add_response(resp(480, ""));
        b.add_response(resp(
            407,
            "Proxy-Authenticate: Digest realm=\"a\", nonce=\"1\"\r\n",
        ));
        b.add_response(resp(
            401,
            "WWW-Authenticate: Digest realm=\"b\", nonce=\"2\", qop=\"auth\"\r\n",
        ));
        let Best::Relay(m) = b.choose() else {
            panic!("relay expected");
        };
        assert_eq!(m.status(), Some(407), "first challenge wins the class");
        assert_eq!(
            m.header_values(HeaderName::ProxyAuthenticate),
            vec!["Digest realm=\"a\", nonce=\"1\""]
        );
        assert_eq!(
            m.header_values(HeaderName::WwwAuthenticate),
            vec!["Digest realm=\"b\", nonce=\"2\", qop=\"auth\""]
        );
    }
}
