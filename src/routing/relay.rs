//! Drives `dialogs.rs` and `forward.rs`: the stateless in-dialog path
//! (RFC 3261 §16.11). ACK for 2xx and other requests inside a dialog we
//! record-routed go to the next Route or the Request-URI (§16.12) when the
//! dialog table allows that host; their responses come back through our Via,
//! whose branch carries a tag binding it to where they go next.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::time::Instant;

use super::dialogs::contact_hops;
use super::forward::{
    Forward, forward_request, next_hop_after, query_for, relay_response, response_tag,
    response_target, stamped_top_via, stateless_branch, stateless_tag, tag_end,
};
use super::router::Shared;
use super::token::{Back, End, HopId};
use crate::config::Transport;
use crate::dns::Target;
use crate::metrics;
use crate::sip::Method;
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
    let out = match forward_request(msg, None, pop_routes, &fwd) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "in-dialog request not forwarded");
            if !is_ack {
                shared.reply(&inbound, 483);
            }
            return;
        }
    };
    let sent = match shared
        .ctx
        .transports
        .hop(target.transport, target.addr, &target.server_name)
        .await
    {
        Ok(hop) => hop.send(Bytes::from(out.to_bytes())).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        tracing::debug!(target_addr = %target, error = %e, "in-dialog request not sent");
        if !is_ack {
            shared.reply(&inbound, 503);
        }
    }
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
    let Some(out) = relay_response(msg) else {
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
