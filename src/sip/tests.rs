//! Unit tests of the message layer: awkward wire forms, round trips, edits,
//! limits, builders and framing (RFC 3261 §7, §18.3, §20; RFC 4475 style cases).

use bytes::Bytes;

use crate::sip::*;

fn msg(s: &str) -> Message {
    match Message::parse_datagram(Bytes::from(s.to_owned())) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}\n{s}"),
    }
}

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
X-Custom:   odd   spacing  \r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn parses_basic_invite() {
    let m = msg(INVITE);
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Invite));
    assert_eq!(
        m.request_uri().map(|u| u.to_string()),
        Some("sip:bob@biloxi.example.com".into())
    );
    assert_eq!(
        m.call_id().ok(),
        Some("a84b4c76e66710@pc33.atlanta.example.com")
    );
    assert_eq!(
        m.cseq().ok(),
        Some(CSeq {
            seq: 314159,
            method: Method::Invite
        })
    );
    assert_eq!(m.max_forwards(), Some(70));
    let from = m.from_header().expect("from");
    assert_eq!(from.display.as_deref(), Some("Alice A."));
    assert_eq!(from.tag(), Some("1928301774"));
    let to = m.to_header().expect("to");
    assert_eq!(to.display.as_deref(), Some("Bob"));
    assert_eq!(to.tag(), None);
    assert_eq!(m.top_via().expect("via").branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(m.body(), b"v=0\n");
    assert_eq!(
        m.header_named("x-custom").map(|h| h.value().into_owned()),
        Some("odd   spacing".into())
    );
    assert!(m.validate_request().is_ok());
}

#[test]
fn unmodified_round_trip_is_byte_identical() {
    let odd = "INVITE sip:b@h SIP/2.0\r\nv : SIP/2.0/UDP a;branch=z9hG4bK1\r\nFROM:<sip:a@h>;tag=1\r\n\
t:   <sip:b@h>\r\ni:x\r\nCSeq:  1   INVITE\r\nSubject: folded\r\n   over\r\n\tthree lines\r\nl: 3\r\n\r\nabc";
    for s in [INVITE, odd] {
        let m = msg(s);
        assert_eq!(m.to_bytes(), s.as_bytes());
    }
}

#[test]
fn compact_and_case_insensitive_names() {
    let s = "OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bKx\r\nf: <sip:a@h>;tag=9\r\nt: sip:b@h\r\n\
i: cid\r\nCSEQ: 2 OPTIONS\r\nm: <sip:a@1.2.3.4>\r\nc: text/plain\r\nk: path\r\ns: hi\r\ne: gzip\r\n\
o: presence\r\nr: <sip:c@h>\r\nu: dialog\r\nx: 1800\r\nl: 0\r\n\r\n";
    let m = msg(s);
    let names: Vec<HeaderName> = m.headers().map(HeaderField::name).collect();
    use HeaderName as H;
    assert_eq!(
        names,
        [
            H::Via,
            H::From,
            H::To,
            H::CallId,
            H::CSeq,
            H::Contact,
            H::ContentType,
            H::Supported,
            H::Subject,
            H::ContentEncoding,
            H::Event,
            H::ReferTo,
            H::AllowEvents,
            H::SessionExpires,
            H::ContentLength
        ]
    );
    assert_eq!(m.header(H::Via).map(HeaderField::raw_name), Some(&b"v"[..]));
    assert_eq!(m.call_id().ok(), Some("cid"));
    assert!(m.validate_request().is_ok());
    assert_eq!(HeaderName::from_bytes(b"call-id"), H::CallId);
    assert_eq!(
        HeaderName::from_bytes(b"WWW-AUTHENTICATE"),
        H::WwwAuthenticate
    );
    assert_eq!(HeaderName::from_bytes(b"X-Foo"), H::Other);
}

#[test]
fn whitespace_before_colon_is_legal() {
    let m = msg(
        "OPTIONS sip:h SIP/2.0\r\nVia : SIP/2.0/UDP h;branch=z9hG4bKa\r\nCall-ID\t: abc\r\n\r\n",
    );
    assert_eq!(m.top_via().expect("via").branch(), Some("z9hG4bKa"));
    assert_eq!(m.call_id().ok(), Some("abc"));
    assert_eq!(
        m.header(HeaderName::Via).map(HeaderField::raw_name),
        Some(&b"Via"[..])
    );
}

#[test]
fn folded_header_is_unfolded_in_typed_views() {
    let s = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bKf,\r\n\tSIP/2.0/TCP g:5061\r\n\
Subject: a\r\n    b \r\n\r\n";
    let m = msg(s);
    let vias = m.vias().expect("vias");
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].branch(), Some("z9hG4bKf"));
    assert_eq!(vias[1].port, Some(5061));
    assert_eq!(
        m.header(HeaderName::Subject)
            .map(|h| h.value().into_owned()),
        Some("a b".into())
    );
    assert_eq!(m.to_bytes(), s.as_bytes());
}

#[test]
fn vias_in_one_line_and_on_two_lines() {
    let m = msg(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
Via: SIP/2.0/TCP c;branch=z9hG4bK3\r\n\r\n",
    );
    let branches: Vec<String> = m
        .vias()
        .expect("vias")
        .iter()
        .filter_map(|v| v.branch().map(str::to_owned))
        .collect();
    assert_eq!(branches, ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]);
    assert_eq!(m.header_values(HeaderName::Via).len(), 3);
}

#[test]
fn via_with_spaces_keeps_branch_and_rport() {
    let m = msg(
        "OPTIONS sip:h SIP/2.0\r\nVia: SIP / 2.0 / UDP 1.2.3.4 ; branch=z9hG4bK1 ;rport; received = 5.6.7.8\r\n\r\n",
    );
    let v = m.top_via().expect("via");
    assert_eq!(v.transport, "UDP");
    assert_eq!(v.host, Host::V4("1.2.3.4".parse().expect("ip")));
    assert_eq!(v.branch(), Some("z9hG4bK1"));
    assert_eq!(v.rport(), Some(None));
    assert_eq!(v.received(), Some("5.6.7.8"));
    let v2 = Via::parse("SIP/2.0/UDP h:5060;rport=4000").expect("via");
    assert_eq!(v2.rport(), Some(Some(4000)));
    assert_eq!(v2.to_string(), "SIP/2.0/UDP h:5060;rport=4000");
}

#[test]
fn ipv6_in_request_uri_via_and_route() {
    let m = msg(
        "INVITE sip:bob@[2001:db8::1]:5070;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP [2001:db8::2]:5060;branch=z9hG4bK6\r\nRoute: <sip:[2001:db8::3];lr>\r\n\r\n",
    );
    let uri = m.request_uri().expect("ruri");
    assert_eq!(uri.host, Host::V6("2001:db8::1".parse().expect("v6")));
    assert_eq!(uri.port, Some(5070));
    assert_eq!(uri.params.value("transport"), Some("tcp"));
    assert_eq!(uri.to_string(), "sip:bob@[2001:db8::1]:5070;transport=tcp");
    let via = m.top_via().expect("via");
    assert_eq!(via.host, Host::V6("2001:db8::2".parse().expect("v6")));
    assert_eq!(via.port, Some(5060));
    let routes = m.routes().expect("routes");
    assert!(routes[0].uri.params.contains("lr"));
    assert_eq!(routes[0].to_string(), "<sip:[2001:db8::3];lr>");
}

#[test]
fn tel_uri_in_request_uri_and_to() {
    let m = msg(
        "INVITE tel:+15551234567;phone-context=example.com SIP/2.0\r\n\
To: <tel:+15551234567>\r\nFrom: tel:+1999;tag=abc\r\n\r\n",
    );
    let uri = m.request_uri().expect("ruri");
    assert_eq!(uri.scheme, Scheme::Tel);
    assert_eq!(uri.user.as_deref(), Some("+15551234567"));
    assert_eq!(uri.params.value("phone-context"), Some("example.com"));
    assert_eq!(
        uri.to_string(),
        "tel:+15551234567;phone-context=example.com"
    );
    assert_eq!(
        m.to_header().expect("to").uri.to_string(),
        "tel:+15551234567"
    );
    let from = m.from_header().expect("from");
    assert_eq!(
        from.tag(),
        Some("abc"),
        "addr-spec params belong to the header (§20.10)"
    );
    assert!(from.uri.params.is_empty());
}

#[test]
fn uri_forms() {
    let u: Uri = "sips:alice:secret@Example.COM:5061;lr;maddr=1.2.3.4?subject=hi&x=y"
        .parse()
        .expect("uri");
    assert_eq!(u.scheme, Scheme::Sips);
    assert_eq!(u.password.as_deref(), Some("secret"));
    assert_eq!(u.host, Host::Domain("Example.COM".into()));
    assert_eq!(u.params.get("lr"), Some(None));
    assert_eq!(u.headers.as_deref(), Some("subject=hi&x=y"));
    assert_eq!(
        u.to_string(),
        "sips:alice:secret@Example.COM:5061;lr;maddr=1.2.3.4?subject=hi&x=y"
    );
    let esc: Uri = "sip:%61lice;x=1@h".parse().expect("escaped user");
    assert_eq!(esc.user.as_deref(), Some("%61lice;x=1"));
    let urn: Uri = "urn:service:sos".parse().expect("urn");
    assert_eq!(urn.scheme, Scheme::Other("urn".into()));
    assert_eq!(urn.to_string(), "urn:service:sos");
    for bad in [
        "",
        "sip:",
        "sip:@h",
        "sip:h:99999",
        "sip:[::1",
        "nocolon",
        "sip:a b",
        "1sip:h",
        "sip:h;=x",
    ] {
        assert!(bad.parse::<Uri>().is_err(), "{bad}");
    }
}

#[test]
fn unknown_method_passes_through() {
    let s = "FOO sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 FOO\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\n\r\n";
    let m = msg(s);
    assert_eq!(m.method(), Some(&Method::Other("FOO".into())));
    assert_eq!(m.cseq().expect("cseq").method, Method::Other("FOO".into()));
    assert!(m.validate_request().is_ok());
    assert_eq!(m.to_bytes(), s.as_bytes());
}

#[test]
fn status_lines() {
    let m = msg("SIP/2.0 503\r\n\r\n");
    assert_eq!(m.status(), Some(503));
    assert_eq!(m.reason(), Some(""));
    let s = "SIP/2.0 480 Temporarily Unavailable (no answer)\r\nContent-Length: 0\r\n\r\n";
    let m = msg(s);
    assert_eq!(m.reason(), Some("Temporarily Unavailable (no answer)"));
    assert_eq!(m.to_bytes(), s.as_bytes());
    let m = msg("SIP/2.0 183 Session  Progress\r\n\r\n");
    assert_eq!(m.reason(), Some("Session  Progress"));
    for bad in [
        "SIP/2.0 99 x\r\n\r\n",
        "SIP/2.0 2000 OK\r\n\r\n",
        "SIP/3.0 200 OK\r\n\r\n",
        "INVITE sip:h\r\n\r\n",
    ] {
        assert!(Message::parse_datagram(Bytes::from(bad)).is_err(), "{bad}");
    }
}

#[test]
fn binary_body_untouched() {
    let mut raw = b"MESSAGE sip:h SIP/2.0\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\n".to_vec();
    let body = [0u8, 0xff, 0xfe, b'\r', b'\n', 0x80];
    raw.extend_from_slice(&body);
    let m = Message::parse_datagram(Bytes::from(raw.clone())).expect("parse");
    assert_eq!(m.body(), body);
    assert_eq!(m.to_bytes(), raw);
}

#[test]
fn content_length_rules() {
    let head = "MESSAGE sip:h SIP/2.0\r\nContent-Length: 4\r\n\r\n";
    // §18.3: padding after the body is discarded; anything else means the
    // sender frames the message differently from us (smuggling): refused.
    let padded = Message::parse_datagram(Bytes::from(format!("{head}abcd\r\n \0"))).expect("pad");
    assert_eq!(padded.body(), b"abcd");
    assert_eq!(
        Message::parse_datagram(Bytes::from(format!("{head}abcdEXTRA"))).err(),
        Some(ParseError::BodyMismatch)
    );
    assert_eq!(
        Message::parse_datagram(Bytes::from(format!("{head}ab"))).err(),
        Some(ParseError::BodyMismatch)
    );
    assert_eq!(
        Message::parse_stream(Bytes::from(format!("{head}ab"))).err(),
        Some(ParseError::Truncated),
        "a stream frame is cut by the framer, never short"
    );
    let no_cl = "MESSAGE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nrest of it";
    assert_eq!(msg(no_cl).body(), b"rest of it");
    let stream = Message::parse_stream(Bytes::from(no_cl)).expect("stream");
    assert_eq!(stream.body(), b"");
    for bad in ["x", "-1", "1 2", "99999999999"] {
        let s = format!("MESSAGE sip:h SIP/2.0\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            Message::parse_datagram(Bytes::from(s)).err(),
            Some(ParseError::BadContentLength)
        );
    }
    let conflict = "MESSAGE sip:h SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab";
    assert_eq!(
        Message::parse_datagram(Bytes::from(conflict)).err(),
        Some(ParseError::BadContentLength)
    );
}

#[test]
fn limits() {
    let mut big = String::from("MESSAGE sip:h SIP/2.0\r\n\r\n");
    big.push_str(&"x".repeat(MAX_MESSAGE_SIZE));
    assert_eq!(
        Message::parse_datagram(Bytes::from(big)).err(),
        Some(ParseError::TooLarge)
    );
    let mut many = String::from("OPTIONS sip:h SIP/2.0\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: {i}\r\n"));
    }
    let ok = format!("{many}\r\n");
    assert_eq!(msg(&ok).headers().count(), MAX_HEADERS);
    let too_many = format!("{many}X-last: 1\r\n\r\n");
    assert_eq!(
        Message::parse_datagram(Bytes::from(too_many)).err(),
        Some(ParseError::TooManyHeaders)
    );
    assert_eq!(
        Message::parse_datagram(Bytes::from("\r\n\r\n")).err(),
        Some(ParseError::Empty)
    );
    assert_eq!(
        Message::parse_datagram(Bytes::from("OPTIONS sip:h SIP/2.0\r\nVia: x\r\n")).err(),
        Some(ParseError::Truncated)
    );
    assert_eq!(
        Message::parse_datagram(Bytes::from("OPTIONS sip:h SIP/2.0\r\nno colon\r\n\r\n")).err(),
        Some(ParseError::BadHeaderLine)
    );
}

#[test]
fn contacts_in_one_line_with_instance_and_expires() {
    let m = msg(
        "REGISTER sip:h SIP/2.0\r\nContact: <sip:a@1.2.3.4;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";expires=3600, \"Two, Too\" <sip:b@h>;expires=60;reg-id=1\r\nm: sip:c@h;expires=0\r\n\r\n",
    );
    let c = m.contacts().expect("contacts");
    assert_eq!(c.len(), 3);
    assert_eq!(c[0].expires(), Some(3600));
    assert_eq!(
        c[0].params.value("+sip.instance"),
        Some("\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"")
    );
    assert_eq!(
        unquote(c[0].params.value("+sip.instance").unwrap_or_default()),
        "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    );
    assert_eq!(c[0].uri.params.value("transport"), Some("tcp"));
    assert_eq!(c[1].display.as_deref(), Some("Two, Too"));
    assert_eq!(c[1].expires(), Some(60));
    assert_eq!(c[2].expires(), Some(0));
    assert!(!m.contact_is_star());
    let star = msg("REGISTER sip:h SIP/2.0\r\nContact: *\r\nExpires: 0\r\n\r\n");
    assert!(star.contact_is_star());
    assert!(star.contacts().expect("star").is_empty());
    assert_eq!(star.expires(), Some(0));
}

#[test]
fn auth_headers_are_not_split_on_commas() {
    let m = msg(
        "SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a,b\", nonce=\"n\", qop=\"auth,auth-int\", algorithm=SHA-256\r\n\
WWW-Authenticate: Digest realm=\"a\", nonce=\"m\", algorithm=MD5\r\nProxy-Authenticate: Digest realm=\"p\", nonce=\"q\"\r\n\r\n",
    );
    let v = m.header_values(HeaderName::WwwAuthenticate);
    assert_eq!(v.len(), 2);
    assert!(v[0].starts_with("Digest realm=\"a,b\"") && v[0].ends_with("algorithm=SHA-256"));
    assert_eq!(m.header_values(HeaderName::ProxyAuthenticate).len(), 1);
    let r = msg(
        "SIP/2.0 503 Service Unavailable\r\nRetry-After: 18000 (in a meeting, sorry);duration=3600\r\n\r\n",
    );
    assert_eq!(r.retry_after(), Some(18000));
}

#[test]
fn edits_reserialise_only_what_changed() {
    let mut m = msg(INVITE);
    m.set_request_uri("sip:bob@[2001:db8::9]:5080".parse().expect("uri"));
    m.prepend_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp");
    m.set_header(HeaderName::MaxForwards, "69");
    assert!(m.remove_first(HeaderName::Contact));
    assert!(!m.remove_first(HeaderName::Route));
    m.set_header(HeaderName::Expires, "30");
    let out = String::from_utf8(m.to_bytes()).expect("utf8");
    let expected = INVITE
        .replacen("INVITE sip:bob@biloxi.example.com SIP/2.0\r\n", "INVITE sip:bob@[2001:db8::9]:5080 SIP/2.0\r\nVia: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n", 1)
        .replacen("Max-Forwards: 70", "Max-Forwards: 69", 1)
        .replacen("Contact: <sip:alice@pc33.atlanta.example.com>\r\n", "", 1)
        .replacen("Content-Length: 4\r\n", "Content-Length: 4\r\nExpires: 30\r\n", 1);
    assert_eq!(out, expected);
    let again = msg(&out);
    assert_eq!(again.vias().expect("vias").len(), 2);
    assert_eq!(again.max_forwards(), Some(69));
    assert_eq!(again.expires(), Some(30));
}

#[test]
fn remove_first_value_keeps_the_rest_of_the_line() {
    let mut m = msg(
        "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c;branch=z9hG4bK3\r\n\r\n",
    );
    assert!(m.remove_first_value(HeaderName::Via));
    assert_eq!(m.top_via().expect("via").branch(), Some("z9hG4bK2"));
    assert!(m.remove_first_value(HeaderName::Via));
    assert_eq!(m.vias().expect("vias").len(), 1);
    assert!(
        m.to_bytes()
            .starts_with(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP c")
    );
}

#[test]
fn remove_first_values_spans_lines_in_one_pass() {
    let text = "BYE sip:h SIP/2.0\r\nRoute: <sip:a;lr>, <sip:b;lr>\r\nX: y\r\nRoute: <sip:c;lr>, <sip:d;lr>, <sip:e;lr>\r\n\r\n";
    let routes = |m: &Message| -> Vec<String> {
        m.routes()
            .expect("routes")
            .iter()
            .map(|r| r.uri.host.to_string())
            .collect()
    };
    for (k, left) in [
        (0, "abcde"),
        (1, "bcde"),
        (2, "cde"),
        (4, "e"),
        (5, ""),
        (9, ""),
    ] {
        let mut m = msg(text);
        assert_eq!(m.remove_first_values(HeaderName::Route, k), k.min(5));
        assert_eq!(routes(&m).concat(), left, "k={k}");
        assert!(String::from_utf8_lossy(&m.to_bytes()).contains("X: y"));
    }
    // 5,000 of our entries on one line (50 KB): removed at once, not one by one.
    let many = vec!["<sip:u;lr>"; 5_000].join(",");
    let mut m = msg(&format!(
        "BYE sip:h SIP/2.0\r\nRoute: {many}, <sip:next;lr>\r\n\r\n"
    ));
    assert_eq!(m.remove_first_values(HeaderName::Route, 5_000), 5_000);
    assert_eq!(routes(&m), ["next"]);
}

#[test]
fn header_injection_is_neutralised() {
    let mut m = msg("OPTIONS sip:h SIP/2.0\r\n\r\n");
    m.prepend_header("X-A", "1\r\nVia: evil");
    let again = msg(&String::from_utf8(m.to_bytes()).expect("utf8"));
    assert_eq!(again.headers().count(), 1);
    assert!(again.header(HeaderName::Via).is_none());
}

#[test]
fn validate_request_checks_presence_and_cseq() {
    let base = "INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    assert!(msg(base).validate_request().is_ok());
    let missing = base.replace("Call-ID: c\r\n", "");
    assert_eq!(
        msg(&missing).validate_request(),
        Err(ParseError::MissingHeader("Call-ID"))
    );
    let mismatch = base.replace("1 INVITE", "1 BYE");
    assert_eq!(
        msg(&mismatch).validate_request(),
        Err(ParseError::CSeqMethodMismatch)
    );
    assert_eq!(
        msg("SIP/2.0 200 OK\r\n\r\n").validate_request(),
        Err(ParseError::NotARequest)
    );
}

#[test]
fn parsed_headers_follow_edits() {
    // The parsed Via, From and To are cached; every edit must drop them.
    let mut m = msg(INVITE);
    let via = m.top_via().unwrap();
    let to = m.to_header().unwrap();
    assert_eq!(to.tag(), None);
    assert_eq!(m.to_header().unwrap(), to);
    m.set_header(HeaderName::To, "<sip:bob@biloxi.example.com>;tag=t1");
    assert_eq!(m.to_header().unwrap().tag(), Some("t1"));
    m.prepend_header("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKnew");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKnew"));
    assert!(m.remove_first_value(HeaderName::Via));
    assert_eq!(m.top_via().unwrap(), via);
    m.edit_fields(HeaderName::From, |_| {
        Some("<sip:carol@example.com>;tag=f2".to_owned())
    });
    assert_eq!(m.from_header().unwrap().tag(), Some("f2"));
    assert_eq!(m.clone().from_header().unwrap().tag(), Some("f2"));
    assert_eq!(m.remove_all(HeaderName::To), 1);
    assert!(m.to_header().is_err());
}
