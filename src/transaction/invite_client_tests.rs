//! INVITE client transaction: RFC 3261 §17.1.1 transitions (figure 5), RFC
//! 6026 Accepted state, ACK (§17.1.1.3) and CANCEL (§9.1) construction.

use bytes::Bytes;

use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn udp() -> InviteClient {
    InviteClient::start(false, Timers::default()).0
}

#[test]
fn rfc3261_17_1_1_2_udp_start_arms_a_and_b() {
    let (m, a) = InviteClient::start(false, Timers::default());
    assert_eq!(m.state(), State::Calling);
    assert_eq!(
        a,
        vec![
            Action::Arm(Timer::A, ms(500)),
            Action::Arm(Timer::B, ms(32_000))
        ]
    );
    assert!(!m.may_cancel(), "§9.1: no CANCEL before a provisional");
}

#[test]
fn rfc3261_17_1_1_2_stream_start_arms_only_b() {
    let (_, a) = InviteClient::start(true, Timers::default());
    assert_eq!(a, vec![Action::Arm(Timer::B, ms(32_000))]);
}

#[test]
fn rfc3261_17_1_1_2_timer_a_doubles_without_t2_cap() {
    let mut m = udp();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let a = m.step(Event::TimerFired(Timer::A));
        assert_eq!(a[0], Action::Retransmit);
        if let Action::Arm(Timer::A, d) = a[1] {
            seen.push(d.as_millis());
        }
    }
    assert_eq!(seen, vec![1000, 2000, 4000, 8000, 16000, 32000]);
}

#[test]
fn rfc3261_17_1_1_2_provisional_stops_retransmission_and_timer_b() {
    let mut m = udp();
    assert_eq!(
        m.step(Event::Response(100)),
        vec![
            Action::Cancel(Timer::A),
            Action::Cancel(Timer::B),
            Action::PassUp(100)
        ]
    );
    assert_eq!(m.state(), State::Proceeding);
    assert!(m.may_cancel());
    assert_eq!(m.step(Event::Response(180)), vec![Action::PassUp(180)]);
    assert!(m.step(Event::TimerFired(Timer::A)).is_empty(), "stale A");
    assert!(
        m.step(Event::TimerFired(Timer::B)).is_empty(),
        "no B in Proceeding"
    );
    assert_eq!(m.state(), State::Proceeding);
}

#[test]
fn rfc3261_17_1_1_2_timer_b_times_out_calling() {
    let mut m = udp();
    assert_eq!(
        m.step(Event::TimerFired(Timer::B)),
        vec![
            Action::Cancel(Timer::A),
            Action::ReportTimeout,
            Action::Terminate
        ]
    );
    assert_eq!(m.state(), State::Terminated);
    assert!(
        m.step(Event::Response(180)).is_empty(),
        "late response ignored"
    );
}

#[test]
fn rfc3261_17_1_1_2_non_2xx_on_udp_acks_and_waits_timer_d() {
    let mut m = udp();
    m.step(Event::Response(180));
    assert_eq!(
        m.step(Event::Response(486)),
        vec![
            Action::SendAck,
            Action::PassUp(486),
            Action::Arm(Timer::D, ms(32_000))
        ]
    );
    assert_eq!(m.state(), State::Completed);
    // Retransmitted final: ACK again, not passed up.
    assert_eq!(m.step(Event::Response(486)), vec![Action::SendAck]);
    assert_eq!(m.step(Event::TimerFired(Timer::D)), vec![Action::Terminate]);
    assert_eq!(m.state(), State::Terminated);
}

#[test]
fn rfc3261_17_1_1_2_non_2xx_from_calling_cancels_a_and_b() {
    let mut m = udp();
    assert_eq!(
        m.step(Event::Response(503)),
        vec![
            Action::Cancel(Timer::A),
            Action::Cancel(Timer::B),
            Action::SendAck,
            Action::PassUp(503),
            Action::Arm(Timer::D, ms(32_000))
        ]
    );
}

#[test]
fn rfc3261_17_1_1_2_timer_d_is_zero_on_streams() {
    let (mut m, _) = InviteClient::start(true, Timers::default());
    assert_eq!(
        m.step(Event::Response(404)),
        vec![
            Action::Cancel(Timer::B),
            Action::SendAck,
            Action::PassUp(404),
            Action::Terminate
        ]
    );
    assert_eq!(m.state(), State::Terminated);
}

#[test]
fn rfc6026_8_4_2xx_enters_accepted_with_timer_m_and_passes_every_2xx() {
    let mut m = udp();
    m.step(Event::Response(183));
    assert_eq!(
        m.step(Event::Response(200)),
        vec![Action::PassUp(200), Action::Arm(Timer::M, ms(32_000))]
    );
    assert_eq!(m.state(), State::Accepted);
    // Retransmitted (or forked) 2xx are passed up for the TU to forward.
    assert_eq!(m.step(Event::Response(200)), vec![Action::PassUp(200)]);
    assert_eq!(m.step(Event::Response(202)), vec![Action::PassUp(202)]);
    // Non-2xx after a 2xx and provisionals are absorbed.
    assert!(m.step(Event::Response(487)).is_empty());
    assert!(m.step(Event::Response(180)).is_empty());
    assert_eq!(m.step(Event::TimerFired(Timer::M)), vec![Action::Terminate]);
    assert_eq!(m.state(), State::Terminated);
}

#[test]
fn rfc6026_2xx_straight_from_calling_cancels_a_and_b_and_sends_no_ack() {
    let mut m = udp();
    let a = m.step(Event::Response(200));
    assert_eq!(
        a,
        vec![
            Action::Cancel(Timer::A),
            Action::Cancel(Timer::B),
            Action::PassUp(200),
            Action::Arm(Timer::M, ms(32_000))
        ]
    );
    assert!(
        !a.contains(&Action::SendAck),
        "the ACK for 2xx is end to end"
    );
}

#[test]
fn rfc3261_17_1_4_transport_error_reports_and_terminates() {
    for provisional in [false, true] {
        let mut m = udp();
        if provisional {
            m.step(Event::Response(100));
        }
        let a = m.step(Event::TransportError);
        assert!(a.ends_with(&[Action::ReportTransportError, Action::Terminate]));
        assert_eq!(m.state(), State::Terminated);
    }
}

#[test]
fn rfc3261_figure5_transport_error_in_completed_terminates_quietly() {
    let mut m = udp();
    m.step(Event::Response(480));
    assert_eq!(
        m.step(Event::TransportError),
        vec![Action::Cancel(Timer::D), Action::Terminate]
    );
}

const INVITE: &str = "INVITE sip:1006@assistant-abc123.sip.telnyx.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ua-0011223344556677-1;rport\r\n\
Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKpbx1;received=198.51.100.7\r\n\
Route: <sip:edge1.telnyx.com;lr>, <sip:edge2.telnyx.com;lr>\r\n\
Record-Route: <sip:192.0.2.1:5060;transport=udp;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice\" <sip:alice@pbx.example.com>;tag=as1f2e3d\r\n\
To: <sip:ext-601@192.0.2.1>\r\n\
Call-ID: 4c6f0a1e7b@pbx.example.com\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:alice@198.51.100.7:5060;transport=tcp>\r\n\
X-Unknown: keep me\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\no=- 1\r\n";

fn parse(s: &str) -> Message {
    Message::parse_datagram(Bytes::from(s.to_owned())).expect("parse")
}

#[test]
fn rfc3261_17_1_1_3_ack_for_non_2xx_exact_bytes() {
    let invite = parse(INVITE);
    let resp = parse(
        "SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ua-0011223344556677-1;rport=5060\r\n\
Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKpbx1;received=198.51.100.7\r\n\
From: \"Alice\" <sip:alice@pbx.example.com>;tag=as1f2e3d\r\n\
To: <sip:ext-601@192.0.2.1>;tag=dest-99\r\n\
Call-ID: 4c6f0a1e7b@pbx.example.com\r\n\
CSeq: 102 INVITE\r\n\
Content-Length: 0\r\n\r\n",
    );
    let ack = ack_for(&invite, &resp).expect("ack");
    assert_eq!(
        String::from_utf8(ack).expect("utf8"),
        "ACK sip:1006@assistant-abc123.sip.telnyx.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ua-0011223344556677-1;rport\r\n\
Route: <sip:edge1.telnyx.com;lr>\r\n\
Route: <sip:edge2.telnyx.com;lr>\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@pbx.example.com>;tag=as1f2e3d\r\n\
To: <sip:ext-601@192.0.2.1>;tag=dest-99\r\n\
Call-ID: 4c6f0a1e7b@pbx.example.com\r\n\
CSeq: 102 ACK\r\n\
Content-Length: 0\r\n\r\n"
    );
}

#[test]
fn rfc3261_9_1_cancel_exact_bytes() {
    let invite = parse(INVITE);
    let cancel = cancel_for(&invite, Some("SIP;cause=408;text=\"no answer\"")).expect("cancel");
    assert_eq!(
        String::from_utf8(cancel).expect("utf8"),
        "CANCEL sip:1006@assistant-abc123.sip.telnyx.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ua-0011223344556677-1;rport\r\n\
Route: <sip:edge1.telnyx.com;lr>\r\n\
Route: <sip:edge2.telnyx.com;lr>\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@pbx.example.com>;tag=as1f2e3d\r\n\
To: <sip:ext-601@192.0.2.1>\r\n\
Call-ID: 4c6f0a1e7b@pbx.example.com\r\n\
CSeq: 102 CANCEL\r\n\
Reason: SIP;cause=408;text=\"no answer\"\r\n\
Content-Length: 0\r\n\r\n"
    );
    // The CANCEL parses and is a valid request matching the INVITE's branch.
    let c = Message::parse_datagram(Bytes::from(cancel_for(&invite, None).expect("cancel")))
        .expect("parse");
    c.validate_request().expect("valid");
    assert_eq!(
        c.top_via().expect("via").branch(),
        invite.top_via().expect("via").branch()
    );
    assert_eq!(c.vias().expect("vias").len(), 1, "§9.1: a single Via");
}

#[test]
fn ack_and_cancel_need_the_dialog_headers() {
    let invite = parse(
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
From: <sip:x@y>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(matches!(
        cancel_for(&invite, None),
        Err(ParseError::MissingHeader("To"))
    ));
}
