//! Building forwarded requests and relayed responses (RFC 3261 §16.6,
//! §16.7 item 9, §16.12; RFC 5658 double Record-Route; RFC 3581 rport).
//!
//! Everything not listed here is kept byte for byte: other header lines keep
//! their spelling, order, folding and compact names, and the body is untouched
//! (so Content-Length stays right).

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use crate::config::Transport;
use crate::context::Interface;
use crate::dns::Query;
use crate::sip::{HeaderName, Host, Message, ParseError, Scheme, Uri, Via};

use super::token::{End, TOKEN_PARAM};

/// Prefix of the branches we generate: the magic cookie (§8.1.1.7) then a
/// marker so that our own Via can be recognised in a looping request.
pub const BRANCH_PREFIX: &str = "z9hG4bK-ua-";

/// Why a request cannot be forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    /// A header the proxy must read is missing or malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Max-Forwards is 0 (§16.3 item 3: 483).
    #[error("Max-Forwards exhausted")]
    TooManyHops,
    /// `destination_uri` is not a usable URI.
    #[error("bad destination URI {0:?}")]
    BadDestination(String),
    /// A new attempt for a call that was already answered (its INVITE is
    /// no longer kept).
    #[error("the call is already answered")]
    Answered,
}

/// `destination_uri` from a connection as a URI: `sip:` is added when the
/// value has no scheme; its parameters are kept (design.md).
pub fn destination_uri(value: &str) -> Result<Uri, ForwardError> {
    let v = value.trim();
    let has_scheme = v.split_once(':').is_some_and(|(s, _)| {
        ["sip", "sips", "tel"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
    });
    let text = if has_scheme {
        v.to_owned()
    } else {
        format!("sip:{v}")
    };
    text.parse()
        .map_err(|_| ForwardError::BadDestination(value.to_owned()))
}

/// FNV-1a, stable across runs so that tests can pin branches.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The loop-detection hash of RFC 3261 §16.6 item 8 / §16.3 item 4 over the
/// request as received: Request-URI, To tag, From tag, Call-ID, CSeq number,
/// Proxy-Require and Proxy-Authorization, and the branch of `prev_via` (the
/// Via that was topmost when we received it). Only the branch of that Via is
/// used because the next hop adds `received`/`rport` to it.
pub fn loop_hash(msg: &Message, prev_via: Option<&Via>) -> Result<u64, ParseError> {
    Ok(LoopHash::of(msg)?.finish(prev_via))
}

/// [`loop_hash`] in two steps: the request's own fields once, then the
/// branch of each candidate previous Via (loop detection checks every Via
/// of ours without hashing the request again).
#[derive(Clone, Copy, Debug)]
pub struct LoopHash(u64);

impl LoopHash {
    pub fn of(msg: &Message) -> Result<LoopHash, ParseError> {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        let mut field = |b: &[u8]| {
            h.write(b);
            h.write(&[0xff]);
        };
        field(
            msg.request_uri()
                .ok_or(ParseError::NotARequest)?
                .to_string()
                .as_bytes(),
        );
        field(msg.to_header()?.tag().unwrap_or("").as_bytes());
        field(msg.from_header()?.tag().unwrap_or("").as_bytes());
        field(msg.call_id()?.as_bytes());
        field(msg.cseq()?.seq.to_string().as_bytes());
        for name in [HeaderName::ProxyRequire, HeaderName::ProxyAuthorization] {
            for v in msg.header_values(name) {
                field(v.as_bytes());
            }
        }
        Ok(LoopHash(h.0))
    }

    pub fn finish(self, prev_via: Option<&Via>) -> u64 {
        let mut h = Fnv(self.0);
        h.write(prev_via.and_then(Via::branch).unwrap_or("").as_bytes());
        h.write(&[0xff]);
        h.0
    }
}

/// A branch for a forwarded request (§16.6 item 8): our prefix, the loop
/// hash, and a part unique to this client transaction.
pub fn branch(loop_hash: u64, unique: &str) -> String {
    format!("{BRANCH_PREFIX}{loop_hash:016x}-{unique}")
}

/// The loop hash carried by one of our branches.
pub fn branch_loop_hash(branch: &str) -> Option<u64> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let hex = rest.get(..16)?;
    u64::from_str_radix(hex, 16).ok()
}

/// A branch for a request forwarded statelessly (ACK for 2xx and other
/// in-dialog requests, §16.11): derived from the received top Via so
/// retransmissions map to the same branch downstream, and ending in
/// `.{tag}` where `tag` is [`response_tag`] for where its responses go. A
/// response is relayed without a transaction only when that tag verifies:
/// anyone can guess our prefix, nobody can forge the tag, so a made-up
/// response cannot make us reflect traffic at a third party.
pub fn stateless_branch(msg: &Message, tag: &str) -> Result<String, ParseError> {
    let top = msg.top_via()?;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(top.branch().unwrap_or("").as_bytes());
    h.write(top.to_string().as_bytes());
    Ok(branch(
        loop_hash(msg, Some(&top))?,
        &format!("s{:x}.{tag}", h.0),
    ))
}

/// The tag of one of our stateless branches (`None` for any other branch).
pub fn stateless_tag(branch: &str) -> Option<&str> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let (_, unique) = rest.split_once('-')?;
    let (_, tag) = unique.strip_prefix('s')?.split_once('.')?;
    Some(tag)
}

/// The end of the dialog a stateless request went to, as its
/// [`response_tag`] says (its responses come from there).
pub fn tag_end(tag: &str) -> Option<End> {
    match tag.as_bytes().first()? {
        b'p' => Some(End::Pbx),
        b'd' => Some(End::Destination),
        _ => None,
    }
}

/// The keyed tag binding a stateless branch to the Call-ID, to the end of
/// the dialog the request goes to (`toward`), and to where a response is
/// relayed: `via` is the Via below ours (as forwarded, with
/// `received`/`rport`), whose [`response_target`] and transport it covers.
pub fn response_tag(secret: &[u8; 16], call_id: &str, toward: End, via: &Via) -> String {
    let (host, port) = response_target(via);
    let host = host.to_string();
    let port = port.to_string();
    let transport = via.transport.to_ascii_uppercase();
    let end = match toward {
        End::Pbx => "p",
        End::Destination => "d",
    };
    let mac = super::tag(
        secret,
        &[
            b"sr\0",
            call_id.as_bytes(),
            b"\0",
            end.as_bytes(),
            transport.as_bytes(),
            b"\0",
            host.as_bytes(),
            b"\0",
            port.as_bytes(),
        ],
    );
    format!("{end}{mac}")
}

/// How one request is forwarded.
#[derive(Clone, Copy, Debug)]
pub struct Forward<'a> {
    /// Where the request came from (`received` / `rport` of its top Via).
    pub source: SocketAddr,
    /// The interface it arrived on.
    pub inbound: &'a Interface,
    /// The interface it leaves from.
    pub outbound: &'a Interface,
    /// The branch of our Via.
    pub branch: &'a str,
    /// `Some(token)`: add Record-Route (dialog-creating requests), twice when
    /// `inbound` and `outbound` differ (RFC 5658 §4).
    pub record_route: Option<&'a str>,
}

/// §18.2.1 and RFC 3581 §4: `received` when the sent-by host is not the
/// source address (always when `rport` is present), and `rport` filled in.
/// `None` when the top Via stays as it is.
pub fn stamped_top_via(msg: &Message, source: SocketAddr) -> Result<Option<Via>, ParseError> {
    let mut via = msg.top_via()?;
    let rport = via.rport().is_some();
    let host_matches = via.host.ip() == Some(source.ip());
    if host_matches && !rport {
        return Ok(None);
    }
    via.params.set("received", Some(&source.ip().to_string()));
    if rport {
        via.params.set("rport", Some(&source.port().to_string()));
    }
    Ok(Some(via))
}

/// Writes [`stamped_top_via`] into `msg`.
fn stamp_top_via(msg: &mut Message, source: SocketAddr) -> Result<(), ParseError> {
    let Some(via) = stamped_top_via(msg, source)? else {
        return Ok(());
    };
    // Replace the first Via value, keeping any other values of that line.
    let raw_name = msg
        .header(HeaderName::Via)
        .map(|h| String::from_utf8_lossy(h.raw_name()).into_owned())
        .unwrap_or_else(|| "Via".to_owned());
    let rest: Vec<String> = msg
        .header(HeaderName::Via)
        .map(|h| {
            h.values()
                .into_iter()
                .skip(1)
                .map(|v| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    msg.remove_first(HeaderName::Via);
    let mut line = via.to_string();
    for r in rest {
        line.push_str(", ");
        line.push_str(&r);
    }
    msg.prepend_header(&raw_name, &line);
    Ok(())
}

/// §16.6 item 6: when the next Route has no `lr` (a strict router), the
/// Request-URI goes to the end of the Route set and that Route becomes the
/// Request-URI.
fn postprocess_strict_route(msg: &mut Message) -> Result<(), ParseError> {
    let Some(first) = msg.routes()?.into_iter().next() else {
        return Ok(());
    };
    if first.uri.params.contains("lr") {
        return Ok(());
    }
    let ruri = msg.request_uri().ok_or(ParseError::NotARequest)?.clone();
    msg.remove_first_value(HeaderName::Route);
    msg.append_header("Route", &format!("<{ruri}>"));
    msg.set_request_uri(first.uri);
    Ok(())
}

/// The forwarded copy of `msg` (RFC 3261 §16.6): `request_uri` replaces the
/// Request-URI when given; `pop_routes` of our own Route entries are removed
/// from the top (§16.4); strict-route post-processing (item 6); Max-Forwards
/// decremented or set to 70 (item 3); Record-Route (item 4, RFC 5658); our
/// Via with `rport` on top (item 8). The top Via of `msg` gets `received`/
/// `rport` (§18.2.1, RFC 3581) so that responses can be routed back.
pub fn forward_request(
    msg: &Message,
    request_uri: Option<&Uri>,
    pop_routes: usize,
    f: &Forward<'_>,
) -> Result<Message, ForwardError> {
    let mut out = msg.clone();
    stamp_top_via(&mut out, f.source)?;
    out.remove_first_values(HeaderName::Route, pop_routes);
    if let Some(uri) = request_uri {
        out.set_request_uri(uri.clone());
    }
    postprocess_strict_route(&mut out)?;
    match msg.header(HeaderName::MaxForwards) {
        Some(_) => match msg.max_forwards() {
            Some(0) => return Err(ForwardError::TooManyHops),
            Some(n) => out.set_header(HeaderName::MaxForwards, &(n - 1).to_string()),
            None => {
                return Err(ParseError::BadHeader {
                    name: "Max-Forwards",
                    reason: "not a number",
                }
                .into());
            }
        },
        None => out.append_header("Max-Forwards", "70"),
    }
    frame_body(&mut out);
    if let Some(token) = f.record_route {
        // Prepending puts the last one on top: inbound first, then outbound,
        // so the UAS sees [outbound, inbound, ...] (RFC 5658 §4).
        out.prepend_header("Record-Route", &record_route_value(f.inbound, token));
        if f.inbound != f.outbound {
            out.prepend_header("Record-Route", &record_route_value(f.outbound, token));
        }
    }
    out.prepend_header("Via", &f.outbound.via_value(f.branch));
    Ok(out)
}

/// The DNS query for a next-hop URI (RFC 3263 §4.1): the transport the
/// URI names ([`Transport::named_by`]); without one the transport is left
/// to DNS (NAPTR, then SRV per transport we support, then UDP on 5060 for a
/// name or a numeric address).
pub fn query_for(uri: &Uri) -> Query {
    let sips = uri.scheme == Scheme::Sips;
    let param = uri
        .params
        .value("transport")
        .and_then(|t| t.parse::<Transport>().ok());
    Query {
        host: uri.host.to_string(),
        port: uri.port,
        transport: Transport::named_by(sips, param),
        sips,
    }
}

/// Our Record-Route value on `iface`: `<sip:host:port;transport=x;lr>`,
/// plus the dialog token that lets in-dialog requests prove they follow a
/// route set we created ([`super::token`]).
pub fn record_route_value(iface: &Interface, token: &str) -> String {
    format!(
        "<sip:{}:{};transport={};lr;{TOKEN_PARAM}={token}>",
        iface.host,
        iface.port,
        iface.transport.uri_param(),
    )
}

/// A response relayed toward the PBX ([`relay_response`]). One that creates
/// a dialog (a 1xx with a To tag, a 2xx) has, in our Record-Route entries
/// (those carrying `ours`, the destination end's token), the PBX end's
/// token instead: `issue` makes it for the hop the destination advertised
/// ([`super::dialogs::advertised_hop`]). §16.7 item 4 lets a proxy rewrite
/// its own entries; see [`super::token`].
pub fn upstream_response(
    resp: &Message,
    ours: &str,
    issue: impl FnOnce(&super::token::HopId) -> String,
) -> Option<Message> {
    let mut out = relay_response(resp)?;
    if resp.to_header().is_ok_and(|t| t.tag().is_some()) {
        let dest_hop = super::dialogs::advertised_hop(resp, false, |u| {
            u.params.value(TOKEN_PARAM) == Some(ours)
        });
        reissue_token(&mut out, ours, &issue(&dest_hop));
    }
    Some(out)
}

/// `resp` with the token `ours` in its Record-Route replaced by `theirs`.
fn reissue_token(resp: &mut Message, ours: &str, theirs: &str) {
    let from = format!("{TOKEN_PARAM}={ours}");
    let to = format!("{TOKEN_PARAM}={theirs}");
    resp.edit_fields(HeaderName::RecordRoute, |v| {
        v.contains(&from).then(|| v.replace(&from, &to))
    });
}

/// The URI a forwarded request is sent to (§16.6 item 7, §16.12): the first
/// Route entry, else the Request-URI.
pub fn next_hop(msg: &Message) -> Result<Uri, ParseError> {
    match msg.routes()?.into_iter().next() {
        Some(r) => Ok(r.uri),
        None => msg.request_uri().cloned().ok_or(ParseError::NotARequest),
    }
}

/// [`next_hop`] once `pop` of our Route entries are removed, without
/// editing the message.
pub fn next_hop_after(msg: &Message, pop: usize) -> Result<Uri, ParseError> {
    match msg.routes()?.into_iter().nth(pop) {
        Some(r) => Ok(r.uri),
        None => msg.request_uri().cloned().ok_or(ParseError::NotARequest),
    }
}

/// A response relayed upstream (§16.7 items 3 and 9): `None` for 100 (never
/// forwarded), else the response with our top Via removed and everything
/// else byte for byte.
pub fn relay_response(resp: &Message) -> Option<Message> {
    if resp.status()? == 100 {
        return None;
    }
    let mut out = resp.clone();
    out.remove_first_value(HeaderName::Via);
    frame_body(&mut out);
    Some(out)
}

/// Gives a message from a datagram without Content-Length (allowed over
/// UDP, RFC 3261 §20.14; its body is the rest of the datagram) the header
/// before it goes on: the next hop may be a stream, which frames messages
/// by it (§18.3), and there the body would be read as a second message
/// coming from us.
fn frame_body(out: &mut Message) {
    if out.header(HeaderName::ContentLength).is_none() {
        let len = out.body().len().to_string();
        out.append_header("Content-Length", &len);
    }
}

/// Where a response goes when it is relayed statelessly (RFC 3261 §18.2.2,
/// RFC 3581 §4): `received` (else sent-by) and `rport` (else sent-by port,
/// else the transport default), given the response's top Via after ours was
/// popped.
pub fn response_target(via: &Via) -> (Host, u16) {
    let host = via
        .received()
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(Host::from)
        .unwrap_or_else(|| via.host.clone());
    let default = if via.transport.eq_ignore_ascii_case("TLS") {
        5061
    } else {
        5060
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(default),
    };
    (host, port)
}
