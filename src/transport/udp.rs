//! UDP receive loops (RFC 3261 §18.2.1): one per socket, one socket of
//! each listen address per receive thread. Malformed
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
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrStorage, bind,
    recvmsg, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::overload::{self, Detector, Reading, Verdict};
use super::{Error, Inbound, Transports, icmp, supervise};
use crate::config::Transport;
use crate::lograte::{self, Kind};
use crate::sip::{Message, bad_request_response};

/// The receive buffer asked for. The kernel caps it at `net.core.rmem_max`
/// (and doubles that for its bookkeeping, socket(7)); the larger it is, the
/// longer a burst can queue before the kernel drops datagrams.
const RECEIVE_BUFFER: usize = 8 << 20;

/// How many receive threads, each with its own socket of every UDP listen
/// address: `UACD_UDP_THREADS` when set to 1..=64, else one per core this
/// process may run on (its CPU affinity counts), at most 16.
pub(super) fn receive_threads() -> usize {
    if let Ok(v) = std::env::var("UACD_UDP_THREADS") {
        match v.parse::<usize>() {
            Ok(n @ 1..=64) => return n,
            _ => {
                tracing::warn!(value = %v, "UACD_UDP_THREADS is not a number from 1 to 64; ignored")
            }
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// Binds `count` sockets to `addr` in one `SO_REUSEPORT` group (socket(7)):
/// the kernel spreads the datagrams over them by a hash of the source and
/// destination addresses, so one peer's datagrams always reach the same
/// socket, and so the same receive thread. The address is first bound
/// plainly, alone: a second daemon on the same port then fails to start,
/// as it would without the group, instead of joining it and taking part of
/// the traffic (the probe also resolves port 0 for the whole group).
pub(super) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let probe = std::net::UdpSocket::bind(addr)?;
    if count <= 1 {
        configure(&probe, addr);
        return Ok(vec![probe]);
    }
    let addr = probe.local_addr()?;
    drop(probe);
    let mut group = Vec::with_capacity(count);
    for _ in 0..count {
        let s = bind_reuseport(addr)?;
        configure(&s, addr);
        group.push(s);
    }
    Ok(group)
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

fn configure(s: &std::net::UdpSocket, addr: SocketAddr) {
    // Best effort: without them the socket works, and overload is seen
    // only when the router's own bound is reached.
    let _ = s.set_nonblocking(true);
    let _ = setsockopt(s, sockopt::RcvBuf, &RECEIVE_BUFFER);
    if let Err(e) = setsockopt(s, sockopt::ReceiveTimestampns, &true)
        .and_then(|()| setsockopt(s, sockopt::RxqOvfl, &1))
    {
        tracing::warn!(%addr, error = %e, "receive-queue overload detection unavailable on this socket");
    }
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

/// A socket's loop wakes for its errors as well as for datagrams: an ICMP
/// error (IP_RECVERR) for a datagram another socket of the group sent
/// lands here by the kernel's hash (RFC 3261 §18.4: a transport error
/// ends the transaction now, not at its timer).
const WAKE_ON: Interest = Interest::READABLE.add(Interest::ERROR);

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
            r = socket.async_io(WAKE_ON, || recv_one(fd, &mut buf, &mut control)) => match r {
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

/// A UDP socket with the address it is bound to (read once at bind).
pub(super) type Bound = (Arc<UdpSocket>, SocketAddr);

/// A UDP receive thread: a current-thread runtime and its socket of each
/// UDP listen address. What a datagram starts (a request's task, a call)
/// is spawned on the thread that read it, so a message is parsed, matched
/// and answered without waking another thread. The registrations are
/// spread over these threads too; an answer read on another thread than
/// its registration's crosses over to it.
pub(super) struct Receiver {
    /// Always `Some` until [`Receiver::run`] or drop takes it.
    runtime: Option<tokio::runtime::Runtime>,
    sockets: Vec<Bound>,
}

impl Drop for Receiver {
    /// A receiver never run (a later listener failed to bind) is dropped
    /// inside the start-up's async context, where a runtime's blocking
    /// drop would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Receiver {
    /// Where work can be spawned onto this thread (the registrations).
    pub(super) fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|rt| rt.handle().clone())
    }

    /// Runs the receive loops until the transports shut down.
    pub(super) fn run(mut self, t: Transports) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let cancel = t.inner.cancel.clone();
        let sockets = std::mem::take(&mut self.sockets);
        runtime.block_on(async {
            for (s, local) in sockets {
                let t = t.clone();
                supervise::run(&cancel, Transport::Udp, local, move || {
                    recv_loop(t.clone(), s.clone(), local)
                });
            }
            cancel.cancelled().await;
        });
        drop(t);
        runtime.shutdown_timeout(Duration::from_millis(100));
    }
}

/// Registers the sockets of each UDP listen address with the receive
/// threads' runtimes (socket `k` of a group to thread `k`), and returns
/// the first socket of each address, the one responses and requests are
/// sent from (any socket of a group sends from the same address).
pub(super) fn receivers(
    groups: Vec<(SocketAddr, Vec<std::net::UdpSocket>)>,
    threads: usize,
) -> Result<(Vec<Bound>, Vec<Receiver>), Error> {
    if groups.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut receivers = (0..threads)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| Receiver {
                    runtime: Some(runtime),
                    sockets: Vec::new(),
                })
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(Error::Threads)?;
    let mut first = Vec::with_capacity(groups.len());
    for (local, group) in groups {
        for (s, r) in group.into_iter().zip(receivers.iter_mut()) {
            let s = {
                let _in = r.runtime.as_ref().map(|rt| rt.enter());
                UdpSocket::from_std(s)
            }
            .map_err(|source| Error::Bind {
                transport: Transport::Udp,
                addr: local,
                source,
            })?;
            icmp::enable(&s, local.is_ipv6());
            r.sockets.push((Arc::new(s), local));
        }
        // Thread 0 got this group's first socket.
        first.extend(receivers[0].sockets.last().cloned());
    }
    receivers.retain(|r| !r.sockets.is_empty());
    Ok((first, receivers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_group_shares_one_address_and_keeps_a_second_daemon_out() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(group.len(), 3);
        let addr = group[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(group.iter().all(|s| s.local_addr().unwrap() == addr));
        // Another daemon on the port fails as it would without the group.
        let plain = std::net::UdpSocket::bind(addr).unwrap_err();
        assert_eq!(plain.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            bind_group(addr, 2).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }

    #[test]
    fn each_peer_reaches_one_socket_of_the_group() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        let peers: Vec<_> = (0..8)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for _ in 0..3 {
            for p in &peers {
                p.send_to(b"OPTIONS", addr).unwrap();
            }
        }
        // Which socket each peer's datagrams reached.
        let mut seen: std::collections::HashMap<SocketAddr, Vec<usize>> = Default::default();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.values().map(Vec::len).sum::<usize>() < 24 && Instant::now() < deadline {
            for (i, s) in group.iter().enumerate() {
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    seen.entry(from).or_default().push(i);
                }
            }
        }
        assert_eq!(seen.len(), 8, "every peer heard: {seen:?}");
        for (peer, sockets) in &seen {
            assert_eq!(sockets.len(), 3, "{peer}: {sockets:?}");
            assert!(
                sockets.iter().all(|&i| i == sockets[0]),
                "{peer}: {sockets:?}"
            );
        }
    }
}
