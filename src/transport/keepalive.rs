//! CRLF keepalives over UDP toward the registrars that registrations use.
//!
//! A PBX sends its INVITEs to the address and port our REGISTER came from
//! (RFC 3581 §4); behind a NAT that is a binding the NAT forgets after
//! 30-180 s of silence, long before a refresh with the usual 3600 s expiry,
//! and calls then stop arriving. So every `registration.udp_keepalive_sec`
//! (jittered between 80 % and 100 % so that many boxes never pulse
//! together) each registrar target in use gets a `CRLF CRLF` datagram from
//! the socket its registrations use. That is the keepalive RFC 5626 §3.5.1
//! defines for streams; over UDP it is what phones send, and registrars
//! (Asterisk, Kamailio, FreeSWITCH) drop it without an answer. One datagram
//! per (socket, registrar) and round, however many connections share it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The keepalive: an empty line pair (RFC 5626 §3.5.1).
pub const PING: &[u8] = b"\r\n\r\n";

type Key = (SocketAddr, SocketAddr);

/// The socket to ping from, and the holder the registrations toward the
/// target share (gone when the last of them drops it).
type Entry = (Arc<UdpSocket>, Weak<Held>);

#[derive(Default)]
struct Targets {
    /// (our socket's address, registrar) → its entry.
    map: Mutex<HashMap<Key, Entry>>,
}

/// The registrars to keep reachable; cheap to clone.
#[derive(Clone)]
pub struct UdpKeepalive {
    targets: Arc<Targets>,
    interval: Option<Duration>,
}

/// One target's entry, shared by every registration toward it.
struct Held {
    targets: Arc<Targets>,
    key: Key,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.targets.map.lock().unwrap_or_else(|e| e.into_inner());
        // A registration may have made a new holder for the key between
        // the last strong reference going and this lock: keep that one.
        if map
            .get(&self.key)
            .is_some_and(|(_, w)| w.strong_count() == 0)
        {
            map.remove(&self.key);
        }
    }
}

/// Keeps one registrar target pinged while held. The registrations toward
/// one target share one holder, so a guard is a pointer: it lives in every
/// registered connection's driver.
pub struct KeepaliveGuard(Arc<Held>);

impl std::fmt::Debug for KeepaliveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeepaliveGuard({} -> {})", self.0.key.0, self.0.key.1)
    }
}

impl KeepaliveGuard {
    /// The registrar it keeps reachable.
    pub fn remote(&self) -> SocketAddr {
        self.0.key.1
    }
}

impl UdpKeepalive {
    /// `interval`: `None` (or zero) sends nothing.
    pub fn new(interval: Option<Duration>) -> UdpKeepalive {
        UdpKeepalive {
            targets: Arc::default(),
            interval: interval.filter(|d| !d.is_zero()),
        }
    }

    /// Pings `remote` from `socket` (bound to `local`) until the guard,
    /// and every other guard of the same pair, drops.
    pub fn hold(
        &self,
        socket: &Arc<UdpSocket>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<KeepaliveGuard> {
        self.interval?;
        let key = (local, remote);
        let mut map = self.targets.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get(&key).and_then(|(_, w)| w.upgrade()) {
            return Some(KeepaliveGuard(held));
        }
        let held = Arc::new(Held {
            targets: self.targets.clone(),
            key,
        });
        map.insert(key, (socket.clone(), Arc::downgrade(&held)));
        Some(KeepaliveGuard(held))
    }

    /// Registrar targets pinged now.
    pub fn len(&self) -> usize {
        self.targets.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the rounds until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let Some(interval) = self.interval else {
            return;
        };
        loop {
            let wait = interval.mul_f64(rand::random_range(0.8..=1.0));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let round: Vec<(Arc<UdpSocket>, SocketAddr)> = {
                let map = self.targets.map.lock().unwrap_or_else(|e| e.into_inner());
                map.iter().map(|((_, r), (s, _))| (s.clone(), *r)).collect()
            };
            for (socket, remote) in round {
                if let Err(e) = socket.send_to(PING, remote).await {
                    tracing::debug!(%remote, error = %e, "UDP keepalive not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_are_shared_and_released_with_their_last_holder() {
        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let local = s.local_addr().unwrap();
        let k = UdpKeepalive::new(Some(Duration::from_secs(25)));
        let r1: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let r2: SocketAddr = "127.0.0.3:5060".parse().unwrap();
        let a = k.hold(&s, local, r1);
        let b = k.hold(&s, local, r1);
        let c = k.hold(&s, local, r2);
        assert_eq!(k.len(), 2, "one entry per registrar, not per registration");
        drop(a);
        assert_eq!(k.len(), 2);
        drop(b);
        assert_eq!(k.len(), 1);
        drop(c);
        assert!(k.is_empty());
        assert!(UdpKeepalive::new(None).hold(&s, local, r1).is_none(), "off");
        assert!(
            UdpKeepalive::new(Some(Duration::ZERO))
                .hold(&s, local, r1)
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_target_gets_one_ping_per_round_from_its_socket() {
        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let local = s.local_addr().unwrap();
        let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let remote = registrar.local_addr().unwrap();
        let k = UdpKeepalive::new(Some(Duration::from_secs(25)));
        let _g1 = k.hold(&s, local, remote);
        let _g2 = k.hold(&s, local, remote);
        let cancel = CancellationToken::new();
        tokio::spawn(k.clone().run(cancel.clone()));
        let mut buf = [0u8; 16];
        for _ in 0..2 {
            let (n, from) = registrar.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (PING, local));
        }
        cancel.cancel();
    }
}
