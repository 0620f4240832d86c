//! Message framing on stream transports (RFC 3261 §18.3: Content-Length
//! delimits the body) and CRLF keep-alives (RFC 5626 §3.5.1: `CRLFCRLF` ping,
//! `CRLF` pong). Work per byte is bounded: the scan resumes where it stopped.

use crate::sip::MAX_MESSAGE_SIZE;
use crate::sip::error::ParseError;
use crate::sip::parse::parse_decimal;

/// What the front of a stream buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message of this many bytes (headers and body).
    Message(usize),
    /// A keep-alive ping, `\r\n\r\n` (4 bytes).
    Ping,
    /// A keep-alive pong, a lone `\r\n` (2 bytes).
    Pong,
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed; close the connection.
    Invalid(ParseError),
}

impl Frame {
    /// How many bytes to consume for this frame (0 for `Incomplete`/`Invalid`).
    pub fn len(&self) -> usize {
        match self {
            Frame::Message(n) => *n,
            Frame::Ping => 4,
            Frame::Pong => 2,
            Frame::Incomplete | Frame::Invalid(_) => 0,
        }
    }

    /// Whether no bytes are consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stateful framer for one connection: remembers how far the header block was
/// scanned so that a slowly arriving message is not rescanned from the start.
///
/// Call [`FrameScanner::next`] with the connection buffer (whose front must not
/// change between calls that return `Incomplete`), consume `frame.len()` bytes
/// after any other result, and call again.
#[derive(Clone, Debug)]
pub struct FrameScanner {
    /// Bytes of the buffer already searched for the end of the header block.
    scanned: usize,
    /// Total message length, once the header block has been read.
    total: Option<usize>,
    /// A lone `\r\n` at the end of the buffer is a pong (we sent a ping and
    /// wait for the answer), rather than the first half of a ping.
    pongs_expected: bool,
    /// Bytes searched so far, all messages together (tests check that the
    /// work is linear in the bytes received).
    #[cfg(test)]
    examined: usize,
}

/// Frames the front of `buf` without remembered state (see [`FrameScanner`]).
///
/// A buffer that is exactly `\r\n` counts as a pong, so that a pong is seen
/// without waiting for more data.
pub fn next_frame(buf: &[u8]) -> Frame {
    FrameScanner::new().next(buf)
}

/// After [`FrameScanner::next`] returned `Incomplete` on `buf`: whether `buf`
/// holds the start of a message, rather than nothing or part of a
/// `\r\n\r\n` keepalive (RFC 5626 §4.4.1 keepalives are not messages).
pub fn message_started(buf: &[u8]) -> bool {
    !matches!(buf, [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'])
}

impl Default for FrameScanner {
    fn default() -> FrameScanner {
        FrameScanner::new()
    }
}

impl FrameScanner {
    /// A scanner at the start of a frame, on a flow where we send pings: a
    /// lone `\r\n` is a pong as soon as it arrives.
    pub fn new() -> FrameScanner {
        FrameScanner {
            pongs_expected: true,
            ..FrameScanner::without_pongs()
        }
    }

    /// A scanner for a flow where we send no pings (one a remote opened):
    /// `\r\n` at the end of the buffer waits for the rest of a ping, so a
    /// ping split across reads is still one ping.
    pub fn without_pongs() -> FrameScanner {
        FrameScanner {
            scanned: 0,
            total: None,
            pongs_expected: false,
            #[cfg(test)]
            examined: 0,
        }
    }

    fn done(&mut self, f: Frame) -> Frame {
        self.scanned = 0;
        self.total = None;
        f
    }

    /// Frames the front of `buf`.
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        let total = match self.total {
            Some(t) => t,
            None => {
                match buf {
                    [] | [b'\r'] | [b'\r', b'\n', b'\r'] => return Frame::Incomplete,
                    [b'\r', b'\n'] if !self.pongs_expected => return Frame::Incomplete,
                    [b'\r', b'\n', b'\r', b'\n', ..] => return self.done(Frame::Ping),
                    [b'\r', b'\n', ..] => return self.done(Frame::Pong),
                    [b'\n', ..] | [b'\r', ..] => {
                        return self
                            .done(Frame::Invalid(ParseError::BadStartLine("stray line break")));
                    }
                    _ => {}
                }
                let Some(head_end) = self.find_head_end(buf) else {
                    if buf.len() >= MAX_MESSAGE_SIZE {
                        return self.done(Frame::Invalid(ParseError::TooLarge));
                    }
                    return Frame::Incomplete;
                };
                let cl = match content_length(&buf[..head_end]) {
                    Ok(cl) => cl.unwrap_or(0),
                    Err(e) => return self.done(Frame::Invalid(e)),
                };
                let total = head_end + cl;
                if total > MAX_MESSAGE_SIZE {
                    return self.done(Frame::Invalid(ParseError::TooLarge));
                }
                self.total = Some(total);
                total
            }
        };
        if buf.len() >= total {
            self.done(Frame::Message(total))
        } else {
            Frame::Incomplete
        }
    }

    /// Index just past the empty line (`\n\r\n` or `\n\n`) ending the headers.
    fn find_head_end(&mut self, buf: &[u8]) -> Option<usize> {
        let limit = buf.len().min(MAX_MESSAGE_SIZE);
        // Back 3 bytes: a line end seen at the very end of the last read may
        // be the start of the blank line.
        let from = self.scanned.saturating_sub(3).min(limit);
        let found = memchr::memchr_iter(b'\n', &buf[from..limit])
            .map(|p| p + from)
            .find_map(|p| match buf.get(p + 1..) {
                Some([b'\n', ..]) => Some(p + 2),
                Some([b'\r', b'\n', ..]) => Some(p + 3),
                _ => None,
            });
        #[cfg(test)]
        {
            self.examined += found.unwrap_or(limit).saturating_sub(from);
        }
        if found.is_none() {
            self.scanned = limit;
        }
        found
    }
}

/// Reads Content-Length (or compact `l`) from a header block; all must agree.
/// The start line and continuation lines (§7.3.1: a line starting with SP or
/// HT belongs to the field above) name no header, as in the parser: a folded
/// `Subject: x\r\n l: 9` must not set the frame length the parser ignores.
fn content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = line[colon + 1..].trim_ascii().to_vec();
        while let Some(next) = lines.next_if(|l| matches!(l.first(), Some(b' ' | b'\t'))) {
            value.extend_from_slice(next.trim_ascii());
        }
        let n = parse_decimal(&value).ok_or(ParseError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(ParseError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
