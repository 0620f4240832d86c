//! Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1) across arbitrary read
//! splits. The input is `n`, then `n` chunk sizes, then the stream bytes.
//! Properties: fed in those chunks (a connection's reads), the scanner yields
//! the same messages as fed all at once and as the stateless `next_frame`,
//! with the same keep-alive bytes when nothing is left pending (a `CRLFCRLF`
//! ping split after its first `CRLF` is seen as two pongs: 4 bytes either
//! way); every framed message
//! parses as a stream frame to exactly its own bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use uacd::sip::{Frame, FrameScanner, Message, next_frame};

#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Each message frame's bytes, in order.
    messages: Vec<Vec<u8>>,
    /// Bytes consumed as pings and pongs.
    keepalive_bytes: usize,
    /// The stream ended in a framing error.
    invalid: bool,
    /// Bytes left in the buffer at the end (an incomplete frame).
    pending: usize,
}

/// Feeds `stream` in chunks of `sizes` (then the rest) as a connection does:
/// append what was read, take every complete frame, keep the remainder.
fn feed(stream: &[u8], sizes: &[usize], stateless: bool) -> Seen {
    let mut seen = Seen::default();
    let mut scanner = FrameScanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = stream;
    let mut sizes = sizes.iter();
    loop {
        let take = sizes.next().map_or(rest.len(), |&s| s.min(rest.len()));
        let eof = take == rest.len() && sizes.len() == 0;
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            let frame = if stateless {
                next_frame(&buf)
            } else {
                scanner.next(&buf)
            };
            match frame {
                Frame::Incomplete => break,
                Frame::Invalid(_) => {
                    seen.invalid = true;
                    return seen;
                }
                Frame::Ping | Frame::Pong => seen.keepalive_bytes += frame.len(),
                Frame::Message(n) => {
                    assert!(
                        n > 0 && n <= buf.len(),
                        "frame of {n} bytes in a buffer of {}",
                        buf.len()
                    );
                    seen.messages.push(buf[..n].to_vec());
                }
            }
            buf.drain(..frame.len());
        }
        if eof {
            seen.pending = buf.len();
            return seen;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, tail)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 32).min(tail.len());
    let (sizes, stream) = tail.split_at(n);
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();

    let whole = feed(stream, &[], false);
    let split = feed(stream, &sizes, false);
    let stateless = feed(stream, &sizes, true);
    assert_eq!(
        split.messages, whole.messages,
        "messages differ with reads split at {sizes:?}"
    );
    assert_eq!(split.invalid, whole.invalid);
    // A trailing `\r\n\r` waits for a fourth byte when read at once, but its
    // first `\r\n` is a pong when read alone; only a clean end compares.
    if split.pending == 0 && whole.pending == 0 {
        assert_eq!(split.keepalive_bytes, whole.keepalive_bytes);
    }
    assert_eq!(stateless, split, "the scanner's memory changed the result");

    for frame in &whole.messages {
        if let Ok(m) = Message::parse_stream(Bytes::copy_from_slice(frame)) {
            assert_eq!(
                &m.to_bytes(),
                frame,
                "the parser and the framer disagree on the length"
            );
        }
    }
});
