//! UDP receive loop (RFC 3261 §18.2.1): one per listen socket. Malformed
//! requests get a 400 when they can be answered (§8.2.2); keepalive
//! datagrams (CRLF, RFC 5626 §3.5.1 over UDP) are ignored.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Inbound, Transports};
use crate::config::Transport;
use crate::lograte::{self, Kind};
use crate::sip::{Message, bad_request_response};

pub(super) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

pub(super) async fn recv_loop(t: Transports, socket: Arc<UdpSocket>, local: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let cancel = t.cancel_token().clone();
    loop {
        let (n, source) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
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
