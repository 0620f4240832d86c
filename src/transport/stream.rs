//! TCP and TLS flows, driving the flow policy of `limits.rs`: framing by
//! Content-Length (RFC 3261 §18.3), CRLFCRLF pings answered with CRLF and
//! sent on our own flows when idle (RFC 5626 §4.4.1), inbound flows bounded
//! in number and time, closure reported to every user of the flow.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use tokio::time::Instant;

use super::limits::{CloseReason, Due, FlowClock, Received, Role};
use super::{Admitted, CONNECT_TIMEOUT, Error, Inbound, Transports};
use crate::config::Transport;
use crate::lograte::{self, Kind};
use crate::metrics;
use crate::sip::framing::{Frame, FrameScanner, message_started};
use crate::sip::{Message, bad_request_response};

/// Messages queued towards one flow before senders wait.
const FLOW_QUEUE: usize = 256;
/// A write that makes no progress for this long closes the flow.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The TLS close_notify (or TCP FIN) gets this long.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The read buffer reserved per flow up front (it grows for longer messages).
const READ_BUFFER: usize = 4096;

static NEXT_FLOW_ID: AtomicU64 = AtomicU64::new(1);

/// A TCP or TLS connection, shared by everything that talks to its remote.
#[derive(Clone)]
pub struct Flow {
    inner: Arc<FlowInner>,
}

struct FlowInner {
    id: u64,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    closed: CancellationToken,
    /// We connected it (a registration's flow), rather than accepted it.
    outbound: bool,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Flow#{}({} {} -> {})",
            self.inner.id, self.inner.transport, self.inner.local, self.inner.remote
        )
    }
}

impl Flow {
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether we opened this flow (registrations live only on those).
    pub fn is_outbound(&self) -> bool {
        self.inner.outbound
    }

    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    pub fn remote(&self) -> SocketAddr {
        self.inner.remote
    }

    pub fn local(&self) -> SocketAddr {
        self.inner.local
    }

    /// Handles on this flow alive now (this one included).
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves when the flow has closed.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Closes the flow (both tasks end, users are told).
    pub fn close(&self) {
        self.inner.closed.cancel()
    }

    /// Queues bytes without waiting; false when the flow is closed or full.
    pub fn try_send(&self, bytes: Bytes) -> bool {
        !self.is_closed() && self.inner.tx.try_send(bytes).is_ok()
    }

    /// Queues bytes for the writer task.
    pub async fn send(&self, bytes: Bytes) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::FlowClosed(self.inner.remote));
        }
        self.inner
            .tx
            .send(bytes)
            .await
            .map_err(|_| Error::FlowClosed(self.inner.remote))
    }
}

pub(super) async fn connect(
    t: &Transports,
    transport: Transport,
    remote: SocketAddr,
    server_name: &str,
) -> Result<Flow, Error> {
    let source = t.source_ip(transport, remote);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect_from(source, remote)).await {
        Err(_) => return Err(Error::ConnectTimeout { transport, remote }),
        Ok(Err(source)) => {
            return Err(Error::Connect {
                transport,
                remote,
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().map_err(|source| Error::Connect {
        transport,
        remote,
        source,
    })?;
    let flow = match transport {
        Transport::Tls => {
            let handshake = t.tls_client().connect(server_name, tcp);
            let tls = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Err(_) => return Err(Error::ConnectTimeout { transport, remote }),
                Ok(r) => r?,
            };
            start(t, tls, transport, remote, local, None)
        }
        _ => start(t, tcp, transport, remote, local, None),
    };
    tracing::debug!(?flow, "flow connected");
    Ok(flow)
}

/// Connects from `source` (the listener's address, so that what the peer
/// sees matches our Via and Contact) or from wherever the kernel picks.
async fn connect_from(source: Option<IpAddr>, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(remote).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(remote).await
}

/// Accepts TCP (or TLS, with `tls`) connections on `listener`. Each is
/// counted against `limits.inbound_flows` and `limits.inbound_flows_per_ip`
/// and closed at once beyond them; a TLS handshake needs one of the
/// `limits.tls_handshakes` slots and must finish within
/// `limits.header_timeout_sec`.
pub(super) async fn accept_loop(
    t: Transports,
    listener: Arc<TcpListener>,
    tls: Option<TlsAcceptor>,
) {
    let cancel = t.cancel_token().clone();
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, %transport, "accept failed");
                    // EMFILE and friends: pause so we do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admitted = match t.admit(remote.ip()) {
            Ok(a) => a,
            Err(why) => {
                metrics::flow_closed(why.label());
                if let Some(suppressed) = lograte::allow(Kind::FlowRefused) {
                    tracing::warn!(%remote, %transport, limit = why.label(), suppressed, "inbound flow refused");
                }
                // Dropped unread: the remote sees the connection closed.
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let Some(acceptor) = tls.clone() else {
            let flow = start(&t, tcp, transport, remote, local, Some(admitted));
            t.adopt_flow(&flow);
            continue;
        };
        // Each handshake costs a signature: only so many at once.
        let Ok(permit) = t.handshake_slots().try_acquire_owned() else {
            metrics::flow_closed("tls_handshakes");
            if let Some(suppressed) = lograte::allow(Kind::FlowRefused) {
                tracing::warn!(%remote, limit = "tls_handshakes", suppressed, "inbound flow refused");
            }
            continue;
        };
        let t = t.clone();
        tokio::spawn(async move {
            let deadline = t.timeouts().message;
            let accepted = tokio::time::timeout(deadline, acceptor.accept(tcp)).await;
            drop(permit);
            match accepted {
                Ok(Ok(s)) => {
                    let flow = start(&t, s, transport, remote, local, Some(admitted));
                    t.adopt_flow(&flow);
                }
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "inbound TLS handshake failed");
                    metrics::transport_error(transport.uri_param());
                }
                Err(_) => {
                    tracing::debug!(%remote, "inbound TLS handshake timed out");
                    metrics::flow_closed(CloseReason::MessageTimeout.label());
                }
            }
        });
    }
}

/// Spawns the reader and writer tasks of a connected stream. `admitted`
/// (inbound flows) is its slot in the flow count, given back when the
/// reader ends.
fn start<S>(
    t: &Transports,
    stream: S,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    admitted: Option<Admitted>,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    let closed = t.cancel_token().child_token();
    let outbound = admitted.is_none();
    let flow = Flow {
        inner: Arc::new(FlowInner {
            id: NEXT_FLOW_ID.fetch_add(1, Ordering::Relaxed),
            transport,
            remote,
            local,
            tx,
            closed,
            outbound,
        }),
    };
    let (reader, writer) = tokio::io::split(stream);
    tokio::spawn(write_loop(writer, rx, flow.inner.closed.clone()));
    let ended = FlowEnded {
        t: t.clone(),
        flow: flow.clone(),
        _admitted: admitted,
    };
    tokio::spawn(read_loop(reader, ended));
    flow
}

/// Held by a flow's reader: however it ends, a panic included, the flow is
/// closed (the writer and every user are told), taken out of the flow map,
/// and its slot in the inbound count given back.
struct FlowEnded {
    t: Transports,
    flow: Flow,
    _admitted: Option<Admitted>,
}

impl Drop for FlowEnded {
    fn drop(&mut self) {
        self.flow.close();
        self.t.forget_flow(&self.flow);
        tracing::debug!(flow = ?self.flow, "flow closed");
    }
}

/// Cancels the flow when the writer ends, a panic included.
struct CloseOnDrop(CancellationToken);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Bytes>,
    closed: CancellationToken,
) {
    let close = CloseOnDrop(closed);
    loop {
        let next = tokio::select! {
            _ = close.0.cancelled() => break,
            m = rx.recv() => m,
        };
        let Some(bytes) = next else { break };
        // A peer that stops reading must not hold the flow forever.
        match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "flow write failed");
                break;
            }
            Err(_) => {
                tracing::warn!("flow write timed out; closing the flow");
                break;
            }
        }
    }
    close.0.cancel();
    // TLS sends close_notify here: bounded, the peer may not be reading.
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, w.shutdown()).await;
}

/// Reads and frames the stream, hands each message on, and keeps the
/// flow's deadlines ([`FlowClock`]): pings on our own flows, idle and
/// message timeouts, a missing pong.
async fn read_loop<R: AsyncRead + Unpin>(mut r: R, ended: FlowEnded) {
    let t = &ended.t;
    let flow = &ended.flow;
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let (role, mut scanner) = if flow.is_outbound() {
        (Role::Outbound, FrameScanner::new())
    } else {
        // We never ping a flow a remote opened, so no pong comes on it.
        (Role::Inbound, FrameScanner::without_pongs())
    };
    let mut clock = FlowClock::new(role, t.timeouts(), Instant::now());
    'outer: loop {
        let n = tokio::select! {
            _ = flow.closed() => break,
            _ = tokio::time::sleep_until(clock.deadline()) => {
                let now = Instant::now();
                match clock.due(now) {
                    Due::Nothing => {}
                    Due::Ping => {
                        // RFC 5626 §4.4.1: CRLFCRLF, answered by CRLF. A full
                        // queue has bytes to send already; counted as the ping
                        // either way, so the deadline moves on.
                        let _ = flow.inner.tx.try_send(Bytes::from_static(b"\r\n\r\n"));
                        clock.pinged(now);
                    }
                    Due::IdleCheck if t.flow_in_use(flow) => clock.in_use(now),
                    Due::IdleCheck => {
                        tracing::debug!(?flow, "idle inbound flow closed");
                        metrics::flow_closed(CloseReason::Idle.label());
                        break;
                    }
                    Due::Close(why) => {
                        tracing::debug!(?flow, reason = why.label(), "flow closed by its deadline");
                        metrics::flow_closed(why.label());
                        break;
                    }
                }
                continue;
            }
            n = r.read_buf(&mut buf) => n,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut rx = Received::default();
        loop {
            let frame = scanner.next(&buf);
            match &frame {
                Frame::Incomplete => break,
                Frame::Ping => {
                    let _ = flow.inner.tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Frame::Pong => rx.pongs += 1,
                Frame::Invalid(err) => {
                    // The byte stream cannot be re-synchronised: close it.
                    if let Some(suppressed) = lograte::allow(Kind::Unframeable) {
                        tracing::warn!(?flow, error = %err, suppressed, "unframeable data on flow, closing");
                    }
                    break 'outer;
                }
                Frame::Message(len) => {
                    let frame = buf.split_to(*len).freeze();
                    rx.frames += 1;
                    deliver(t, flow, frame);
                    continue;
                }
            }
            rx.frames += 1;
            buf.advance(frame.len());
        }
        rx.mid_message = message_started(&buf);
        clock.received(Instant::now(), rx);
    }
}

/// Parses one framed message and hands it to the transaction layer (a
/// malformed one gets a 400 when it can be answered, §8.2.2).
fn deliver(t: &Transports, flow: &Flow, frame: Bytes) {
    super::trace::message(
        super::trace::Dir::In,
        flow.transport(),
        flow.local(),
        flow.remote(),
        &frame,
    );
    match Message::parse_stream(frame.clone()) {
        Ok(msg) => t.handler().handle(Inbound {
            msg,
            source: flow.remote(),
            transport: flow.transport(),
            flow: Some(flow.clone()),
            local: flow.local(),
            // A stream pushes back on its sender instead of dropping.
            overloaded: false,
        }),
        Err(err) => {
            if let Some(suppressed) = lograte::allow(Kind::Malformed) {
                tracing::warn!(?flow, error = %err, suppressed, "dropping malformed SIP message");
            }
            // A 400 or 505: an error answer, under the layer's rules.
            if let Some(resp) = bad_request_response(&frame, &err)
                && t.handler()
                    .allow_reply(flow.remote().ip(), 400, frame.len(), resp.len())
            {
                super::trace::message(
                    super::trace::Dir::Out,
                    flow.transport(),
                    flow.local(),
                    flow.remote(),
                    &resp,
                );
                let _ = flow.inner.tx.try_send(Bytes::from(resp));
            }
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
