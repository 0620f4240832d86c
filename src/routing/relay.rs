//! Drives `dialogs.rs` and `forward.rs`: the stateless in-dialog path
//! (RFC 3261 §16.11). ACK for 2xx and other requests inside a dialog we
//! record-routed go to the next Route or the Request-URI (§16.12) when the
//! dialog table allows that host; their responses come back through our Via,
//! whose branch carries a tag binding it to where they go next.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::time::Instant;

use super::calls::Pending;
use super::dialogs::contact_hops;
use super::forward::{
    Forward, forward_request, next_hop_after, query_for, relay_response, response_tag,
    response_target, stamped_top_via, stateless_branch, stateless_tag, tag_end,
};
use super::outbound::{Answered, Side, answer_challenge, authenticated_resend, connection_user};
use super::router::Shared;
use super::token::{Back, End, HopId};
use crate::config::Transport;
use crate::dns::Target;
use crate::metrics;
use crate::sip::HeaderName;
use crate::sip::Method;
use crate::sip::digest::Credentials;
use crate::transaction::invite_client::ack_for;
use crate::transport::Inbound;

/// Where an in-dialog request may go, as `route::classify` verified it.
pub(super) struct Path {
    /// Our Route entries to remove.
    pub pop_routes: usize,
    /// The end whose token the request carries (it comes from there).
    pub holder: End,
    /// The next hop after our entries.
    pub next: HopId,
    /// The token names `next`; otherwise only a target the other end moved
    /// to may be reached.
    pub hop_signed: bool,
    /// Where a request to `next` goes instead (a PBX behind NAT).
    pub back: Option<Back>,
}

/// An in-dialog request whose token verified: forwarded without a
/// transaction after our Route entries are removed, to the hop its token
/// names or to a target the other end moved to (see `token`, `dialogs`).
pub(super) async fn request(shared: &Shared, inbound: Inbound, path: Path) {
    let msg = &inbound.msg;
    let pop_routes = path.pop_routes;
    let Ok(next) = next_hop_after(msg, pop_routes) else {
        return;
    };
    let is_ack = msg.method() == Some(&Method::Ack);
    let call_id = msg.call_id().unwrap_or("");
    let now = Instant::now();
    if path.hop_signed {
        shared.dialogs.touch(call_id, now);
    } else if !shared
        .dialogs
        .may_reach(call_id, path.holder, &path.next, now)
    {
        if let Some(suppressed) = crate::lograte::allow(crate::lograte::Kind::InDialogRefused) {
            tracing::warn!(source = %inbound.source, call_id, next = %next, suppressed, "in-dialog request to a hop the other end of its dialog did not advertise; refused");
        }
        if !is_ack {
            shared.reply(&inbound, 403);
        }
        return;
    }
    if is_target_refresh(msg.method()) {
        let delta = shared
            .dialogs
            .moved(call_id, path.holder, contact_hops(msg), now);
        if delta != 0 {
            metrics::dialogs_active(delta as f64);
        }
    }
    // Toward a PBX's own Contact: back where its INVITE came from, over its
    // flow while that lives (see `token::Back`); else as advertised.
    let back = path.back.filter(|b| {
        b.transport == Transport::Udp
            || shared
                .ctx
                .transports
                .open_flow(b.transport, b.addr)
                .is_some()
    });
    let targets = match back {
        Some(b) => vec![Target {
            addr: b.addr,
            transport: b.transport,
            server_name: next.host.to_string().into(),
        }],
        None => match shared.ctx.dns.resolve(&query_for(&next)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(next = %next, error = %e, "in-dialog next hop does not resolve");
                if !is_ack {
                    shared.reply(&inbound, 503);
                }
                return;
            }
        },
    };
    // Our branch carries a tag binding it to where responses go back.
    let Ok(upstream_via) =
        stamped_top_via(msg, inbound.source).and_then(|v| v.map_or_else(|| msg.top_via(), Ok))
    else {
        return;
    };
    let tag = response_tag(&shared.secret, call_id, path.holder.other(), &upstream_via);
    let Ok(branch) = stateless_branch(msg, &tag) else {
        return;
    };
    let in_iface = shared.interface(inbound.transport, Some(inbound.local), inbound.source);
    let target = &targets[0];
    let out_iface = shared.interface(target.transport, None, target.addr);
    let fwd = Forward {
        source: inbound.source,
        inbound: &in_iface,
        outbound: &out_iface,
        branch: &branch,
        record_route: None,
    };
    let mut out = match forward_request(msg, None, pop_routes, &fwd) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "in-dialog request not forwarded");
            if !is_ack {
                shared.reply(&inbound, 483);
            }
            return;
        }
    };
    if msg.method() == Some(&Method::Bye) {
        shared.calls.hang_up(call_id, now);
    }
    // A call toward a PBX: each side sees its own dialog (`outbound`).
    // The side the request goes to: the end its holder is not.
    let side = match path.holder {
        End::Pbx => Side::Pbx,
        End::Destination => Side::Internal,
    };
    match shared.calls.mapping(call_id, now) {
        Some(m) => {
            shared.calls.touch(call_id, now);
            if side == Side::Pbx
                && !is_ack
                && let Ok(origin) = msg.top_via()
                && let Some(origin) = origin.branch()
            {
                if let Some(p) = shared.calls.resent(call_id, origin) {
                    // A retransmission of a request we resent with credentials.
                    send(shared, &p.target, p.request.to_bytes()).await.ok();
                    return;
                }
                if is_target_refresh(msg.method()) {
                    shared.calls.follow_caller(call_id, msg);
                }
                m.apply(&mut out, side);
                shared.calls.add_pending(
                    call_id,
                    Pending {
                        origin_branch: origin.to_owned(),
                        branch: branch.clone(),
                        request: out.clone(),
                        target: target.clone(),
                        resent: false,
                        answered: Answered::default(),
                    },
                );
            } else {
                m.apply(&mut out, side);
            }
        }
        // Its views are gone (a restart): the PBX would see the caller's
        // CSeq and identity, so the caller is told the dialog is gone.
        None if side == Side::Pbx && names_our_domain(shared, msg) => {
            if !is_ack {
                shared.reply(&inbound, 481);
            }
            return;
        }
        None => {}
    }
    if let Err(e) = send(shared, target, out.to_bytes()).await {
        tracing::debug!(target_addr = %target, error = %e, "in-dialog request not sent");
        if !is_ack {
            shared.reply(&inbound, 503);
        }
    }
}

/// Sends `bytes` to `target` (a new flow if none is open).
async fn send(
    shared: &Shared,
    target: &Target,
    bytes: Vec<u8>,
) -> Result<(), crate::transport::Error> {
    shared
        .ctx
        .transports
        .hop(target.transport, target.addr, &target.server_name)
        .await?
        .send(Bytes::from(bytes))
        .await
}

/// Whether `msg`'s To names a connection's `fqdn` under `sip.domain`:
/// the caller's request in a call toward a PBX.
fn names_our_domain(shared: &Shared, msg: &crate::sip::Message) -> bool {
    let Some(domain) = &shared.ctx.config.sip.domain else {
        return false;
    };
    msg.to_header().is_ok_and(|t| match &t.uri.host {
        crate::sip::Host::Domain(h) => connection_user(h, domain).is_some(),
        _ => false,
    })
}

/// A 401/407 from the PBX to the caller's in-dialog request `p` (a call
/// toward a PBX): answered with the connection's credentials and resent
/// with the next CSeq (§22.2), as the INVITE was; the caller never sees
/// the challenge. False when it cannot be answered (then it is relayed).
async fn answer_in_dialog(
    shared: &Shared,
    call_id: &str,
    mut p: Pending,
    resp: &crate::sip::Message,
    offset: u32,
) -> bool {
    let Some(entry) = shared
        .calls
        .connection(call_id)
        .and_then(|id| shared.connections.by_line(&id))
    else {
        return false;
    };
    let ext = &entry.connection.external_uac_settings;
    let creds = Credentials {
        username: ext.auth_user(),
        password: ext.password.as_ref().map_or("", |p| p.expose()),
    };
    let cnonce = crate::sip::digest::new_cnonce();
    let Ok(auth) = answer_challenge(resp, &p.request, &creds, &mut p.answered, &cnonce) else {
        return false;
    };
    // A new transaction: our branch with one more mark before its tag.
    let Some((head, tag)) = p.branch.rsplit_once('.') else {
        return false;
    };
    let new_branch = format!("{head}r.{tag}");
    let Some(via) = p
        .request
        .header(HeaderName::Via)
        .map(|v| v.value().replace(p.branch.as_str(), &new_branch))
    else {
        return false;
    };
    let Some(resend) = authenticated_resend(&p.request, &auth, &via) else {
        return false;
    };
    // §17.1.1.3: a non-2xx final to an INVITE is ACKed by whoever sent it.
    if p.request.method() == Some(&Method::Invite)
        && let Ok(ack) = ack_for(&p.request, resp)
    {
        send(shared, &p.target, ack).await.ok();
    }
    shared.calls.set_cseq_offset(call_id, offset + 1);
    let bytes = resend.to_bytes();
    p.request = resend;
    p.branch = new_branch;
    p.resent = true;
    let target = p.target.clone();
    shared.calls.add_pending(call_id, p);
    send(shared, &target, bytes).await.is_ok()
}

/// A response no client transaction expects: when it carries our Via on
/// top (an in-dialog request we relayed statelessly), pop it and send it
/// where the next Via says (§16.11, §18.2.2, RFC 3581).
pub(super) async fn response(shared: &Shared, inbound: Inbound) {
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
    let Some(mut out) = relay_response(msg) else {
        return;
    };
    let Ok(via) = out.top_via() else {
        return;
    };
    let call_id = msg.call_id().unwrap_or("");
    let Some(responder) = tag_end(&tag)
        .filter(|end| super::tags_match(&tag, &response_tag(&shared.secret, call_id, *end, &via)))
    else {
        tracing::debug!(source = %inbound.source, "response with a forged or altered stateless branch dropped");
        return;
    };
    // A call toward a PBX: the answer in the view of the side it goes to.
    let now = Instant::now();
    if let Some(m) = shared.calls.mapping(call_id, now) {
        let code = msg.status().unwrap_or(0);
        if responder == End::Destination && code >= 200 {
            let pending = top
                .branch()
                .and_then(|b| shared.calls.take_pending(call_id, b));
            if matches!(code, 401 | 407) {
                match pending {
                    Some(p) => {
                        if answer_in_dialog(shared, call_id, p, msg, m.cseq_offset).await {
                            return;
                        }
                    }
                    // Answered already (a retransmission of the challenge).
                    None => return,
                }
            }
        }
        let side = match responder {
            End::Destination => Side::Internal,
            End::Pbx => Side::Pbx,
        };
        // The caller's 2xx to the PBX's target refresh may move it (§12.2).
        if side == Side::Pbx
            && (200..300).contains(&code)
            && msg.cseq().is_ok_and(|c| is_target_refresh(Some(&c.method)))
        {
            shared.calls.follow_caller(call_id, msg);
        }
        m.apply(&mut out, side);
    }
    // §12.2: a 2xx to a re-INVITE or UPDATE may move the remote target.
    if msg.status().is_some_and(|c| (200..300).contains(&c))
        && msg.cseq().is_ok_and(|c| is_target_refresh(Some(&c.method)))
    {
        let delta = shared
            .dialogs
            .moved(call_id, responder, contact_hops(msg), Instant::now());
        if delta != 0 {
            metrics::dialogs_active(delta as f64);
        }
    }
    // §15.1.2: the dialog is over once its BYE is answered.
    if msg.status().is_some_and(|c| c >= 200) && msg.cseq().is_ok_and(|c| c.method == Method::Bye) {
        metrics::dialogs_active(shared.dialogs.forget(call_id) as f64);
        shared.calls.end(call_id);
    }
    let (host, port) = response_target(&via);
    let transport = via.transport.parse::<Transport>().unwrap_or(Transport::Udp);
    let Some(ip) = host.ip() else {
        return;
    };
    let dest = SocketAddr::new(ip, port);
    match shared
        .ctx
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

/// Requests that may change a dialog's remote target (§12.2, RFC 3311).
fn is_target_refresh(method: Option<&Method>) -> bool {
    matches!(method, Some(Method::Invite | Method::Update))
}
