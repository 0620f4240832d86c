//! Forwarded requests and relayed responses: RFC 3261 §16.6, §16.7 item 9,
//! §16.12, RFC 5658, RFC 3581. Exact bytes where byte-for-byte relay matters.

use crate::config::Transport;
use crate::sip::{HeaderName, Host, Via};

use super::forward::*;
use super::testdata::*;
use super::token::End;

fn fwd<'a>(
    inb: &'a crate::context::Interface,
    out: &'a crate::context::Interface,
    token: Option<&'a str>,
) -> Forward<'a> {
    Forward {
        source: pbx(5060),
        inbound: inb,
        outbound: out,
        branch: "z9hG4bK-ua-00000000000000aa-1",
        record_route: token,
    }
}

fn text(m: &crate::sip::Message) -> String {
    String::from_utf8(m.to_bytes()).expect("utf8")
}

#[test]
fn rfc3261_16_6_asterisk_invite_forwarded_exact_bytes() {
    let inv = asterisk_invite();
    let udp = iface(Transport::Udp);
    let dest = destination_uri("1006@assistant-abc123.sip.telnyx.com").expect("dest");
    let out = forward_request(&inv, Some(&dest), 0, &fwd(&udp, &udp, Some("tok"))).expect("fwd");
    let expected_head = "INVITE sip:1006@assistant-abc123.sip.telnyx.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ua-00000000000000aa-1;rport\r\n\
Record-Route: <sip:192.0.2.10:5060;transport=udp;lr;uacd=tok>\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport=5060;branch=z9hG4bKPj5f0c1a2b;received=198.51.100.7\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>\r\n\
Contact: <sip:asterisk@198.51.100.7:5060>\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 31337 INVITE\r\n\
Allow: OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, REFER\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: \"Alice\" <sip:601@pbx.example.com>\r\n\
Max-Forwards: 69\r\n\
User-Agent: Asterisk PBX 20.5.0\r\n\
X-Custom-Trace:   abc ;  weird=1  \r\n\
Content-Type: application/sdp\r\n\
Content-Length:   {len}\r\n\
\r\n";
    assert_eq!(out.to_bytes(), with_body(expected_head, SDP));
}

#[test]
fn rfc5658_double_record_route_when_transports_differ() {
    let inv = asterisk_invite();
    let (udp, tcp) = (iface(Transport::Udp), iface(Transport::Tcp));
    let out = forward_request(&inv, None, 0, &fwd(&udp, &tcp, Some("t1"))).expect("fwd");
    let rr: Vec<String> = out
        .record_routes()
        .expect("rr")
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    // The UAS sees the outbound-facing entry first (RFC 5658 §4).
    assert_eq!(
        rr,
        vec![
            "sip:192.0.2.10:5060;transport=tcp;lr;uacd=t1",
            "sip:192.0.2.10:5060;transport=udp;lr;uacd=t1"
        ]
    );
    assert_eq!(
        out.top_via().expect("via").to_string(),
        "SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-ua-00000000000000aa-1;rport"
    );
}

#[test]
fn rfc3261_16_6_kamailio_compact_headers_and_body_kept_byte_for_byte() {
    let inv = kamailio_invite();
    let tcp = iface(Transport::Tcp);
    let dest =
        destination_uri("sip:1006@assistant-abc123.sip.telnyx.com;transport=tcp").expect("d");
    let mut f = fwd(&tcp, &tcp, Some("k"));
    f.source = pbx(40312);
    let out = forward_request(&inv, Some(&dest), 0, &f).expect("fwd");
    let t = text(&out);
    let expected_tail = "Record-Route: <sip:198.51.100.7;transport=tcp;lr;ftag=f1a2>\r\n\
v: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKd2a1.7f3e0;i=1\r\n\
v: SIP/2.0/UDP 203.0.113.50:5060;rport=5060;received=203.0.113.50;\r\n branch=z9hG4bK77ab\r\n\
f: <sip:+15551230000@pbx.example.com>;tag=f1a2\r\n\
t: <sip:someone@192.0.2.10>\r\n\
i: kam-call-1@203.0.113.50\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:caller@203.0.113.50:5060>\r\n\
Max-Forwards: 68\r\n\
X-Telnyx-Token: tok-ABC-123\r\n\
c: application/sdp\r\n\
l: {len}\r\n\
\r\n";
    let tail = String::from_utf8(with_body(expected_tail, SDP)).expect("utf8");
    assert!(t.ends_with(&tail), "{t}");
    assert!(
        t.starts_with(
            "INVITE sip:1006@assistant-abc123.sip.telnyx.com;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK-ua-00000000000000aa-1;rport\r\n\
Record-Route: <sip:192.0.2.10:5060;transport=tcp;lr;uacd=k>\r\n"
        ),
        "{t}"
    );
    // Everything after our two lines is the original message, byte for byte
    // (the sent-by is the source and there is no rport: no `received`).
    let original = String::from_utf8(with_body(KAMAILIO_HEAD, SDP)).expect("utf8");
    let (_, orig_rest) = original.split_once("\r\n").expect("line");
    assert_eq!(
        t.splitn(4, "\r\n").nth(3),
        Some(
            orig_rest
                .replacen("Max-Forwards: 69", "Max-Forwards: 68", 1)
                .as_str()
        )
    );
    assert_eq!(out.body(), SDP);
}

#[test]
fn rfc3261_18_2_1_no_received_when_sent_by_is_the_source_without_rport() {
    let inv = kamailio_invite();
    let tcp = iface(Transport::Tcp);
    let f = fwd(&tcp, &tcp, None);
    let out = forward_request(&inv, None, 0, &f).expect("fwd");
    let vias = out.vias().expect("vias");
    assert_eq!(vias[1].received(), None);
    assert!(
        out.record_routes().expect("rr").len() == 1,
        "no RR of ours without a token"
    );
}

#[test]
fn rfc3261_16_6_item3_max_forwards_added_when_absent_and_483_at_zero() {
    let head = ASTERISK_HEAD.replace("Max-Forwards: 70\r\n", "");
    let inv = parse(with_body(&head, SDP));
    let udp = iface(Transport::Udp);
    let out = forward_request(&inv, None, 0, &fwd(&udp, &udp, None)).expect("fwd");
    assert_eq!(out.max_forwards(), Some(70));
    let zero = parse(with_body(
        &ASTERISK_HEAD.replace("Max-Forwards: 70", "Max-Forwards: 0"),
        SDP,
    ));
    assert_eq!(
        forward_request(&zero, None, 0, &fwd(&udp, &udp, None)).err(),
        Some(ForwardError::TooManyHops)
    );
}

#[test]
fn destination_uri_adds_sip_and_keeps_parameters() {
    let cases = [
        (
            "1006@assistant-abc123.sip.telnyx.com",
            "sip:1006@assistant-abc123.sip.telnyx.com",
        ),
        (
            "1006@sip.telnyx.com:5080;transport=tls",
            "sip:1006@sip.telnyx.com:5080;transport=tls",
        ),
        ("sips:1006@sip.telnyx.com", "sips:1006@sip.telnyx.com"),
        ("SIP:bob@[2001:db8::1]:5062", "sip:bob@[2001:db8::1]:5062"),
        (" tel:+15551230000 ", "tel:+15551230000"),
        // ';' and '?' belong to the user part before the '@' (RFC 3261 §25.1)
        (
            "1006;isup-oli=0@h;transport=tcp",
            "sip:1006;isup-oli=0@h;transport=tcp",
        ),
        ("?x@h", "sip:?x@h"),
    ];
    for (input, want) in cases {
        assert_eq!(destination_uri(input).expect(input).to_string(), want);
    }
    assert!(destination_uri("not a uri").is_err());
    assert!(destination_uri("").is_err());
}

#[test]
fn rfc3261_16_4_pop_our_routes_and_16_6_item6_strict_route_postprocessing() {
    let head = ASTERISK_HEAD.replace(
        "Max-Forwards: 70\r\n",
        "Route: <sip:192.0.2.10;lr>, <sip:strict.example.com>\r\nRoute: <sip:last.example.com;lr>\r\nMax-Forwards: 70\r\n",
    );
    let inv = parse(with_body(&head, SDP));
    let udp = iface(Transport::Udp);
    let out = forward_request(&inv, None, 1, &fwd(&udp, &udp, None)).expect("fwd");
    assert_eq!(
        out.request_uri().expect("ruri").to_string(),
        "sip:strict.example.com"
    );
    let routes: Vec<String> = out
        .routes()
        .expect("routes")
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(
        routes,
        vec![
            "sip:last.example.com;lr",
            "sip:uacd-office@192.0.2.10:5060;transport=udp"
        ]
    );
    assert_eq!(
        next_hop(&out).expect("hop").to_string(),
        "sip:last.example.com;lr"
    );
}

#[test]
fn rfc3261_16_12_next_hop_is_first_route_else_request_uri() {
    let inv = asterisk_invite();
    assert_eq!(
        next_hop(&inv).expect("hop").to_string(),
        "sip:uacd-office@192.0.2.10:5060;transport=udp"
    );
}

const RESPONSE_180: &str = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ua-00000000000000aa-1;rport=5060;received=192.0.2.10, SIP/2.0/UDP 198.51.100.7:5060;rport=5060;branch=z9hG4bKPj5f0c1a2b;received=198.51.100.7\r\n\
Record-Route: <sip:edge.telnyx.com;lr>, <sip:192.0.2.10:5060;transport=udp;lr;uacd=tok>\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>;tag=tx-1\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 31337 INVITE\r\n\
X-Vendor:  kept\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn rfc3261_16_7_item3_100_is_not_relayed() {
    let r = parse(RESPONSE_180.replace("180 Ringing", "100 Trying"));
    assert!(relay_response(&r).is_none());
}

#[test]
fn rfc3261_16_7_item9_relay_pops_our_via_and_keeps_the_rest() {
    let r = parse(RESPONSE_180);
    let out = relay_response(&r).expect("relay");
    assert_eq!(
        text(&out),
        "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport=5060;branch=z9hG4bKPj5f0c1a2b;received=198.51.100.7\r\n\
Record-Route: <sip:edge.telnyx.com;lr>, <sip:192.0.2.10:5060;transport=udp;lr;uacd=tok>\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>;tag=tx-1\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 31337 INVITE\r\n\
X-Vendor:  kept\r\n\
Content-Length: 0\r\n\r\n"
    );
}

#[test]
fn rfc3581_4_response_target_uses_received_and_rport() {
    let v = Via::parse("SIP/2.0/UDP pbx.example.com:5070;rport=40000;received=198.51.100.7")
        .expect("via");
    assert_eq!(response_target(&v), (Host::V4(PBX.into()), 40000));
    let v = Via::parse("SIP/2.0/TLS pbx.example.com;received=2001:db8::7").expect("via");
    assert_eq!(
        response_target(&v),
        (Host::V6("2001:db8::7".parse().expect("v6")), 5061)
    );
    let v = Via::parse("SIP/2.0/UDP 198.51.100.7").expect("via");
    assert_eq!(response_target(&v), (Host::V4(PBX.into()), 5060));
}

#[test]
fn rfc3261_16_6_item8_branch_carries_the_loop_hash() {
    let inv = asterisk_invite();
    let h = loop_hash(&inv, inv.top_via().ok().as_ref()).expect("hash");
    let b = branch(h, "77.0");
    assert!(b.starts_with("z9hG4bK"), "RFC 3261 magic cookie");
    assert_eq!(branch_loop_hash(&b), Some(h));
    assert_eq!(branch_loop_hash("z9hG4bKPj5f0c1a2b"), None);
    // A spiral (new Request-URI) hashes differently.
    let mut spiral = inv.clone();
    spiral.set_request_uri("sip:other@192.0.2.10".parse().expect("uri"));
    assert_ne!(
        loop_hash(&spiral, inv.top_via().ok().as_ref()).expect("hash"),
        h
    );
}

#[test]
fn rfc3261_16_11_stateless_branch_is_stable_across_retransmissions() {
    let ack = parse(
        "ACK sip:1006@10.0.0.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKPjack1\r\n\
Route: <sip:192.0.2.10:5060;transport=udp;lr;uacd=x>\r\n\
From: <sip:601@pbx.example.com>;tag=a\r\nTo: <sip:b@c>;tag=b\r\n\
Call-ID: c1\r\nCSeq: 31337 ACK\r\nContent-Length: 0\r\n\r\n",
    );
    let b1 = stateless_branch(&ack, "0123abcd").expect("b");
    let b2 = stateless_branch(&ack.clone(), "0123abcd").expect("b");
    assert_eq!(b1, b2);
    assert!(b1.starts_with(BRANCH_PREFIX));
    assert_eq!(stateless_tag(&b1), Some("0123abcd"));
    assert!(
        branch_loop_hash(&b1).is_some(),
        "loop detection still works"
    );
    let udp = iface(Transport::Udp);
    let mut f = fwd(&udp, &udp, None);
    f.branch = &b1;
    let out = forward_request(&ack, None, 1, &f).expect("fwd");
    assert!(out.routes().expect("r").is_empty(), "our Route popped");
    assert_eq!(out.header_values(HeaderName::Via).len(), 2);
}

#[test]
fn binary_body_is_relayed_untouched() {
    let body: Vec<u8> = (0u8..=255).collect();
    let head = ASTERISK_HEAD.replace("application/sdp", "application/octet-stream");
    let inv = parse(with_body(&head, &body));
    let udp = iface(Transport::Udp);
    let out = forward_request(&inv, None, 0, &fwd(&udp, &udp, None)).expect("fwd");
    assert_eq!(out.body(), &body[..]);
    assert!(out.to_bytes().ends_with(&body));
}

#[test]
fn response_tag_binds_call_id_and_where_the_response_goes() {
    let via = |s: &str| Via::parse(s).expect("via");
    let a = via("SIP/2.0/UDP 198.51.100.7:5060;rport=5062;received=198.51.100.7;branch=z9hG4bKx");
    let t = response_tag(&SECRET, "c1", End::Pbx, &a);
    assert_eq!(t, response_tag(&SECRET, "c1", End::Pbx, &a));
    assert_ne!(t, response_tag(&SECRET, "c2", End::Pbx, &a), "Call-ID");
    assert_ne!(
        t,
        response_tag(b"fedcba9876543210", "c1", End::Pbx, &a),
        "secret"
    );
    let other_port =
        via("SIP/2.0/UDP 198.51.100.7:5060;rport=5099;received=198.51.100.7;branch=z9hG4bKx");
    assert_ne!(
        t,
        response_tag(&SECRET, "c1", End::Pbx, &other_port),
        "port"
    );
    let other_host =
        via("SIP/2.0/UDP 198.51.100.7:5060;rport=5062;received=203.0.113.9;branch=z9hG4bKx");
    assert_ne!(
        t,
        response_tag(&SECRET, "c1", End::Pbx, &other_host),
        "received"
    );
    let tcp = via("SIP/2.0/TCP 198.51.100.7:5060;rport=5062;received=198.51.100.7;branch=z9hG4bKx");
    assert_ne!(t, response_tag(&SECRET, "c1", End::Pbx, &tcp), "transport");
    let d = response_tag(&SECRET, "c1", End::Destination, &a);
    assert_ne!(t[1..], d[1..], "end");
    assert_eq!(
        (tag_end(&t), tag_end(&d)),
        (Some(End::Pbx), Some(End::Destination))
    );
}

#[test]
fn only_our_stateless_branches_carry_a_tag() {
    assert_eq!(
        stateless_tag("z9hG4bK-ua-0011223344556677-s9f.abcd"),
        Some("abcd")
    );
    // A stateful branch of ours, someone else's, or our prefix with junk.
    assert_eq!(stateless_tag("z9hG4bK-ua-0011223344556677-1a2b3c"), None);
    assert_eq!(stateless_tag("z9hG4bKPjabc.def"), None);
    assert_eq!(stateless_tag("z9hG4bK-ua-s.x"), None);
}

#[test]
fn stamped_top_via_is_what_forwarding_writes() {
    let inv = asterisk_invite();
    let udp = iface(Transport::Udp);
    let f = fwd(&udp, &udp, None);
    let stamped = stamped_top_via(&inv, f.source)
        .expect("via")
        .expect("rport asks for a stamp");
    let out = forward_request(&inv, None, 0, &f).expect("fwd");
    assert_eq!(
        out.vias().expect("vias")[1].to_string(),
        stamped.to_string()
    );
}

/// A datagram without Content-Length carries the rest of the datagram as
/// its body; forwarded (possibly onto TCP) or relayed, it must say how long
/// that body is, or a stream peer reads the body as a second request from
/// us (request smuggling).
#[test]
fn rfc3261_18_3_content_length_added_to_what_a_datagram_left_out() {
    let smuggled = "BYE sip:victim@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bKx\r\n\r\n";
    let head = "INVITE sip:uacd-office@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKPjnocl\r\n\
From: <sip:601@pbx.example.com>;tag=a\r\n\
To: <sip:uacd-office@192.0.2.10>\r\n\
Call-ID: no-cl@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
\r\n";
    let raw = format!("{head}{smuggled}");
    let inv = crate::sip::Message::parse_datagram(bytes::Bytes::from(raw)).expect("parses");
    assert_eq!(
        inv.body(),
        smuggled.as_bytes(),
        "the rest of the datagram is the body"
    );
    let (udp, tcp) = (iface(Transport::Udp), iface(Transport::Tcp));
    let dest = destination_uri("1006@assistant-abc123.sip.telnyx.com").expect("dest");
    let out = forward_request(&inv, Some(&dest), 0, &fwd(&udp, &tcp, Some("tok"))).expect("fwd");
    let len = smuggled.len().to_string();
    assert_eq!(
        out.header(HeaderName::ContentLength)
            .map(|h| h.value().into_owned()),
        Some(len.clone())
    );
    // Framed as a stream receiver frames it: one message, the body intact.
    let framed =
        crate::sip::Message::parse_stream(bytes::Bytes::from(out.to_bytes())).expect("frame");
    assert_eq!(framed.body(), smuggled.as_bytes());
    // Responses relayed from a datagram likewise.
    let resp = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ua-1\r\n\
Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKPjnocl\r\n\
From: <sip:601@pbx.example.com>;tag=a\r\n\
To: <sip:uacd-office@192.0.2.10>;tag=b\r\n\
Call-ID: no-cl@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
\r\n";
    let resp = crate::sip::Message::parse_datagram(bytes::Bytes::from(format!("{resp}{smuggled}")))
        .expect("parses");
    let relayed = relay_response(&resp).expect("relayed");
    assert_eq!(
        relayed
            .header(HeaderName::ContentLength)
            .map(|h| h.value().into_owned()),
        Some(len)
    );
}
