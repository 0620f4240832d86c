//! Header names and raw header fields (RFC 3261 §7.3, §20; compact forms §7.3.3).
//!
//! A [`HeaderField`] is a zero-copy slice of the original line, folding and
//! terminator included, so an unmodified field is written back byte for byte.

use std::borrow::Cow;

use bytes::Bytes;

use crate::sip::params::{end_of_quoted, is_token_char};

/// Known header names; anything else is [`HeaderName::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    ContentEncoding,
    Route,
    RecordRoute,
    Expires,
    MinExpires,
    WwwAuthenticate,
    ProxyAuthenticate,
    Authorization,
    ProxyAuthorization,
    RetryAfter,
    Warning,
    UserAgent,
    Server,
    Allow,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Event,
    AllowEvents,
    SubscriptionState,
    ReferTo,
    SessionExpires,
    Subject,
    Date,
    Timestamp,
    Accept,
    Path,
    Other,
}

/// (canonical name, compact form or 0, variant)
const TABLE: &[(&str, u8, HeaderName)] = &[
    ("Via", b'v', HeaderName::Via),
    ("From", b'f', HeaderName::From),
    ("To", b't', HeaderName::To),
    ("Call-ID", b'i', HeaderName::CallId),
    ("CSeq", 0, HeaderName::CSeq),
    ("Contact", b'm', HeaderName::Contact),
    ("Max-Forwards", 0, HeaderName::MaxForwards),
    ("Content-Length", b'l', HeaderName::ContentLength),
    ("Content-Type", b'c', HeaderName::ContentType),
    ("Content-Encoding", b'e', HeaderName::ContentEncoding),
    ("Route", 0, HeaderName::Route),
    ("Record-Route", 0, HeaderName::RecordRoute),
    ("Expires", 0, HeaderName::Expires),
    ("Min-Expires", 0, HeaderName::MinExpires),
    ("WWW-Authenticate", 0, HeaderName::WwwAuthenticate),
    ("Proxy-Authenticate", 0, HeaderName::ProxyAuthenticate),
    ("Authorization", 0, HeaderName::Authorization),
    ("Proxy-Authorization", 0, HeaderName::ProxyAuthorization),
    ("Retry-After", 0, HeaderName::RetryAfter),
    ("Warning", 0, HeaderName::Warning),
    ("User-Agent", 0, HeaderName::UserAgent),
    ("Server", 0, HeaderName::Server),
    ("Allow", 0, HeaderName::Allow),
    ("Supported", b'k', HeaderName::Supported),
    ("Require", 0, HeaderName::Require),
    ("Proxy-Require", 0, HeaderName::ProxyRequire),
    ("Unsupported", 0, HeaderName::Unsupported),
    ("Event", b'o', HeaderName::Event),
    ("Allow-Events", b'u', HeaderName::AllowEvents),
    ("Subscription-State", 0, HeaderName::SubscriptionState),
    ("Refer-To", b'r', HeaderName::ReferTo),
    ("Session-Expires", b'x', HeaderName::SessionExpires),
    ("Subject", b's', HeaderName::Subject),
    ("Date", 0, HeaderName::Date),
    ("Timestamp", 0, HeaderName::Timestamp),
    ("Accept", 0, HeaderName::Accept),
    ("Path", 0, HeaderName::Path),
];

impl HeaderName {
    /// Maps a field name (any case, compact form allowed) to a variant.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if let [c] = name {
            let c = c.to_ascii_lowercase();
            return TABLE
                .iter()
                .find(|(_, compact, _)| *compact == c)
                .map_or(HeaderName::Other, |(_, _, h)| *h);
        }
        TABLE
            .iter()
            .find(|(n, _, _)| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
            .map_or(HeaderName::Other, |(_, _, h)| *h)
    }

    /// Canonical spelling (`Call-ID`, `WWW-Authenticate`); empty for `Other`.
    pub fn as_str(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, _, h)| *h == self)
            .map_or("", |(n, _, _)| n)
    }

    /// Whether several values may be joined by commas in one field.
    ///
    /// The authentication headers carry comma-separated parameters in one value,
    /// and free-text or date headers contain literal commas, so they are not split.
    pub fn is_comma_list(self) -> bool {
        !matches!(
            self,
            HeaderName::WwwAuthenticate
                | HeaderName::ProxyAuthenticate
                | HeaderName::Authorization
                | HeaderName::ProxyAuthorization
                | HeaderName::Date
                | HeaderName::Subject
                | HeaderName::UserAgent
                | HeaderName::Server
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::Timestamp
                | HeaderName::RetryAfter
                | HeaderName::From
                | HeaderName::To
        )
    }
}

/// One header field as it appeared on the wire (or as inserted by an edit).
#[derive(Clone, Debug)]
pub struct HeaderField {
    name: HeaderName,
    /// The whole line: name, colon, value, folding and the line terminator.
    line: Bytes,
    name_end: usize,
    value_start: usize,
    value_end: usize,
}

impl HeaderField {
    /// Builds a field from one raw line (terminator included). Returns `None`
    /// when there is no colon or the name is not a token.
    pub(crate) fn from_line(line: Bytes) -> Option<HeaderField> {
        let colon = memchr::memchr(b':', &line)?;
        let mut name_end = colon;
        while name_end > 0 && matches!(line[name_end - 1], b' ' | b'\t') {
            name_end -= 1;
        }
        if name_end == 0 || !line[..name_end].iter().all(|&b| is_token_char(b)) {
            return None;
        }
        let mut value_start = colon + 1;
        while value_start < line.len() && matches!(line[value_start], b' ' | b'\t' | b'\r' | b'\n')
        {
            value_start += 1;
        }
        let mut value_end = line.len();
        while value_end > value_start && matches!(line[value_end - 1], b' ' | b'\t' | b'\r' | b'\n')
        {
            value_end -= 1;
        }
        Some(HeaderField {
            name: HeaderName::from_bytes(&line[..name_end]),
            line,
            name_end,
            value_start,
            value_end,
        })
    }

    /// A new field `Name: value\r\n`; CR and LF in either part become spaces.
    pub(crate) fn new(name: &str, value: &str) -> HeaderField {
        // One allocation: CR and LF inside the name or value become spaces.
        fn push_clean(out: &mut String, s: &str) {
            if s.bytes().any(|b| b == b'\r' || b == b'\n') {
                out.extend(
                    s.chars()
                        .map(|c| if matches!(c, '\r' | '\n') { ' ' } else { c }),
                );
            } else {
                out.push_str(s);
            }
        }
        let (name, value) = (name.trim(), value.trim());
        let mut line = String::with_capacity(name.len() + value.len() + 4);
        push_clean(&mut line, name);
        line.push_str(": ");
        push_clean(&mut line, value);
        line.push_str("\r\n");
        let line = Bytes::from(line);
        HeaderField::from_line(line.clone()).unwrap_or(HeaderField {
            name: HeaderName::Other,
            name_end: 0,
            value_start: 0,
            value_end: line.len().saturating_sub(2),
            line,
        })
    }

    /// The header name.
    pub fn name(&self) -> HeaderName {
        self.name
    }

    /// The name exactly as written (`v`, `VIA`, `Call-ID`).
    pub fn raw_name(&self) -> &[u8] {
        &self.line[..self.name_end]
    }

    /// The raw value bytes, folding kept, outer whitespace trimmed.
    pub fn raw_value(&self) -> &[u8] {
        &self.line[self.value_start..self.value_end]
    }

    /// The whole original line, terminator included.
    pub fn raw_line(&self) -> &[u8] {
        &self.line
    }

    /// Whether the raw name equals `name` ignoring case (compact forms are not expanded).
    pub fn is_named(&self, name: &str) -> bool {
        self.raw_name().eq_ignore_ascii_case(name.as_bytes())
            || (self.name != HeaderName::Other
                && self.name == HeaderName::from_bytes(name.as_bytes()))
    }

    /// The value with folding replaced by single spaces (lossy for non-UTF-8).
    pub fn value(&self) -> Cow<'_, str> {
        let raw = self.raw_value();
        // `str::from_utf8` checks ASCII a word at a time; the lossy
        // decoder walks every byte, and nearly every value is ASCII.
        let text = match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        };
        if memchr::memchr2(b'\r', b'\n', raw).is_none() {
            return text;
        }
        Cow::Owned(unfold(&text))
    }

    /// The first of [`Self::values`], without collecting the others.
    pub fn first_value(&self) -> Option<Cow<'_, str>> {
        let split = self.name.is_comma_list();
        match self.value() {
            Cow::Borrowed(v) if split => split_commas(v).next().map(Cow::Borrowed),
            Cow::Owned(v) if split => split_commas(&v).next().map(|s| Cow::Owned(s.to_owned())),
            v => Some(v),
        }
    }

    /// Values split on top-level commas (or the whole value for non-list headers).
    pub fn values(&self) -> Vec<Cow<'_, str>> {
        let split = self.name.is_comma_list();
        match self.value() {
            Cow::Borrowed(v) if split => split_commas(v).map(Cow::Borrowed).collect(),
            Cow::Owned(v) if split => split_commas(&v).map(|s| Cow::Owned(s.to_owned())).collect(),
            v => vec![v],
        }
    }
}

/// Replaces each `LWS* CRLF LWS+` run by one space (RFC 3261 §7.3.1).
fn unfold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if matches!(c, '\r' | '\n') {
            while out.ends_with([' ', '\t']) {
                out.pop();
            }
            pending_space = true;
        } else if pending_space && matches!(c, ' ' | '\t') {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Splits on commas outside quotes, `<...>` and `(...)`; trims each piece and
/// skips empty ones.
pub fn split_commas(s: &str) -> impl Iterator<Item = &str> {
    // Lazy: `top_via` on every message only needs the first piece, so
    // nothing is collected (a Vec per call showed in the proxy profile).
    let b = s.as_bytes();
    let mut start = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let (mut i, mut angle, mut paren) = (start, false, 0usize);
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = end_of_quoted(b, i).unwrap_or(b.len());
                    continue;
                }
                b'<' => angle = true,
                b'>' => angle = false,
                b'(' => paren += 1,
                b')' => paren = paren.saturating_sub(1),
                b',' if !angle && paren == 0 => {
                    let piece = &s[start..i];
                    start = i + 1;
                    return Some(piece);
                }
                _ => {}
            }
            i += 1;
        }
        done = true;
        Some(&s[start..])
    })
    .map(str::trim)
    .filter(|p| !p.is_empty())
}
