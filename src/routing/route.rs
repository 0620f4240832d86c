//! Classifying an inbound request (RFC 3261 §16.3 validation, §16.4 route
//! preprocessing, §16.12 in-dialog routing) into a [`Decision`]: a new call
//! for one connection, an in-dialog request to relay, something the daemon
//! answers itself, or a rejection. Enforces the source check and the "never
//! an open relay" rules of design.md Part 2.
//!
//! Pure: the connection a request is for ([`find_connection`] over a
//! [`Directory`]) and the PBX addresses are inputs; the router resolves them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::Connection;
use crate::context::Local;
use crate::sip::{Message, Method, Uri};

use super::forward::{LoopHash, branch_loop_hash, destination_uri};
use super::token::{self, End, HopId, TOKEN_PARAM, Verdict};

/// What the router knows about one connection for [`classify`]: the
/// directory's [`ConnectionEntry`] with its PBX's addresses resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    pub id: String,
    /// `active` in the store.
    pub active: bool,
    /// The registration is currently successful.
    pub registered: bool,
    /// The TCP/TLS flow the current registration uses.
    pub registration_flow: Option<u64>,
    /// The addresses the connection's `proxy` and `outbound_proxy` resolve to
    /// (compared by IP: a PBX sends from other ports than the one we register to).
    pub pbx_addrs: Vec<IpAddr>,
    /// `internal_uac_settings.destination_uri`.
    pub destination_uri: Option<String>,
    /// The Request-URI names the connection's `fqdn`: a call toward its PBX.
    pub toward_pbx: bool,
}

/// One connection as the directory holds it: its settings and the live
/// state of its registration.
#[derive(Clone, Debug)]
pub struct ConnectionEntry {
    pub connection: Arc<Connection>,
    /// The registration is currently successful.
    pub registered: bool,
    /// The TCP/TLS flow the current registration uses.
    pub flow: Option<u64>,
    /// The registrar that accepted the registration.
    pub registrar: Option<SocketAddr>,
}

/// Where routing finds the connection a request is for; the daemon
/// implements it over its registrations, tests over a table.
pub trait Directory {
    type Entry;
    /// By our Contact user (`user_name`).
    fn by_user(&self, user: &str) -> Option<Self::Entry>;
    /// By the `line` parameter (the connection id) of a Request-URI.
    fn by_line(&self, line: &str) -> Option<Self::Entry>;
    /// By the TCP/TLS flow a registration uses.
    fn by_flow(&self, flow: u64) -> Option<Self::Entry>;
}

/// The connection a request names: the user part of the Request-URI, then
/// its `line` parameter, then the flow it came over (`flow`: only a flow a
/// registration can live on).
pub fn find_connection<D: Directory + ?Sized>(
    dir: &D,
    ruri: &Uri,
    flow: Option<u64>,
) -> Option<D::Entry> {
    ruri.user
        .as_deref()
        .and_then(|u| dir.by_user(u))
        .or_else(|| ruri.params.value("line").and_then(|l| dir.by_line(l)))
        .or_else(|| flow.and_then(|f| dir.by_flow(f)))
}

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub addr: SocketAddr,
    /// The TCP/TLS flow id; `None` for UDP.
    pub flow: Option<u64>,
    /// Inside `routing.internal_sources`: may place calls toward a PBX.
    pub internal: bool,
}

/// Why a request is refused. [`Reject::code`] maps it to a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Missing or malformed mandatory headers (§16.3 item 1).
    Malformed,
    /// A Request-URI scheme we cannot route (§16.3 item 2).
    UnsupportedScheme,
    /// A Proxy-Require option tag (we understand none, §16.3 item 5).
    BadExtension,
    /// Max-Forwards is 0 (§16.3 item 3).
    TooManyHops,
    /// Our own Via with a matching loop hash (§16.3 item 4).
    Loop,
    /// No connection has that user, line or flow.
    UnknownUser,
    /// The request does not come from the connection's PBX (or, for a
    /// call toward the PBX, from `routing.internal_sources`).
    ForbiddenSource,
    /// A Route we did not create, or a Route beyond ours on an initial request.
    ForeignRoute,
    /// A Request-URI for a domain that is not ours and not a registration.
    ForeignDomain,
    /// The connection is not active.
    Inactive,
    /// The connection is not registered.
    NotRegistered,
    /// The connection has no destination_uri.
    NoDestination,
    /// The destination_uri does not parse.
    BadDestination,
}

impl Reject {
    /// The one place where routing refusals become status codes.
    pub fn code(self) -> u16 {
        match self {
            Reject::Malformed => 400,
            Reject::UnsupportedScheme => 416,
            Reject::BadExtension => 420,
            Reject::TooManyHops => 483,
            Reject::Loop => 482,
            Reject::UnknownUser => 404,
            Reject::ForbiddenSource | Reject::ForeignRoute | Reject::ForeignDomain => 403,
            Reject::Inactive | Reject::NotRegistered | Reject::NoDestination => 480,
            Reject::BadDestination => 500,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnsupportedScheme => "unsupported_scheme",
            Reject::BadExtension => "bad_extension",
            Reject::TooManyHops => "too_many_hops",
            Reject::Loop => "loop",
            Reject::UnknownUser => "unknown_user",
            Reject::ForbiddenSource => "forbidden_source",
            Reject::ForeignRoute => "foreign_route",
            Reject::ForeignDomain => "foreign_domain",
            Reject::Inactive => "inactive",
            Reject::NotRegistered => "not_registered",
            Reject::NoDestination => "no_destination",
            Reject::BadDestination => "bad_destination",
        }
    }
}

/// What to do with an inbound request. The transaction layer offers ACK,
/// CANCEL and INVITE retransmissions to its server transactions first
/// (§17.2.3); only unmatched requests come here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'c> {
    /// An initial INVITE for `connection`: forward to `destination` (§16.6)
    /// after removing `pop_routes` Route entries that are ours (§16.4).
    NewCall {
        connection: &'c ConnectionView,
        destination: Uri,
        pop_routes: usize,
    },
    /// An initial INVITE from the internal side for `connection`'s
    /// `fqdn`: a call toward its PBX ([`super::outbound`]).
    TowardPbx {
        connection: &'c ConnectionView,
        pop_routes: usize,
    },
    /// A request inside a dialog we record-routed (ACK for 2xx, BYE,
    /// re-INVITE, ...) whose token verified for its source: remove
    /// `pop_routes` entries and forward to the next Route or the
    /// Request-URI (§16.12, [`super::forward::next_hop`]), `next`. When
    /// `hop_signed` is false the token names another hop, and the request
    /// may go only to a target the other end moved to
    /// ([`super::dialogs::Dialogs::may_reach`]).
    InDialog {
        pop_routes: usize,
        holder: End,
        next: HopId,
        hop_signed: bool,
        /// Sent there rather than to `next`'s address ([`token::Back`]).
        back: Option<token::Back>,
    },
    /// A CANCEL with no matching server transaction: 481 (§16.10, §9.2).
    UnmatchedCancel,
    /// Addressed to the daemon itself: `transaction::server` answers
    /// (OPTIONS 200, 405, 481, 501).
    Local,
    /// Answer with [`Reject::code`]; nothing is forwarded.
    Reject(Reject),
    /// Drop silently (an ACK is never answered, §17.2.3).
    Drop,
}

/// §16.3 item 4: one of our Vias whose branch carries the hash of this very
/// request (a spiral, where the Request-URI changed, has another hash).
/// Linear in the message: the hash of the request's own fields is computed
/// once, then finished with each candidate's next Via.
fn is_loop(msg: &Message, local: &Local) -> Result<bool, crate::sip::ParseError> {
    let vias = msg.vias()?;
    let mut base: Option<LoopHash> = None;
    for (i, via) in vias.iter().enumerate() {
        let Some(h) = via.branch().and_then(branch_loop_hash) else {
            continue;
        };
        if !local.is_our_via(via) {
            continue;
        }
        let base = match &base {
            Some(b) => b,
            None => base.insert(LoopHash::of(msg)?),
        };
        if base.finish(vias.get(i + 1)) == h {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Classifies one inbound request. `found`: the connection
/// [`find_connection`] names for it (looked up for INVITEs only); `secret`
/// keys the dialog tokens, `epoch` is the current [`token::now_epoch`].
pub fn classify<'c>(
    msg: &Message,
    source: Source,
    local: &Local,
    found: Option<&'c ConnectionView>,
    secret: &[u8; 16],
    epoch: u32,
) -> Decision<'c> {
    let Some(method) = msg.method() else {
        return Decision::Drop;
    };
    let is_ack = *method == Method::Ack;
    let reject = |why| {
        if is_ack {
            Decision::Drop
        } else {
            Decision::Reject(why)
        }
    };
    if msg.validate_request().is_err() {
        return reject(Reject::Malformed);
    }
    if msg.request_uri().is_some_and(|u| !u.scheme_understood()) {
        return reject(Reject::UnsupportedScheme);
    }
    if msg.header(crate::sip::HeaderName::ProxyRequire).is_some() && *method != Method::Cancel {
        return reject(Reject::BadExtension);
    }
    // §16.3 item 3; a proxy may answer an OPTIONS itself.
    let max_forwards = msg.max_forwards();
    if msg.header(crate::sip::HeaderName::MaxForwards).is_some() && max_forwards.is_none() {
        return reject(Reject::Malformed);
    }
    if max_forwards == Some(0) {
        return match method {
            Method::Options => Decision::Local,
            _ => reject(Reject::TooManyHops),
        };
    }
    match is_loop(msg, local) {
        Ok(true) => return reject(Reject::Loop),
        Ok(false) => {}
        Err(_) => return reject(Reject::Malformed),
    }
    if *method == Method::Cancel {
        return Decision::UnmatchedCancel;
    }
    // §16.4: our own entries on top of the Route set are removed.
    let Ok(routes) = msg.routes() else {
        return reject(Reject::Malformed);
    };
    let pop = routes.iter().take_while(|r| local.is_us(&r.uri)).count();
    let Some(ruri) = msg.request_uri() else {
        return Decision::Drop;
    };
    if pop == 0 && !routes.is_empty() {
        return reject(Reject::ForeignRoute);
    }
    let in_dialog = msg.to_header().is_ok_and(|t| t.tag().is_some());
    if in_dialog || routes.len() > pop {
        if pop == 0 {
            // No route set of ours: a request to us as a UA, or a relay attempt.
            return if local.is_us(ruri) {
                if is_ack {
                    Decision::Drop
                } else {
                    Decision::Local
                }
            } else {
                reject(Reject::ForeignDomain)
            };
        }
        if !in_dialog {
            // An initial request routed beyond us.
            return reject(Reject::ForeignRoute);
        }
        let next = HopId::of(routes.get(pop).map_or(ruri, |r| &r.uri));
        let call_id = msg.call_id().unwrap_or("");
        let tokens = routes[..pop]
            .iter()
            .filter_map(|r| r.uri.params.value(TOKEN_PARAM));
        return match token::verify_any(secret, tokens, call_id, source.addr.ip(), &next, epoch) {
            Verdict::Valid {
                holder,
                hop_signed,
                back,
            } => Decision::InDialog {
                pop_routes: pop,
                holder,
                next,
                hop_signed,
                back,
            },
            // Forged, copied to another source, or for another dialog.
            Verdict::Invalid => reject(Reject::ForeignRoute),
        };
    }
    match method {
        Method::Invite => {}
        Method::Ack => return Decision::Drop,
        _ => return Decision::Local,
    }
    let Some(conn) = found else {
        return Decision::Reject(if local.is_us(ruri) || pop > 0 {
            Reject::UnknownUser
        } else {
            Reject::ForeignDomain
        });
    };
    if conn.toward_pbx {
        if !source.internal {
            return Decision::Reject(Reject::ForbiddenSource);
        }
        if !conn.active {
            return Decision::Reject(Reject::Inactive);
        }
        if !conn.registered {
            return Decision::Reject(Reject::NotRegistered);
        }
        return Decision::TowardPbx {
            connection: conn,
            pop_routes: pop,
        };
    }
    let on_flow = source.flow.is_some() && source.flow == conn.registration_flow;
    if !on_flow && !conn.pbx_addrs.contains(&source.addr.ip()) {
        return Decision::Reject(Reject::ForbiddenSource);
    }
    if !conn.active {
        return Decision::Reject(Reject::Inactive);
    }
    if !conn.registered {
        return Decision::Reject(Reject::NotRegistered);
    }
    let Some(dest) = conn.destination_uri.as_deref() else {
        return Decision::Reject(Reject::NoDestination);
    };
    match destination_uri(dest) {
        Ok(destination) => Decision::NewCall {
            connection: conn,
            destination,
            pop_routes: pop,
        },
        Err(_) => Decision::Reject(Reject::BadDestination),
    }
}
