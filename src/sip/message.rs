//! The parsed SIP message (RFC 3261 §7): start line, ordered header fields kept
//! as original bytes, body; typed views parsed on demand (§8.1.1, §20) and
//! edits that re-serialise only what changed (a proxy's §16.6 changes).

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::sip::Method;
use crate::sip::error::ParseError;
use crate::sip::header::{HeaderField, HeaderName};
use crate::sip::parse::{Transport, parse};
use crate::sip::typed::{CSeq, NameAddr, Via};
use crate::sip::uri::Uri;

/// Request line or status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// Method.
        method: Method,
        /// Request-URI.
        uri: Uri,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code (100-699).
        code: u16,
        /// Reason phrase exactly as received (may be empty or non-UTF-8).
        reason: Bytes,
    },
}

/// A SIP request or response.
#[derive(Clone, Debug)]
pub struct Message {
    start: StartLine,
    /// The original start line with its terminator; `None` once edited.
    start_raw: Option<Bytes>,
    headers: Vec<HeaderField>,
    /// The empty line ending the header block, as received.
    blank: Bytes,
    body: Bytes,
    /// The headers every hop reads several times, parsed on first use.
    parsed: Parsed,
}

/// Parsed top Via, From and To, filled on first use and dropped by every
/// edit (a forwarded request is read by the transaction layer, the
/// classifier, the token checks and the relay: one parse serves them all).
/// Boxed, so that a message nobody reads (one kept per registration) costs
/// 48 bytes for them, not 600.
#[derive(Clone, Debug, Default)]
struct Parsed {
    top_via: OnceLock<Box<Result<Via, ParseError>>>,
    from: OnceLock<Box<Result<NameAddr, ParseError>>>,
    to: OnceLock<Box<Result<NameAddr, ParseError>>>,
}

fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Message {
    pub(crate) fn from_parts(
        start: StartLine,
        start_raw: Option<Bytes>,
        headers: Vec<HeaderField>,
        blank: Bytes,
        body: Bytes,
    ) -> Message {
        Message {
            start,
            start_raw,
            headers,
            blank,
            body,
            parsed: Parsed::default(),
        }
    }

    /// Parses one UDP datagram. The body is exactly Content-Length bytes (extra
    /// bytes are dropped); without Content-Length it is the rest of the datagram.
    pub fn parse_datagram(buf: Bytes) -> Result<Message, ParseError> {
        parse(buf, Transport::Datagram)
    }

    /// Parses one stream frame (see [`crate::sip::framing`]); a missing
    /// Content-Length means an empty body.
    pub fn parse_stream(frame: Bytes) -> Result<Message, ParseError> {
        parse(frame, Transport::Stream)
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase, verbatim (`None` for requests or non-UTF-8 phrases).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => std::str::from_utf8(reason).ok(),
            StartLine::Request { .. } => None,
        }
    }

    /// All header fields in order.
    pub fn headers(&self) -> impl Iterator<Item = &HeaderField> {
        self.headers.iter()
    }

    /// The first field called `name`.
    pub fn header(&self, name: HeaderName) -> Option<&HeaderField> {
        self.headers.iter().find(|h| h.name() == name)
    }

    /// The first field whose name matches `name` (any case; known compact forms too).
    pub fn header_named(&self, name: &str) -> Option<&HeaderField> {
        self.headers.iter().find(|h| h.is_named(name))
    }

    /// Every value of `name`, across lines and comma-separated lists, in order,
    /// unfolded and trimmed. Authentication headers are never split.
    pub fn header_values(&self, name: HeaderName) -> Vec<Cow<'_, str>> {
        self.headers
            .iter()
            .filter(|h| h.name() == name)
            .flat_map(HeaderField::values)
            .collect()
    }

    /// The size of the message on the wire as received (as it would be
    /// written when edited).
    pub fn wire_len(&self) -> usize {
        let start = match (&self.start_raw, &self.start) {
            (Some(raw), _) => raw.len(),
            (None, StartLine::Request { method, uri }) => {
                format!("{method} {uri} SIP/2.0\r\n").len()
            }
            (None, StartLine::Response { reason, .. }) => 14 + reason.len(),
        };
        start
            + self
                .headers
                .iter()
                .map(|h| h.raw_line().len())
                .sum::<usize>()
            + self.blank.len()
            + self.body.len()
    }

    /// The body, byte for byte.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as a cheap `Bytes` handle.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone()
    }

    fn required(&self, name: HeaderName) -> Result<&HeaderField, ParseError> {
        self.header(name)
            .ok_or(ParseError::MissingHeader(name.as_str()))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let h = self.required(HeaderName::CallId)?;
        let bad = |reason| ParseError::BadHeader {
            name: "Call-ID",
            reason,
        };
        let v = std::str::from_utf8(h.raw_value()).map_err(|_| bad("not UTF-8"))?;
        if v.is_empty()
            || v.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("empty or contains whitespace"));
        }
        Ok(v)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(&self.required(HeaderName::CSeq)?.value())
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        self.parsed
            .top_via
            .get_or_init(|| Box::new(self.parse_top_via()))
            .as_ref()
            .clone()
    }

    fn parse_top_via(&self) -> Result<Via, ParseError> {
        let first = self
            .headers
            .iter()
            .filter(|h| h.name() == HeaderName::Via)
            .find_map(HeaderField::first_value)
            .ok_or(ParseError::MissingHeader("Via"))?;
        Via::parse(&first)
    }

    /// Every Via value in order.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        self.header_values(HeaderName::Via)
            .iter()
            .map(|v| Via::parse(v))
            .collect()
    }

    fn name_addr(&self, name: HeaderName) -> Result<NameAddr, ParseError> {
        NameAddr::parse(&self.required(name)?.value(), name.as_str())
    }

    /// The From header.
    pub fn from_header(&self) -> Result<NameAddr, ParseError> {
        self.parsed
            .from
            .get_or_init(|| Box::new(self.name_addr(HeaderName::From)))
            .as_ref()
            .clone()
    }

    /// The To header.
    pub fn to_header(&self) -> Result<NameAddr, ParseError> {
        self.parsed
            .to
            .get_or_init(|| Box::new(self.name_addr(HeaderName::To)))
            .as_ref()
            .clone()
    }

    fn name_addrs(&self, name: HeaderName) -> Result<Vec<NameAddr>, ParseError> {
        self.header_values(name)
            .iter()
            .filter(|v| v.as_ref() != "*")
            .map(|v| NameAddr::parse(v, name.as_str()))
            .collect()
    }

    /// Every Contact value; `Contact: *` yields no entry (see [`Self::contact_is_star`]).
    pub fn contacts(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(HeaderName::Contact)
    }

    /// Whether a Contact value is `*` (REGISTER removing all bindings, §10.2.2).
    pub fn contact_is_star(&self) -> bool {
        self.header_values(HeaderName::Contact)
            .iter()
            .any(|v| v == "*")
    }

    /// Every Route value in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(HeaderName::Route)
    }

    /// Every Record-Route value in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.name_addrs(HeaderName::RecordRoute)
    }

    fn first_u32(&self, name: HeaderName) -> Option<u32> {
        parse_u32(&self.header(name)?.value())
    }

    /// The Expires header in seconds.
    pub fn expires(&self) -> Option<u32> {
        self.first_u32(HeaderName::Expires)
    }

    /// The Min-Expires header in seconds.
    pub fn min_expires(&self) -> Option<u32> {
        self.first_u32(HeaderName::MinExpires)
    }

    /// The Max-Forwards header.
    pub fn max_forwards(&self) -> Option<u32> {
        self.first_u32(HeaderName::MaxForwards)
    }

    /// Retry-After in seconds, ignoring any comment and parameters.
    pub fn retry_after(&self) -> Option<u32> {
        let v = self.header(HeaderName::RetryAfter)?.value();
        let digits = v.trim_start();
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        parse_u32(&digits[..end])
    }

    /// The Content-Type value.
    pub fn content_type(&self) -> Option<Cow<'_, str>> {
        self.header(HeaderName::ContentType).map(HeaderField::value)
    }

    /// Checks the headers every request needs (RFC 3261 §8.1.1), that the
    /// ones that may appear once do (§7.3; RFC 4475 `multi01`), and that the
    /// CSeq method matches the request method.
    pub fn validate_request(&self) -> Result<(), ParseError> {
        let StartLine::Request { method, .. } = &self.start else {
            return Err(ParseError::NotARequest);
        };
        if let Some(name) = self.repeated_single_header() {
            return Err(ParseError::RepeatedHeader(name));
        }
        self.top_via()?;
        self.from_header()?;
        self.to_header()?;
        self.call_id()?;
        if self.cseq()?.method != *method {
            return Err(ParseError::CSeqMethodMismatch);
        }
        Ok(())
    }

    /// The first header that must appear at most once but is on several
    /// lines (compact forms count as the same header).
    fn repeated_single_header(&self) -> Option<&'static str> {
        const ONCE: [HeaderName; 6] = [
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::From,
            HeaderName::To,
            HeaderName::MaxForwards,
            HeaderName::ContentLength,
        ];
        let mut seen = [false; ONCE.len()];
        for h in &self.headers {
            if let Some(i) = ONCE.iter().position(|n| *n == h.name()) {
                if seen[i] {
                    return Some(ONCE[i].as_str());
                }
                seen[i] = true;
            }
        }
        None
    }

    // === edits ===

    /// Replaces the Request-URI (no-op on a response).
    pub fn set_request_uri(&mut self, new: Uri) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
            self.start_raw = None;
        }
    }

    /// Inserts `name: value` as the first header field.
    pub fn prepend_header(&mut self, name: &str, value: &str) {
        self.parsed = Parsed::default();
        self.headers.insert(0, HeaderField::new(name, value));
    }

    /// Appends `name: value` after the last header field.
    pub fn append_header(&mut self, name: &str, value: &str) {
        self.parsed = Parsed::default();
        self.headers.push(HeaderField::new(name, value));
    }

    /// Removes the first field called `name`; returns whether one was removed.
    pub fn remove_first(&mut self, name: HeaderName) -> bool {
        self.parsed = Parsed::default();
        match self.headers.iter().position(|h| h.name() == name) {
            Some(i) => {
                self.headers.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove_all(&mut self, name: HeaderName) -> usize {
        self.parsed = Parsed::default();
        let before = self.headers.len();
        self.headers.retain(|h| h.name() != name);
        before - self.headers.len()
    }

    /// Removes every field named `name` (any header, compact forms
    /// included); returns how many were removed.
    pub fn remove_named(&mut self, name: &str) -> usize {
        self.parsed = Parsed::default();
        let before = self.headers.len();
        self.headers.retain(|h| !h.is_named(name));
        before - self.headers.len()
    }

    /// Removes the first `k` *values* of `name`, across lines, in one pass
    /// (linear in the header, however many there are); returns how many
    /// were removed. Other values keep their order.
    pub fn remove_first_values(&mut self, name: HeaderName, k: usize) -> usize {
        self.parsed = Parsed::default();
        let mut left = k;
        let mut i = 0;
        while left > 0 && i < self.headers.len() {
            if self.headers[i].name() != name {
                i += 1;
                continue;
            }
            let values = self.headers[i].values();
            if values.len() <= left {
                left -= values.len();
                self.headers.remove(i);
                continue;
            }
            let rest = values[left..].join(", ");
            let raw_name = String::from_utf8_lossy(self.headers[i].raw_name()).into_owned();
            self.headers[i] = HeaderField::new(&raw_name, &rest);
            left = 0;
        }
        k - left
    }

    /// Removes the first *value* of `name` (e.g. the top Via or Route when one
    /// line holds several); other values of that line are kept in order.
    pub fn remove_first_value(&mut self, name: HeaderName) -> bool {
        self.parsed = Parsed::default();
        let Some(i) = self.headers.iter().position(|h| h.name() == name) else {
            return false;
        };
        let values = self.headers[i].values();
        if values.len() <= 1 {
            self.headers.remove(i);
            return true;
        }
        let rest = values[1..].join(", ");
        let raw_name = String::from_utf8_lossy(self.headers[i].raw_name()).into_owned();
        self.headers[i] = HeaderField::new(&raw_name, &rest);
        true
    }

    /// Replaces the first field called `name`, or appends one. Does nothing
    /// for [`HeaderName::Other`]; use [`Self::set_header_named`].
    pub fn set_header(&mut self, name: HeaderName, value: &str) {
        self.parsed = Parsed::default();
        if name == HeaderName::Other {
            return;
        }
        let field = HeaderField::new(name.as_str(), value);
        match self.headers.iter_mut().find(|h| h.name() == name) {
            Some(slot) => *slot = field,
            None => self.headers.push(field),
        }
    }

    /// Rewrites each field called `name` for which `f`, given its whole
    /// value, returns a new one; its name is kept as written.
    pub fn edit_fields(&mut self, name: HeaderName, mut f: impl FnMut(&str) -> Option<String>) {
        self.parsed = Parsed::default();
        for h in self.headers.iter_mut().filter(|h| h.name() == name) {
            if let Some(v) = f(&h.value()) {
                let raw_name = String::from_utf8_lossy(h.raw_name()).into_owned();
                *h = HeaderField::new(&raw_name, &v);
            }
        }
    }

    /// Like [`Self::set_header`] for any header name.
    pub fn set_header_named(&mut self, name: &str, value: &str) {
        self.parsed = Parsed::default();
        let field = HeaderField::new(name, value);
        match self.headers.iter_mut().find(|h| h.is_named(name)) {
            Some(slot) => *slot = field,
            None => self.headers.push(field),
        }
    }

    /// Appends the wire form to `out`; unmodified parts are written byte for byte.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let head: usize = self.headers.iter().map(|h| h.raw_line().len()).sum();
        out.reserve(head + self.body.len() + 128);
        match &self.start_raw {
            Some(raw) => out.extend_from_slice(raw),
            None => match &self.start {
                StartLine::Request { method, uri } => {
                    out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes());
                }
                StartLine::Response { code, reason } => {
                    out.extend_from_slice(format!("SIP/2.0 {code} ").as_bytes());
                    out.extend_from_slice(reason);
                    out.extend_from_slice(b"\r\n");
                }
            },
        }
        for h in &self.headers {
            out.extend_from_slice(h.raw_line());
        }
        out.extend_from_slice(&self.blank);
        out.extend_from_slice(&self.body);
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}
