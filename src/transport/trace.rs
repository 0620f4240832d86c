//! SIP tracing: every message sent and received, at trace level under the
//! target `uacd::sip` (`RUST_LOG=info,uacd::sip=trace`), and as HEP v3 to a
//! Homer or sngrep collector when `[trace] hep` is set. The digest
//! `response` of Authorization / Proxy-Authorization is redacted in both
//! (the rest of a message is what the peers see anyway); passwords never
//! appear in SIP. Off, a message costs one relaxed check of the log level
//! and one of a `OnceLock`.
//!
//! HEP v3 (the HEP/EEP protocol of sipcapture.org): `HEP3`, the total
//! length, then chunks of (vendor 0, type, length, value): 1 address family,
//! 2 IP protocol, 3/4 IPv4 or 5/6 IPv6 source and destination, 7/8 ports,
//! 9/10 time (seconds, microseconds), 11 payload type (1 = SIP), 12 capture
//! agent id, 15 the payload. One datagram per message.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Transport;

/// The log target of SIP messages.
pub const TARGET: &str = "uacd::sip";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

struct Hep {
    socket: UdpSocket,
    collector: SocketAddr,
    capture_id: u32,
}

static HEP: OnceLock<Hep> = OnceLock::new();

/// Starts the HEP export of this process (the first call wins).
pub fn export_hep(collector: SocketAddr, capture_id: u32) -> std::io::Result<()> {
    let bind: SocketAddr = if collector.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_nonblocking(true)?;
    let _ = HEP.set(Hep {
        socket,
        collector,
        capture_id,
    });
    Ok(())
}

/// One message that crossed the wire between `local` and `remote`.
pub fn message(
    dir: Dir,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    bytes: &[u8],
) {
    let log = tracing::enabled!(target: TARGET, tracing::Level::TRACE);
    let hep = HEP.get();
    if !log && hep.is_none() {
        return;
    }
    let text = redacted(bytes);
    if log {
        let (arrow, from, to) = match dir {
            Dir::In => ("received", remote, local),
            Dir::Out => ("sent", local, remote),
        };
        tracing::trace!(target: TARGET, %from, %to, transport = transport.uri_param(), bytes = bytes.len(), "{arrow}:\n{text}");
    }
    if let Some(h) = hep {
        let (src, dst) = match dir {
            Dir::In => (remote, local),
            Dir::Out => (local, remote),
        };
        let packet = encode(
            src,
            dst,
            transport,
            SystemTime::now(),
            h.capture_id,
            text.as_bytes(),
        );
        if let Err(e) = h.socket.send_to(&packet, h.collector) {
            tracing::debug!(collector = %h.collector, error = %e, "HEP packet not sent");
        }
    }
}

/// The message as text with each digest `response="..."` of an
/// Authorization or Proxy-Authorization header replaced.
pub fn redacted(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let head_end = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let (head, body) = text.split_at(head_end);
    let mut out = String::with_capacity(text.len());
    for line in head.split_inclusive('\n') {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("proxy-authorization")
        {
            out.push_str(&redact_response(line));
        } else {
            out.push_str(line);
        }
    }
    out.push_str(body);
    out
}

fn redact_response(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let mut out = String::with_capacity(line.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(i) = lower[from..].find("response") {
        let at = from + i;
        let after = &line[at + "response".len()..];
        let eq = after.len() - after.trim_start().len();
        let starts_word = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        if starts_word && after.trim_start().starts_with('=') {
            let value_start = at + "response".len() + eq + 1;
            let v = &line[value_start..];
            let ws = v.len() - v.trim_start().len();
            let v = v.trim_start();
            let len = if let Some(q) = v.strip_prefix('"') {
                q.find('"').map_or(v.len(), |e| e + 2)
            } else {
                v.find([',', '\r', '\n', ' ']).unwrap_or(v.len())
            };
            out.push_str(&line[rest..value_start + ws]);
            out.push_str("\"<redacted>\"");
            rest = value_start + ws + len;
            from = rest;
        } else {
            from = at + "response".len();
        }
    }
    out.push_str(&line[rest..]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(
        &u16::try_from(6 + value.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(value);
}

/// One HEP v3 packet.
pub fn encode(
    src: SocketAddr,
    dst: SocketAddr,
    transport: Transport,
    at: SystemTime,
    capture_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 96);
    out.extend_from_slice(b"HEP3\0\0");
    let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
    match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(&mut out, 1, &[2]);
            chunk(&mut out, 3, &s.octets());
            chunk(&mut out, 4, &d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            chunk(&mut out, 1, &[10]);
            chunk(&mut out, 5, &v6(s).octets());
            chunk(&mut out, 6, &v6(d).octets());
        }
    }
    chunk(
        &mut out,
        2,
        &[if transport == Transport::Udp { 17 } else { 6 }],
    );
    chunk(&mut out, 7, &src.port().to_be_bytes());
    chunk(&mut out, 8, &dst.port().to_be_bytes());
    let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    chunk(
        &mut out,
        9,
        &u32::try_from(t.as_secs()).unwrap_or(u32::MAX).to_be_bytes(),
    );
    chunk(&mut out, 10, &t.subsec_micros().to_be_bytes());
    chunk(&mut out, 11, &[1]);
    chunk(&mut out, 12, &capture_id.to_be_bytes());
    chunk(&mut out, 15, payload);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&total.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_responses_are_redacted_and_nothing_else() {
        let msg = "REGISTER sip:pbx SIP/2.0\r\n\
Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:pbx\", response=\"0123abcd\", algorithm=MD5\r\n\
proxy-authorization:Digest response=ffee,username=\"u\"\r\n\
X-Response: response=\"kept\"\r\n\r\nresponse=\"body kept\"";
        let r = redacted(msg.as_bytes());
        assert!(!r.contains("0123abcd") && !r.contains("ffee"), "{r}");
        assert!(r.contains("response=\"<redacted>\", algorithm=MD5"), "{r}");
        assert!(r.contains("Digest response=\"<redacted>\",username"), "{r}");
        assert!(r.contains("X-Response: response=\"kept\""), "{r}");
        assert!(r.ends_with("response=\"body kept\""), "{r}");
        assert!(r.contains("nonce=\"n\""));
    }

    /// Chunks of a HEP v3 packet as (type, value).
    fn chunks(p: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
        let mut out = Vec::new();
        let mut i = 6;
        while i < p.len() {
            let kind = u16::from_be_bytes([p[i + 2], p[i + 3]]);
            let len = usize::from(u16::from_be_bytes([p[i + 4], p[i + 5]]));
            out.push((kind, p[i + 6..i + len].to_vec()));
            i += len;
        }
        out
    }

    #[test]
    fn hep3_packets_carry_addresses_ports_time_and_payload() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let p = encode(
            "192.0.2.10:5060".parse().unwrap(),
            "198.51.100.7:5070".parse().unwrap(),
            Transport::Udp,
            at,
            2001,
            b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        );
        let c = chunks(&p);
        let get = |k: u16| {
            c.iter()
                .find(|(t, _)| *t == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(1), [2]);
        assert_eq!(get(2), [17]);
        assert_eq!(get(3), [192, 0, 2, 10]);
        assert_eq!(get(4), [198, 51, 100, 7]);
        assert_eq!(get(7), 5060u16.to_be_bytes());
        assert_eq!(get(8), 5070u16.to_be_bytes());
        assert_eq!(get(9), 1_700_000_000u32.to_be_bytes());
        assert_eq!(get(10), 123_456u32.to_be_bytes());
        assert_eq!(get(11), [1]);
        assert_eq!(get(12), 2001u32.to_be_bytes());
        assert_eq!(get(15), b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        let v6 = encode(
            "[2001:db8::1]:5060".parse().unwrap(),
            "192.0.2.1:5060".parse().unwrap(),
            Transport::Tls,
            at,
            1,
            b"x",
        );
        let c = chunks(&v6);
        assert!(c.contains(&(1, vec![10])) && c.contains(&(2, vec![6])));
        assert_eq!(c.iter().find(|(t, _)| *t == 5).unwrap().1.len(), 16);
    }
}
