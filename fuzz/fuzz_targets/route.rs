//! The route decision (RFC 3261 §16.3, §16.4, §16.12) plus forwarding (§16.6)
//! of a parsed request, against one connection. Input: a source byte (PBX or
//! stranger, UDP or the registration's flow), an outbound-transport byte, then
//! a datagram in which `{tok}` stands for the dialog token of its Call-ID (so
//! in-dialog requests are reachable). Properties: for a NewCall or InDialog
//! decision the forwarded request parses again, carries a Content-Length
//! equal to its body and frames on a stream as exactly one message (no
//! smuggling, §18.3), has our Via on top and Max-Forwards one lower; a
//! stranger never gets a NewCall.
//!
//! `classify` and the token issuer are called in `decide` and `token_for`
//! only, so a change of their signatures is a change there.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use uacd::config::Transport;
use uacd::context::{Interface, Local};
use uacd::routing::forward::{Forward, branch, forward_request, loop_hash};
use uacd::routing::route::{
    ConnectionView, Decision, Directory, Source, classify, find_connection,
};
use uacd::routing::token::{End, Grant, HopId, issue};
use uacd::sip::{Frame, HeaderName, Host, MAX_HEADERS, Message, ParseError, next_frame};

const US: [u8; 4] = [192, 0, 2, 10];
const PBX: [u8; 4] = [198, 51, 100, 7];
const STRANGER: [u8; 4] = [203, 0, 113, 66];
const SECRET: [u8; 16] = *b"0123456789abcdef";
const FLOW: u64 = 7;
/// The epoch tokens are issued and checked at.
const EPOCH: u32 = 495_000;

fn iface(t: Transport) -> Interface {
    Interface::new(t, Host::V4(US.into()), t.default_port())
}

fn local() -> Local {
    Local {
        interfaces: vec![
            iface(Transport::Udp),
            iface(Transport::Tcp),
            iface(Transport::Tls),
        ],
        names: vec!["uacd.example.net".into()],
    }
}

/// The one connection: user `uacd-office`, line `ln-42`, flow 7.
struct Dir(ConnectionView);

impl Directory for Dir {
    type Entry = ConnectionView;
    fn by_user(&self, user: &str) -> Option<ConnectionView> {
        (user == "uacd-office").then(|| self.0.clone())
    }
    fn by_line(&self, line: &str) -> Option<ConnectionView> {
        (line == "ln-42").then(|| self.0.clone())
    }
    fn by_flow(&self, flow: u64) -> Option<ConnectionView> {
        (flow == FLOW).then(|| self.0.clone())
    }
}

fn directory() -> Dir {
    Dir(ConnectionView {
        id: "office".into(),
        active: true,
        registered: true,
        registration_flow: Some(FLOW),
        pbx_addrs: vec![IpAddr::from(PBX)],
        destination_uri: Some("1006@assistant-abc123.sip.telnyx.com".into()),
        toward_pbx: false,
    })
}

/// Today's routing API, in one place.
fn decide<'c>(
    msg: &Message,
    source: Source,
    local: &Local,
    found: Option<&'c ConnectionView>,
) -> Decision<'c> {
    classify(msg, source, local, found, &SECRET, EPOCH)
}

/// A genuine token for a request of `call_id` from `from` whose next hop
/// is `next`: what the end at `from` would hold.
fn token_for(call_id: &str, from: IpAddr, next: &uacd::sip::Uri) -> String {
    let to = HopId::of(next);
    let grant = Grant {
        call_id,
        holder: End::Pbx,
        from,
        to: &to,
        back: None,
    };
    issue(&SECRET, EPOCH, &grant)
}

fuzz_target!(|data: &[u8]| {
    let [how, out_t, raw @ ..] = data else {
        return;
    };
    let from_pbx = how & 1 == 0;
    let on_flow = how & 2 != 0;
    let ip = if from_pbx { PBX } else { STRANGER };
    let source = Source {
        addr: SocketAddr::from((ip, 5060 + u16::from(how >> 4))),
        flow: on_flow.then_some(FLOW),
        internal: how & 4 != 0,
    };
    let inbound = iface(if on_flow {
        Transport::Tcp
    } else {
        Transport::Udp
    });
    let outbound = iface([Transport::Udp, Transport::Tcp, Transport::Tls][usize::from(out_t % 3)]);

    // `{tok}` becomes a genuine token for the message's own Call-ID, its
    // source and its next hop past our Route entries.
    let mut bytes = raw.to_vec();
    let local = local();
    if let Some((call_id, next)) = Message::parse_datagram(Bytes::copy_from_slice(raw))
        .ok()
        .and_then(|m| {
            let next = m
                .routes()
                .ok()?
                .into_iter()
                .map(|r| r.uri)
                .find(|u| !local.is_us(u))
                .or_else(|| m.request_uri().cloned())?;
            Some((m.call_id().ok()?.to_owned(), next))
        })
    {
        let token = token_for(&call_id, source.addr.ip(), &next);
        while let Some(p) = bytes.windows(5).position(|w| w == b"{tok}") {
            bytes.splice(p..p + 5, token.bytes());
        }
    }
    let Ok(msg) = Message::parse_datagram(Bytes::from(bytes)) else {
        return;
    };

    let dir = directory();
    let found = msg
        .request_uri()
        .and_then(|u| find_connection(&dir, u, source.flow));
    let token = "fuzz-token";
    let hash = msg
        .top_via()
        .ok()
        .and_then(|v| loop_hash(&msg, Some(&v)).ok())
        .unwrap_or(0);
    let our_branch = branch(hash, "fuzz.0");
    let fwd = |record_route| Forward {
        source: source.addr,
        inbound: &inbound,
        outbound: &outbound,
        branch: &our_branch,
        record_route,
    };
    let out = match decide(&msg, source, &local, found.as_ref()) {
        Decision::NewCall {
            destination,
            pop_routes,
            ..
        } => {
            assert!(from_pbx || on_flow, "a stranger's request became a call");
            forward_request(&msg, Some(&destination), pop_routes, &fwd(Some(token)))
        }
        Decision::InDialog { pop_routes, .. } => {
            forward_request(&msg, None, pop_routes, &fwd(None))
        }
        _ => return,
    };
    let Ok(out) = out else {
        return;
    };
    check_forwarded(&msg, &out, &our_branch);
});

fn check_forwarded(msg: &Message, out: &Message, our_branch: &str) {
    let wire = out.to_bytes();
    assert_eq!(
        next_frame(&wire),
        Frame::Message(wire.len()),
        "forwarded copy does not frame as one message"
    );
    let again = match Message::parse_stream(Bytes::from(wire.clone())) {
        Ok(m) => m,
        // Our Via, Record-Route and Max-Forwards can take a request at the
        // field limit past it: the next hop may refuse it, nothing worse.
        Err(ParseError::TooManyHeaders) if out.headers().count() > MAX_HEADERS => return,
        Err(e) => panic!(
            "forwarded copy does not parse: {e:?}\n{}",
            String::from_utf8_lossy(&wire)
        ),
    };
    let cl = again
        .header(HeaderName::ContentLength)
        .and_then(|h| h.value().trim().parse::<usize>().ok());
    assert_eq!(
        cl,
        Some(again.body().len()),
        "Content-Length is not the body length"
    );
    assert_eq!(again.body(), msg.body(), "the body changed");
    assert!(
        again.validate_request().is_ok(),
        "forwarded copy is not a valid request"
    );
    let top = again.top_via().expect("top Via");
    assert_eq!(top.branch(), Some(our_branch));
    let expected_mf = msg.max_forwards().map_or(70, |n| n - 1);
    assert_eq!(again.max_forwards(), Some(expected_mf));
}
