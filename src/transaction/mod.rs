//! RFC 3261 §17 transaction layer: client transactions keyed by branch and
//! CSeq method (§17.1.3) in a sharded table, retransmissions and timeouts
//! driven by the pure machines in `client`, and the server side for
//! requests addressed to the daemon itself.

pub mod client;
pub mod invite_client;
pub mod invite_server;
pub mod non_invite_server;
mod replies;
pub mod reply_gate;
mod server;

pub use replies::Peers;
pub use server::ALLOW;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sip::typed::Via;
use crate::sip::{Message, Method, response_to};
use crate::transport::{Hop, Inbound, InboundHandler, Transports};
use client::{Action, Event, NonInviteClient, Timer, Timers};

const SHARDS: usize = 64;

/// Why a client transaction ended without a final response.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Timer F (or B) fired: treated as 408 by the TU (§8.1.3.1).
    #[error("transaction timed out")]
    Timeout,
    /// The transport failed: treated as 503 by the TU (§8.1.3.1).
    #[error("transport error: {0}")]
    Transport(#[from] crate::transport::Error),
    #[error("flow closed during the transaction")]
    FlowClosed,
}

/// Responses travel boxed: a tokio mpsc channel allocates its first block of
/// 32 slots when it is created, and 32 inline `Message`s are ~9 KiB per
/// transaction (allocated, touched and freed for every REGISTER and call);
/// 32 boxes are 256 bytes.
type Slot = (Method, mpsc::Sender<Box<Message>>);

/// What the PBX sends within a server transaction the proxy holds
/// (RFC 3261 §17.2.3 matching by branch; ACK and CANCEL by the INVITE's).
#[derive(Debug)]
pub enum Upstream {
    /// The request again (UDP retransmission).
    Retransmission,
    /// ACK for our non-2xx final response (same branch as the INVITE).
    Ack,
    /// A CANCEL for the INVITE; the layer has already answered it 200 (§9.2).
    Cancel,
}

/// Takes every new request that no transaction matches (the router).
/// Must not block: it runs on a socket's receive loop.
pub trait RequestHandler: Send + Sync + 'static {
    fn on_request(&self, inbound: Inbound);
    /// A response no client transaction expects (a stateless proxy relays
    /// it by its Via, §16.11).
    fn on_stray_response(&self, inbound: Inbound) {
        tracing::debug!(source = %inbound.source, "stray response dropped (§18.1.2)");
    }
}

/// Server transaction key (RFC 3261 §17.2.3): the top Via's branch and
/// sent-by (host as written, any case, and port, the transport's default
/// when absent), and whether it is an INVITE (ACK and CANCEL match the
/// INVITE's transaction; the method they carry then tells them apart from
/// a retransmission). `None` without a branch: nothing to match.
fn server_key(via: &Via, invite: bool) -> Option<Box<str>> {
    let branch = via.branch()?;
    let port = via.port.unwrap_or(match via.transport.as_str() {
        t if t.eq_ignore_ascii_case("TLS") => 5061,
        _ => 5060,
    });
    let host = via.host.to_string().to_ascii_lowercase();
    let mut k = String::with_capacity(branch.len() + host.len() + 10);
    k.push(if invite { 'I' } else { 'N' });
    k.push(':');
    k.push_str(branch);
    k.push(' ');
    k.push_str(&host);
    k.push(':');
    k.push_str(&port.to_string());
    Some(k.into())
}

/// Cheap-clone handle on the transaction layer.
#[derive(Clone)]
pub struct Layer {
    inner: Arc<LayerInner>,
}

struct LayerInner {
    shards: Vec<Mutex<HashMap<Box<str>, Slot>>>,
    servers: Vec<Mutex<HashMap<Box<str>, mpsc::Sender<Upstream>>>>,
    router: OnceLock<Arc<dyn RequestHandler>>,
    hasher: std::collections::hash_map::RandomState,
    transports: OnceLock<Transports>,
    user_agent: String,
    /// Who gets the daemon's own answers ([`reply_gate`]).
    replies: replies::Replies,
}

impl Layer {
    pub fn new(user_agent: &str) -> Layer {
        Layer {
            inner: Arc::new(LayerInner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                servers: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                router: OnceLock::new(),
                hasher: Default::default(),
                transports: OnceLock::new(),
                user_agent: user_agent.to_owned(),
                replies: Default::default(),
            }),
        }
    }

    /// Completes the wiring once the transports are bound.
    pub fn attach(&self, transports: Transports) {
        let _ = self.inner.transports.set(transports);
    }

    /// Hands new requests to `router` (once; before, the daemon answers
    /// every request itself).
    pub fn set_router(&self, router: Arc<dyn RequestHandler>) {
        let _ = self.inner.router.set(router);
    }

    /// `sip.monitors` and `limits.error_replies_per_ip_per_sec` for the
    /// daemon's own answers (once, before traffic; defaults otherwise).
    pub fn configure_replies(&self, monitors: Vec<crate::config::Cidr>, per_sec: u32) {
        self.inner.replies.configure(monitors, per_sec);
    }

    /// Where the PBX addresses are known (once).
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        self.inner.replies.set_peers(peers);
    }

    /// Whether `ip` is a verified party: 127.0.0.1 or ::1, a `sip.monitors`
    /// block, or a PBX address.
    pub fn is_verified(&self, ip: std::net::IpAddr) -> bool {
        self.is_own_address(ip) || self.inner.replies.is_verified(ip)
    }

    /// One of the addresses we listen on (the watchdog probes us from there).
    fn is_own_address(&self, ip: std::net::IpAddr) -> bool {
        self.inner
            .transports
            .get()
            .is_some_and(|t| t.listen_addrs().iter().any(|(_, a)| a.ip() == ip))
    }

    /// Sends an answer the daemon built itself (status `code`) to
    /// `inbound`'s source, unless [`reply_gate`] says otherwise: to an
    /// unverified source, one larger than the request, an OPTIONS 2xx, or
    /// an error beyond the source's budget is dropped (debug log).
    pub fn send_own(&self, inbound: &Inbound, code: u16, bytes: Bytes) {
        let Some(t) = self.inner.transports.get() else {
            return;
        };
        let options = inbound.msg.method() == Some(&Method::Options);
        let verdict = self.inner.replies.judge(
            inbound.source.ip(),
            self.is_own_address(inbound.source.ip()),
            options,
            code,
            inbound.msg.wire_len(),
            bytes.len(),
        );
        if verdict == reply_gate::Verdict::Send {
            t.reply(inbound, bytes);
        }
    }

    pub fn transports(&self) -> Option<&Transports> {
        self.inner.transports.get()
    }

    pub fn user_agent(&self) -> &str {
        &self.inner.user_agent
    }

    fn server_shard(&self, key: &str) -> &Mutex<HashMap<Box<str>, mpsc::Sender<Upstream>>> {
        let h = self.inner.hasher.hash_one(key);
        &self.inner.servers[(h as usize) % SHARDS]
    }

    /// Holds a server transaction for the request with top Via `via`: its
    /// retransmissions (and, for an INVITE, its ACK and CANCEL) go to `tx`
    /// until the returned guard is dropped. `None` when `via` has no branch.
    pub fn hold_server(
        &self,
        via: &Via,
        invite: bool,
        tx: mpsc::Sender<Upstream>,
    ) -> Option<ServerGuard> {
        let key = server_key(via, invite)?;
        self.server_shard(&key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), tx.clone());
        Some(ServerGuard {
            layer: self.clone(),
            key,
            tx,
        })
    }

    /// Number of server transactions held.
    pub fn servers(&self) -> usize {
        self.inner
            .servers
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn server_for(&self, via: &Via, invite: bool) -> Option<mpsc::Sender<Upstream>> {
        let key = server_key(via, invite)?;
        self.server_shard(&key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
    }

    /// Requests: a retransmission, ACK or CANCEL of a held server
    /// transaction goes to its holder; anything else to the router (or the
    /// daemon's own answers when there is none).
    fn on_request(&self, inbound: Inbound) {
        if self.inner.transports.get().is_none() {
            return;
        }
        let matched = match (inbound.msg.method(), inbound.msg.top_via()) {
            (Some(method), Ok(via)) => {
                let (invite, what) = upstream_kind(method);
                self.server_for(&via, invite).map(|tx| (tx, what))
            }
            _ => None,
        };
        match matched {
            Some((tx, Upstream::Cancel)) => {
                // §9.2: the CANCEL gets its own 200 at once; the INVITE's
                // holder sends the 487.
                let ok = response_to(&inbound.msg, 200, "OK", None)
                    .header("Server", self.inner.user_agent.as_str())
                    .build();
                self.send_own(&inbound, 200, Bytes::from(ok));
                let _ = tx.try_send(Upstream::Cancel);
            }
            Some((tx, what)) => {
                let _ = tx.try_send(what);
            }
            None => match self.inner.router.get() {
                Some(router) => router.on_request(inbound),
                None => server::answer(self, inbound),
            },
        }
    }

    /// The daemon's own answer to a request nobody routes (OPTIONS 200,
    /// malformed 400, stray in-dialog 481, other methods 405/501).
    pub fn answer_locally(&self, inbound: Inbound) {
        server::answer(self, inbound);
    }

    fn shard(&self, branch: &str) -> &Mutex<HashMap<Box<str>, Slot>> {
        let h = self.inner.hasher.hash_one(branch);
        &self.inner.shards[(h as usize) % SHARDS]
    }

    /// Routes responses whose top Via has `branch` and whose CSeq method is
    /// `method` to `tx` until the guard is dropped. A CANCEL shares its
    /// INVITE's branch (§9.1) and has a slot of its own.
    pub fn hold_client(
        &self,
        branch: &str,
        method: Method,
        tx: mpsc::Sender<Box<Message>>,
    ) -> ClientGuard {
        let key = client_key(branch, &method);
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        shard.insert(key.clone(), (method, tx));
        ClientGuard {
            layer: self.clone(),
            key,
        }
    }

    /// Number of client transactions in flight.
    pub fn pending(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Runs one non-INVITE client transaction (§17.1.2): sends `request`
    /// over `hop`, retransmits on UDP, and returns the final response.
    /// `branch` must be the branch of the request's top Via.
    pub async fn request(
        &self,
        hop: &Hop,
        method: Method,
        branch: &str,
        request: Bytes,
        timers: Timers,
    ) -> Result<Message, TxError> {
        let (tx, mut rx) = mpsc::channel(4);
        let _registration = self.hold_client(branch, method, tx);
        // Over UDP, an ICMP "unreachable" for the destination is a transport
        // error (§18.4, §8.1.3.1): no need to wait for Timer F.
        let (icmp_tx, mut icmp_rx) = mpsc::channel(1);
        let _icmp = match (hop, self.inner.transports.get()) {
            (Hop::Udp { remote, .. }, Some(t)) => Some(t.watch_unreachable(*remote, icmp_tx)),
            _ => None,
        };
        let mut unreachable = None;
        // Timer F bounds the first send too (a stream whose queue is full).
        match tokio::time::timeout(timers.timeout(), hop.send(request.clone())).await {
            Ok(sent) => sent?,
            Err(_) => return Err(TxError::Timeout),
        }
        let (mut machine, actions) = NonInviteClient::start(hop.reliable(), timers);
        let mut deadlines = Deadlines::default();
        let mut pending = actions;
        let mut final_response: Option<Message> = None;
        loop {
            for action in pending.drain(..) {
                match action {
                    Action::Retransmit => {
                        if let Err(e) = hop.send(request.clone()).await {
                            return Err(e.into());
                        }
                    }
                    Action::Arm(t, d) => deadlines.set(t, Some(Instant::now() + d)),
                    Action::Cancel(t) => deadlines.set(t, None),
                    Action::PassUp(code) if code >= 200 => {
                        if let Some(msg) = final_response.take() {
                            // Timer K only absorbs retransmitted responses;
                            // stray ones are dropped by the layer anyway.
                            return Ok(msg);
                        }
                    }
                    Action::PassUp(_) | Action::Terminate => {}
                    Action::ReportTimeout => return Err(TxError::Timeout),
                    Action::ReportTransportError => {
                        return Err(match unreachable {
                            Some(addr) => crate::transport::Error::Unreachable(addr).into(),
                            None => TxError::FlowClosed,
                        });
                    }
                }
            }
            let event = tokio::select! {
                // Responses first: a 200 queued just before the flow closed
                // must win over the closure.
                biased;
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        let code = msg.status().unwrap_or(0);
                        if code >= 200 {
                            final_response = Some(*msg);
                        }
                        Event::Response(code)
                    }
                    None => Event::TransportError,
                },
                // One sleep for the earliest of E, F and K (one timer entry
                // per transaction instead of three re-armed per event).
                timer = deadlines.first() => Event::TimerFired(timer),
                _ = flow_closed(hop) => Event::TransportError,
                Some(addr) = icmp_rx.recv(), if unreachable.is_none() => {
                    unreachable = Some(addr);
                    Event::TransportError
                }
            };
            pending = machine.step(event);
        }
    }

    fn on_response(&self, inbound: Inbound) {
        let msg = &inbound.msg;
        let (Ok(via), Ok(cseq)) = (msg.top_via(), msg.cseq()) else {
            tracing::debug!(source = %inbound.source, "response without Via branch or CSeq dropped");
            return;
        };
        let Some(branch) = via.branch() else {
            return;
        };
        let key = client_key(branch, &cseq.method);
        let sender = {
            let shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
            match shard.get(&key) {
                Some((method, tx)) if *method == cseq.method => Some(tx.clone()),
                _ => None,
            }
        };
        match sender {
            Some(tx) => {
                // A full queue means retransmissions are piling up: dropping
                // one is what UDP would have done.
                let _ = tx.try_send(Box::new(inbound.msg));
            }
            None => match self.inner.router.get() {
                Some(router) => router.on_stray_response(inbound),
                None => {
                    tracing::debug!(source = %inbound.source, "stray response dropped (§18.1.2)")
                }
            },
        }
    }
}

/// What a request that matches a held server transaction is to it
/// (§17.2.3): ACK and CANCEL look up the INVITE's transaction but are not
/// its retransmissions; any other method looks up a non-INVITE one.
fn upstream_kind(method: &Method) -> (bool, Upstream) {
    match method {
        Method::Invite => (true, Upstream::Retransmission),
        Method::Ack => (true, Upstream::Ack),
        Method::Cancel => (true, Upstream::Cancel),
        _ => (false, Upstream::Retransmission),
    }
}

impl InboundHandler for Layer {
    fn allow_reply(
        &self,
        source: std::net::IpAddr,
        code: u16,
        request_len: usize,
        response_len: usize,
    ) -> bool {
        self.inner.replies.judge(
            source,
            self.is_own_address(source),
            false,
            code,
            request_len,
            response_len,
        ) == reply_gate::Verdict::Send
    }

    fn handle(&self, inbound: Inbound) {
        let msg = &inbound.msg;
        crate::metrics::sip_received(msg.status(), msg.method().map_or("", |m| m.as_str()));
        if inbound.msg.is_request() {
            self.on_request(inbound);
        } else {
            self.on_response(inbound);
        }
    }
}

/// Forgets a server transaction when its holder drops it (only its own:
/// a later holder of the same key, e.g. a request that reused a branch,
/// keeps its slot).
pub struct ServerGuard {
    layer: Layer,
    key: Box<str>,
    tx: mpsc::Sender<Upstream>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let mut shard = self
            .layer
            .server_shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if shard
            .get(&self.key)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            shard.remove(&self.key);
        }
    }
}

fn client_key(branch: &str, method: &Method) -> Box<str> {
    if *method == Method::Cancel {
        format!("C:{branch}").into()
    } else {
        branch.into()
    }
}

/// Removes a client transaction from the table when its runner ends,
/// whichever way it ends (including cancellation).
pub struct ClientGuard {
    layer: Layer,
    key: Box<str>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut shard = self
            .layer
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.remove(&self.key);
    }
}

#[derive(Default)]
struct Deadlines {
    e: Option<Instant>,
    f: Option<Instant>,
    k: Option<Instant>,
}

impl Deadlines {
    fn set(&mut self, t: Timer, at: Option<Instant>) {
        match t {
            Timer::E => self.e = at,
            Timer::F => self.f = at,
            Timer::K => self.k = at,
        }
    }
}

impl Deadlines {
    /// Sleeps until the earliest armed timer and names it; a tie goes to E,
    /// then F, then K (the order of the former biased `select!` branches).
    async fn first(&self) -> Timer {
        sleep_until_first([(self.e, Timer::E), (self.f, Timer::F), (self.k, Timer::K)]).await
    }
}

/// The earliest of `timers` that is armed (`Some`), with its deadline; the
/// first listed wins a tie.
pub fn first_armed<T>(
    timers: impl IntoIterator<Item = (Option<Instant>, T)>,
) -> Option<(Instant, T)> {
    let mut first: Option<(Instant, T)> = None;
    for (at, timer) in timers {
        if let Some(at) = at
            && first.as_ref().is_none_or(|(f, _)| at < *f)
        {
            first = Some((at, timer));
        }
    }
    first
}

/// Sleeps until [`first_armed`] of `timers` and names it. Never wakes when
/// none is armed.
pub async fn sleep_until_first<T>(timers: impl IntoIterator<Item = (Option<Instant>, T)>) -> T {
    match first_armed(timers) {
        Some((at, timer)) => {
            tokio::time::sleep_until(at).await;
            timer
        }
        None => std::future::pending().await,
    }
}

async fn flow_closed(hop: &Hop) {
    match hop {
        Hop::Stream(flow) => flow.closed().await,
        Hop::Udp { .. } => std::future::pending().await,
    }
}

/// A fresh RFC 3261 §8.1.1.7 branch (magic cookie + 96 random bits).
pub fn new_branch() -> String {
    format!("z9hG4bK{:024x}", rand::random::<u128>() >> 32)
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    fn via(s: &str) -> Via {
        Via::parse(s).unwrap()
    }

    #[test]
    fn a_server_guard_forgets_only_its_own_slot() {
        let layer = Layer::new("test");
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let v = via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsame");
        let first = layer.hold_server(&v, true, tx1);
        let second = layer.hold_server(&v, true, tx2.clone());
        drop(first);
        assert_eq!(layer.servers(), 1, "the later holder keeps the slot");
        assert!(
            layer
                .server_for(&v, true)
                .is_some_and(|tx| tx.same_channel(&tx2))
        );
        drop(second);
        assert_eq!(layer.servers(), 0);
    }

    #[test]
    fn server_key_is_branch_plus_sent_by() {
        let key = |s: &str| server_key(&via(s), true);
        let base = key("SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bK1");
        assert!(base.is_some());
        // §17.2.3: the same branch from another sent-by is another transaction.
        assert_ne!(base, key("SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1"));
        assert_ne!(
            base,
            key("SIP/2.0/UDP pbx.example.com:5070;branch=z9hG4bK1")
        );
        assert_ne!(
            base,
            key("SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bK2")
        );
        // Host case and an omitted default port do not matter.
        assert_eq!(base, key("SIP/2.0/UDP PBX.Example.COM;branch=z9hG4bK1"));
        assert_eq!(
            key("SIP/2.0/TLS pbx.example.com;branch=z9hG4bK1"),
            key("SIP/2.0/TLS pbx.example.com:5061;branch=z9hG4bK1")
        );
        // INVITE and non-INVITE transactions never share a key.
        assert_ne!(
            base,
            server_key(
                &via("SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bK1"),
                false
            )
        );
        assert_eq!(key("SIP/2.0/UDP pbx.example.com:5060"), None);
    }

    #[test]
    fn a_cancel_from_another_sent_by_does_not_match() {
        let layer = Layer::new("test");
        let (tx, _rx) = mpsc::channel(1);
        let invite = via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcall");
        let _held = layer.hold_server(&invite, true, tx).unwrap();
        let (as_invite, _) = upstream_kind(&Method::Cancel);
        assert!(layer.server_for(&invite, as_invite).is_some());
        let stranger = via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcall");
        assert!(layer.server_for(&stranger, as_invite).is_none());
    }

    #[test]
    fn ack_and_cancel_are_not_retransmissions() {
        assert!(matches!(
            upstream_kind(&Method::Cancel),
            (true, Upstream::Cancel)
        ));
        assert!(matches!(upstream_kind(&Method::Ack), (true, Upstream::Ack)));
        assert!(matches!(
            upstream_kind(&Method::Invite),
            (true, Upstream::Retransmission)
        ));
        assert!(matches!(
            upstream_kind(&Method::Bye),
            (false, Upstream::Retransmission)
        ));
    }

    struct FakePeers;
    impl Peers for FakePeers {
        fn is_pbx(&self, ip: std::net::IpAddr) -> bool {
            ip == std::net::IpAddr::from([192, 0, 2, 50])
        }
    }

    #[test]
    fn verified_parties_are_loopback_monitors_and_pbxes() {
        let layer = Layer::new("test");
        layer.configure_replies(vec!["198.51.100.0/24".parse().unwrap()], 10);
        layer.set_peers(Arc::new(FakePeers));
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(layer.is_verified(ip("127.0.0.1")));
        assert!(layer.is_verified(ip("::1")));
        assert!(layer.is_verified(ip("198.51.100.77")));
        assert!(layer.is_verified(ip("::ffff:198.51.100.77")));
        assert!(layer.is_verified(ip("192.0.2.50")));
        assert!(!layer.is_verified(ip("192.0.2.51")));
        assert!(!layer.is_verified(ip("127.0.0.41")));
    }

    #[test]
    fn the_transport_asks_before_its_own_400() {
        let layer = Layer::new("test");
        layer.configure_replies(Vec::new(), 2);
        let stranger = "203.0.113.5".parse().unwrap();
        // Larger than the request: never to a stranger.
        assert!(!layer.allow_reply(stranger, 400, 100, 101));
        // Within size it is answered (the rate is ErrorBudget's, tested in
        // reply_gate with time as an input).
        assert!(layer.allow_reply(stranger, 400, 100, 100));
        // 127.0.0.1 gets its larger answer.
        assert!(layer.allow_reply("127.0.0.1".parse().unwrap(), 400, 100, 900));
    }
}
