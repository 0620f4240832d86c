//! Property tests: random bytes and mutated valid messages must never panic
//! any entry point (parsers, framing, 400 salvage, typed views, edits).

use bytes::Bytes;
use proptest::prelude::*;

use crate::sip::*;

const SEEDS: &[&str] = &[
    "INVITE sip:bob@[2001:db8::1]:5070;transport=tcp SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4 ; branch=z9hG4bK1, SIP/2.0/TCP [::1]:5060;rport\r\n\
f: \"A, B\" <sip:a@h>;tag=1\r\nTo: tel:+1555;x=y\r\ni: cid@h\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
Contact: <sip:a@h>;+sip.instance=\"<urn:uuid:1>\";expires=60, *\r\nRoute: <sip:p;lr>\r\nSubject: x\r\n y\r\n\
Retry-After: 5 (c)\r\nExpires: 10\r\nl: 4\r\n\r\nv=0\n",
    "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2;received=1.1.1.1\r\nFrom: <sip:a@h>;tag=2\r\n\
To: <sip:a@h>\r\nCall-ID: x\r\nCSeq: 9 REGISTER\r\nWWW-Authenticate: Digest realm=\"a,b\", nonce=\"n\"\r\nMin-Expires: 60\r\nContent-Length: 0\r\n\r\n",
    "FOO urn:service:sos SIP/2.0\r\nVia: SIP/2.0/WS h\r\nContent-Length: 0\r\n\r\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        b'\r', b'\n', b',', b'"', b'<', b'>', b';', b':', b' ', b'[', b']', b'\\', 0xff,
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn apply(mut buf: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = buf.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !buf.is_empty() => buf[i % len] = b,
            Mutation::Truncate(i) => buf.truncate(i % len),
            Mutation::Insert(i, b) => buf.insert(i % (buf.len() + 1), b),
            Mutation::Delete(i) if !buf.is_empty() => {
                buf.remove(i % len);
            }
            _ => {}
        }
    }
    buf
}

/// Runs every entry point on `raw`; the only requirement is not panicking.
fn exercise(raw: &[u8]) {
    let _ = next_frame(raw);
    let mut sc = FrameScanner::new();
    for cut in [raw.len() / 3, raw.len() / 2, raw.len()] {
        let _ = sc.next(&raw[..cut]);
    }
    for parsed in [
        Message::parse_datagram(Bytes::copy_from_slice(raw)),
        Message::parse_stream(Bytes::copy_from_slice(raw)),
    ] {
        match parsed {
            Ok(mut m) => {
                let _ = (
                    m.call_id(),
                    m.cseq(),
                    m.top_via(),
                    m.vias(),
                    m.from_header(),
                    m.to_header(),
                );
                let _ = (
                    m.contacts(),
                    m.routes(),
                    m.record_routes(),
                    m.contact_is_star(),
                );
                let _ = (
                    m.expires(),
                    m.min_expires(),
                    m.max_forwards(),
                    m.retry_after(),
                    m.reason(),
                );
                let _ = (m.validate_request(), m.content_type());
                for h in m.headers() {
                    let _ = (h.value(), h.values());
                }
                if let Some(req) = m.is_request().then_some(&m) {
                    let _ = response_to(req, 200, "OK", Some("t")).build();
                }
                let round = m.to_bytes();
                m.remove_first_value(HeaderName::Via);
                m.prepend_header("Via", "SIP/2.0/UDP p;branch=z9hG4bKp");
                m.set_header(HeaderName::MaxForwards, "1");
                if let Some(uri) = m.request_uri().cloned() {
                    m.set_request_uri(uri);
                }
                let _ = Message::parse_datagram(Bytes::from(m.to_bytes()));
                assert!(!round.is_empty());
            }
            Err(e) => {
                let _ = e.warning_text();
                if let Some(resp) = bad_request_response(raw, &e) {
                    let parsed = Message::parse_datagram(Bytes::from(resp));
                    assert!(parsed.is_ok(), "our own 400 must parse: {parsed:?}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&raw);
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in prop::sample::select(SEEDS.to_vec()),
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let raw = apply(seed.as_bytes().to_vec(), &muts);
        exercise(&raw);
    }

    #[test]
    fn unmodified_messages_round_trip(seed in prop::sample::select(SEEDS.to_vec())) {
        let m = Message::parse_stream(Bytes::from_static(seed.as_bytes()));
        prop_assert!(m.is_ok());
        if let Ok(m) = m {
            prop_assert_eq!(m.to_bytes(), seed.as_bytes());
        }
    }

    #[test]
    fn uri_parse_never_panics(s in "[a-z:@;=\\[\\]%?&.0-9+-]{0,40}") {
        if let Ok(u) = s.parse::<Uri>() {
            let _ = u.to_string();
        }
        let _ = NameAddr::parse(&s, "To");
        let _ = Via::parse(&s);
        let _ = CSeq::parse(&s);
    }
}
