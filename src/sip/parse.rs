//! Single-pass message parser (RFC 3261 §7: start line, header fields with
//! folding §7.3.1, body delimited by Content-Length §18.3 / §20.14).
//!
//! Header fields become `Bytes` slices of the input; nothing is copied.

use bytes::Bytes;

use crate::sip::error::ParseError;
use crate::sip::header::{HeaderField, HeaderName};
use crate::sip::message::{Message, StartLine};
use crate::sip::params::is_token_char;
use crate::sip::{MAX_HEADERS, MAX_MESSAGE_SIZE, Method};

/// How the message arrived, which decides the meaning of a missing Content-Length.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Missing Content-Length: the body is the rest of the datagram.
    Datagram,
    /// Missing Content-Length: empty body.
    Stream,
}

pub(crate) fn parse(buf: Bytes, transport: Transport) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge);
    }
    let len = buf.len();
    let mut pos = 0;
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    while pos < len
        && (buf[pos] == b'\n' || (buf[pos] == b'\r' && buf.get(pos + 1) == Some(&b'\n')))
    {
        pos += if buf[pos] == b'\r' { 2 } else { 1 };
    }
    if pos == len {
        return Err(ParseError::Empty);
    }
    let eol = memchr::memchr(b'\n', &buf[pos..]).ok_or(ParseError::Truncated)?;
    let line_end = pos + eol + 1;
    let start_raw = buf.slice(pos..line_end);
    let start = parse_start_line(&buf, pos, pos + eol)?;
    pos = line_end;

    let mut headers = Vec::with_capacity(16);
    let blank_end = loop {
        match buf.get(pos) {
            None => return Err(ParseError::Truncated),
            Some(b'\n') => break pos + 1,
            Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => break pos + 2,
            Some(b' ' | b'\t') => return Err(ParseError::BadHeaderLine),
            Some(_) => {}
        }
        let mut end = pos;
        loop {
            let nl = memchr::memchr(b'\n', &buf[end..]).ok_or(ParseError::Truncated)?;
            end += nl + 1;
            if !matches!(buf.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let field = HeaderField::from_line(buf.slice(pos..end)).ok_or(ParseError::BadHeaderLine)?;
        headers.push(field);
        pos = end;
    };
    let blank = buf.slice(pos..blank_end);

    let rest = len - blank_end;
    let body_len = match content_length(&headers)? {
        Some(n) if n > rest && transport == Transport::Datagram => {
            return Err(ParseError::BodyMismatch);
        }
        Some(n) if n > rest => return Err(ParseError::Truncated),
        // §18.3 discards what follows the body in a datagram; anything but
        // padding there means the sender and we disagree on where the
        // message ends, which is how requests are smuggled: 400.
        Some(n)
            if transport == Transport::Datagram
                && !buf[blank_end + n..]
                    .iter()
                    .all(|b| b.is_ascii_whitespace() || *b == 0) =>
        {
            return Err(ParseError::BodyMismatch);
        }
        Some(n) => n,
        None if transport == Transport::Datagram => rest,
        None => 0,
    };
    let body = buf.slice(blank_end..blank_end + body_len);
    Ok(Message::from_parts(
        start,
        Some(start_raw),
        headers,
        blank,
        body,
    ))
}

/// The Content-Length of the message; all occurrences must agree.
fn content_length(headers: &[HeaderField]) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for h in headers
        .iter()
        .filter(|h| h.name() == HeaderName::ContentLength)
    {
        let n = parse_decimal(h.raw_value()).ok_or(ParseError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(ParseError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

/// Parses 1-9 ASCII digits (anything longer is beyond every limit anyway).
pub(crate) fn parse_decimal(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0')),
    )
}

fn is_sip_version(b: &[u8]) -> bool {
    b.eq_ignore_ascii_case(b"SIP/2.0")
}

/// Parses `buf[from..to]` (LF excluded, trailing CR allowed).
fn parse_start_line(buf: &Bytes, from: usize, mut to: usize) -> Result<StartLine, ParseError> {
    if to > from && buf[to - 1] == b'\r' {
        to -= 1;
    }
    let line = &buf[from..to];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        if line.len() < 11 || !is_sip_version(&line[..7]) || line[7] != b' ' {
            return Err(ParseError::BadStartLine("bad status line"));
        }
        let code = &line[8..11];
        if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
            return Err(ParseError::BadStartLine("bad status code"));
        }
        let code = code.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        let reason = match line.get(11) {
            None => buf.slice(from + 11..from + 11),
            Some(b' ') => buf.slice(from + 12..to),
            Some(_) => return Err(ParseError::BadStartLine("bad status code")),
        };
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine("no Request-URI"))?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(ParseError::BadStartLine("no SIP version"))?;
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| is_token_char(b)) {
        return Err(ParseError::BadStartLine("bad method"));
    }
    if sp2 <= sp1 {
        return Err(ParseError::BadStartLine("bad SIP version"));
    }
    let version = &line[sp2 + 1..];
    if !is_sip_version(version) {
        // `SIP/x.y` is a request we cannot speak (505); anything else is not SIP.
        return Err(
            if version.len() > 4 && version[..4].eq_ignore_ascii_case(b"SIP/") {
                ParseError::BadVersion
            } else {
                ParseError::BadStartLine("bad SIP version")
            },
        );
    }
    let uri =
        std::str::from_utf8(&line[sp1 + 1..sp2]).map_err(|_| ParseError::BadUri("not UTF-8"))?;
    let uri = uri.trim_matches(' ');
    if uri.is_empty() {
        return Err(ParseError::BadStartLine("no Request-URI"));
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        uri: uri.parse()?,
    })
}
