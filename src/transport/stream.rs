//! TCP and TLS flows (RFC 3261 §18.3): framing by Content-Length, CRLFCRLF
//! ping answered with CRLF and sent when idle (RFC 5626 §3.5.1), closure
//! reported to every user of the flow.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::udp::RateLimited;
use super::{CONNECT_TIMEOUT, Error, Inbound, KEEPALIVE_IDLE, Transports};
use crate::config::Transport;
use crate::sip::framing::{Frame, next_frame};
use crate::sip::{Message, bad_request_response};

/// Messages queued towards one flow before senders wait.
const FLOW_QUEUE: usize = 256;
/// A write that makes no progress for this long closes the flow.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
            start(t, tls, transport, remote, local, true)
        }
        _ => start(t, tcp, transport, remote, local, true),
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

pub(super) async fn accept_loop(t: Transports, listener: TcpListener, tls: Option<TlsAcceptor>) {
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
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let t = t.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let flow = match tls {
                None => start(&t, tcp, transport, remote, local, false),
                Some(acceptor) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => start(&t, s, transport, remote, local, false),
                        Ok(Err(e)) => {
                            tracing::warn!(%remote, error = %e, "inbound TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%remote, "inbound TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            t.adopt_flow(&flow);
        });
    }
}

/// Spawns the reader and writer tasks of a connected stream.
fn start<S>(
    t: &Transports,
    stream: S,
    transport: Transport,
    remote: SocketAddr,
    local: SocketAddr,
    outbound: bool,
) -> Flow
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    let closed = t.cancel_token().child_token();
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
    tokio::spawn(read_loop(t.clone(), reader, flow.clone()));
    flow
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Bytes>,
    closed: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => break,
            m = rx.recv() => m,
            // Idle: CRLFCRLF ping keeps NAT bindings and lets the peer see
            // we are alive (RFC 5626 §3.5.1).
            _ = tokio::time::sleep(KEEPALIVE_IDLE) => Some(Bytes::from_static(b"\r\n\r\n")),
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
    closed.cancel();
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(t: Transports, mut r: R, flow: Flow) {
    let mut buf = BytesMut::with_capacity(8192);
    let mut warn = RateLimited::new(std::time::Duration::from_secs(5));
    'outer: loop {
        let n = tokio::select! {
            _ = flow.closed() => break,
            n = r.read_buf(&mut buf) => n,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match next_frame(&buf) {
                Frame::Incomplete => break,
                Frame::Ping => {
                    buf.advance(4);
                    let _ = flow.inner.tx.try_send(Bytes::from_static(b"\r\n"));
                }
                Frame::Pong => buf.advance(2),
                Frame::Invalid(err) => {
                    // The byte stream cannot be re-synchronised: close it.
                    tracing::warn!(?flow, error = %err, "unframeable data on flow, closing");
                    break 'outer;
                }
                Frame::Message(len) => {
                    let frame = buf.split_to(len).freeze();
                    match Message::parse_stream(frame.clone()) {
                        Ok(msg) => t.handler().handle(Inbound {
                            msg,
                            source: flow.remote(),
                            transport: flow.transport(),
                            flow: Some(flow.clone()),
                            local: flow.local(),
                        }),
                        Err(err) => {
                            if warn.allow() {
                                tracing::warn!(?flow, error = %err, suppressed = warn.take_suppressed(), "dropping malformed SIP message");
                            }
                            // A 400 or 505: an error answer, under the layer's rules.
                            if let Some(resp) = bad_request_response(&frame, &err)
                                && t.handler().allow_reply(
                                    flow.remote().ip(),
                                    400,
                                    frame.len(),
                                    resp.len(),
                                )
                            {
                                let _ = flow.inner.tx.try_send(Bytes::from(resp));
                            }
                        }
                    }
                }
            }
        }
    }
    flow.close();
    t.forget_flow(&flow);
    tracing::debug!(?flow, "flow closed");
}
