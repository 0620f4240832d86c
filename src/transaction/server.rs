//! Requests addressed to the daemon itself (RFC 3261 §8.2): OPTIONS gets
//! 200 (§11.2), malformed requests 400 (a header that may appear once on
//! two lines names it, RFC 4475 `multi01`), an unknown Request-URI scheme
//! 416 (§8.2.2.1), a `Require` (§8.2.2.3) or `Proxy-Require` (§16.3
//! item 5) of an extension we lack 420 with `Unsupported`, in-dialog requests we hold no dialog for 481
//! (§12.2.2), known methods we do not serve 405 with Allow (§8.2.1),
//! unknown methods 501 (§8.2.1). Never silence, except for ACK.

use std::borrow::Cow;

use bytes::Bytes;

use crate::sip::{HeaderName, Message, Method, ParseError, response_to};
use crate::transport::Inbound;

/// Methods the daemon answers itself.
pub const ALLOW: &str = "OPTIONS";

/// Option tags (RFC 3261 §19.2) the daemon implements as a UAS: none, so
/// every `Require` tag of a request to it is unsupported.
pub const SUPPORTED: &[&str] = &[];

/// The final response to a request the daemon does not route.
pub struct Decision {
    pub code: u16,
    pub reason: Cow<'static, str>,
    /// Why a 400 was sent, for the Warning header.
    pub warning: Option<String>,
    /// The option tags for `Unsupported` (a 420).
    pub unsupported: Vec<String>,
}

impl Decision {
    fn new(code: u16, reason: &'static str) -> Decision {
        Decision {
            code,
            reason: Cow::Borrowed(reason),
            warning: None,
            unsupported: Vec::new(),
        }
    }
}

/// The `name` (Require or Proxy-Require) tags of `msg` that [`SUPPORTED`]
/// lacks, in order, once each.
fn unsupported_tags(msg: &Message, name: HeaderName) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in msg.header_values(name) {
        let tag = tag.trim();
        if !tag.is_empty()
            && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag))
            && !out.iter().any(|o| o.eq_ignore_ascii_case(tag))
        {
            out.push(tag.to_owned());
        }
    }
    out
}

/// Chooses the final response to a request the daemon does not route;
/// None for ACK, which is never answered.
pub fn decide(msg: &Message) -> Option<Decision> {
    let method = msg.method()?;
    if *method == Method::Ack {
        return None;
    }
    if let Err(e) = msg.validate_request() {
        let reason = match &e {
            ParseError::RepeatedHeader(h) => Cow::Owned(format!("Bad Request (repeated {h})")),
            _ => Cow::Borrowed("Bad Request"),
        };
        return Some(Decision {
            warning: Some(e.warning_text()),
            reason,
            ..Decision::new(400, "Bad Request")
        });
    }
    if msg.request_uri().is_some_and(|u| !u.scheme_understood()) {
        return Some(Decision::new(416, "Unsupported URI Scheme"));
    }
    // §16.3 item 5: a proxy understands no Proxy-Require tag (not for CANCEL).
    if *method != Method::Cancel {
        let unsupported = unsupported_tags(msg, HeaderName::ProxyRequire);
        if !unsupported.is_empty() {
            return Some(Decision {
                unsupported,
                ..Decision::new(420, "Bad Extension")
            });
        }
    }
    let in_dialog = msg.to_header().map(|t| t.tag().is_some()).unwrap_or(false);
    let (code, reason) = match method {
        Method::Options => (200, "OK"),
        Method::Cancel => (481, "Call/Transaction Does Not Exist"),
        _ if in_dialog => (481, "Call/Transaction Does Not Exist"),
        Method::Other(_) => (501, "Not Implemented"),
        _ => (405, "Method Not Allowed"),
    };
    // §8.2.2.3: after the method is accepted; never for CANCEL (or ACK).
    if code == 200 {
        let unsupported = unsupported_tags(msg, HeaderName::Require);
        if !unsupported.is_empty() {
            return Some(Decision {
                unsupported,
                ..Decision::new(420, "Bad Extension")
            });
        }
    }
    Some(Decision::new(code, reason))
}

pub(super) fn answer(layer: &super::Layer, inbound: Inbound) {
    let Some(d) = decide(&inbound.msg) else {
        return;
    };
    let to_tag = format!("{:016x}", rand::random::<u64>());
    let mut resp = response_to(&inbound.msg, d.code, &d.reason, Some(&to_tag))
        .header("Server", layer.user_agent());
    if let Some(w) = &d.warning {
        resp = resp.header("Warning", format!("399 uacd \"{w}\""));
    }
    if !d.unsupported.is_empty() {
        resp = resp.header("Unsupported", d.unsupported.join(", "));
    }
    if d.code == 200 || d.code == 405 {
        resp = resp
            .header("Allow", ALLOW)
            .header("Accept", "application/sdp");
    }
    layer.send_own(&inbound, d.code, Bytes::from(resp.build()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extra: &str) -> Message {
        let raw = format!(
            "OPTIONS sip:uacd@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKo\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:uacd@192.0.2.10>\r\nCall-ID: o1\r\n\
CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse_datagram(Bytes::from(raw)).expect("parses")
    }

    fn code(m: &Message) -> u16 {
        decide(m).expect("answered").code
    }

    #[test]
    fn plain_options_is_200() {
        assert_eq!(code(&options("")), 200);
    }

    /// RFC 4475 `unkscm`: 416 Unsupported URI Scheme.
    #[test]
    fn unknown_request_uri_scheme_is_416() {
        let raw = String::from_utf8(options("").to_bytes())
            .expect("utf8")
            .replace(
                "sip:uacd@192.0.2.10 SIP",
                "nobodyknowsthisscheme:totallyopaquecontent SIP",
            );
        let m = Message::parse_datagram(Bytes::from(raw)).expect("parses");
        let d = decide(&m).expect("answered");
        assert_eq!((d.code, &*d.reason), (416, "Unsupported URI Scheme"));
    }

    /// RFC 3261 §8.2.2.3 (RFC 4475 `bext01`): every unknown
    /// Require tag is listed once, in order, in Unsupported.
    #[test]
    fn unknown_require_is_420_listing_the_tags() {
        let m = options(
            "Require: nothingsupportsthis, nothingsupportsthiseither\r\nRequire: NothingSupportsThis\r\n",
        );
        let d = decide(&m).expect("answered");
        assert_eq!((d.code, &*d.reason), (420, "Bad Extension"));
        assert_eq!(
            d.unsupported,
            ["nothingsupportsthis", "nothingsupportsthiseither"]
        );
    }

    /// §16.3 item 5: Proxy-Require tags are listed too, whatever the method.
    #[test]
    fn proxy_require_is_420_listing_the_tags() {
        let m = options("Proxy-Require: foo\r\n");
        let d = decide(&m).expect("answered");
        assert_eq!(
            (d.code, d.unsupported.as_slice()),
            (420, ["foo".to_owned()].as_slice())
        );
        let raw = String::from_utf8(m.to_bytes())
            .expect("utf8")
            .replace("OPTIONS", "REGISTER");
        let m = Message::parse_datagram(Bytes::from(raw)).expect("parses");
        assert_eq!(code(&m), 420);
    }

    /// §8.2.2.3: Require is not looked at in a CANCEL (nor an ACK).
    #[test]
    fn require_in_cancel_is_not_processed() {
        let raw = String::from_utf8(options("Require: foo\r\n").to_bytes())
            .expect("utf8")
            .replace("OPTIONS", "CANCEL");
        let m = Message::parse_datagram(Bytes::from(raw)).expect("parses");
        assert_eq!(code(&m), 481);
    }

    /// RFC 4475 `multi01`: a header that may appear
    /// once on two lines is 400, the reason naming it.
    #[test]
    fn repeated_single_value_headers_are_400_naming_the_header() {
        for (extra, name) in [
            ("Call-ID: other\r\n", "Call-ID"),
            ("i: other\r\n", "Call-ID"),
            ("CSeq: 2 OPTIONS\r\n", "CSeq"),
            ("From: <sip:c@d>;tag=2\r\n", "From"),
            ("t: <sip:e@f>\r\n", "To"),
            ("Max-Forwards: 70\r\n", "Max-Forwards"),
            ("l: 0\r\n", "Content-Length"),
        ] {
            let d = decide(&options(extra)).expect("answered");
            assert_eq!(d.code, 400, "{extra}");
            assert_eq!(
                d.reason,
                format!("Bad Request (repeated {name})"),
                "{extra}"
            );
            assert!(d.warning.as_deref().is_some_and(|w| w.contains(name)));
        }
        // Comma-list headers may repeat.
        assert_eq!(
            code(&options(
                "Via: SIP/2.0/UDP 192.0.2.9\r\nAccept: a/b\r\nAccept: c/d\r\n"
            )),
            200
        );
    }
}
