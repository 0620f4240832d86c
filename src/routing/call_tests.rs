//! The per-call machine: failover on the configured codes, timeouts and
//! transport errors, RFC 3261 §16.7 response context,
//! §9 / §16.10 CANCEL, RFC 6026 2xx handling, §17 transaction timers. Time is
//! an input: timers are fired by hand.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Transport;
use crate::sip::Message;
use crate::transaction::client::Timers;
use crate::transaction::{invite_client, invite_server};

use super::call::*;
use super::failover::{Outcome, Policy};
use super::forward::destination_uri;
use super::testdata::*;
use crate::dns::Target;

fn target(last: u8) -> Outbound {
    let addr = SocketAddr::from(([10, 0, 0, last], 5060));
    Outbound {
        target: Target {
            addr,
            transport: Transport::Udp,
            server_name: addr.ip().to_string().into(),
        },
        local: iface(Transport::Udp),
    }
}

fn params() -> CallParams {
    CallParams {
        policy: Policy::default(),
        timers: Timers::default(),
        inbound: iface(Transport::Udp),
        source: pbx(5060),
        destination: destination_uri("1006@assistant-abc123.sip.telnyx.com").expect("dest"),
        pop_routes: 0,
        secret: SECRET,
        epoch: 495_000,
        nonce: 0xabc,
        to_tag: "uacd-tag".into(),
        toward_pbx: None,
    }
}

fn start(n: u8) -> (Call, Vec<CallAction>, Instant) {
    let now = Instant::now();
    let targets = (1..=n).map(target).collect();
    let (call, acts) =
        Call::start(asterisk_invite(), params(), targets, false, now).expect("start");
    (call, acts, now)
}

fn sent_to(acts: &[CallAction], t: usize) -> Vec<Message> {
    acts.iter()
        .filter_map(|a| match a {
            CallAction::SendToTarget(i, b) if *i == t => Some(parse(b.to_vec())),
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

fn cancels(acts: &[CallAction]) -> Vec<usize> {
    acts.iter()
        .filter_map(|a| match a {
            CallAction::SendCancel(t, _) => Some(*t),
            _ => None,
        })
        .collect()
}

/// A response from target `t` to our attempt.
fn resp(call: &Call, t: usize, code: u16) -> CallEvent {
    let b = call.branch_of(t).expect("branch");
    CallEvent::Response(Box::new(parse(format!(
        "SIP/2.0 {code} Something\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={b};rport=5060;received=192.0.2.10\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport=5060;branch=z9hG4bKPj5f0c1a2b;received=198.51.100.7\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>;tag=t{t}\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 31337 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))))
}

fn finished(acts: &[CallAction]) -> Option<CallOutcome> {
    acts.iter().find_map(|a| match a {
        CallAction::Finished(o) => Some(*o),
        _ => None,
    })
}

fn failed(acts: &[CallAction]) -> Vec<(usize, Outcome)> {
    acts.iter()
        .filter_map(|a| match a {
            CallAction::TargetFailed(t, r) => Some((*t, *r)),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc3261_17_2_1_start_sends_100_upstream_and_invite_to_first_target() {
    let (_, acts, _) = start(2);
    let up = upstream(&acts);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].status(), Some(100));
    let inv = sent_to(&acts, 0);
    assert_eq!(inv.len(), 1);
    assert_eq!(
        inv[0].request_uri().expect("ruri").to_string(),
        "sip:1006@assistant-abc123.sip.telnyx.com"
    );
    assert!(sent_to(&acts, 1).is_empty());
    assert!(acts.contains(&CallAction::Arm(
        CallTimer::NoProvisional(0),
        Duration::from_secs(2)
    )));
    assert!(acts.contains(&CallAction::Arm(
        CallTimer::Client(0, invite_client::Timer::A),
        Duration::from_millis(500)
    )));
}

#[test]
fn answered_call_relays_180_and_200_with_our_via_popped() {
    let (mut call, _, now) = start(2);
    let acts = call.step(resp(&call, 0, 100), now);
    assert!(upstream(&acts).is_empty(), "§16.7 item 3: no 100 relayed");
    assert!(acts.contains(&CallAction::Arm(
        CallTimer::NoAnswer(0),
        Duration::from_secs(120)
    )));
    let acts = call.step(resp(&call, 0, 180), now);
    let up = upstream(&acts);
    assert_eq!(up[0].status(), Some(180));
    assert_eq!(up[0].vias().expect("vias").len(), 1);
    let later = now + Duration::from_secs(3);
    let acts = call.step(resp(&call, 0, 200), later);
    assert_eq!(upstream(&acts)[0].status(), Some(200));
    assert_eq!(
        finished(&acts),
        Some(CallOutcome {
            status: 200,
            setup: Duration::from_secs(3),
            failovers: 0
        })
    );
    assert!(call.answered());
    // RFC 6026: a retransmitted 2xx is relayed too.
    let acts = call.step(resp(&call, 0, 200), later);
    assert_eq!(upstream(&acts)[0].status(), Some(200));
}

#[test]
fn failover_code_503_fails_over_to_next_target_which_answers() {
    let (mut call, _, now) = start(2);
    let acts = call.step(resp(&call, 0, 503), now);
    assert_eq!(failed(&acts), vec![(0, Outcome::Status(503))]);
    let to0 = sent_to(&acts, 0);
    assert_eq!(to0.len(), 1, "§17.1.1.3 ACK for the 503");
    assert_eq!(to0[0].method().map(|m| m.as_str()), Some("ACK"));
    let to1 = sent_to(&acts, 1);
    assert_eq!(to1[0].method().map(|m| m.as_str()), Some("INVITE"));
    assert_ne!(call.branch_of(0), call.branch_of(1), "fresh branch");
    assert!(upstream(&acts).is_empty(), "nothing upstream yet");
    let acts = call.step(resp(&call, 1, 200), now);
    assert_eq!(upstream(&acts)[0].status(), Some(200));
    assert_eq!(finished(&acts).map(|o| o.failovers), Some(1));
}

#[test]
fn non_failover_code_486_is_relayed_without_failover() {
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 180), now);
    let acts = call.step(resp(&call, 0, 486), now);
    assert!(failed(&acts).is_empty());
    assert!(sent_to(&acts, 1).is_empty());
    let up = upstream(&acts);
    assert_eq!(up[0].status(), Some(486));
    assert_eq!(finished(&acts).map(|o| o.status), Some(486));
    // Upstream UDP: timer G/H armed for the non-2xx (§17.2.1).
    assert!(acts.contains(&CallAction::Arm(
        CallTimer::Server(invite_server::Timer::G),
        Duration::from_millis(500)
    )));
}

#[test]
fn silent_target_fails_over_after_timeout_1xx_and_is_cancelled_on_late_1xx() {
    let (mut call, _, now) = start(2);
    let acts = call.step(CallEvent::Timer(CallTimer::NoProvisional(0)), now);
    assert_eq!(failed(&acts), vec![(0, Outcome::NoProvisional)]);
    assert!(acts.contains(&CallAction::Disarm(CallTimer::Client(
        0,
        invite_client::Timer::A
    ))));
    assert!(
        cancels(&acts).is_empty(),
        "§9.1: no CANCEL before a provisional"
    );
    assert_eq!(sent_to(&acts, 1).len(), 1);
    // The silent target wakes up: CANCEL it, do not relay its 180.
    let acts = call.step(resp(&call, 0, 180), now);
    assert_eq!(cancels(&acts), vec![0]);
    assert!(upstream(&acts).is_empty());
    // Its 487 is ACKed and absorbed.
    let acts = call.step(resp(&call, 0, 487), now);
    assert!(upstream(&acts).is_empty());
    assert_eq!(sent_to(&acts, 0).len(), 1, "ACK");
}

#[test]
fn transport_error_fails_over_at_once() {
    let (mut call, _, now) = start(2);
    let acts = call.step(CallEvent::TransportError(0), now);
    assert_eq!(failed(&acts), vec![(0, Outcome::TransportError)]);
    assert_eq!(sent_to(&acts, 1).len(), 1);
}

#[test]
fn rfc3261_16_7_all_targets_failed_best_response() {
    // 503 then 480: the 4xx wins.
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 503), now);
    let acts = call.step(resp(&call, 1, 480), now);
    assert_eq!(upstream(&acts)[0].status(), Some(480));
    // 503 twice: a generated 500.
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 503), now);
    let acts = call.step(resp(&call, 1, 503), now);
    let up = upstream(&acts);
    assert_eq!(up[0].status(), Some(500));
    assert_eq!(
        up[0].to_header().expect("to").tag(),
        Some("uacd-tag"),
        "our own To tag"
    );
    // Timeouts and transport errors only: 408.
    let (mut call, _, now) = start(2);
    call.step(CallEvent::Timer(CallTimer::NoProvisional(0)), now);
    let acts = call.step(CallEvent::TransportError(1), now);
    assert_eq!(upstream(&acts)[0].status(), Some(408));
}

#[test]
fn no_target_at_all_is_503() {
    let (_, acts, _) = start(0);
    let up = upstream(&acts);
    assert_eq!(
        up.iter().map(|m| m.status()).collect::<Vec<_>>(),
        vec![Some(100), Some(503)]
    );
}

#[test]
fn timeout_2xx_cancels_and_answers_408() {
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 180), now);
    let acts = call.step(CallEvent::Timer(CallTimer::NoAnswer(0)), now);
    assert_eq!(cancels(&acts), vec![0]);
    assert_eq!(upstream(&acts)[0].status(), Some(408));
    assert!(
        sent_to(&acts, 1).is_empty(),
        "no failover on a ringing timeout"
    );
    let acts = call.step(resp(&call, 0, 487), now);
    assert!(upstream(&acts).is_empty(), "the 487 is absorbed");
}

#[test]
fn rfc3261_16_10_upstream_cancel_cancels_branch_and_relays_487() {
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 183), now);
    let acts = call.step(CallEvent::UpstreamCancel, now);
    assert_eq!(cancels(&acts), vec![0]);
    let cancel = acts
        .iter()
        .find_map(|a| match a {
            CallAction::SendCancel(_, b) => Some(parse(b.to_vec())),
            _ => None,
        })
        .expect("cancel");
    assert_eq!(
        cancel.top_via().expect("via").branch(),
        call.branch_of(0),
        "§9.1 same branch"
    );
    let acts = call.step(resp(&call, 0, 487), now);
    assert_eq!(upstream(&acts)[0].status(), Some(487));
    assert!(sent_to(&acts, 1).is_empty(), "no failover after CANCEL");
}

#[test]
fn rfc3261_9_1_upstream_cancel_before_any_provisional_waits_for_one() {
    let (mut call, _, now) = start(1);
    let acts = call.step(CallEvent::UpstreamCancel, now);
    assert!(cancels(&acts).is_empty());
    let acts = call.step(resp(&call, 0, 100), now);
    assert_eq!(cancels(&acts), vec![0]);
}

#[test]
fn rfc3261_17_2_1_invite_retransmission_gets_last_response() {
    let (mut call, _, now) = start(1);
    let acts = call.step(CallEvent::UpstreamRetransmission, now);
    assert_eq!(upstream(&acts)[0].status(), Some(100));
    call.step(resp(&call, 0, 180), now);
    let acts = call.step(CallEvent::UpstreamRetransmission, now);
    assert_eq!(upstream(&acts)[0].status(), Some(180));
}

#[test]
fn rfc3261_17_terminates_when_every_transaction_is_over() {
    let (mut call, _, now) = start(1);
    call.step(resp(&call, 0, 486), now);
    assert!(!call.is_terminated());
    call.step(CallEvent::UpstreamAck, now);
    let acts = call.step(
        CallEvent::Timer(CallTimer::Server(invite_server::Timer::I)),
        now,
    );
    assert!(
        !acts.contains(&CallAction::Terminate),
        "client still in Completed"
    );
    let acts = call.step(
        CallEvent::Timer(CallTimer::Client(0, invite_client::Timer::D)),
        now,
    );
    assert!(acts.contains(&CallAction::Terminate));
    assert!(call.is_terminated());
}

#[test]
fn rfc6026_answered_call_terminates_after_timers_l_and_m() {
    let (mut call, _, now) = start(1);
    call.step(resp(&call, 0, 200), now);
    call.step(
        CallEvent::Timer(CallTimer::Client(0, invite_client::Timer::M)),
        now,
    );
    let acts = call.step(
        CallEvent::Timer(CallTimer::Server(invite_server::Timer::L)),
        now,
    );
    assert!(acts.contains(&CallAction::Terminate));
}

/// The executor hands an answered call to a smaller task once it only
/// relays 2xx: not while another attempt may still need a CANCEL or the
/// ACK of its non-2xx (Completed, Timer D), and from then on `step` asks
/// for nothing but upstream sends and timers.
#[test]
fn rfc6026_relays_2xx_only_once_every_transaction_is_accepted_or_over() {
    let (mut call, _, now) = start(2);
    assert!(!call.relays_2xx_only(), "trying");
    call.step(resp(&call, 0, 503), now);
    call.step(resp(&call, 1, 200), now);
    assert!(call.answered());
    assert!(
        !call.relays_2xx_only(),
        "attempt 0 is Completed: it ACKs a retransmitted 503"
    );
    call.step(
        CallEvent::Timer(CallTimer::Client(0, invite_client::Timer::D)),
        now,
    );
    assert!(call.relays_2xx_only());
    for event in [
        resp(&call, 1, 200),
        resp(&call, 1, 180),
        resp(&call, 0, 503),
        CallEvent::Timer(CallTimer::Client(1, invite_client::Timer::M)),
    ] {
        for act in call.step(event, now) {
            assert!(
                matches!(
                    act,
                    CallAction::SendUpstream(_)
                        | CallAction::Arm(..)
                        | CallAction::Disarm(_)
                        | CallAction::Terminate
                ),
                "{act:?}"
            );
        }
    }
    let acts = call.step(
        CallEvent::Timer(CallTimer::Server(invite_server::Timer::L)),
        now,
    );
    assert!(acts.contains(&CallAction::Terminate));
}

#[test]
fn rfc3261_16_7_item10_late_2xx_from_abandoned_target_is_still_relayed() {
    let (mut call, _, now) = start(2);
    call.step(CallEvent::Timer(CallTimer::NoProvisional(0)), now);
    let acts = call.step(resp(&call, 0, 200), now);
    assert_eq!(upstream(&acts)[0].status(), Some(200));
    // The other pending attempt is cancelled once it can be (§16.7 item 10).
    let acts = call.step(resp(&call, 1, 180), now);
    assert_eq!(cancels(&acts), vec![1]);
    assert!(upstream(&acts).is_empty());
}

#[test]
fn stray_response_is_ignored() {
    let (mut call, _, now) = start(1);
    let stray = parse(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKnotours\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n",
    );
    assert!(
        call.step(CallEvent::Response(Box::new(stray)), now)
            .is_empty()
    );
}

#[test]
fn rfc3261_17_2_4_pbx_connection_lost_cancels_the_ringing_branch() {
    let (mut call, _, now) = start(2);
    call.step(resp(&call, 0, 180), now);
    let acts = call.step(CallEvent::UpstreamTransportError, now);
    assert_eq!(cancels(&acts), vec![0], "nobody is left to answer");
    let acts = call.step(resp(&call, 0, 487), now);
    assert!(sent_to(&acts, 1).is_empty(), "no failover for a lost PBX");
}

/// RFC 6026: an answered call stays 64·T1 in Accepted; what it no longer
/// needs (the INVITE and the answered attempt's copy) is dropped at once,
/// while a failed attempt in Completed keeps its copy to ACK a retransmitted
/// final response until Timer D.
#[test]
fn rfc6026_answered_call_sheds_invite_copies_but_still_acks_and_relays() {
    let (mut call, _, now) = start(2);
    let held_at_start = call.held_bytes();
    assert!(held_at_start > 0);
    call.step(resp(&call, 0, 503), now);
    call.step(resp(&call, 1, 200), now);
    assert!(call.answered());
    let held = call.held_bytes();
    assert!(
        held > 0 && held < held_at_start,
        "attempt 0 (Completed) keeps its copy, the rest is shed: {held} of {held_at_start}"
    );
    let acts = call.step(resp(&call, 0, 503), now);
    let to0 = sent_to(&acts, 0);
    assert_eq!(
        to0.len(),
        1,
        "§17.1.1.2: a retransmitted 503 is ACKed again"
    );
    assert_eq!(to0[0].method().map(|m| m.as_str()), Some("ACK"));
    call.step(
        CallEvent::Timer(CallTimer::Client(0, invite_client::Timer::D)),
        now,
    );
    assert_eq!(call.held_bytes(), 0, "nothing held once Completed is over");
    let acts = call.step(resp(&call, 1, 200), now);
    assert_eq!(
        upstream(&acts)[0].status(),
        Some(200),
        "2xx retransmission relayed"
    );
    let acts = call.step(CallEvent::UpstreamRetransmission, now);
    assert!(upstream(&acts).is_empty(), "INVITE retransmission absorbed");
    assert!(!call.is_terminated());
}

#[test]
fn each_end_gets_a_token_naming_the_other_ends_hop() {
    use super::token::{End, HopId, Verdict, verify};
    let hop = |s: &str| HopId::of(&s.parse().expect("uri"));
    let call_id = "5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7";
    let (mut call, acts, now) = start(2);
    let invite = &sent_to(&acts, 0)[0];
    let rr = invite.record_routes().expect("rr");
    let dest_token = rr[0].uri.params.value("uacd").expect("token").to_owned();
    // The destination (10.0.0.1, target 0) may reach the PBX's Contact.
    let dest_ip = target(1).target.addr.ip();
    assert_eq!(
        verify(
            &SECRET,
            &dest_token,
            call_id,
            dest_ip,
            &hop("sip:asterisk@198.51.100.7:5060"),
            495_000
        ),
        Verdict::Valid {
            holder: End::Destination,
            hop_signed: true,
            // Asterisk's Via names the address it sends from: not behind
            // NAT, its Contact is reachable as it is.
            back: None,
        }
    );
    assert_eq!(
        verify(
            &SECRET,
            &dest_token,
            call_id,
            target(2).target.addr.ip(),
            &hop("sip:198.51.100.7:5060"),
            495_000
        ),
        Verdict::Invalid,
        "the token is bound to the target it went to"
    );
    // The 200 from the destination: Contact and a Record-Route of its own
    // nearer to it; the PBX's copy names the one nearest to us.
    let b = call.branch_of(0).expect("branch").to_owned();
    let ok = parse(format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={b};rport=5060;received=192.0.2.10\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport=5060;branch=z9hG4bKPj5f0c1a2b;received=198.51.100.7\r\n\
Record-Route: <sip:dest-edge.example;lr>, <sip:192.0.2.10:5060;transport=udp;lr;uacd={dest_token}>\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>;tag=t0\r\n\
Call-ID: {call_id}\r\nCSeq: 31337 INVITE\r\n\
Contact: <sip:1006@10.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    ));
    let acts = call.step(CallEvent::Response(Box::new(ok)), now);
    let up = &upstream(&acts)[0];
    let rr = up.record_routes().expect("rr");
    assert_eq!(
        rr[0].uri.host.to_string(),
        "dest-edge.example",
        "theirs untouched"
    );
    let pbx_token = rr[1].uri.params.value("uacd").expect("token");
    assert_ne!(pbx_token, dest_token);
    assert_eq!(
        verify(
            &SECRET,
            pbx_token,
            call_id,
            pbx(5060).ip(),
            &hop("sip:dest-edge.example"),
            495_000
        ),
        Verdict::Valid {
            holder: End::Pbx,
            hop_signed: true,
            back: None,
        }
    );
    assert!(
        !String::from_utf8_lossy(&up.to_bytes()).contains(&dest_token),
        "the PBX never sees the destination's token"
    );
}
