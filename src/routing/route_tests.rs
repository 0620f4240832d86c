//! Route classification: matching by user, `line` and flow, source check and no open
//! relay (design.md Part 2), RFC 3261 §16.3 validation, §16.4 route
//! preprocessing, §16.12 in-dialog routing.

use std::net::SocketAddr;

use crate::config::Transport;
use crate::sip::Message;

use super::forward::{Forward, branch, forward_request, loop_hash};
use super::route::*;
use super::testdata::*;

fn classify_from(msg: &Message, src: SocketAddr, flow: Option<u64>) -> Decision<'static> {
    classify_in(
        msg,
        Source {
            addr: src,
            flow,
            internal: false,
        },
        &dir(),
    )
}

/// `classify` with the connection `dir` names for `msg`, as the router does.
fn classify_in(msg: &Message, source: Source, dir: &Dir) -> Decision<'static> {
    let found = msg
        .request_uri()
        .and_then(|u| find_connection(dir, u, source.flow))
        .map(|c| &*Box::leak(Box::new(c)));
    classify(msg, source, &local(), found, &SECRET, EPOCH)
}

const EPOCH: u32 = 495_000;
const CALL: &str = "5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7";
const DEST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 1, 1));

/// The destination end's token for [`CALL`]: it sends from [`DEST`] and
/// its requests go to the PBX's Contact.
fn dest_token(to: &str) -> String {
    let to = super::token::HopId::of(&to.parse().expect("uri"));
    super::token::issue(
        &SECRET,
        EPOCH,
        &super::token::Grant {
            call_id: CALL,
            holder: super::token::End::Destination,
            from: DEST,
            to: &to,
            back: None,
        },
    )
}

fn reject_code(d: &Decision<'_>) -> Option<u16> {
    match d {
        Decision::Reject(r) => Some(r.code()),
        _ => None,
    }
}

fn variant(head: &str, from: &str, to: &str) -> Message {
    parse(with_body(&head.replace(from, to), SDP))
}

#[test]
fn match_by_request_uri_user_gives_new_call_to_destination() {
    match classify_from(&asterisk_invite(), pbx(5060), None) {
        Decision::NewCall {
            connection,
            destination,
            pop_routes,
        } => {
            assert_eq!(connection.id, "office");
            assert_eq!(
                destination.to_string(),
                "sip:1006@assistant-abc123.sip.telnyx.com"
            );
            assert_eq!(pop_routes, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn match_by_line_parameter() {
    match classify_from(&kamailio_invite(), pbx(40312), Some(3)) {
        Decision::NewCall { connection, .. } => assert_eq!(connection.id, "office"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn match_by_registration_flow() {
    let inv = variant(ASTERISK_HEAD, "sip:uacd-office@", "sip:whoever@");
    // From an address that is not the PBX's, but over the registration's flow.
    let src = SocketAddr::from(([203, 0, 113, 5], 5060));
    match classify_from(&inv, src, Some(9)) {
        Decision::NewCall { connection, .. } => assert_eq!(connection.id, "branch"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_user_for_us_is_404_and_for_a_foreign_domain_403() {
    let inv = variant(ASTERISK_HEAD, "sip:uacd-office@", "sip:nobody@");
    let d = classify_from(&inv, pbx(5060), None);
    assert_eq!(d, Decision::Reject(Reject::UnknownUser));
    assert_eq!(reject_code(&d), Some(404));
    let foreign = variant(
        ASTERISK_HEAD,
        "INVITE sip:uacd-office@192.0.2.10:5060;transport=udp",
        "INVITE sip:nobody@victim.example.com",
    );
    let d = classify_from(&foreign, pbx(5060), None);
    assert_eq!(d, Decision::Reject(Reject::ForeignDomain));
    assert_eq!(reject_code(&d), Some(403), "no open relay");
}

#[test]
fn source_check_rejects_other_addresses_with_403() {
    let src = SocketAddr::from(([203, 0, 113, 66], 5060));
    let d = classify_from(&asterisk_invite(), src, None);
    assert_eq!(d, Decision::Reject(Reject::ForbiddenSource));
    assert_eq!(reject_code(&d), Some(403));
    // Another connection's registration flow does not help.
    assert_eq!(
        classify_from(&asterisk_invite(), src, Some(9)),
        Decision::Reject(Reject::ForbiddenSource)
    );
    // The PBX's address from any port is accepted.
    assert!(matches!(
        classify_from(&asterisk_invite(), pbx(33333), None),
        Decision::NewCall { .. }
    ));
}

#[test]
fn inactive_or_unregistered_connection_is_480() {
    for (active, registered, why) in [
        (false, true, Reject::Inactive),
        (true, false, Reject::NotRegistered),
    ] {
        let mut c = conn("office");
        c.active = active;
        c.registered = registered;
        let d = Dir(vec![(c, "uacd-office", "ln-42")]);
        let src = Source {
            addr: pbx(5060),
            flow: None,
            internal: false,
        };
        let out = classify_in(&asterisk_invite(), src, &d);
        assert_eq!(out, Decision::Reject(why));
        assert_eq!(why.code(), 480);
        // The source check comes first: a stranger learns nothing.
        let stranger = Source {
            addr: SocketAddr::from(([203, 0, 113, 66], 5060)),
            flow: None,
            internal: false,
        };
        assert_eq!(
            classify_in(&asterisk_invite(), stranger, &d),
            Decision::Reject(Reject::ForbiddenSource)
        );
    }
}

#[test]
fn missing_or_bad_destination() {
    let mut c = conn("office");
    c.destination_uri = None;
    let d = Dir(vec![(c.clone(), "uacd-office", "x")]);
    let src = Source {
        addr: pbx(5060),
        flow: None,
        internal: false,
    };
    assert_eq!(
        classify_in(&asterisk_invite(), src, &d),
        Decision::Reject(Reject::NoDestination)
    );
    c.destination_uri = Some("bad uri with spaces".into());
    let d = Dir(vec![(c, "uacd-office", "x")]);
    assert_eq!(
        classify_in(&asterisk_invite(), src, &d),
        Decision::Reject(Reject::BadDestination)
    );
}

#[test]
fn rfc3261_16_3_item1_malformed_is_400_and_malformed_ack_dropped() {
    let inv = variant(
        ASTERISK_HEAD,
        "Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n",
        "",
    );
    assert_eq!(
        classify_from(&inv, pbx(5060), None),
        Decision::Reject(Reject::Malformed)
    );
    let ack = parse(
        "ACK sip:uacd-office@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKa\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(classify_from(&ack, pbx(5060), None), Decision::Drop);
    let bad_mf = variant(ASTERISK_HEAD, "Max-Forwards: 70", "Max-Forwards: many");
    assert_eq!(
        classify_from(&bad_mf, pbx(5060), None),
        Decision::Reject(Reject::Malformed)
    );
}

#[test]
fn rfc3261_16_3_item3_max_forwards_zero_is_483_but_options_is_answered() {
    let inv = variant(ASTERISK_HEAD, "Max-Forwards: 70", "Max-Forwards: 0");
    let d = classify_from(&inv, pbx(5060), None);
    assert_eq!(reject_code(&d), Some(483));
    let options = parse(
        "OPTIONS sip:uacd-office@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKo\r\n\
Max-Forwards: 0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:uacd-office@192.0.2.10>\r\nCall-ID: o1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(classify_from(&options, pbx(5060), None), Decision::Local);
    // Max-Forwards 1 is forwarded (it becomes 0 downstream).
    let one = variant(ASTERISK_HEAD, "Max-Forwards: 70", "Max-Forwards: 1");
    assert!(matches!(
        classify_from(&one, pbx(5060), None),
        Decision::NewCall { .. }
    ));
}

#[test]
fn out_of_dialog_options_is_answered_locally_not_forwarded() {
    let options = parse(
        "OPTIONS sip:uacd-office@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKo\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:uacd-office@192.0.2.10>\r\nCall-ID: o1\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(classify_from(&options, pbx(5060), None), Decision::Local);
}

/// The INVITE as we would have forwarded it, arriving back at us.
fn looped(ruri: Option<&str>) -> Message {
    let inv = asterisk_invite();
    let h = loop_hash(&inv, inv.top_via().ok().as_ref()).expect("hash");
    let b = branch(h, "1.0");
    let udp = iface(Transport::Udp);
    let uri = ruri.map(|u| u.parse().expect("uri"));
    let out = forward_request(
        &inv,
        uri.as_ref(),
        0,
        &Forward {
            source: pbx(5060),
            inbound: &udp,
            outbound: &udp,
            branch: &b,
            record_route: None,
        },
    )
    .expect("fwd");
    parse(out.to_bytes())
}

#[test]
fn rfc3261_16_3_item4_loop_with_same_hash_is_482() {
    let back = looped(None);
    let d = classify_from(&back, SocketAddr::from((US, 5060)), None);
    assert_eq!(d, Decision::Reject(Reject::Loop));
    assert_eq!(reject_code(&d), Some(482));
}

#[test]
fn rfc3261_16_3_item4_spiral_with_new_request_uri_is_not_a_loop() {
    let back = looped(Some("sip:uacd-office@192.0.2.10;line=ln-42"));
    assert!(matches!(
        classify_from(&back, pbx(5060), None),
        Decision::NewCall { .. }
    ));
}

#[test]
fn rfc3261_16_4_our_route_entries_are_popped() {
    let inv = variant(
        ASTERISK_HEAD,
        "Max-Forwards: 70\r\n",
        "Route: <sip:192.0.2.10;lr>\r\nRoute: <sip:uacd.example.net:5060;transport=tcp;lr>\r\nMax-Forwards: 70\r\n",
    );
    match classify_from(&inv, pbx(5060), None) {
        Decision::NewCall { pop_routes, .. } => assert_eq!(pop_routes, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_open_relay_foreign_route_is_403() {
    let top_foreign = variant(
        ASTERISK_HEAD,
        "Max-Forwards: 70\r\n",
        "Route: <sip:victim.example.com;lr>\r\nMax-Forwards: 70\r\n",
    );
    assert_eq!(
        classify_from(&top_foreign, pbx(5060), None),
        Decision::Reject(Reject::ForeignRoute)
    );
    let beyond_us = variant(
        ASTERISK_HEAD,
        "Max-Forwards: 70\r\n",
        "Route: <sip:192.0.2.10;lr>, <sip:victim.example.com;lr>\r\nMax-Forwards: 70\r\n",
    );
    assert_eq!(
        classify_from(&beyond_us, pbx(5060), None),
        Decision::Reject(Reject::ForeignRoute)
    );
    // Another port on our address is not us.
    let other_port = variant(
        ASTERISK_HEAD,
        "Max-Forwards: 70\r\n",
        "Route: <sip:192.0.2.10:5070;lr>\r\nMax-Forwards: 70\r\n",
    );
    assert_eq!(
        classify_from(&other_port, pbx(5060), None),
        Decision::Reject(Reject::ForeignRoute)
    );
}

fn bye(route: &str, ruri: &str) -> Message {
    parse(format!(
        "BYE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKbye1\r\n\
{route}Max-Forwards: 70\r\n\
From: <sip:1006@assistant-abc123.sip.telnyx.com>;tag=dst-1\r\n\
To: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[test]
fn rfc3261_16_12_in_dialog_bye_with_our_token_is_routed() {
    let token = dest_token("sip:asterisk@198.51.100.7:5060");
    let route = format!(
        "Route: <sip:192.0.2.10:5060;transport=tcp;lr;uacd={token}>, <sip:192.0.2.10:5060;transport=udp;lr;uacd={token}>\r\n"
    );
    let m = bye(&route, "sip:asterisk@198.51.100.7:5060");
    let src = SocketAddr::new(DEST, 5060);
    assert_eq!(
        classify_from(&m, src, None),
        Decision::InDialog {
            pop_routes: 2,
            holder: super::token::End::Destination,
            next: super::token::HopId::of(&"sip:198.51.100.7:5060".parse().expect("uri")),
            hop_signed: true,
            back: None,
        }
    );
}

#[test]
fn a_copied_token_gets_a_third_party_nothing() {
    let token = dest_token("sip:asterisk@198.51.100.7:5060");
    let route = format!("Route: <sip:192.0.2.10:5060;lr;uacd={token}>\r\n");
    let m = bye(&route, "sip:asterisk@198.51.100.7:5060");
    // From another address: not the end it was given to.
    let stranger = SocketAddr::from(([203, 0, 113, 66], 5060));
    assert_eq!(
        classify_from(&m, stranger, None),
        Decision::Reject(Reject::ForeignRoute)
    );
    // From the right end toward another host or port: genuine, but it does
    // not name that hop (the relay then asks the dialog table).
    for ruri in ["sip:x@192.0.2.66:5060", "sip:asterisk@198.51.100.7:5099"] {
        let m = bye(&route, ruri);
        match classify_from(&m, SocketAddr::new(DEST, 5060), None) {
            Decision::InDialog { hop_signed, .. } => assert!(!hop_signed, "{ruri}"),
            other => panic!("{ruri}: {other:?}"),
        }
    }
    // Another Call-ID with the same token.
    let other = parse(
        String::from_utf8(bye(&route, "sip:asterisk@198.51.100.7:5060").to_bytes())
            .expect("utf8")
            .replace(CALL, "another-call"),
    );
    assert_eq!(
        classify_from(&other, SocketAddr::new(DEST, 5060), None),
        Decision::Reject(Reject::ForeignRoute)
    );
}

#[test]
fn no_open_relay_forged_or_missing_route_set() {
    let forged = bye(
        "Route: <sip:192.0.2.10;lr;uacd=0000000000000000>, <sip:victim.example.com;lr>\r\n",
        "sip:x@victim.example.com",
    );
    let src = SocketAddr::from(([10, 1, 1, 1], 5060));
    assert_eq!(
        classify_from(&forged, src, None),
        Decision::Reject(Reject::ForeignRoute)
    );
    let no_route = bye("", "sip:x@victim.example.com");
    assert_eq!(
        classify_from(&no_route, src, None),
        Decision::Reject(Reject::ForeignDomain)
    );
    // Addressed to us with no route set: a dialog we hold no state for (481 by the server).
    let to_us = bye("", "sip:uacd-office@192.0.2.10");
    assert_eq!(classify_from(&to_us, src, None), Decision::Local);
}

#[test]
fn rfc3261_16_10_cancel_without_transaction_is_unmatched() {
    let c = parse(
        "CANCEL sip:uacd-office@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKgone\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:uacd-office@192.0.2.10>\r\nCall-ID: x\r\n\
CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        classify_from(&c, pbx(5060), None),
        Decision::UnmatchedCancel
    );
}

#[test]
fn local_is_us_default_ports() {
    let l = local();
    for (uri, us) in [
        ("sip:192.0.2.10", true),
        ("sip:192.0.2.10:5060;transport=tcp", true),
        ("sips:192.0.2.10", true),
        ("sip:192.0.2.10;transport=tls", true),
        ("sip:192.0.2.10:5070", false),
        ("sip:UACD.example.net", true),
        ("sip:198.51.100.7", false),
        ("tel:+15551230000", false),
    ] {
        assert_eq!(l.is_us(&uri.parse().expect("uri")), us, "{uri}");
    }
}

#[test]
fn reject_codes_are_mapped_in_one_place() {
    use Reject::*;
    let all = [
        (Malformed, 400),
        (TooManyHops, 483),
        (Loop, 482),
        (UnknownUser, 404),
        (ForbiddenSource, 403),
        (ForeignRoute, 403),
        (ForeignDomain, 403),
        (Inactive, 480),
        (NotRegistered, 480),
        (NoDestination, 480),
        (BadDestination, 500),
    ];
    for (r, code) in all {
        assert_eq!(r.code(), code, "{}", r.label());
    }
}

/// §16.3 item 2 (RFC 4475 `unkscm`): a scheme we cannot route is 416
/// before anything else is looked at; a tel: URI is understood.
#[test]
fn rfc3261_16_3_item2_unknown_scheme_is_416() {
    let head = "OPTIONS nobodyknowsthisscheme:totallyopaquecontent SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKs\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:x@y>\r\nCall-ID: s1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let d = classify_from(&parse(head), pbx(5060), None);
    assert_eq!(reject_code(&d), Some(416), "{d:?}");
    let invite = head.replace("OPTIONS", "INVITE");
    assert_eq!(
        reject_code(&classify_from(&parse(invite), pbx(5060), None)),
        Some(416)
    );
    let tel = head.replace(
        "nobodyknowsthisscheme:totallyopaquecontent",
        "tel:+15551234",
    );
    assert_eq!(
        reject_code(&classify_from(&parse(tel), pbx(5060), None)),
        None
    );
}

/// §16.3 item 5: a Proxy-Require we do not understand (any) is 420 before
/// routing, even from the PBX.
#[test]
fn rfc3261_16_3_item5_proxy_require_is_420() {
    let inv = String::from_utf8(asterisk_invite().to_bytes())
        .unwrap()
        .replacen("\r\n", "\r\nProxy-Require: foo\r\n", 1);
    let d = classify_from(&parse(inv), pbx(5060), None);
    assert_eq!(reject_code(&d), Some(420), "{d:?}");
}

/// An internal application's INVITE for `uacd-office.uac.test` (the
/// router found the connection by that host: `toward_pbx`).
fn toward_pbx_invite() -> Message {
    parse(
        "INVITE sip:2000@uacd-office.uac.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKint1\r\n\
Max-Forwards: 70\r\n\
From: <sip:bot@10.1.1.1>;tag=a\r\nTo: <sip:2000@uacd-office.uac.test>\r\n\
Call-ID: out-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    )
}

fn classify_toward_pbx(view: ConnectionView, internal: bool) -> Option<u16> {
    let view = ConnectionView {
        toward_pbx: true,
        ..view
    };
    let source = Source {
        addr: SocketAddr::from(([10, 1, 1, 1], 5060)),
        flow: None,
        internal,
    };
    match classify(
        &toward_pbx_invite(),
        source,
        &local(),
        Some(&view),
        &SECRET,
        EPOCH,
    ) {
        Decision::TowardPbx { connection, .. } => {
            assert!(connection.toward_pbx);
            None
        }
        other => reject_code(&other),
    }
}

#[test]
fn a_call_toward_the_pbx_from_an_internal_source_is_placed() {
    assert_eq!(classify_toward_pbx(conn("office"), true), None);
}

#[test]
fn a_call_toward_the_pbx_from_anywhere_else_is_refused_403() {
    assert_eq!(classify_toward_pbx(conn("office"), false), Some(403));
}

#[test]
fn a_call_toward_an_unregistered_or_inactive_connection_gets_480() {
    let unregistered = ConnectionView {
        registered: false,
        ..conn("office")
    };
    assert_eq!(classify_toward_pbx(unregistered, true), Some(480));
    let inactive = ConnectionView {
        active: false,
        ..conn("office")
    };
    assert_eq!(classify_toward_pbx(inactive, true), Some(480));
}
