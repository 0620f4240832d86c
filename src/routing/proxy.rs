//! The proxy's I/O (RFC 3261 §16): takes the requests no transaction
//! matched, classifies them with [`super::route::classify`], rejects, answers
//! or forwards them, and runs one task per proxied INVITE around the pure
//! [`Call`] machine: DNS targets (RFC 3263), client transactions per target,
//! CANCEL, timers, failover, metrics. In-dialog requests and their responses
//! are relayed statelessly (§16.11): the Record-Route set carries the dialog.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::call::{Call, CallAction, CallEvent, CallParams, CallTimer, FailReason, Target};
use super::dialogs::{self, Check, Dialogs, PbxEnd};
use super::failover::Policy;
use super::forward::{
    Forward, forward_request, next_hop, relay_response, response_tag, response_target,
    stamped_top_via, stateless_branch, stateless_tag,
};
use super::route::{self, ConnectionView, Decision, Directory, Reject, Source};
use super::{Interface, Local};
use crate::config::Transport;
use crate::dns::{Dns, Query};
use crate::metrics;
use crate::registration::{ConnectionStatus, Context, PublicAddress, RegStatus, local_ip_towards};
use crate::sip::{HeaderName, Host, Message, Method, Scheme, Uri, response_to};
use crate::transaction::client::Timers;
use crate::transaction::{Layer, RequestHandler, ServerGuard, Upstream};
use crate::transport::{Hop, Inbound, ReplyTo, Transports, UnreachableWatch};

/// Requests being worked on at once (call setups until their final
/// response, in-dialog relays, relayed responses). Beyond it new INVITEs get
/// 503 with Retry-After and other work is dropped: a flood costs a counter,
/// not memory or DNS queries.
pub const MAX_IN_PROGRESS: usize = 20_000;

/// Added to a call task's longest legitimate life (every target silent, then
/// ringing to `timeout_2xx`, then the transaction timers) before the task is
/// abandoned as stuck.
const LIFETIME_SLACK: Duration = Duration::from_secs(300);

/// Where the router finds connections and their live registration.
pub trait Connections: Send + Sync + 'static {
    /// By Contact user (`user_name`).
    fn by_user(&self, user: &str) -> Option<ConnectionStatus>;
    /// By connection id (the `line` parameter of a Request-URI).
    fn by_id(&self, id: &str) -> Option<ConnectionStatus>;
    /// By the TCP/TLS flow a registration lives on.
    fn by_flow(&self, flow: u64) -> Option<ConnectionStatus>;
}

/// Cheap-clone handle; installed as the transaction layer's router.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    layer: Layer,
    transports: Transports,
    dns: Arc<Dns>,
    connections: Arc<dyn Connections>,
    policy: Policy,
    timers: Timers,
    secret: [u8; 16],
    public: Option<PublicAddress>,
    user_agent: String,
    /// What is "us" in Route and Request-URI checks; grows when a wildcard
    /// listener is advertised under a newly seen local address.
    local: RwLock<Local>,
    /// The dialogs we record-routed and where their requests may go.
    dialogs: Dialogs,
    /// Work in progress, bounded by [`MAX_IN_PROGRESS`].
    permits: Arc<Semaphore>,
}

impl Router {
    /// The router of a daemon whose registrations share `ctx`.
    pub fn new(ctx: &Context, connections: Arc<dyn Connections>, secret: [u8; 16]) -> Router {
        let config = &ctx.config;
        let public = ctx.public.clone();
        let mut local = Local::default();
        let bound = ctx.transports.listen_addrs();
        for (transport, addr) in &bound {
            if !addr.ip().is_unspecified() {
                local.interfaces.push(Interface::new(
                    *transport,
                    Host::from(addr.ip()),
                    addr.port(),
                ));
            }
        }
        if let Some(p) = &public {
            let host = parse_host(&p.host);
            for (transport, addr) in &bound {
                let port = p.port.unwrap_or(addr.port());
                local
                    .interfaces
                    .push(Interface::new(*transport, host.clone(), port));
            }
            if let Host::Domain(d) = &host {
                local.names.push(d.clone());
            }
        }
        Router {
            inner: Arc::new(Inner {
                layer: ctx.layer.clone(),
                transports: ctx.transports.clone(),
                dns: ctx.dns.clone(),
                connections,
                policy: Policy::from_config(&config.routing),
                timers: ctx.timers,
                secret,
                public,
                user_agent: config.sip.user_agent.clone(),
                local: RwLock::new(local),
                dialogs: Dialogs::default(),
                permits: Arc::new(Semaphore::new(MAX_IN_PROGRESS)),
            }),
        }
    }
}

/// An INVITE's server transaction, held from the moment the INVITE
/// arrived: retransmissions, ACK and CANCEL that come while its task is
/// still deciding reach that task, not the router again.
struct Held {
    _guard: ServerGuard,
    upstream: mpsc::Receiver<Upstream>,
}

impl RequestHandler for Router {
    fn on_request(&self, inbound: Inbound) {
        let held = if inbound.msg.method() == Some(&Method::Invite) {
            let Some(branch) = inbound
                .msg
                .top_via()
                .ok()
                .and_then(|v| v.branch().map(str::to_owned))
            else {
                // No branch: the classifier answers 400.
                return self.spawn_request(inbound, None);
            };
            let (tx, rx) = mpsc::channel(16);
            Some(Held {
                _guard: self.inner.layer.hold_server(&branch, true, tx),
                upstream: rx,
            })
        } else {
            None
        };
        self.spawn_request(inbound, held);
    }

    fn on_stray_response(&self, inbound: Inbound) {
        let Ok(permit) = self.inner.permits.clone().try_acquire_owned() else {
            return;
        };
        let router = self.clone();
        spawn_boxed(async move {
            router.inner.stateless_response(inbound).await;
            drop(permit);
        });
    }
}

impl Router {
    fn spawn_request(&self, inbound: Inbound, held: Option<Held>) {
        let Ok(permit) = self.inner.permits.clone().try_acquire_owned() else {
            if inbound.msg.method() == Some(&Method::Invite) {
                metrics::call_result(metrics::call_code_label(503), None);
            }
            if inbound.msg.method() != Some(&Method::Ack) {
                tracing::debug!(source = %inbound.source, "overloaded: 503");
                self.inner
                    .reply_with(&inbound, 503, &[("Retry-After", "5")]);
            }
            return;
        };
        let router = self.clone();
        spawn_boxed(async move { router.inner.request(inbound, held, permit).await });
    }
}

/// The one connection a request may belong to, as `classify` sees it.
struct OneConnection {
    user_name: String,
    view: Option<ConnectionView>,
}

impl Directory for OneConnection {
    fn by_user(&self, user: &str) -> Option<&ConnectionView> {
        self.view.as_ref().filter(|_| self.user_name == user)
    }
    fn by_line(&self, line: &str) -> Option<&ConnectionView> {
        self.view.as_ref().filter(|v| v.id == line)
    }
    fn by_flow(&self, flow: u64) -> Option<&ConnectionView> {
        self.view
            .as_ref()
            .filter(|v| v.registration_flow == Some(flow))
    }
}

impl Inner {
    fn local(&self) -> Local {
        self.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn remember(&self, iface: &Interface) {
        let known = self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .interfaces
            .contains(iface);
        if !known {
            self.local
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .interfaces
                .push(iface.clone());
        }
    }

    /// Our interface on `transport`, as seen from `peer`: the public address
    /// when configured, else the listener's address (or, for a wildcard
    /// listener, the local IP the kernel routes towards `peer`).
    fn interface(
        &self,
        transport: Transport,
        local: Option<SocketAddr>,
        peer: SocketAddr,
    ) -> Interface {
        let listen = self.transports.listen_addr(transport);
        let port = listen
            .map(|a| a.port())
            .or(local.map(|a| a.port()))
            .unwrap_or(transport.default_port());
        let iface = match &self.public {
            Some(p) => Interface::new(transport, parse_host(&p.host), p.port.unwrap_or(port)),
            None => {
                let ip = listen
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .or(local.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()))
                    .or_else(|| local_ip_towards(peer))
                    .unwrap_or(IpAddr::from([127, 0, 0, 1]));
                Interface::new(transport, Host::from(ip), port)
            }
        };
        self.remember(&iface);
        iface
    }

    /// The connection the Request-URI (user part, `line` parameter) or the
    /// flow names, with the addresses of its PBX.
    /// `own_flow`: the request came over a flow we opened (the only kind a
    /// registration lives on; the flow lookup is a scan, so flows a stranger
    /// opened to us never get one).
    async fn directory(&self, msg: &Message, source: Source, own_flow: bool) -> OneConnection {
        let flow = source.flow;
        let ruri = msg.request_uri();
        let found = ruri
            .and_then(|u| u.user.as_deref())
            .and_then(|u| self.connections.by_user(u))
            .or_else(|| {
                ruri.and_then(|u| u.params.value("line"))
                    .and_then(|l| self.connections.by_id(l))
            })
            .or_else(|| {
                flow.filter(|_| own_flow)
                    .and_then(|f| self.connections.by_flow(f))
            });
        let Some(status) = found else {
            return OneConnection {
                user_name: String::new(),
                view: None,
            };
        };
        let conn = &status.connection;
        let ext = &conn.external_uac_settings;
        let mut pbx_addrs = Vec::new();
        // The registrar that accepted us, or the registration's own flow,
        // needs no lookup (nor does a flood of INVITEs from elsewhere cause
        // more than one cached lookup per TTL).
        let registrar = status
            .snapshot
            .last_registered_ip
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        let known =
            (flow.is_some() && flow == status.snapshot.flow) || registrar == Some(source.addr.ip());
        pbx_addrs.extend(registrar);
        let lookups = if known {
            [None, None]
        } else {
            [ext.proxy.as_ref(), ext.outbound_proxy.as_ref()]
        };
        for uri in lookups.into_iter().flatten() {
            let q = Query::with_transport(uri, ext.transport);
            match self.dns.resolve(&q).await {
                Ok(targets) => pbx_addrs.extend(targets.iter().map(|t| t.addr.ip())),
                Err(e) => {
                    tracing::debug!(connection_id = %conn.id, error = %e, "PBX address lookup failed")
                }
            }
        }
        OneConnection {
            user_name: conn.user_name.clone(),
            view: Some(ConnectionView {
                id: conn.id.clone(),
                active: conn.active,
                registered: status.snapshot.status == RegStatus::Success,
                registration_flow: status.snapshot.flow,
                pbx_addrs,
                destination_uri: conn.internal_uac_settings.destination_uri.clone(),
            }),
        }
    }

    async fn request(
        self: Arc<Self>,
        inbound: Inbound,
        held: Option<Held>,
        permit: OwnedSemaphorePermit,
    ) {
        let flow = inbound.flow.as_ref().map(|f| f.id());
        let is_invite = inbound.msg.method() == Some(&Method::Invite);
        let source = Source {
            addr: inbound.source,
            flow,
        };
        let dir = if is_invite {
            let own_flow = inbound.flow.as_ref().is_some_and(|f| f.is_outbound());
            self.directory(&inbound.msg, source, own_flow).await
        } else {
            OneConnection {
                user_name: String::new(),
                view: None,
            }
        };
        let local = self.local();
        let decision = route::classify(&inbound.msg, source, &local, &dir, &self.secret);
        match decision {
            Decision::Drop => {}
            Decision::Local => self.layer.answer_locally(inbound),
            Decision::UnmatchedCancel => self.reply(&inbound, 481),
            // The daemon's own 400 names the problem in a Warning header.
            Decision::Reject(Reject::Malformed) => {
                if is_invite {
                    metrics::call_result("400", None);
                }
                self.layer.answer_locally(inbound)
            }
            Decision::Reject(why) => {
                tracing::debug!(source = %inbound.source, reason = why.label(), code = why.code(), "request rejected");
                if is_invite {
                    metrics::call_result(reject_label(why), None);
                }
                self.reply(&inbound, why.code());
            }
            Decision::InDialog { pop_routes } => self.stateless_request(inbound, pop_routes).await,
            Decision::NewCall {
                connection,
                destination,
                pop_routes,
            } => {
                let id = connection.id.clone();
                let pbx_addrs = connection.pbx_addrs.clone();
                match held {
                    // A task of its own: it lives for the whole call (64·T1
                    // after the answer); awaiting it here kept this task's
                    // state alive beside it, and made every ACK/BYE task as big.
                    Some(held) => {
                        spawn_boxed(self.new_call(
                            inbound,
                            held,
                            permit,
                            (id, pbx_addrs),
                            destination,
                            pop_routes,
                        ));
                    }
                    None => self.reply(&inbound, 500),
                }
            }
        }
    }

    /// Our own final response (canonical reason phrase, a fresh To tag).
    fn reply(&self, inbound: &Inbound, code: u16) {
        self.reply_with(inbound, code, &[]);
    }

    fn reply_with(&self, inbound: &Inbound, code: u16, headers: &[(&str, &str)]) {
        let tag = format!("{:016x}", rand::random::<u64>());
        let reason = crate::sip::reason::canonical_reason(code);
        let mut b = response_to(&inbound.msg, code, reason, Some(&tag))
            .header("Server", self.user_agent.as_str());
        for (name, value) in headers {
            b = b.header(name, value);
        }
        self.transports.reply(inbound, Bytes::from(b.build()));
    }

    /// The targets of `uri` (RFC 3263, see [`query_for`]) with the name each
    /// TLS certificate must match.
    async fn targets(&self, uri: &Uri) -> Result<Vec<(Target, Arc<str>)>, crate::dns::Error> {
        let q = query_for(uri);
        let found = self.dns.resolve(&q).await?;
        Ok(found
            .into_iter()
            .map(|t| {
                (
                    Target {
                        local: self.interface(t.transport, None, t.addr),
                        addr: t.addr,
                        transport: t.transport,
                    },
                    t.server_name,
                )
            })
            .collect())
    }

    async fn new_call(
        self: Arc<Self>,
        inbound: Inbound,
        held: Held,
        permit: OwnedSemaphorePermit,
        (connection_id, pbx_addrs): (String, Vec<IpAddr>),
        destination: Uri,
        pop_routes: usize,
    ) {
        let now = Instant::now();
        // Retransmissions, ACK and CANCEL from the PBX come to this task
        // (the server transaction was held when the INVITE arrived).
        let Held {
            _guard: _server,
            upstream: mut up_rx,
        } = held;
        let (dns_targets, server_names): (Vec<Target>, Vec<Arc<str>>) = match self
            .targets(&destination)
            .await
        {
            Ok(t) => t.into_iter().unzip(),
            Err(e) => {
                tracing::warn!(connection_id = %connection_id, destination = %destination, error = %e, "destination does not resolve");
                (Vec::new(), Vec::new())
            }
        };
        let call_id = inbound.msg.call_id().unwrap_or("").to_owned();
        let in_iface = self.interface(inbound.transport, Some(inbound.local), inbound.source);
        let params = CallParams {
            policy: self.policy.clone(),
            timers: self.timers,
            inbound: in_iface,
            source: inbound.source,
            destination,
            pop_routes,
            token: route::dialog_token(&self.secret, &call_id),
            nonce: rand::random(),
            to_tag: format!("{:016x}", rand::random::<u64>()),
        };
        let reliable = inbound.transport.is_stream();
        let (mut call, actions) = match Call::start(
            inbound.msg.clone(),
            params,
            dns_targets.clone(),
            reliable,
            now,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "INVITE cannot be forwarded");
                self.reply(&inbound, 400);
                return;
            }
        };
        let (resp_tx, mut resp_rx) = mpsc::channel::<Box<Message>>(32);
        // The PBX's end of the dialog for the dialog table: where it sends
        // from (this INVITE's source, its registrar / proxy addresses) and
        // what it advertised (Contact, Record-Route).
        let mut pbx = PbxEnd {
            ips: pbx_addrs,
            hosts: dialogs::advertised_hosts(&inbound.msg),
        };
        pbx.ips.push(inbound.source.ip());
        pbx.hosts.push(Host::from(inbound.source.ip()));
        let attempts = u32::try_from(dns_targets.len().max(1)).unwrap_or(u32::MAX);
        let lifetime = (self.policy.timeout_1xx + self.policy.timeout_2xx) * attempts
            + self.timers.timeout() * 2
            + LIFETIME_SLACK;
        let give_up = now + lifetime;
        let (icmp_tx, mut icmp_rx) = mpsc::channel::<SocketAddr>(8);
        let upstream = inbound.reply_to();
        // The call keeps its own copy of the INVITE (shed once answered);
        // the task needs only where responses go.
        drop(inbound);
        let mut task = CallTask {
            inner: self.clone(),
            upstream,
            targets: dns_targets,
            server_names,
            hops: HashMap::new(),
            clients: Vec::new(),
            held: Vec::new(),
            resp_tx,
            timers: HashMap::new(),
            connection_id,
            call_id,
            queue: Vec::new(),
            permit: Some(permit),
            pbx,
            icmp_tx,
            icmp_watches: Vec::new(),
        };
        task.run_actions(&mut call, actions).await;
        let upstream_flow = task.upstream.flow.clone();
        let mut upstream_gone = false;
        while !call.is_terminated() {
            let event = tokio::select! {
                Some(resp) = resp_rx.recv() => {
                    task.learn_dialog(&resp);
                    CallEvent::Response(resp)
                }
                // ICMP unreachable for a UDP target (§18.4): fail over now.
                Some(addr) = icmp_rx.recv() => {
                    match task.targets.iter().position(|t| t.addr == addr && t.transport == Transport::Udp) {
                        Some(t) => CallEvent::TransportError(t),
                        None => continue,
                    }
                }
                // The PBX's TCP/TLS connection went away: nobody is left to
                // answer, so the pending branches are cancelled (§17.2.4).
                _ = async {
                    match &upstream_flow {
                        Some(f) => f.closed().await,
                        None => std::future::pending().await,
                    }
                }, if !upstream_gone => {
                    upstream_gone = true;
                    tracing::info!(call_id = %task.call_id, "the PBX's connection closed during call setup; cancelling");
                    CallEvent::UpstreamTransportError
                }
                // A safety net: the machine's timers end every call long
                // before this; a task still here is stuck, not busy.
                _ = tokio::time::sleep_until(give_up) => {
                    tracing::warn!(call_id = %task.call_id, lifetime_sec = lifetime.as_secs(), "call task outlived every timer; abandoned");
                    break;
                }
                Some(up) = up_rx.recv() => match up {
                    Upstream::Retransmission => CallEvent::UpstreamRetransmission,
                    Upstream::Ack => CallEvent::UpstreamAck,
                    Upstream::Cancel => CallEvent::UpstreamCancel,
                },
                key = crate::transaction::sleep_until_first(
                    task.timers.iter().map(|(k, at)| (Some(*at), *k)),
                ) => {
                    task.timers.remove(&key);
                    CallEvent::Timer(key)
                }
            };
            let actions = call.step(event, Instant::now());
            task.run_actions(&mut call, actions).await;
        }
    }

    /// ACK for 2xx and other in-dialog requests: forwarded without a
    /// transaction (§16.11), to the next Route or the Request-URI (§16.12).
    async fn stateless_request(&self, inbound: Inbound, pop_routes: usize) {
        let msg = &inbound.msg;
        let mut probe = msg.clone();
        for _ in 0..pop_routes {
            probe.remove_first_value(HeaderName::Route);
        }
        let Ok(next) = next_hop(&probe) else {
            return;
        };
        let is_ack = msg.method() == Some(&Method::Ack);
        let call_id = msg.call_id().unwrap_or("");
        // The token proved the route set is ours; the table pins where the
        // dialog's requests may go (see `dialogs`).
        let from = inbound.source.ip();
        match self
            .dialogs
            .check(call_id, from, &next.host, Instant::now())
        {
            Check::Allowed => {
                if is_target_refresh(msg.method()) {
                    self.dialogs.refresh(
                        call_id,
                        inbound.source.ip(),
                        dialogs::advertised_hosts(msg),
                    );
                }
            }
            Check::Forbidden => {
                tracing::warn!(source = %inbound.source, call_id, next = %next, "in-dialog request to a host that is not an end of its dialog; refused");
                if !is_ack {
                    self.reply(&inbound, 403);
                }
                return;
            }
            Check::Unknown if is_ack || msg.method() == Some(&Method::Bye) => {}
            Check::Unknown => {
                tracing::debug!(source = %inbound.source, call_id, "in-dialog request for a dialog we do not hold: 481");
                self.reply(&inbound, 481);
                return;
            }
        }
        let targets = match self.dns.resolve(&query_for(&next)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(next = %next, error = %e, "in-dialog next hop does not resolve");
                if msg.method() != Some(&Method::Ack) {
                    self.reply(&inbound, 503);
                }
                return;
            }
        };
        // Our branch carries a tag binding it to where responses go back.
        let Ok(upstream_via) =
            stamped_top_via(msg, inbound.source).and_then(|v| v.map_or_else(|| msg.top_via(), Ok))
        else {
            return;
        };
        let tag = response_tag(&self.secret, call_id, &upstream_via);
        let Ok(branch) = stateless_branch(msg, &tag) else {
            return;
        };
        let in_iface = self.interface(inbound.transport, Some(inbound.local), inbound.source);
        let target = &targets[0];
        let out_iface = self.interface(target.transport, None, target.addr);
        let fwd = Forward {
            source: inbound.source,
            inbound: &in_iface,
            outbound: &out_iface,
            branch: &branch,
            record_route: None,
        };
        let out = match forward_request(msg, None, pop_routes, &fwd) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "in-dialog request not forwarded");
                if msg.method() != Some(&Method::Ack) {
                    self.reply(&inbound, 483);
                }
                return;
            }
        };
        let sent = match self
            .transports
            .hop(target.transport, target.addr, &target.server_name)
            .await
        {
            Ok(hop) => hop.send(Bytes::from(out.to_bytes())).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(target_addr = %target, error = %e, "in-dialog request not sent");
            if msg.method() != Some(&Method::Ack) {
                self.reply(&inbound, 503);
            }
        }
    }

    /// A response no client transaction expects: when it carries our Via on
    /// top (an in-dialog request we relayed statelessly), pop it and send it
    /// where the next Via says (§16.11, §18.2.2, RFC 3581).
    async fn stateless_response(&self, inbound: Inbound) {
        let msg = &inbound.msg;
        let Ok(top) = msg.top_via() else {
            return;
        };
        // Only responses to requests we relayed statelessly; any other stray
        // response is dropped (§18.1.2; RFC 6026 §7.3 for 2xx).
        let Some(tag) = top.branch().and_then(stateless_tag).map(str::to_owned) else {
            tracing::debug!(source = %inbound.source, "stray response dropped (§18.1.2)");
            return;
        };
        let Some(out) = relay_response(msg) else {
            return;
        };
        let Ok(via) = out.top_via() else {
            return;
        };
        let call_id = msg.call_id().unwrap_or("");
        if !super::tags_match(&tag, &response_tag(&self.secret, call_id, &via)) {
            tracing::debug!(source = %inbound.source, "response with a forged or altered stateless branch dropped");
            return;
        }
        // §12.2: a 2xx to a re-INVITE or UPDATE may move the remote target.
        if msg.status().is_some_and(|c| (200..300).contains(&c))
            && msg.cseq().is_ok_and(|c| is_target_refresh(Some(&c.method)))
        {
            self.dialogs
                .refresh(call_id, inbound.source.ip(), dialogs::advertised_hosts(msg));
        }
        // §15.1.2: the dialog is over once its BYE is answered.
        if msg.status().is_some_and(|c| c >= 200)
            && msg.cseq().is_ok_and(|c| c.method == Method::Bye)
        {
            metrics::dialogs_active(self.dialogs.forget(call_id) as f64);
        }
        let (host, port) = response_target(&via);
        let transport = via.transport.parse::<Transport>().unwrap_or(Transport::Udp);
        let Some(ip) = host.ip() else {
            return;
        };
        let dest = SocketAddr::new(ip, port);
        match self
            .transports
            .hop(transport, dest, &host.to_string())
            .await
        {
            Ok(hop) => {
                if let Err(e) = hop.send(Bytes::from(out.to_bytes())).await {
                    tracing::debug!(%dest, error = %e, "relayed response not sent");
                }
            }
            Err(e) => tracing::debug!(%dest, error = %e, "relayed response not sent"),
        }
    }
}

/// The I/O around one [`Call`].
struct CallTask {
    inner: Arc<Inner>,
    /// Where responses to the PBX go.
    upstream: ReplyTo,
    targets: Vec<Target>,
    server_names: Vec<Arc<str>>,
    hops: HashMap<usize, Hop>,
    /// Client transaction slots held per branch (responses come to `resp_tx`).
    clients: Vec<crate::transaction::ClientGuard>,
    held: Vec<String>,
    resp_tx: mpsc::Sender<Box<Message>>,
    timers: HashMap<CallTimer, Instant>,
    connection_id: String,
    call_id: String,
    /// Events produced while carrying out actions (send failures).
    queue: Vec<CallEvent>,
    /// Counts this call against [`MAX_IN_PROGRESS`] until its final response.
    permit: Option<OwnedSemaphorePermit>,
    /// The PBX's end of the dialog (see [`Dialogs`]).
    pbx: PbxEnd,
    /// Told of ICMP errors for the UDP targets we sent to.
    icmp_tx: mpsc::Sender<SocketAddr>,
    icmp_watches: Vec<(usize, UnreachableWatch)>,
}

impl CallTask {
    /// A provisional with a To tag or a 2xx to our INVITE creates a dialog
    /// (§12.1): its two ends are where its requests may be relayed.
    fn learn_dialog(&self, resp: &Message) {
        let Some(code) = resp.status() else {
            return;
        };
        if !(101..300).contains(&code)
            || !resp.cseq().is_ok_and(|c| c.method == Method::Invite)
            || !resp.to_header().is_ok_and(|t| t.tag().is_some())
        {
            return;
        }
        let delta = self.inner.dialogs.learn(
            &self.call_id,
            &self.pbx,
            dialogs::advertised_hosts(resp),
            code >= 200,
            Instant::now(),
        );
        if delta != 0 {
            metrics::dialogs_active(delta as f64);
        }
    }

    async fn run_actions(&mut self, call: &mut Call, mut actions: Vec<CallAction>) {
        loop {
            self.hold_clients(call);
            for action in actions.drain(..) {
                self.act(call, action).await;
            }
            let Some(event) = self.queue.pop() else {
                return;
            };
            actions = call.step(event, Instant::now());
        }
    }

    /// Responses for every attempt started so far reach this task; held
    /// before the request is sent, so that a fast answer is never a stray.
    fn hold_clients(&mut self, call: &Call) {
        for t in 0..self.targets.len() {
            if let Some(b) = call.branch_of(t)
                && !self.held.iter().any(|h| h == b)
            {
                self.held.push(b.to_owned());
                self.clients.push(self.inner.layer.hold_client(
                    b,
                    Method::Invite,
                    self.resp_tx.clone(),
                ));
            }
        }
    }

    async fn hop(&mut self, t: usize) -> Result<Hop, crate::transport::Error> {
        if let Some(h) = self.hops.get(&t).filter(|h| match h {
            Hop::Stream(f) => !f.is_closed(),
            Hop::Udp { .. } => true,
        }) {
            return Ok(h.clone());
        }
        let target = &self.targets[t];
        // A connect (TCP, TLS handshake) that hangs is a transport error
        // after timeout_1xx: the same time a silent target gets.
        let hop = tokio::time::timeout(
            self.inner.policy.timeout_1xx,
            self.inner
                .transports
                .hop(target.transport, target.addr, &self.server_names[t]),
        )
        .await
        .map_err(|_| crate::transport::Error::ConnectTimeout {
            transport: target.transport,
            remote: target.addr,
        })??;
        self.hops.insert(t, hop.clone());
        Ok(hop)
    }

    async fn act(&mut self, call: &Call, action: CallAction) {
        match action {
            CallAction::SendUpstream(bytes) => {
                self.inner.transports.reply_to(&self.upstream, bytes)
            }
            CallAction::SendToTarget(t, bytes) => {
                let sent = match self.hop(t).await {
                    Ok(hop) => {
                        if let Hop::Udp { remote, .. } = &hop
                            && !self.icmp_watches.iter().any(|(w, _)| *w == t)
                        {
                            let watch = self
                                .inner
                                .transports
                                .watch_unreachable(*remote, self.icmp_tx.clone());
                            self.icmp_watches.push((t, watch));
                        }
                        hop.send(bytes).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    tracing::debug!(call_id = %self.call_id, target_addr = %self.targets[t].addr, error = %e, "send to target failed");
                    self.queue.push(CallEvent::TransportError(t));
                }
            }
            CallAction::SendCancel(t, bytes) => {
                let Some(branch) = call.branch_of(t).map(str::to_owned) else {
                    return;
                };
                let Ok(hop) = self.hop(t).await else {
                    return;
                };
                let layer = self.inner.layer.clone();
                let timers = self.inner.timers;
                tokio::spawn(async move {
                    let _ = layer
                        .request(&hop, Method::Cancel, &branch, bytes, timers)
                        .await;
                });
            }
            CallAction::Arm(key, d) => {
                self.timers.insert(key, Instant::now() + d);
            }
            CallAction::Disarm(key) => {
                self.timers.remove(&key);
            }
            CallAction::TargetFailed(t, reason) => {
                let target = &self.targets[t];
                let dns_target = crate::dns::Target {
                    addr: target.addr,
                    transport: target.transport,
                    server_name: self.server_names[t].clone(),
                };
                let why = match reason {
                    FailReason::Status(code) => {
                        tracing::info!(call_id = %self.call_id, target_addr = %target.addr, code, "call target failed; trying the next");
                        None
                    }
                    FailReason::NoProvisional => Some("no provisional response"),
                    FailReason::TransportError => Some("transport error"),
                };
                if let Some(why) = why {
                    tracing::info!(call_id = %self.call_id, target_addr = %target.addr, reason = why, "call target failed; trying the next");
                    self.inner.dns.failed(&dns_target, why);
                }
            }
            CallAction::Finished(outcome) => {
                let answered = (200..300).contains(&outcome.status);
                let label = if answered {
                    "answered"
                } else {
                    metrics::call_code_label(outcome.status)
                };
                metrics::call_result(label, Some(outcome.setup));
                for _ in 0..outcome.failovers {
                    metrics::failover();
                }
                if !answered {
                    self.inner.dialogs.forget_early(&self.call_id);
                }
                self.permit = None;
                tracing::info!(
                    connection_id = %self.connection_id,
                    call_id = %self.call_id,
                    status = outcome.status,
                    setup_ms = outcome.setup.as_millis() as u64,
                    failovers = outcome.failovers,
                    "call finished"
                );
            }
            CallAction::Terminate => {}
        }
    }
}

/// Spawns a request or call task boxed: tokio moves a spawned future
/// several times on its way into the task cell, and these are kilobytes
/// (memmove was ~9% of the proxy's CPU at 1000 calls/s); a box moves as one
/// pointer.
fn spawn_boxed(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(Box::pin(task));
}

/// Requests that may change a dialog's remote target (§12.2, RFC 3311).
fn is_target_refresh(method: Option<&Method>) -> bool {
    matches!(method, Some(Method::Invite | Method::Update))
}

fn reject_label(why: Reject) -> &'static str {
    match why {
        Reject::ForbiddenSource | Reject::ForeignRoute | Reject::ForeignDomain => "rejected_source",
        Reject::UnknownUser | Reject::NoDestination | Reject::BadDestination => "no_route",
        other => metrics::call_code_label(other.code()),
    }
}

/// The DNS query for a next-hop URI (RFC 3263 §4.1): the transport from
/// `transport=` (TLS for `sips:`); without it the transport is left to DNS
/// (NAPTR, then SRV per transport we support, then UDP on 5060 for a name
/// or a numeric address).
fn query_for(uri: &Uri) -> Query {
    let sips = uri.scheme == Scheme::Sips;
    let transport = uri
        .params
        .value("transport")
        .and_then(|t| t.parse::<Transport>().ok());
    Query {
        host: uri.host.to_string(),
        port: uri.port,
        transport: if sips {
            Some(Transport::Tls)
        } else {
            transport
        },
        sips,
    }
}

/// `sip.public_address`'s host: an address, or a name.
fn parse_host(s: &str) -> Host {
    match s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.into(),
        Err(_) => Host::Domain(s.to_owned()),
    }
}
