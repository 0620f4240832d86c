//! Drives `route.rs`: takes the requests no transaction matched, finds
//! the connection an INVITE is for and its PBX's addresses, classifies the
//! request with [`route::classify`] and carries out the [`Decision`]:
//! answers or rejects it here, relays it in-dialog ([`super::relay`]) or
//! starts a call ([`super::executor`]). Work in progress is bounded by
//! [`MAX_IN_PROGRESS`], and new requests that arrived on an overloaded
//! socket ([`crate::transport::overload`]) are refused before any of it.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::calls::Calls;
use super::dialogs::Dialogs;
use super::executor::{self, NewCall, PbxLeg};
use super::failover::Policy;
use super::outbound;
use super::relay;
use super::route::{self, ConnectionEntry, ConnectionView, Decision, Directory, Reject, Source};
use crate::config::Transport;
use crate::context::{Context, Interface, Local};
use crate::dns::Query;
use crate::metrics::{self, CallDirection, CallResult};
use crate::sip::{Message, Method, response_to};
use crate::transaction::{RequestHandler, ServerGuard, Upstream};
use crate::transport::Inbound;

/// Requests being worked on at once (call setups until their final
/// response, in-dialog relays, relayed responses). Beyond it new INVITEs get
/// 503 with Retry-After and other work is dropped: a flood costs a counter,
/// not memory or DNS queries.
pub const MAX_IN_PROGRESS: usize = 20_000;

/// Seconds an overloaded daemon asks callers to wait before trying again.
const RETRY_AFTER: &str = "5";

/// The directory routing reads: one entry per connection.
pub type Connections = dyn Directory<Entry = ConnectionEntry> + Send + Sync;

/// Cheap-clone handle; installed as the transaction layer's router.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

/// What the router, the relay and the executor share.
pub(super) struct Shared {
    pub(super) ctx: Arc<Context>,
    pub(super) connections: Arc<Connections>,
    pub(super) policy: Policy,
    /// Keys the dialog tokens and stateless branch tags.
    pub(super) secret: [u8; 16],
    /// What is "us" in Route and Request-URI checks; grows when a wildcard
    /// listener is advertised under a newly seen local address.
    local: RwLock<Local>,
    /// The dialogs we record-routed and where their requests may go.
    pub(super) dialogs: Dialogs,
    /// Open calls: channel limits, the views of calls toward a PBX.
    pub(super) calls: Calls,
    /// Work in progress, bounded by [`MAX_IN_PROGRESS`].
    permits: Arc<Semaphore>,
}

impl Router {
    /// The router of a daemon whose registrations share `ctx`.
    pub fn new(ctx: Arc<Context>, connections: Arc<Connections>, secret: [u8; 16]) -> Router {
        let now = tokio::time::Instant::now();
        let dialogs = Dialogs::new(now, ctx.config.limits.dialogs);
        let calls = Calls::new(now, ctx.config.limits.dialogs);
        Router {
            shared: Arc::new(Shared {
                policy: Policy::from_config(&ctx.config.routing),
                local: RwLock::new(ctx.local()),
                ctx,
                connections,
                secret,
                dialogs,
                calls,
                permits: Arc::new(Semaphore::new(MAX_IN_PROGRESS)),
            }),
        }
    }
}

/// An INVITE's server transaction, held from the moment the INVITE
/// arrived: retransmissions, ACK and CANCEL that come while its task is
/// still deciding reach that task, not the router again.
pub(super) struct Held {
    pub(super) _guard: ServerGuard,
    pub(super) upstream: mpsc::Receiver<Upstream>,
}

impl RequestHandler for Router {
    fn on_request(&self, inbound: Inbound) {
        if inbound.overloaded && self.shed(&inbound) {
            return;
        }
        let held = if inbound.msg.method() == Some(&Method::Invite) {
            let (tx, rx) = mpsc::channel(16);
            let guard = inbound
                .msg
                .top_via()
                .ok()
                .and_then(|via| self.shared.ctx.layer.hold_server(&via, true, tx));
            let Some(guard) = guard else {
                // No branch: the classifier answers 400.
                return self.spawn_request(inbound, None);
            };
            Some(Held {
                _guard: guard,
                upstream: rx,
            })
        } else {
            None
        };
        self.spawn_request(inbound, held);
    }

    fn on_stray_response(&self, inbound: Inbound) {
        let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
            return;
        };
        let shared = self.shared.clone();
        spawn_boxed(async move {
            relay::response(&shared, inbound).await;
            drop(permit);
        });
    }
}

impl Router {
    /// A new request (no To tag, not ACK or CANCEL) that arrived while its
    /// socket's receive queue was overloaded gets 503 with Retry-After
    /// here, before any task, transaction or lookup (RFC 3261 §21.5.4);
    /// in-dialog requests finish calls already admitted and go on.
    fn shed(&self, inbound: &Inbound) -> bool {
        let msg = &inbound.msg;
        if matches!(msg.method(), Some(Method::Ack | Method::Cancel))
            || msg.to_header().is_ok_and(|t| t.tag().is_some())
        {
            return false;
        }
        self.refuse_overloaded(inbound);
        true
    }

    /// 503 with Retry-After for work refused because the daemon is
    /// overloaded (an ACK gets no answer); an INVITE counts as a call
    /// refused in its direction.
    fn refuse_overloaded(&self, inbound: &Inbound) {
        match inbound.msg.method() {
            Some(Method::Ack) => return,
            Some(Method::Invite) => {
                let direction = if self.shared.is_internal(inbound.source) {
                    CallDirection::Outbound
                } else {
                    CallDirection::Inbound
                };
                metrics::call_result(direction, CallResult::Status(503), None);
            }
            _ => {}
        }
        tracing::debug!(source = %inbound.source, "overloaded: 503");
        self.shared
            .reply_with(inbound, 503, &[("Retry-After", RETRY_AFTER)]);
    }

    fn spawn_request(&self, inbound: Inbound, held: Option<Held>) {
        let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
            return self.refuse_overloaded(&inbound);
        };
        spawn_boxed(request(self.shared.clone(), inbound, held, permit));
    }
}

/// One request the transaction layer did not match, from arrival to the
/// decision carried out.
async fn request(
    shared: Arc<Shared>,
    inbound: Inbound,
    held: Option<Held>,
    permit: OwnedSemaphorePermit,
) {
    let is_invite = inbound.msg.method() == Some(&Method::Invite);
    let source = Source {
        addr: inbound.source,
        flow: inbound.flow.as_ref().map(|f| f.id()),
        internal: shared.is_internal(inbound.source),
    };
    let view = if is_invite {
        // Only a flow we opened can carry a registration (the flow lookup
        // is a scan, so flows a stranger opened to us never get one).
        let own_flow = inbound.flow.as_ref().is_some_and(|f| f.is_outbound());
        shared.connection(&inbound.msg, source, own_flow).await
    } else {
        None
    };
    let (view, entry) = match view {
        Some((v, e)) => (Some(v), Some(e)),
        None => (None, None),
    };
    // The PBX's in-dialog request of a call toward it is sent to our
    // Contact; it goes on to the caller's ([`outbound::Mapping`]).
    let mut inbound = inbound;
    if !is_invite || inbound.msg.to_header().is_ok_and(|t| t.tag().is_some()) {
        restore_caller_target(&shared, &mut inbound.msg);
    }
    let local = shared.local();
    let epoch = super::token::now_epoch();
    match route::classify(
        &inbound.msg,
        source,
        &local,
        view.as_ref(),
        &shared.secret,
        epoch,
    ) {
        Decision::Drop => {}
        Decision::Local => shared.ctx.layer.answer_locally(inbound),
        Decision::UnmatchedCancel => shared.reply(&inbound, 481),
        // The daemon's own 400 names the problem in a Warning header.
        Decision::Reject(Reject::Malformed) => {
            if is_invite {
                metrics::call_result(CallDirection::Inbound, CallResult::Malformed, None);
            }
            shared.ctx.layer.answer_locally(inbound)
        }
        // Its 420 lists the tags in Unsupported.
        Decision::Reject(Reject::BadExtension) => {
            if is_invite {
                metrics::call_result(CallDirection::Inbound, CallResult::Status(420), None);
            }
            shared.ctx.layer.answer_locally(inbound)
        }
        Decision::Reject(why) => {
            tracing::debug!(source = %inbound.source, reason = why.label(), code = why.code(), "request rejected");
            if is_invite {
                let direction = if view.as_ref().is_some_and(|v| v.toward_pbx) {
                    CallDirection::Outbound
                } else {
                    CallDirection::Inbound
                };
                metrics::call_result(direction, call_result(why), None);
            }
            shared.reply(&inbound, why.code());
        }
        Decision::InDialog {
            pop_routes,
            holder,
            next,
            hop_signed,
            back,
        } => {
            let path = relay::Path {
                pop_routes,
                holder,
                next,
                hop_signed,
                back,
            };
            relay::request(&shared, inbound, path).await
        }
        Decision::NewCall {
            destination,
            pop_routes,
            ..
        } => match (held, entry) {
            // A task of its own: it lives for the whole call (64·T1 after
            // the answer), and this task's state need not live beside it.
            (Some(held), Some(entry)) => {
                let call = NewCall {
                    connection: entry.connection,
                    destination,
                    pop_routes,
                    toward_pbx: None,
                };
                spawn_boxed(executor::run(shared.clone(), inbound, held, permit, call));
            }
            _ => shared.reply(&inbound, 500),
        },
        Decision::TowardPbx { pop_routes, .. } => {
            let extension = inbound
                .msg
                .request_uri()
                .and_then(|u| u.user.clone())
                .unwrap_or_default();
            let destination = entry
                .as_ref()
                .and_then(|e| pbx_request_uri(&e.connection, &extension));
            match (held, entry, destination) {
                (Some(held), Some(entry), Some(destination)) => {
                    let call = NewCall {
                        toward_pbx: Some(PbxLeg {
                            registrar: entry.registrar,
                            extension,
                        }),
                        connection: entry.connection,
                        destination,
                        pop_routes,
                    };
                    spawn_boxed(executor::run(shared.clone(), inbound, held, permit, call));
                }
                // No extension, or one that makes no URI.
                (Some(_), Some(_), None) => shared.reply(&inbound, 404),
                _ => shared.reply(&inbound, 500),
            }
        }
    }
}

impl Shared {
    /// Whether `source` is inside `routing.internal_sources`.
    pub(super) fn is_internal(&self, source: std::net::SocketAddr) -> bool {
        let internal = &self.ctx.config.routing.internal_sources;
        internal.iter().any(|c| c.contains(source.ip()))
    }

    pub(super) fn local(&self) -> Local {
        self.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Our interface on `transport` as `peer` sees it
    /// ([`Context::interface`]), remembered as "us" for Route checks.
    pub(super) fn interface(
        &self,
        transport: Transport,
        local: Option<std::net::SocketAddr>,
        peer: std::net::SocketAddr,
    ) -> Interface {
        let iface = self.ctx.interface(transport, local, peer, None);
        let known = self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .interfaces
            .contains(&iface);
        if !known {
            self.local
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .interfaces
                .push(iface.clone());
        }
        iface
    }

    /// The connection the request names ([`route::find_connection`]) with
    /// the addresses of its PBX: the registrar that accepted us needs no
    /// lookup (nor does a flood of INVITEs from elsewhere cause more than
    /// one cached lookup per TTL); otherwise `proxy` and `outbound_proxy`
    /// are resolved.
    async fn connection(
        &self,
        msg: &Message,
        source: Source,
        own_flow: bool,
    ) -> Option<(ConnectionView, ConnectionEntry)> {
        let ruri = msg.request_uri()?;
        // `<user_name>.<sip.domain>`: a call toward that connection's PBX.
        if let Some(domain) = &self.ctx.config.sip.domain
            && let crate::sip::Host::Domain(host) = &ruri.host
            && let Some(user) = outbound::connection_user(host, domain)
        {
            // Host names ignore case; user_names under sip.domain are
            // lowercase DNS labels (config checks it).
            let entry = self.connections.by_user(&user.to_ascii_lowercase())?;
            let conn = &entry.connection;
            let view = ConnectionView {
                id: conn.id.clone(),
                active: conn.active,
                registered: entry.registered,
                registration_flow: entry.flow,
                pbx_addrs: Vec::new(),
                destination_uri: None,
                toward_pbx: true,
            };
            return Some((view, entry));
        }
        let flow = source.flow.filter(|_| own_flow);
        let entry = route::find_connection(&*self.connections, ruri, flow)?;
        let conn = &entry.connection;
        let ext = &conn.external_uac_settings;
        let registrar = entry.registrar.map(|a| a.ip());
        let known = (source.flow.is_some() && source.flow == entry.flow)
            || registrar == Some(source.addr.ip());
        let mut pbx_addrs: Vec<_> = registrar.into_iter().collect();
        let lookups = if known {
            [None, None]
        } else {
            [ext.proxy.as_ref(), ext.outbound_proxy.as_ref()]
        };
        for uri in lookups.into_iter().flatten() {
            let q = Query::with_transport(uri, ext.transport);
            match self.ctx.dns.resolve(&q).await {
                Ok(targets) => pbx_addrs.extend(targets.iter().map(|t| t.addr.ip())),
                Err(e) => {
                    tracing::debug!(connection_id = %conn.id, error = %e, "PBX address lookup failed")
                }
            }
        }
        let view = ConnectionView {
            id: conn.id.clone(),
            active: conn.active,
            registered: entry.registered,
            registration_flow: entry.flow,
            pbx_addrs,
            destination_uri: conn.internal_uac_settings.destination_uri.clone(),
            toward_pbx: false,
        };
        Some((view, entry))
    }

    /// Our own final response (canonical reason phrase, a fresh To tag).
    pub(super) fn reply(&self, inbound: &Inbound, code: u16) {
        self.reply_with(inbound, code, &[]);
    }

    pub(super) fn reply_with(&self, inbound: &Inbound, code: u16, headers: &[(&str, &str)]) {
        let tag = format!("{:016x}", rand::random::<u64>());
        let reason = crate::sip::reason::canonical_reason(code);
        let mut b = response_to(&inbound.msg, code, reason, Some(&tag))
            .header("Server", self.ctx.config.sip.user_agent.as_str());
        for (name, value) in headers {
            b = b.header(name, value);
        }
        // Under the layer's no-amplification and error-rate rules.
        self.ctx
            .layer
            .send_own(inbound, code, Bytes::from(b.build()));
    }
}

/// Spawns a request or call task boxed: tokio moves a spawned future
/// several times on its way into the task cell, and these are kilobytes;
/// a box moves as one pointer.
pub(super) fn spawn_boxed(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(Box::pin(task));
}

/// A request to our Contact in a call toward a PBX gets the caller's
/// Contact as its Request-URI, as the caller gave it (§12.2.1.1: the
/// remote target), before it is classified.
fn restore_caller_target(shared: &Shared, msg: &mut Message) {
    if shared.ctx.config.sip.domain.is_none() {
        return;
    }
    let Some(m) = msg
        .call_id()
        .ok()
        .and_then(|c| shared.calls.mapping(c, tokio::time::Instant::now()))
    else {
        return;
    };
    if let Some(target) = msg
        .request_uri()
        .filter(|u| m.is_our_contact(u))
        .and(m.caller_target())
        .and_then(|t| t.parse().ok())
    {
        msg.set_request_uri(target);
    }
}

/// The Request-URI of a call toward `conn`'s PBX: the extension at the
/// registrar's domain, with the port as in our REGISTER
/// ([`crate::config::ProxyUri::request_uri`]).
fn pbx_request_uri(conn: &crate::config::Connection, extension: &str) -> Option<crate::sip::Uri> {
    let ext = &conn.external_uac_settings;
    let domain = ext.proxy.as_ref()?.request_uri(ext.transport);
    let (scheme, host) = domain.split_once(':')?;
    if extension.is_empty() {
        return None;
    }
    format!("{scheme}:{extension}@{host}").parse().ok()
}

/// How a refused INVITE is counted in `uacd_calls_total`.
fn call_result(why: Reject) -> CallResult {
    match why {
        Reject::ForbiddenSource | Reject::ForeignRoute | Reject::ForeignDomain => {
            CallResult::RejectedSource
        }
        Reject::UnknownUser | Reject::NoDestination | Reject::BadDestination => CallResult::NoRoute,
        other => CallResult::Status(other.code()),
    }
}
