//! Parser and typed views (RFC 3261 §7, §20): any bytes, as a datagram and as
//! a stream frame. Properties: a parsed message re-serialised parses to the
//! same message (start line, every header line, body), typed views that
//! parse print back to themselves, a proxy's edits keep it parseable, and a
//! rejected one gets a 400 that parses.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use uacd::sip::{
    CSeq, HeaderName, MAX_HEADERS, Message, NameAddr, ParseError, Uri, Via, bad_request_response,
    response_to,
};

fuzz_target!(|data: &[u8]| {
    let datagram: fn(Bytes) -> _ = Message::parse_datagram;
    let stream: fn(Bytes) -> _ = Message::parse_stream;
    for parse in [datagram, stream] {
        match parse(Bytes::copy_from_slice(data)) {
            Ok(m) => check_message(&m, parse),
            Err(e) => {
                let _ = e.warning_text();
                if let Some(resp) = bad_request_response(data, &e) {
                    let parsed = Message::parse_datagram(Bytes::from(resp));
                    assert!(parsed.is_ok(), "our own 400 must parse: {parsed:?}");
                }
            }
        }
    }
});

type Parse = fn(Bytes) -> Result<Message, ParseError>;

fn check_message(m: &Message, parse: Parse) {
    // Re-serialised, it parses to the same message, byte for byte.
    let wire = m.to_bytes();
    let again = match parse(Bytes::from(wire.clone())) {
        Ok(again) => again,
        Err(e) => panic!("our serialisation does not parse: {e:?}"),
    };
    assert_eq!(again.start_line(), m.start_line());
    assert!(
        again
            .headers()
            .map(|h| h.raw_line())
            .eq(m.headers().map(|h| h.raw_line())),
        "header lines differ after a round trip"
    );
    assert_eq!(again.body(), m.body());
    assert_eq!(again.to_bytes(), wire);

    // Typed views: what parses prints back to itself.
    if let Some(uri) = m.request_uri() {
        let printed = uri.to_string();
        assert_eq!(
            printed.parse::<Uri>().as_ref(),
            Ok(uri),
            "Request-URI {printed:?}"
        );
    }
    if let Ok(vias) = m.vias() {
        for via in vias {
            let printed = via.to_string();
            assert_eq!(Via::parse(&printed).as_ref(), Ok(&via), "Via {printed:?}");
        }
    }
    if let Ok(cseq) = m.cseq() {
        let printed = cseq.to_string();
        assert_eq!(
            CSeq::parse(&printed).as_ref(),
            Ok(&cseq),
            "CSeq {printed:?}"
        );
    }
    for (name, value) in [("From", m.from_header()), ("To", m.to_header())] {
        if let Ok(na) = value {
            let printed = na.to_string();
            assert_eq!(
                NameAddr::parse(&printed, name).as_ref(),
                Ok(&na),
                "{name} {printed:?}"
            );
        }
    }
    for list in [m.contacts(), m.routes(), m.record_routes()]
        .into_iter()
        .flatten()
    {
        for na in list {
            let printed = na.to_string();
            assert_eq!(
                NameAddr::parse(&printed, "Contact").as_ref(),
                Ok(&na),
                "{printed:?}"
            );
        }
    }
    let _ = (m.call_id(), m.contact_is_star(), m.content_type());
    let _ = (
        m.expires(),
        m.min_expires(),
        m.max_forwards(),
        m.retry_after(),
        m.reason(),
    );
    for h in m.headers() {
        let _ = (h.value(), h.values(), h.first_value());
    }

    // A proxy's edits (§16.6) keep the message parseable.
    if m.validate_request().is_ok() {
        let resp = response_to(m, 200, "OK", Some("t")).build();
        let fields = resp
            .split(|&b| b == b'\n')
            .take_while(|l| !matches!(l, [] | [b'\r']))
            .count()
            - 1;
        match Message::parse_datagram(Bytes::from(resp)) {
            Ok(resp) => assert_eq!(resp.status(), Some(200)),
            Err(e) => panic!(
                "our response to a valid request does not parse: {e:?} ({fields} fields)"
            ),
        }
        let mut edited = m.clone();
        edited.remove_first_value(HeaderName::Via);
        edited.remove_first_value(HeaderName::Route);
        edited.prepend_header("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKfuzz;rport");
        edited.set_header(HeaderName::MaxForwards, "69");
        if let Some(uri) = m.request_uri().cloned() {
            edited.set_request_uri(uri);
        }
        let out = edited.to_bytes();
        match parse(Bytes::from(out)) {
            Ok(e) => assert_eq!(e.request_uri(), m.request_uri()),
            // The edits add fields: past the limit is a refusal, not a bug.
            Err(ParseError::TooManyHeaders) if edited.headers().count() > MAX_HEADERS => {}
            Err(e) => panic!("an edited valid request does not parse: {e:?}"),
        }
    }
}
