use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Message(Vec<u8>),
    Ping,
    Pong,
    Invalid,
}

/// Feeds `chunks` as successive reads to one scanner, the way the stream
/// reader does (append, frame until `Incomplete`, consume each frame).
/// Returns the frames, whether a message is left half-received, and the
/// bytes the scanner searched.
fn feed(mut sc: FrameScanner, chunks: &[&[u8]]) -> (Vec<Out>, bool, usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let f = sc.next(&buf);
            match &f {
                Frame::Incomplete => break,
                Frame::Invalid(_) => {
                    out.push(Out::Invalid);
                    return (out, false, sc.examined);
                }
                Frame::Ping => out.push(Out::Ping),
                Frame::Pong => out.push(Out::Pong),
                Frame::Message(n) => out.push(Out::Message(buf[..*n].to_vec())),
            }
            buf.drain(..f.len());
        }
    }
    (out, message_started(&buf), sc.examined)
}

fn messages(out: &[Out]) -> Vec<&Out> {
    out.iter()
        .filter(|o| matches!(o, Out::Message(_)))
        .collect()
}

const A: &str = "INVITE sip:bob@h SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";
const B: &str = "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
/// Header folding, compact form, LF-only line ends.
const C: &str = "BYE sip:h SIP/2.0\nContent-Length:\n 2\n\nxy";

fn stream() -> String {
    format!("\r\n\r\n{A}\r\n\r\n{B}{C}\r\n\r\n")
}

#[test]
fn every_two_and_three_way_split_gives_the_same_frames_as_one_read() {
    let s = stream();
    let bytes = s.as_bytes();
    let (whole, partial, _) = feed(FrameScanner::without_pongs(), &[bytes]);
    assert_eq!(
        whole,
        [
            Out::Ping,
            Out::Message(A.into()),
            Out::Ping,
            Out::Message(B.into()),
            Out::Message(C.into()),
            Out::Ping
        ]
    );
    assert!(!partial);
    for i in 0..=bytes.len() {
        for j in i..=bytes.len() {
            let parts = [&bytes[..i], &bytes[i..j], &bytes[j..]];
            let (got, partial, _) = feed(FrameScanner::without_pongs(), &parts);
            assert_eq!(got, whole, "split at {i}, {j}");
            assert!(!partial, "split at {i}, {j}");
        }
    }
}

#[test]
fn on_a_flow_we_ping_a_lone_crlf_is_a_pong_at_once() {
    let (out, partial, _) = feed(FrameScanner::new(), &[b"\r\n"]);
    assert_eq!(out, [Out::Pong]);
    assert!(!partial);
    // Where we send no pings it is half a ping: wait for the rest.
    let (out, partial, _) = feed(FrameScanner::without_pongs(), &[b"\r\n"]);
    assert_eq!(out, []);
    assert!(!partial, "half a keepalive is not a message start");
    let (out, _, _) = feed(FrameScanner::without_pongs(), &[b"\r\n", b"\r\n"]);
    assert_eq!(out, [Out::Ping]);
}

#[test]
fn message_started_tells_a_partial_message_from_a_partial_keepalive() {
    for keepalive in [&b""[..], b"\r", b"\r\n", b"\r\n\r"] {
        assert!(!message_started(keepalive), "{keepalive:?}");
    }
    for begun in [&b"I"[..], b"INVITE sip:h SIP/2.0\r\n", b"\r\nX"] {
        assert!(message_started(begun), "{begun:?}");
    }
}

#[test]
fn header_search_is_linear_when_fed_a_byte_at_a_time() {
    // 60 KiB of headers without the blank line, one byte per read.
    let mut head = b"OPTIONS sip:h SIP/2.0\r\n".to_vec();
    while head.len() < 60 * 1024 {
        head.extend_from_slice(b"X-Pad: 0123456789abcdef\r\n");
    }
    let chunks: Vec<&[u8]> = head.chunks(1).collect();
    let (out, partial, examined) = feed(FrameScanner::without_pongs(), &chunks);
    assert_eq!(out, []);
    assert!(partial);
    // Each read searches the new byte and at most 3 before it again.
    assert!(
        examined <= 4 * head.len(),
        "{examined} bytes searched for {} received",
        head.len()
    );
}

#[test]
fn headers_never_completed_are_refused_at_the_size_limit() {
    let head = vec![b'a'; MAX_MESSAGE_SIZE + 10];
    let chunks: Vec<&[u8]> = head.chunks(1000).collect();
    let (out, _, _) = feed(FrameScanner::without_pongs(), &chunks);
    assert_eq!(out, [Out::Invalid]);
}

/// Cut points for `len` bytes, sorted, deduplicated.
fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..24).prop_map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v
    })
}

fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut from = 0;
    for &c in cuts {
        parts.push(&bytes[from..c]);
        from = c;
    }
    parts.push(&bytes[from..]);
    parts
}

/// Messages with bodies of any size and keepalives between them.
fn streams() -> impl Strategy<Value = Vec<u8>> {
    let item = prop_oneof![
        Just(b"\r\n\r\n".to_vec()),
        "[a-z]{0,40}".prop_map(|body| {
            format!(
                "MESSAGE sip:u@h SIP/2.0\r\nCall-ID: x\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }),
        Just(B.as_bytes().to_vec()),
        Just(C.as_bytes().to_vec()),
    ];
    prop::collection::vec(item, 1..8).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_split_of_any_stream_gives_the_same_frames(s in streams(), c in cuts(400)) {
        let c: Vec<usize> = c.into_iter().filter(|&x| x <= s.len()).collect();
        let (whole, _, _) = feed(FrameScanner::without_pongs(), &[&s]);
        let (got, partial, examined) = feed(FrameScanner::without_pongs(), &split(&s, &c));
        prop_assert_eq!(&got, &whole);
        prop_assert!(!partial);
        prop_assert!(examined <= 4 * s.len() + 4 * (c.len() + 1));
        // Where we ping, a CRLFCRLF split in two may read as two pongs,
        // but the messages are the same.
        let (got, _, _) = feed(FrameScanner::new(), &split(&s, &c));
        prop_assert_eq!(messages(&got), messages(&whole));
    }

    #[test]
    fn arbitrary_bytes_in_any_split_frame_like_one_read(
        s in prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':'), Just(b'l'), Just(b'5'), Just(b' ')], 0..120),
        c in cuts(120),
    ) {
        let c: Vec<usize> = c.into_iter().filter(|&x| x <= s.len()).collect();
        let (whole, w_partial, _) = feed(FrameScanner::without_pongs(), &[&s]);
        let (got, partial, _) = feed(FrameScanner::without_pongs(), &split(&s, &c));
        prop_assert_eq!(got, whole);
        prop_assert_eq!(partial, w_partial);
    }
}
