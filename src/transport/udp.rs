//! UDP receive loop (RFC 3261 §18.2.1): one per listen socket. Malformed
//! requests get a 400 when they can be answered (§8.2.2); keepalive
//! datagrams (CRLF, RFC 5626 §3.5.1 over UDP) are ignored. Drives
//! [`overload::Detector`] with what the kernel says about each datagram.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::overload::{self, Detector, Reading, Verdict};
use super::{Inbound, Transports};
use crate::config::Transport;
use crate::lograte::{self, Kind};
use crate::sip::{Message, bad_request_response};

/// The receive buffer asked for. The kernel caps it at `net.core.rmem_max`
/// (and doubles that for its bookkeeping, socket(7)); the larger it is, the
/// longer a burst can queue before the kernel drops datagrams.
const RECEIVE_BUFFER: usize = 8 << 20;

pub(super) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    // Best effort: without them the socket works, and overload is seen
    // only when the router's own bound is reached.
    let _ = setsockopt(&s, sockopt::RcvBuf, &RECEIVE_BUFFER);
    if let Err(e) = setsockopt(&s, sockopt::ReceiveTimestampns, &true)
        .and_then(|()| setsockopt(&s, sockopt::RxqOvfl, &1))
    {
        tracing::warn!(%addr, error = %e, "receive-queue overload detection unavailable on this socket");
    }
    UdpSocket::from_std(s)
}

/// Reads one datagram into `buf`, with what the kernel says about its
/// time in the receive queue (socket(7): `SO_TIMESTAMPNS`, `SO_RXQ_OVFL`).
fn recv_one(
    fd: RawFd,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, SocketAddr, Reading)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(control), MsgFlags::MSG_DONTWAIT)?;
    let source = msg
        .address
        .as_ref()
        .and_then(super::icmp::socket_addr)
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut reading = Reading::default();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => reading.queued = queued_since(ts),
                ControlMessageOwned::RxqOvfl(drops) => reading.drops = drops,
                _ => {}
            }
        }
    }
    Ok((msg.bytes, source, reading))
}

/// Time since the kernel's arrival stamp (the real-time clock); `None`
/// when the clock went back past it.
fn queued_since(ts: TimeSpec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec()).ok()?;
    let arrived = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    SystemTime::now().duration_since(arrived).ok()
}

/// Says in the log that `local` is overloaded, at an episode's start and
/// when the kernel dropped datagrams (rate-limited; a line reports the
/// drops `unreported` since the previous one).
fn log_overload(local: SocketAddr, verdict: Verdict, unreported: &mut u64) {
    let Verdict::Shed { lost, onset } = verdict else {
        return;
    };
    *unreported += u64::from(lost);
    if (onset || lost > 0)
        && let Some(suppressed) = lograte::allow(Kind::Overload)
    {
        tracing::warn!(
            %local,
            dropped_by_kernel = *unreported,
            suppressed,
            "receive queue overloaded: new requests are answered 503 for {} ms",
            overload::HOLD.as_millis()
        );
        *unreported = 0;
    }
}

pub(super) async fn recv_loop(t: Transports, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let mut control = nix::cmsg_space!(TimeSpec, u32);
    let mut detector = Detector::default();
    let mut unreported = 0;
    let fd = socket.as_raw_fd();
    let cancel = t.cancel_token().clone();
    loop {
        let (n, source, reading) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.async_io(Interest::READABLE, || recv_one(fd, &mut buf, &mut control)) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors surface here (IP_RECVERR); the socket
                    // stays usable.
                    tracing::trace!(%local, error = %e, "udp receive error");
                    t.udp_errors(&socket);
                    continue;
                }
            },
        };
        let verdict = detector.observe(tokio::time::Instant::now(), reading);
        log_overload(local, verdict, &mut unreported);
        let data = &buf[..n];
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            continue;
        }
        super::trace::message(super::trace::Dir::In, Transport::Udp, local, source, data);
        let bytes = Bytes::copy_from_slice(data);
        match Message::parse_datagram(bytes) {
            Ok(msg) => t.handler().handle(Inbound {
                msg,
                source,
                transport: Transport::Udp,
                flow: None,
                local,
                overloaded: verdict.overloaded(),
            }),
            Err(err) => {
                if let Some(suppressed) = lograte::allow(Kind::Malformed) {
                    tracing::warn!(%source, error = %err, suppressed, "dropping malformed SIP datagram");
                }
                // A 400 or 505: an error answer, under the layer's rules.
                if let Some(resp) = bad_request_response(data, &err)
                    && t.handler()
                        .allow_reply(source.ip(), 400, data.len(), resp.len())
                {
                    super::trace::message(
                        super::trace::Dir::Out,
                        Transport::Udp,
                        local,
                        source,
                        &resp,
                    );
                    let _ = socket.send_to(&resp, source).await;
                }
            }
        }
    }
}
