//! Unit tests of the builders (RFC 3261 §8.2.6, 400 salvage with Warning 399)
//! and of stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1 keep-alives).

use bytes::Bytes;

use crate::sip::*;

fn msg(s: &str) -> Message {
    match Message::parse_datagram(Bytes::from(s.to_owned())) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}\n{s}"),
    }
}

#[test]
fn bad_request_response_salvages_headers() {
    let raw = b"INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: abc\r\nCSeq: 7 INVITE\r\nContent-Length: 99\r\n\r\nshort";
    let err = Message::parse_datagram(Bytes::from_static(raw))
        .expect_err("Content-Length beyond the datagram");
    let out = bad_request_response(raw, &err).expect("answered");
    let resp = Message::parse_datagram(Bytes::from(out)).expect("response parses");
    assert_eq!(resp.status(), Some(400));
    assert_eq!(resp.reason(), Some("Bad Request"));
    assert_eq!(resp.vias().expect("vias").len(), 2);
    assert_eq!(resp.call_id().ok(), Some("abc"));
    assert_eq!(resp.cseq().expect("cseq").seq, 7);
    assert!(
        resp.to_header()
            .expect("to")
            .tag()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(resp.from_header().expect("from").tag(), Some("1"));
    let warning = resp
        .header(HeaderName::Warning)
        .map(|h| h.value().into_owned());
    assert_eq!(
        warning.as_deref(),
        Some("399 uacd \"Content-Length does not match the datagram\"")
    );
    assert_eq!(
        resp.header(HeaderName::ContentLength)
            .map(|h| h.value().into_owned()),
        Some("0".into())
    );
    // an existing To tag is kept, not doubled
    let tagged = String::from_utf8_lossy(raw).replace("To: <sip:b@h>", "To: <sip:b@h>;tag=xyz");
    let out = bad_request_response(tagged.as_bytes(), &err).expect("answered");
    let resp = Message::parse_datagram(Bytes::from(out)).expect("parses");
    assert_eq!(resp.to_header().expect("to").tag(), Some("xyz"));
}

#[test]
fn bad_request_response_drops_what_it_cannot_answer() {
    let err = ParseError::Truncated;
    let ack = b"ACK sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n";
    assert_eq!(bad_request_response(ack, &err), None);
    let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(bad_request_response(resp, &err), None);
    let no_callid =
        b"INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: a\r\nTo: b\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(bad_request_response(no_callid, &err), None);
    assert_eq!(bad_request_response(b"\x00\x01garbage", &err), None);
    assert_eq!(bad_request_response(b"", &err), None);
}

/// Found by fuzz/fuzz_targets/parser.rs: a request refused for too many
/// header fields got a 400 echoing every Via, which had too many fields to
/// parse itself.
#[test]
fn bad_request_response_is_never_more_fields_than_a_parser_accepts() {
    let many = |n: usize| {
        let mut raw = String::from("OPTIONS sip:h SIP/2.0\r\n");
        for i in 0..n {
            raw.push_str(&format!("Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n"));
        }
        raw + "From: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    };
    let err = ParseError::TooManyHeaders;
    let fits = bad_request_response(many(MAX_HEADERS - 6).as_bytes(), &err).expect("answered");
    assert!(Message::parse_datagram(Bytes::from(fits)).is_ok());
    assert_eq!(
        bad_request_response(many(MAX_HEADERS).as_bytes(), &err),
        None
    );
    // Via lines are echoed as received: many comma-separated values on one
    // line stay one field, and the answer parses.
    let line = vec!["SIP/2.0/UDP h"; MAX_HEADERS].join(",");
    let raw = format!(
        "OPTIONS sip:h SIP/2.0\r\nVia: {line}\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    );
    let one_line = bad_request_response(raw.as_bytes(), &ParseError::Truncated).expect("answered");
    let resp = Message::parse_datagram(Bytes::from(one_line)).expect("parses");
    assert_eq!(resp.header_values(HeaderName::Via).len(), MAX_HEADERS);
}

#[test]
fn response_to_copies_dialog_headers() {
    let req = msg(
        "INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1,SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
Via: SIP/2.0/UDP c;branch=z9hG4bK3\r\nFrom: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\nCall-ID: cid\r\nCSeq: 5 INVITE\r\n\r\n",
    );
    let out = response_to(&req, 486, "Busy Here", Some("t1"))
        .header("Retry-After", 30)
        .build();
    let text = String::from_utf8(out.clone()).expect("utf8");
    // Via lines as received: same values, same grouping.
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1,SIP/2.0/UDP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c;branch=z9hG4bK3\r\n"), "{text}");
    assert_eq!(msg(&text).vias().expect("vias").len(), 3);
    assert!(text.ends_with("Retry-After: 30\r\nContent-Length: 0\r\n\r\n"));
    let resp = msg(&text);
    assert_eq!(resp.to_header().expect("to").tag(), Some("t1"));
    assert_eq!(resp.cseq().expect("cseq").seq, 5);
    assert_eq!(resp.retry_after(), Some(30));
}

#[test]
fn request_builder_adds_content_length() {
    let out = RequestBuilder::new(Method::Register, "sip:pbx.example.com")
        .header("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKr;rport")
        .header("Max-Forwards", 70)
        .header("Content-Length", 999)
        .body("text/plain", b"hello")
        .build();
    let m = Message::parse_datagram(Bytes::from(out)).expect("parses");
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.body(), b"hello");
    assert_eq!(m.header_values(HeaderName::ContentLength), ["5"]);
    assert_eq!(m.content_type().as_deref(), Some("text/plain"));
}

#[test]
fn framing_two_messages_partial_and_pings() {
    let a = "OPTIONS sip:h SIP/2.0\r\nl: 3\r\n\r\nabc";
    let b = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    let buf = format!("\r\n\r\n{a}{b}\r\n");
    let mut rest = buf.as_bytes();
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let f = next_frame(rest);
        let n = f.len();
        frames.push(f);
        if n == 0 {
            break;
        }
        rest = &rest[n..];
    }
    assert_eq!(
        frames,
        [
            Frame::Ping,
            Frame::Message(a.len()),
            Frame::Message(b.len()),
            Frame::Pong
        ]
    );
    for cut in 1..a.len() {
        assert_eq!(
            next_frame(&a.as_bytes()[..cut]),
            Frame::Incomplete,
            "cut {cut}"
        );
    }
    // a scanner resumes where it stopped
    let mut sc = FrameScanner::new();
    let whole = a.as_bytes();
    for cut in 1..whole.len() {
        assert_eq!(sc.next(&whole[..cut]), Frame::Incomplete);
    }
    assert_eq!(sc.next(whole), Frame::Message(whole.len()));
    // missing Content-Length on a stream means 0
    assert_eq!(
        next_frame(b"OPTIONS sip:h SIP/2.0\r\n\r\nXX"),
        Frame::Message(25)
    );
    assert_eq!(
        next_frame(b"OPTIONS sip:h SIP/2.0\r\nContent-Length: x\r\n\r\n"),
        Frame::Invalid(ParseError::BadContentLength)
    );
    assert_eq!(
        next_frame(b"OPTIONS sip:h SIP/2.0\r\nl: 70000\r\n\r\n"),
        Frame::Invalid(ParseError::TooLarge)
    );
    assert_eq!(
        next_frame(&vec![b'a'; MAX_MESSAGE_SIZE]),
        Frame::Invalid(ParseError::TooLarge)
    );
    assert_eq!(next_frame(b"\r\n\r"), Frame::Incomplete);
    assert_eq!(next_frame(b"\r\n"), Frame::Pong);
}

/// Found by fuzz/fuzz_targets/route.rs: the framer took `l:` on a folded
/// line for Content-Length while the parser (rightly) read it as part of
/// Content-Type, so a forwarded copy that gained a Content-Length did not
/// frame on a stream.
#[test]
fn framing_ignores_header_names_on_folded_lines_and_the_start_line() {
    let folded =
        b"INVITE sip:h SIP/2.0\r\nc: application/sdp\r\n l:5\r\nContent-Length: 2\r\n\r\nabXYZ";
    assert_eq!(next_frame(folded), Frame::Message(folded.len() - 3));
    let m = Message::parse_stream(Bytes::from_static(&folded[..folded.len() - 3])).expect("parses");
    assert_eq!(m.body(), b"ab");
    let only_folded = b"OPTIONS sip:h SIP/2.0\r\nSubject: a\r\n\tl: 3\r\n\r\nxyz";
    assert_eq!(
        next_frame(only_folded),
        Frame::Message(only_folded.len() - 3)
    );
    // A folded Content-Length value is still joined (§7.3.1).
    let cl_folded = b"OPTIONS sip:h SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nxyz";
    assert_eq!(next_frame(cl_folded), Frame::Message(cl_folded.len()));
    let start = b"l:3 sip:h SIP/2.0\r\nVia: x\r\n\r\nxyz";
    assert_eq!(next_frame(start), Frame::Message(start.len() - 3));
}

#[test]
fn warning_text_is_quotable() {
    let errs = [
        ParseError::TooLarge,
        ParseError::MissingHeader("Via"),
        ParseError::BadHeader {
            name: "CSeq",
            reason: "bad method",
        },
        ParseError::BadUri("empty host"),
        ParseError::BadStartLine("bad method"),
    ];
    for e in errs {
        let t = e.warning_text();
        assert!(
            !t.is_empty() && !t.contains('"') && !t.contains('\\'),
            "{t}"
        );
    }
    assert_eq!(
        ParseError::MissingHeader("Via").warning_text(),
        "Missing Via header"
    );
}

/// A many-valued Via costs the sender as much as the response: each `,a`
/// stays two bytes, a compact `v:` line stays compact.
#[test]
fn response_via_lines_are_not_amplified() {
    let many = ",SIP/2.0/UDP a".repeat(200);
    let raw = format!(
        "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1{many}\r\nv: SIP/2.0/UDP x\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    );
    let req = msg(&raw);
    let out = response_to(&req, 404, "Not Found", Some("t")).build();
    let text = String::from_utf8(out).expect("utf8");
    assert_eq!(text.matches("Via: ").count(), 1, "{text}");
    assert!(text.contains("\r\nv: SIP/2.0/UDP x\r\n"), "{text}");
    assert_eq!(msg(&text).vias().expect("vias").len(), 202);
    // The salvaged 400 keeps the lines too.
    let broken = raw.replace("CSeq: 1 OPTIONS", "CSeq: 1 OPTIONS\r\nContent-Length: 99");
    let err = Message::parse_datagram(Bytes::from(broken.clone())).expect_err("truncated");
    let out = bad_request_response(broken.as_bytes(), &err).expect("answered");
    assert_eq!(String::from_utf8_lossy(&out).matches("Via: ").count(), 1);
}

/// RFC 4475 `badvers`: SIP/7.0 is answered 505, not 400.
#[test]
fn a_foreign_sip_version_gets_505() {
    let raw = b"OPTIONS sip:t.watson@example.org SIP/7.0\r\nVia: SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw\r\n\
Max-Forwards: 70\r\nFrom: A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe\r\nTo: T. Watson <sip:t.watson@example.org>\r\n\
Call-ID: badvers.31417@c.example.com\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
    let err = Message::parse_datagram(Bytes::from_static(raw)).expect_err("version");
    assert_eq!(err, ParseError::BadVersion);
    let out = bad_request_response(raw, &err).expect("answered");
    let resp = Message::parse_datagram(Bytes::from(out)).expect("parses");
    assert_eq!(resp.status(), Some(505));
    assert_eq!(resp.reason(), Some("Version Not Supported"));
    // Not SIP at all: still a malformed line, and nothing to answer.
    let other = b"OPTIONS sip:h HTTP/1.1\r\n\r\n";
    let err = Message::parse_datagram(Bytes::from_static(other)).expect_err("not sip");
    assert!(matches!(err, ParseError::BadStartLine(_)));
}
