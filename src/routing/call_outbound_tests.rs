//! A call toward a PBX through the per-call machine: the INVITE in the
//! PBX's view, a 401/407 answered once with the connection's credentials
//! (RFC 3261 §22.2) and never relayed, a second challenge for the same
//! realm a 403, the PBX's answers relayed in the caller's view, failover
//! only on timeouts. Time is an input.

use std::net::SocketAddr;

use tokio::time::Instant;

use crate::config::{Secret, Transport};
use crate::dns::Target;
use crate::sip::{HeaderName, Message};
use crate::transaction::client::Timers;

use super::call::*;
use super::failover::Policy;
use super::outbound::Mapping;
use super::testdata::*;

const INTERNAL: &str = "INVITE sip:2000@uacd-o1.uac.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKint1\r\n\
Max-Forwards: 70\r\n\
From: \"App\" <sip:bot@10.1.1.1>;tag=int-tag\r\n\
To: <sip:2000@uacd-o1.uac.test>\r\n\
Call-ID: out-call-1\r\n\
CSeq: 5 INVITE\r\n\
Contact: <sip:bot@10.1.1.1:5060>\r\n\
P-Asserted-Identity: <sip:spoofed@10.1.1.1>\r\n\
Content-Length: 0\r\n\r\n";

fn invite() -> Message {
    parse(INTERNAL)
}

fn target(last: u8) -> Outbound {
    let addr = SocketAddr::from(([203, 0, 113, last], 5060));
    Outbound {
        target: Target {
            addr,
            transport: Transport::Udp,
            server_name: "pbx.test".into(),
        },
        local: iface(Transport::Udp),
    }
}

fn params() -> CallParams {
    CallParams {
        policy: Policy {
            failover_codes: Vec::new(),
            ..Policy::default()
        },
        timers: Timers::default(),
        inbound: iface(Transport::Udp),
        source: SocketAddr::from(([10, 1, 1, 1], 5060)),
        destination: "sip:2000@pbx.test".parse().unwrap(),
        pop_routes: 0,
        secret: SECRET,
        epoch: 495_000,
        nonce: 0xabc,
        to_tag: "uacd-tag".into(),
        toward_pbx: Some(TowardPbx {
            mapping: Mapping::for_invite(
                &invite(),
                "telnyx-reg",
                "2000",
                "pbx.test",
                "sip:uacd-o1@192.0.2.10:5060;transport=udp;line=o1",
            )
            .unwrap(),
            username: "telnyx-reg".into(),
            password: Secret::new("s3cret"),
            asserted_identity: None,
        }),
    }
}

fn start(n: u8) -> (Call, Vec<CallAction>, Instant) {
    let now = Instant::now();
    let (call, acts) = Call::start(
        invite(),
        params(),
        (1..=n).map(target).collect(),
        false,
        now,
    )
    .expect("start");
    (call, acts, now)
}

fn sent(acts: &[CallAction]) -> Vec<(usize, Message)> {
    acts.iter()
        .filter_map(|a| match a {
            CallAction::SendToTarget(t, b) => Some((*t, parse(b.to_vec()))),
            _ => None,
        })
        .collect()
}

fn upstream(acts: &[CallAction]) -> Vec<Message> {
    acts.iter()
        .filter_map(|a| match a {
            CallAction::SendUpstream(b) => Some(parse(b.to_vec())),
            _ => None,
        })
        .collect()
}

fn value(m: &Message, h: HeaderName) -> String {
    m.header(h)
        .map(|f| f.value().into_owned())
        .unwrap_or_default()
}

/// A response from the PBX to the latest INVITE `sent`.
fn answer(sent: &Message, code: u16, extra: &str) -> CallEvent {
    let via = sent.top_via().unwrap().to_string();
    CallEvent::Response(Box::new(parse(format!(
        "SIP/2.0 {code} X\r\nVia: {via}\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKint1\r\n\
From: {from}\r\nTo: {to};tag=pbx-tag\r\nCall-ID: out-call-1\r\nCSeq: {cseq}\r\n{extra}\
Content-Length: 0\r\n\r\n",
        from = value(sent, HeaderName::From),
        to = value(sent, HeaderName::To),
        cseq = value(sent, HeaderName::CSeq),
    ))))
}

const WWW: &str = "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n";
const PROXY: &str = "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\"\r\n";

#[test]
fn the_pbx_gets_the_invite_as_the_registered_endpoint_would_send_it() {
    let (_, acts, _) = start(1);
    let out = sent(&acts);
    assert_eq!(out.len(), 1);
    let inv = &out[0].1;
    assert_eq!(inv.request_uri().unwrap().to_string(), "sip:2000@pbx.test");
    assert_eq!(
        value(inv, HeaderName::From),
        "\"App\" <sip:telnyx-reg@pbx.test>;tag=int-tag"
    );
    assert_eq!(value(inv, HeaderName::To), "<sip:2000@pbx.test>");
    assert_eq!(value(inv, HeaderName::CSeq), "5 INVITE");
    assert!(
        inv.header_named("P-Asserted-Identity").is_none(),
        "the internal side asserts nothing unless allowed"
    );
    assert!(inv.header(HeaderName::RecordRoute).is_some());
}

fn challenged_then(code: u16, challenge: &str) -> (Vec<CallAction>, Vec<CallAction>, Message) {
    let (mut call, acts, now) = start(1);
    let first = sent(&acts).remove(0).1;
    let acts = call.step(answer(&first, code, challenge), now);
    let resend = sent(&acts)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.method() == Some(&crate::sip::Method::Invite))
        .expect("resent INVITE");
    let after = call.step(answer(&resend, 200, ""), now);
    (acts, after, resend)
}

#[test]
fn a_401_is_answered_with_the_next_cseq_and_the_caller_never_sees_it() {
    let (acts, after, resend) = challenged_then(401, WWW);
    // The 401 is ACKed (same CSeq number) and never relayed.
    let out = sent(&acts);
    assert!(out.iter().any(|(_, m)| {
        m.method() == Some(&crate::sip::Method::Ack) && value(m, HeaderName::CSeq) == "5 ACK"
    }));
    assert!(upstream(&acts).iter().all(|m| m.status() != Some(401)));
    assert_eq!(value(&resend, HeaderName::CSeq), "6 INVITE");
    assert!(value(&resend, HeaderName::Authorization).contains("username=\"telnyx-reg\""));
    assert!(acts.contains(&CallAction::CSeqOffset(1)));
    // The 200 reaches the caller in its own terms.
    let ok = upstream(&after)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("200 upstream");
    assert_eq!(value(&ok, HeaderName::CSeq), "5 INVITE");
    assert_eq!(
        value(&ok, HeaderName::From),
        "\"App\" <sip:bot@10.1.1.1>;tag=int-tag"
    );
    assert_eq!(
        value(&ok, HeaderName::To),
        "<sip:2000@uacd-o1.uac.test>;tag=pbx-tag"
    );
}

#[test]
fn a_407_is_answered_with_proxy_authorization() {
    let (_, after, resend) = challenged_then(407, PROXY);
    assert!(value(&resend, HeaderName::ProxyAuthorization).starts_with("Digest "));
    assert!(upstream(&after).iter().any(|m| m.status() == Some(200)));
}

#[test]
fn a_second_challenge_for_the_same_realm_is_a_403_not_a_loop() {
    let (mut call, acts, now) = start(1);
    let first = sent(&acts).remove(0).1;
    let acts = call.step(answer(&first, 401, WWW), now);
    let resend = sent(&acts)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.method() == Some(&crate::sip::Method::Invite))
        .unwrap();
    let acts = call.step(answer(&resend, 401, WWW), now);
    assert!(
        sent(&acts)
            .iter()
            .all(|(_, m)| m.method() != Some(&crate::sip::Method::Invite)),
        "no third INVITE"
    );
    let up = upstream(&acts);
    assert_eq!(
        up.iter().filter_map(|m| m.status()).collect::<Vec<_>>(),
        vec![403]
    );
}

#[test]
fn the_pbx_s_refusal_is_relayed_as_is_without_failover() {
    let (mut call, acts, now) = start(2);
    let first = sent(&acts).remove(0).1;
    let acts = call.step(answer(&first, 503, ""), now);
    assert!(sent(&acts).iter().all(|(t, _)| *t == 0), "no second target");
    let up = upstream(&acts);
    assert_eq!(up[0].status(), Some(503));
    assert_eq!(
        value(&up[0], HeaderName::From),
        "\"App\" <sip:bot@10.1.1.1>;tag=int-tag"
    );
}

#[test]
fn a_silent_pbx_target_fails_over_to_the_next() {
    let (mut call, acts, now) = start(2);
    assert_eq!(sent(&acts)[0].0, 0);
    let acts = call.step(CallEvent::Timer(CallTimer::NoProvisional(0)), now);
    let next = sent(&acts);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, 1);
    assert_eq!(value(&next[0].1, HeaderName::CSeq), "5 INVITE");
}

#[test]
fn failover_after_a_challenge_starts_the_next_target_afresh() {
    // Target 0 challenges, the resend (attempt 1) goes unanswered; target 1
    // gets the caller's own CSeq, may challenge with the same realm, and the
    // dialog takes the answering attempt's offset.
    let (mut call, acts, now) = start(2);
    let first = sent(&acts).remove(0).1;
    let acts = call.step(answer(&first, 401, WWW), now);
    assert!(acts.contains(&CallAction::CSeqOffset(1)));
    let acts = call.step(CallEvent::Timer(CallTimer::NoProvisional(1)), now);
    assert!(acts.contains(&CallAction::CSeqOffset(0)));
    let next = sent(&acts)
        .into_iter()
        .find(|(t, _)| *t == 1)
        .expect("INVITE to target 1")
        .1;
    assert_eq!(value(&next, HeaderName::CSeq), "5 INVITE");
    let acts = call.step(answer(&next, 401, WWW), now);
    let resend = sent(&acts)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.method() == Some(&crate::sip::Method::Invite))
        .expect("target 1's challenge answered, not a 403");
    assert_eq!(value(&resend, HeaderName::CSeq), "6 INVITE");
    let acts = call.step(answer(&resend, 200, ""), now);
    assert!(acts.contains(&CallAction::CSeqOffset(1)));
    let ok = upstream(&acts)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .expect("200 upstream");
    assert_eq!(value(&ok, HeaderName::CSeq), "5 INVITE");
}
