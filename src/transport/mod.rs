//! SIP transports (RFC 3261 §18): one UDP socket per listen address shared by
//! every connection, one TCP/TLS flow per remote reused by everyone, stream
//! framing by Content-Length, CRLF keepalive (RFC 5626 §4.4.1), inbound
//! flows bounded by `[limits]`, listener loops restarted if they stop.
//!
//! Inbound messages are parsed here and handed to an [`InboundHandler`]
//! (the transaction layer) without an intermediate queue or global lock.

mod icmp;
pub mod keepalive;
pub mod limits;
pub mod overload;
mod stream;
mod supervise;
pub mod tls;
pub mod trace;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Transport};
use crate::metrics::{self, Direction};
use crate::sip::Message;

pub use icmp::Watch as UnreachableWatch;
pub use stream::Flow;

/// Idle time after which a flow we opened sends a CRLFCRLF ping.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Connect (and TLS handshake) deadline for outgoing flows.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {transport} listener on {addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("no {0} listener configured in sip.listen")]
    NoListener(Transport),
    #[error("connect to {remote} over {transport} failed: {source}")]
    Connect {
        transport: Transport,
        remote: SocketAddr,
        source: io::Error,
    },
    #[error("connect to {remote} over {transport} timed out")]
    ConnectTimeout {
        transport: Transport,
        remote: SocketAddr,
    },
    #[error("TLS handshake with {remote} failed: {source}")]
    Handshake {
        remote: SocketAddr,
        source: io::Error,
    },
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("send to {remote} failed: {source}")]
    Send {
        remote: SocketAddr,
        source: io::Error,
    },
    #[error("flow to {0} is closed")]
    FlowClosed(SocketAddr),
    #[error("{0} is unreachable (ICMP)")]
    Unreachable(SocketAddr),
    #[error("cannot start the UDP receive threads: {0}")]
    Threads(io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A message received from the network.
#[derive(Debug)]
pub struct Inbound {
    pub msg: Message,
    pub source: SocketAddr,
    pub transport: Transport,
    /// The flow it arrived on (TCP/TLS); responses go back over it.
    pub flow: Option<Flow>,
    /// The local address it arrived at.
    pub local: SocketAddr,
    /// Its socket's receive queue is overloaded ([`overload`]): a new
    /// request is to be refused with 503.
    pub overloaded: bool,
}

/// Where the responses to a request go (§18.2.2, RFC 3581): back over its
/// flow, else to the source address (the Via's port when the client did
/// not ask for rport) from the local address it arrived at.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    pub flow: Option<Flow>,
    pub dest: SocketAddr,
    pub local: SocketAddr,
}

impl Inbound {
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            flow: self.flow.clone(),
            // Over a flow the destination is never used: no Via to read.
            dest: if self.flow.is_some() {
                self.source
            } else {
                self.reply_dest()
            },
            local: self.local,
        }
    }

    /// The UDP destination of responses: the source address, with the Via's
    /// port when the client did not ask for rport (§18.2.2, RFC 3581 §4).
    fn reply_dest(&self) -> SocketAddr {
        match self.msg.top_via() {
            Ok(via) if via.rport().is_none() => SocketAddr::new(
                self.source.ip(),
                via.port.unwrap_or(Transport::Udp.default_port()),
            ),
            _ => self.source,
        }
    }
}

/// Tells the transport whether something above it still needs a flow
/// (an idle inbound flow is closed only when nothing does).
pub trait FlowUsers: Send + Sync + 'static {
    /// Whether a registration lives on flow `flow` (its [`Flow::id`]).
    fn uses_flow(&self, flow: u64) -> bool;
}

/// Receives every parsed inbound message. Must not block: it runs on the
/// receive loop of a socket.
pub trait InboundHandler: Send + Sync + 'static {
    fn handle(&self, inbound: Inbound);
    /// Whether the transport may send its own answer (`code`, e.g. the 400
    /// to an unparsable request) of `response_len` bytes to `source`, which
    /// sent `request_len` (the layer above applies the amplification and
    /// rate rules).
    fn allow_reply(
        &self,
        _source: std::net::IpAddr,
        _code: u16,
        _request_len: usize,
        _response_len: usize,
    ) -> bool {
        true
    }
}

/// Where one request goes: the socket or flow, and its address.
#[derive(Debug, Clone)]
pub enum Hop {
    Udp {
        socket: Arc<UdpSocket>,
        /// The socket's bound address (read once at bind, not per message).
        local: SocketAddr,
        remote: SocketAddr,
    },
    Stream(Flow),
}

impl Hop {
    pub fn transport(&self) -> Transport {
        match self {
            Hop::Udp { .. } => Transport::Udp,
            Hop::Stream(f) => f.transport(),
        }
    }

    /// Retransmissions are needed only on unreliable transports (§17.1.1).
    pub fn reliable(&self) -> bool {
        !matches!(self, Hop::Udp { .. })
    }

    pub fn remote(&self) -> SocketAddr {
        match self {
            Hop::Udp { remote, .. } => *remote,
            Hop::Stream(f) => f.remote(),
        }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            Hop::Udp { local, .. } => *local,
            Hop::Stream(f) => f.local(),
        }
    }

    pub async fn send(&self, bytes: Bytes) -> Result<(), Error> {
        metrics::sip_message(Direction::Out, &bytes);
        trace::message(
            trace::Dir::Out,
            self.transport(),
            self.local(),
            self.remote(),
            &bytes,
        );
        let sent = match self {
            // A datagram socket is nearly always writable: try at once and
            // wait (boxed) only when the buffer is full. Awaiting send_to
            // inline put a 408-byte future into every caller's state (each
            // REGISTER job, each proxied call held for 64·T1).
            Hop::Udp { socket, remote, .. } => match socket.try_send_to(&bytes, *remote) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    Box::pin(socket.send_to(&bytes, remote)).await
                }
                r => r,
            }
            .map(|_| ())
            .map_err(|source| Error::Send {
                remote: *remote,
                source,
            }),
            Hop::Stream(flow) => flow.send(bytes).await,
        };
        if sent.is_err() {
            metrics::transport_error(self.transport().uri_param());
        }
        sent
    }
}

/// The flow to one remote, if any; its async lock serialises connects.
type FlowSlot = Arc<tokio::sync::Mutex<Option<Flow>>>;

/// Cheap-clone handle on every socket and flow of the daemon.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

struct Inner {
    /// UDP sockets with their bound addresses.
    udp: Vec<udp::Bound>,
    tcp_listen: Option<SocketAddr>,
    tls_listen: Option<SocketAddr>,
    /// One slot per (transport, remote); the async mutex inside a slot
    /// serialises connects to that remote only.
    flows: Mutex<HashMap<(Transport, SocketAddr), FlowSlot>>,
    tls_client: tls::ClientTls,
    handler: Arc<dyn InboundHandler>,
    cancel: CancellationToken,
    /// Transactions waiting on UDP destinations, told of ICMP errors.
    icmp: Arc<icmp::Watches>,
    /// Inbound flows open, in total and per source (`[limits]`).
    admission: Mutex<limits::Admission>,
    /// One permit per inbound TLS handshake in progress.
    handshakes: Arc<tokio::sync::Semaphore>,
    timeouts: limits::Timeouts,
    /// Who uses flows (the registrations), set once the layers above exist.
    flow_users: OnceLock<Arc<dyn FlowUsers>>,
    /// CRLF pings toward the UDP registrars in use.
    keepalive: keepalive::UdpKeepalive,
    /// The receive threads' runtimes.
    receive_runtimes: Vec<tokio::runtime::Handle>,
}

/// An inbound flow's slot in [`limits::Admission`], given back on drop.
pub(crate) struct Admitted {
    t: Transports,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut a = self
            .t
            .inner
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        a.release(self.ip);
    }
}

impl Transports {
    /// Binds every `sip.listen` address and starts the receive loops.
    pub async fn bind(
        config: &Config,
        handler: Arc<dyn InboundHandler>,
        cancel: CancellationToken,
    ) -> Result<Transports, Error> {
        let tls_client = tls::ClientTls::new(&config.tls)?;
        if let Some(collector) = config.trace.hep {
            trace::export_hep(collector, config.trace.hep_capture_id).map_err(|source| {
                Error::Bind {
                    transport: Transport::Udp,
                    addr: collector,
                    source,
                }
            })?;
        }
        let threads = udp::receive_threads();
        let mut udp_groups = Vec::new();
        let mut tcp_listeners = Vec::new();
        let mut tls_listeners = Vec::new();
        for l in &config.sip.listen {
            let bind_err = |source| Error::Bind {
                transport: l.transport,
                addr: l.addr,
                source,
            };
            match l.transport {
                Transport::Udp => {
                    let group = udp::bind_group(l.addr, threads).map_err(bind_err)?;
                    let local = group[0].local_addr().map_err(bind_err)?;
                    udp_groups.push((local, group));
                }
                Transport::Tcp => tcp_listeners.push(
                    tokio::net::TcpListener::bind(l.addr)
                        .await
                        .map_err(bind_err)?,
                ),
                Transport::Tls => tls_listeners.push(
                    tokio::net::TcpListener::bind(l.addr)
                        .await
                        .map_err(bind_err)?,
                ),
            }
        }
        let (udp, receivers) = udp::receivers(udp_groups, threads)?;
        let receive_runtimes = receivers.iter().filter_map(|r| r.handle()).collect();
        let acceptor = if tls_listeners.is_empty() {
            None
        } else {
            Some(tls::server_acceptor(&config.tls)?)
        };
        let inner = Arc::new(Inner {
            tcp_listen: tcp_listeners.first().and_then(|l| l.local_addr().ok()),
            tls_listen: tls_listeners.first().and_then(|l| l.local_addr().ok()),
            udp,
            flows: Mutex::new(HashMap::new()),
            tls_client,
            handler,
            cancel,
            icmp: Arc::default(),
            admission: Mutex::new(limits::Admission::new(
                config.limits.inbound_flows,
                config.limits.inbound_flows_per_ip,
            )),
            handshakes: Arc::new(tokio::sync::Semaphore::new(config.limits.tls_handshakes)),
            timeouts: limits::Timeouts::from_limits(&config.limits, KEEPALIVE_IDLE),
            flow_users: OnceLock::new(),
            keepalive: keepalive::UdpKeepalive::new(Some(Duration::from_secs(
                config.registration.udp_keepalive_sec,
            ))),
            receive_runtimes,
        });
        tokio::spawn(inner.keepalive.clone().run(inner.cancel.child_token()));
        let this = Transports { inner };
        for (k, r) in receivers.into_iter().enumerate() {
            let t = this.clone();
            std::thread::Builder::new()
                .name(format!("uacd-udp-{k}"))
                .spawn(move || r.run(t))
                .map_err(|e| {
                    // The threads already started end with the start-up.
                    this.inner.cancel.cancel();
                    Error::Threads(e)
                })?;
        }
        for (l, tls) in tcp_listeners
            .into_iter()
            .map(|l| (l, None))
            .chain(tls_listeners.into_iter().map(|l| (l, acceptor.clone())))
        {
            let transport = if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            };
            let Ok(local) = l.local_addr() else { continue };
            let (t, l) = (this.clone(), Arc::new(l));
            supervise::run(&this.inner.cancel, transport, local, move || {
                stream::accept_loop(t.clone(), l.clone(), tls.clone())
            });
        }
        Ok(this)
    }

    /// Sets who uses flows (once; later calls are ignored).
    pub fn set_flow_users(&self, users: Arc<dyn FlowUsers>) {
        let _ = self.inner.flow_users.set(users);
    }

    /// Whether something above the transport still needs `flow`: a
    /// registration lives on it, or a handle on it is held beyond the
    /// reader's and the flow map's (a transaction waiting to answer over it,
    /// a call relaying its responses, a dialog).
    pub(crate) fn flow_in_use(&self, flow: &Flow) -> bool {
        let in_map = {
            let flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
            match flows.get(&(flow.transport(), flow.remote())) {
                None => Some(false),
                Some(slot) => slot
                    .try_lock()
                    .ok()
                    .map(|g| g.as_ref().is_some_and(|f| f.id() == flow.id())),
            }
        };
        // A slot being connected to cannot be read: keep the flow for now.
        let Some(in_map) = in_map else { return true };
        flow.handles() > 1 + usize::from(in_map)
            || self
                .inner
                .flow_users
                .get()
                .is_some_and(|u| u.uses_flow(flow.id()))
    }

    /// Counts an inbound flow from `ip`, or says which limit refuses it.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admitted, limits::Refusal> {
        let mut a = self
            .inner
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        a.admit(ip)?;
        Ok(Admitted {
            t: self.clone(),
            ip,
        })
    }

    /// Inbound TCP/TLS flows open now (handshakes in progress included).
    pub fn inbound_flows(&self) -> usize {
        let a = self
            .inner
            .admission
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        a.total()
    }

    pub(crate) fn handshake_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.inner.handshakes.clone()
    }

    pub(crate) fn timeouts(&self) -> limits::Timeouts {
        self.inner.timeouts
    }

    /// `tx` gets `dest` when an ICMP "unreachable" comes back for a UDP
    /// datagram sent there, until the watch is dropped (RFC 3261 §18.4).
    pub fn watch_unreachable(
        &self,
        dest: SocketAddr,
        tx: tokio::sync::mpsc::Sender<SocketAddr>,
    ) -> UnreachableWatch {
        self.inner.icmp.watch(dest, tx)
    }

    /// The receive loop of a UDP socket saw an error: read the ICMP errors
    /// queued on it and tell whoever waits on those destinations.
    pub(crate) fn udp_errors(&self, socket: &UdpSocket) {
        for dest in icmp::drain(socket) {
            let told = self.inner.icmp.fire(dest);
            tracing::debug!(%dest, transactions = told, "ICMP unreachable");
        }
    }

    pub(crate) fn handler(&self) -> &Arc<dyn InboundHandler> {
        &self.inner.handler
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// The receive threads' runtimes (none without a UDP listener).
    pub fn receive_runtimes(&self) -> &[tokio::runtime::Handle] {
        &self.inner.receive_runtimes
    }

    /// The local listener address for a transport, if any.
    pub fn listen_addr(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.inner.udp.first().map(|(_, local)| *local),
            Transport::Tcp => self.inner.tcp_listen,
            Transport::Tls => self.inner.tls_listen,
        }
    }

    /// Every bound listener (ports as bound, not as configured: `:0` works).
    pub fn listen_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let mut v: Vec<(Transport, SocketAddr)> = self
            .inner
            .udp
            .iter()
            .map(|(_, local)| (Transport::Udp, *local))
            .collect();
        v.extend(self.inner.tcp_listen.map(|a| (Transport::Tcp, a)));
        v.extend(self.inner.tls_listen.map(|a| (Transport::Tls, a)));
        v
    }

    /// The specific IP our `transport` listener is bound to (TCP's for TLS
    /// when there is no TLS listener), when it matches `remote`'s family;
    /// outgoing flows are bound to it.
    pub fn source_ip(&self, transport: Transport, remote: SocketAddr) -> Option<IpAddr> {
        let listen = self
            .listen_addr(transport)
            .or_else(|| self.listen_addr(Transport::Tcp))?;
        let ip = listen.ip();
        (!ip.is_unspecified()
            && ip.is_ipv4() == remote.is_ipv4()
            && ip.is_loopback() == remote.ip().is_loopback())
        .then_some(ip)
    }

    /// The UDP socket to use towards `remote`: same address family, and
    /// one whose address can reach it (a loopback-bound socket only for a
    /// loopback remote), preferring a specific address over a wildcard.
    /// Keeps the NAT binding of a UDP hop to a registrar open while the
    /// guard is held ([`keepalive`]); `None` for streams (their flows have
    /// their own pings) or when `registration.udp_keepalive_sec` is 0.
    pub fn keep_udp_alive(&self, hop: &Hop) -> Option<keepalive::KeepaliveGuard> {
        match hop {
            Hop::Udp {
                socket,
                local,
                remote,
            } => self.inner.keepalive.hold(socket, *local, *remote),
            Hop::Stream(_) => None,
        }
    }

    fn udp_socket_for(&self, remote: SocketAddr) -> Option<(Arc<UdpSocket>, SocketAddr)> {
        let rank = |local: &SocketAddr| -> Option<u8> {
            let ip = local.ip();
            if ip.is_ipv4() != remote.is_ipv4() {
                return None;
            }
            if ip.is_unspecified() {
                Some(1)
            } else if ip.is_loopback() == remote.ip().is_loopback() {
                Some(0)
            } else {
                None
            }
        };
        self.inner
            .udp
            .iter()
            .filter_map(|(s, local)| rank(local).map(|r| (r, s, local)))
            .min_by_key(|(r, _, _)| *r)
            .map(|(_, s, local)| (s.clone(), *local))
    }

    /// Gets the hop towards `remote`: the shared UDP socket, or the existing
    /// TCP/TLS flow (connecting one if there is none). `server_name` is the
    /// name a TLS server certificate must match (RFC 5922 §7).
    pub async fn hop(
        &self,
        transport: Transport,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<Hop, Error> {
        match transport {
            Transport::Udp => {
                let (socket, local) = self
                    .udp_socket_for(remote)
                    .ok_or(Error::NoListener(Transport::Udp))?;
                Ok(Hop::Udp {
                    socket,
                    local,
                    remote,
                })
            }
            Transport::Tcp | Transport::Tls => {
                let slot = {
                    let mut flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
                    flows.entry((transport, remote)).or_default().clone()
                };
                let mut guard = slot.lock().await;
                if let Some(flow) = guard.as_ref().filter(|f| !f.is_closed()) {
                    return Ok(Hop::Stream(flow.clone()));
                }
                // Boxed: the connect future (TCP + TLS handshake state,
                // ~1.5 KiB) would otherwise be part of every caller's
                // future, UDP ones included.
                match Box::pin(stream::connect(self, transport, remote, server_name)).await {
                    Ok(flow) => {
                        *guard = Some(flow.clone());
                        Ok(Hop::Stream(flow))
                    }
                    Err(e) => {
                        drop(guard);
                        metrics::transport_error(transport.uri_param());
                        let mut flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
                        if flows.get(&(transport, remote)).is_some_and(|s| {
                            Arc::ptr_eq(s, &slot) && s.try_lock().is_ok_and(|g| g.is_none())
                        }) {
                            flows.remove(&(transport, remote));
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// Sends a response to an inbound request without waiting: over its
    /// flow, or by UDP to the address RFC 3261 §18.2.2 and RFC 3581 §4 give
    /// (source IP; source port when the Via has `rport`, else its sent-by
    /// port). A full socket buffer drops it, as a lost datagram would.
    pub fn reply(&self, to: &Inbound, bytes: Bytes) {
        self.send_reply(to.flow.as_ref(), || to.reply_dest(), to.local, bytes);
    }

    /// Sends a response to where [`Inbound::reply_to`] said (a call task
    /// keeps that instead of the whole request).
    pub fn reply_to(&self, to: &ReplyTo, bytes: Bytes) {
        self.send_reply(to.flow.as_ref(), || to.dest, to.local, bytes);
    }

    /// Over `flow` when there is one, else over UDP to `dest()` from `local`.
    fn send_reply(
        &self,
        flow: Option<&Flow>,
        dest: impl FnOnce() -> SocketAddr,
        local: SocketAddr,
        bytes: Bytes,
    ) {
        metrics::sip_message(Direction::Out, &bytes);
        if let Some(flow) = flow {
            trace::message(
                trace::Dir::Out,
                flow.transport(),
                flow.local(),
                flow.remote(),
                &bytes,
            );
            if !flow.try_send(bytes) {
                tracing::debug!(?flow, "response dropped: flow closed or congested");
            }
            return;
        }
        let dest = dest();
        let socket = self
            .inner
            .udp
            .iter()
            .find(|(_, l)| *l == local)
            .map(|(s, _)| s.clone())
            .or_else(|| self.udp_socket_for(dest).map(|(s, _)| s));
        trace::message(trace::Dir::Out, Transport::Udp, local, dest, &bytes);
        if let Some(s) = socket
            && let Err(e) = s.try_send_to(&bytes, dest)
        {
            tracing::debug!(%dest, error = %e, "response not sent");
        }
    }

    /// The open TCP/TLS flow to or from `remote`, if there is one; never
    /// connects (a peer's ephemeral port takes no new connection).
    pub fn open_flow(&self, transport: Transport, remote: SocketAddr) -> Option<Hop> {
        let slot = self
            .inner
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(transport, remote))
            .cloned()?;
        let guard = slot.try_lock().ok()?;
        guard
            .as_ref()
            .filter(|f| !f.is_closed())
            .map(|f| Hop::Stream(f.clone()))
    }

    /// Records a flow accepted from a remote so that our requests and
    /// responses to that remote reuse it.
    pub(crate) fn adopt_flow(&self, flow: &Flow) {
        let mut flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
        let slot = flows.entry((flow.transport(), flow.remote())).or_default();
        if let Ok(mut g) = slot.try_lock()
            && g.as_ref().is_none_or(|f| f.is_closed())
        {
            *g = Some(flow.clone());
        }
    }

    /// Forgets a closed flow.
    pub(crate) fn forget_flow(&self, flow: &Flow) {
        let mut flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
        let key = (flow.transport(), flow.remote());
        let stale = flows
            .get(&key)
            .and_then(|slot| {
                slot.try_lock()
                    .ok()
                    .map(|g| g.as_ref().map(|f| f.id()) == Some(flow.id()))
            })
            .unwrap_or(false);
        if stale {
            flows.remove(&key);
        }
    }

    pub(crate) fn tls_client(&self) -> &tls::ClientTls {
        &self.inner.tls_client
    }

    /// Number of open stream flows (for tests and metrics).
    pub fn flow_count(&self) -> usize {
        let flows = self.inner.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .values()
            .filter(|slot| {
                slot.try_lock()
                    .map(|g| g.as_ref().map(|f| !f.is_closed()).unwrap_or(false))
                    .unwrap_or(true)
            })
            .count()
    }
}
