//! Building requests and responses (RFC 3261 §8.1.1, §8.2.6 response
//! construction) and the `400 Bad Request` answer to an unparsable datagram
//! (§8.2.1 with a `Warning: 399`, §20.43).

use std::fmt::Display;

use crate::sip::Method;
use crate::sip::error::ParseError;
use crate::sip::header::HeaderName;
use crate::sip::message::Message;
use crate::sip::params::is_token_char;
use crate::sip::{MAX_HEADERS, MAX_MESSAGE_SIZE};

/// Header lines and body shared by both builders.
#[derive(Clone, Debug, Default)]
struct Parts {
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

fn clean(s: &str) -> String {
    s.trim().replace(['\r', '\n'], " ")
}

impl Parts {
    fn push(&mut self, name: &str, value: String) {
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            return; // always computed from the body
        }
        self.headers.push((clean(name), clean(&value)));
    }

    fn write(&self, out: &mut Vec<u8>) {
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let body: &[u8] = match &self.body {
            Some((ct, b)) => {
                let has_ct = self
                    .headers
                    .iter()
                    .any(|(n, _)| HeaderName::from_bytes(n.as_bytes()) == HeaderName::ContentType);
                if !has_ct {
                    out.extend_from_slice(format!("Content-Type: {}\r\n", clean(ct)).as_bytes());
                }
                b
            }
            None => &[],
        };
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
}

/// Builds a request: `RequestBuilder::new(Method::Register, "sip:pbx.example.com")
/// .header("Via", via).body("application/sdp", sdp).build()`.
/// Content-Length is always added (and any given one ignored).
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    method: Method,
    uri: String,
    parts: Parts,
}

impl RequestBuilder {
    /// Starts a request line.
    pub fn new(method: Method, request_uri: &str) -> RequestBuilder {
        RequestBuilder {
            method,
            uri: clean(request_uri),
            parts: Parts::default(),
        }
    }

    /// Appends a header field.
    pub fn header(mut self, name: &str, value: impl Display) -> RequestBuilder {
        self.parts.push(name, value.to_string());
        self
    }

    /// Sets the body and its Content-Type (unless a Content-Type header was given).
    pub fn body(mut self, content_type: &str, body: impl AsRef<[u8]>) -> RequestBuilder {
        self.parts.body = Some((content_type.to_owned(), body.as_ref().to_vec()));
        self
    }

    /// The wire form.
    pub fn build(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
        self.parts.write(&mut out);
        out
    }
}

/// Builds a response; see [`response_to`].
#[derive(Clone, Debug)]
pub struct ResponseBuilder {
    code: u16,
    reason: String,
    parts: Parts,
}

impl ResponseBuilder {
    /// A response with no headers yet.
    pub fn new(code: u16, reason: &str) -> ResponseBuilder {
        ResponseBuilder {
            code,
            reason: clean(reason),
            parts: Parts::default(),
        }
    }

    /// Appends a header field.
    pub fn header(mut self, name: &str, value: impl Display) -> ResponseBuilder {
        self.parts.push(name, value.to_string());
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: impl AsRef<[u8]>) -> ResponseBuilder {
        self.parts.body = Some((content_type.to_owned(), body.as_ref().to_vec()));
        self
    }

    /// The wire form.
    pub fn build(&self) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.code, self.reason).into_bytes();
        self.parts.write(&mut out);
        out
    }
}

/// Whether a From/To value carries a `tag` header parameter (outside `<...>`).
fn has_tag(value: &str) -> bool {
    let tail = match value.rfind('>') {
        Some(p) => &value[p + 1..],
        None => value,
    };
    tail.split(';').skip(1).any(|p| {
        let p = p.trim_start();
        p.len() >= 3
            && p.as_bytes()[..3].eq_ignore_ascii_case(b"tag")
            && p[3..].trim_start().starts_with('=')
    })
}

fn to_with_tag(to: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) if !has_tag(to) => format!("{to};tag={tag}"),
        _ => to.to_owned(),
    }
}

/// Starts a response to `req` (RFC 3261 §8.2.6): the Via header lines as
/// received (same name form, values and grouping: one line per value would
/// turn each 2-byte `,a` into an 8-byte `Via: a` line, an amplifier), From,
/// To (with `;tag=` added if it has none and `to_tag` is given), Call-ID
/// and CSeq. Add more with `.header()`, then `.build()`.
pub fn response_to(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> ResponseBuilder {
    let mut b = ResponseBuilder::new(code, reason);
    for via in req.headers().filter(|h| h.name() == HeaderName::Via) {
        b = b.header(&String::from_utf8_lossy(via.raw_name()), via.value());
    }
    if let Some(from) = req.header(HeaderName::From) {
        b = b.header("From", from.value());
    }
    if let Some(to) = req.header(HeaderName::To) {
        b = b.header("To", to_with_tag(&to.value(), to_tag));
    }
    for (name, canonical) in [(HeaderName::CallId, "Call-ID"), (HeaderName::CSeq, "CSeq")] {
        if let Some(h) = req.header(name) {
            b = b.header(canonical, h.value());
        }
    }
    b
}

/// Logical header lines (continuations joined) of a raw message head, after
/// the start line, up to the empty line.
fn logical_lines(head: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        match (line.first(), out.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => {
                last.push(' ');
                last.push_str(text.trim());
            }
            _ => out.push(text.into_owned()),
        }
    }
    out
}

/// For a datagram that failed to parse: a `400 Bad Request` (`505 Version
/// Not Supported` for a `SIP/x.y` other than 2.0, §8.2.2) if it looks like
/// a request (not ACK) whose Via, From, To, Call-ID and CSeq can be salvaged
/// line by line; `None` (drop it) otherwise. Responses are never answered.
pub fn bad_request_response(raw: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let raw = &raw[..raw.len().min(MAX_MESSAGE_SIZE)];
    let start = raw.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let raw = &raw[start..];
    let eol = memchr::memchr(b'\n', raw)?;
    let first = raw[..eol].strip_suffix(b"\r").unwrap_or(&raw[..eol]);
    let mut words = first.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let method = words.next()?;
    let version = words.next_back()?;
    if words.next().is_none()
        || !method.iter().all(|&b| is_token_char(b))
        || method == b"ACK"
        || method.len() >= 4 && method[..4].eq_ignore_ascii_case(b"SIP/")
        || version.len() < 4
        || !version[..4].eq_ignore_ascii_case(b"SIP/")
    {
        return None;
    }

    let (mut vias, mut from, mut to, mut call_id, mut cseq) = (Vec::new(), None, None, None, None);
    for line in logical_lines(&raw[eol + 1..]) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        match HeaderName::from_bytes(name.trim().as_bytes()) {
            HeaderName::Via => vias.push((name.trim().to_owned(), value)),
            HeaderName::From => _ = from.get_or_insert(value),
            HeaderName::To => _ = to.get_or_insert(value),
            HeaderName::CallId => _ = call_id.get_or_insert(value),
            HeaderName::CSeq => _ = cseq.get_or_insert(value),
            _ => {}
        }
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    let cseq_method = cseq.split_whitespace().nth(1)?;
    if vias.is_empty() || cseq_method == "ACK" {
        return None;
    }
    // A 400 with more fields than any parser of ours accepts (the Vias plus
    // From, To, Call-ID, CSeq, Warning, Content-Length) is not sent.
    if vias.len() + 6 > MAX_HEADERS {
        return None;
    }

    let tag = format!("{:016x}", rand::random::<u64>());
    let warning: String = err
        .warning_text()
        .chars()
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let (code, reason) = match err {
        ParseError::BadVersion => (505, "Version Not Supported"),
        _ => (400, "Bad Request"),
    };
    let mut b = ResponseBuilder::new(code, reason);
    for (name, via) in vias {
        b = b.header(&name, via);
    }
    b = b
        .header("From", from)
        .header("To", to_with_tag(&to, Some(&tag)))
        .header("Call-ID", call_id)
        .header("CSeq", cseq)
        .header("Warning", format!("399 uacd \"{warning}\""));
    Some(b.build())
}
