//! ICMP errors for UDP (RFC 3261 §18.4: an ICMP "port unreachable" or
//! "host unreachable" for a request we sent is a transport error, and the
//! transaction fails over at once instead of waiting for its timer).
//!
//! Our UDP sockets are unconnected and shared, so the kernel reports ICMP
//! errors only with `IP_RECVERR` / `IPV6_RECVERR` (ip(7)): the error is
//! queued on the socket's error queue with the address we had sent to, and
//! the next receive fails. The receive loop then drains the queue
//! ([`drain`]) and tells the [`Watches`] registered for that address.
//!
//! Only errors whose origin is ICMP (not local errors such as EMSGSIZE) and
//! whose type means "unreachable" count.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::libc;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::sync::mpsc;

/// Asks the kernel to queue ICMP errors on `socket` (best effort: without
/// it, an unreachable target costs its timer, as before).
pub fn enable(socket: &impl AsFd, v6: bool) {
    let set = if v6 {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true)
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)
    };
    if let Err(e) = set {
        tracing::debug!(error = %e, "IP_RECVERR not set; ICMP errors will not be seen");
    }
}

/// Reads every queued error of `socket` (never blocks) and returns the
/// destinations an ICMP "unreachable" came back for.
pub fn drain(socket: &impl AsRawFd) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    // Bounded: the queue is finite, but never loop forever on a bad kernel.
    for _ in 0..64 {
        match read_one(socket.as_raw_fd()) {
            Some(Some(addr)) => {
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
            Some(None) => {}
            None => break,
        }
    }
    out
}

/// One message from the error queue: `None` when the queue is empty,
/// `Some(None)` for an error that is not an ICMP unreachable.
fn read_one(fd: std::os::fd::RawFd) -> Option<Option<SocketAddr>> {
    let mut data = [0u8; 512];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        fd,
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let unreachable = msg.cmsgs().ok()?.any(|c| match c {
        ControlMessageOwned::Ipv4RecvErr(ee, _) | ControlMessageOwned::Ipv6RecvErr(ee, _) => {
            is_unreachable(&ee)
        }
        _ => false,
    });
    if !unreachable {
        return Some(None);
    }
    Some(msg.address.as_ref().and_then(sockaddr))
}

/// ICMP destination unreachable (v4 type 3, v6 type 1), any code.
fn is_unreachable(ee: &libc::sock_extended_err) -> bool {
    match ee.ee_origin {
        libc::SO_EE_ORIGIN_ICMP => ee.ee_type == 3,
        libc::SO_EE_ORIGIN_ICMP6 => ee.ee_type == 1,
        _ => false,
    }
}

/// The address as `recv_from` gives it (a v4-mapped address stays v6: an
/// answer goes out on the same dual-stack socket).
pub(super) fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())));
    }
    let a = s.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        a.ip(),
        a.port(),
        a.flowinfo(),
        a.scope_id(),
    )))
}

/// The destination an error came back for; a v4-mapped address on a
/// dual-stack socket is the v4 peer (as watches are keyed).
fn sockaddr(s: &SockaddrStorage) -> Option<SocketAddr> {
    match socket_addr(s)? {
        SocketAddr::V6(a) => Some(match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, a.scope_id())),
        }),
        v4 => Some(v4),
    }
}

const SHARDS: usize = 16;

/// The watchers of one address, by watch id: O(1) to add and to remove
/// (thousands of registrations share one registrar address).
type Watchers = HashMap<u64, mpsc::Sender<SocketAddr>>;

/// Who waits on which UDP destination: transactions register while they
/// wait for a response; an ICMP error for the address tells each of them.
#[derive(Default)]
pub struct Watches {
    shards: [Mutex<HashMap<SocketAddr, Watchers>>; SHARDS],
    next: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl Watches {
    fn shard(&self, addr: &SocketAddr) -> &Mutex<HashMap<SocketAddr, Watchers>> {
        &self.shards[(self.hasher.hash_one(addr) as usize) % SHARDS]
    }

    /// `tx` gets `addr` when an ICMP unreachable comes back for it, until
    /// the returned guard is dropped.
    pub fn watch(self: &Arc<Self>, addr: SocketAddr, tx: mpsc::Sender<SocketAddr>) -> Watch {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(&addr)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .insert(id, tx);
        Watch {
            watches: self.clone(),
            addr,
            id,
        }
    }

    /// An ICMP unreachable came back for `addr`.
    pub fn fire(&self, addr: SocketAddr) -> usize {
        let shard = self.shard(&addr).lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = shard.get(&addr) else {
            return 0;
        };
        for tx in list.values() {
            let _ = tx.try_send(addr);
        }
        list.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Unregisters its watch when dropped.
pub struct Watch {
    watches: Arc<Watches>,
    addr: SocketAddr,
    id: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut shard = self
            .watches
            .shard(&self.addr)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(list) = shard.get_mut(&self.addr) {
            list.remove(&self.id);
            if list.is_empty() {
                shard.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_fire_for_their_address_and_go_away_when_dropped() {
        let w = Arc::new(Watches::default());
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let g1 = w.watch(a, tx.clone());
        let g2 = w.watch(a, tx);
        assert_eq!(w.fire(b), 0);
        assert_eq!(w.fire(a), 2);
        assert_eq!(rx.try_recv().unwrap(), a);
        drop(g1);
        assert_eq!(w.fire(a), 1);
        drop(g2);
        assert_eq!(w.fire(a), 0);
        assert_eq!(w.len(), 0, "no empty lists left behind");
    }

    /// The kernel really reports a port unreachable to a socket with
    /// IP_RECVERR, with the address we sent to.
    #[tokio::test]
    async fn port_unreachable_is_read_from_the_error_queue() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&sock, false);
        // A port nobody listens on: bind one, note it, close it.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        sock.send_to(b"x", dead).await.unwrap();
        let mut buf = [0u8; 64];
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("the error wakes the receiver")
            .expect_err("a receive error");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert_eq!(drain(&sock), vec![dead]);
        assert!(drain(&sock).is_empty(), "drained");
    }
}
