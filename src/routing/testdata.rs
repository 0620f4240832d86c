//! Realistic requests and a fake directory shared by the routing tests.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::config::Transport;
use crate::sip::{Host, Message};

use super::route::{ConnectionView, Directory};
use crate::context::{Interface, Local};

pub const US: [u8; 4] = [192, 0, 2, 10];
pub const PBX: [u8; 4] = [198, 51, 100, 7];
pub const SECRET: [u8; 16] = *b"0123456789abcdef";

pub fn iface(t: Transport) -> Interface {
    Interface::new(t, Host::V4(US.into()), t.default_port())
}

pub fn local() -> Local {
    Local {
        interfaces: vec![
            iface(Transport::Udp),
            iface(Transport::Tcp),
            iface(Transport::Tls),
        ],
        names: vec!["uacd.example.net".into()],
    }
}

pub fn pbx(port: u16) -> SocketAddr {
    SocketAddr::from((PBX, port))
}

/// Replaces `{len}` by the body length and appends the body.
pub fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head.replace("{len}", &body.len().to_string()).into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn parse(bytes: impl Into<Vec<u8>>) -> Message {
    let v: Vec<u8> = bytes.into();
    match Message::parse_datagram(Bytes::from(v.clone())) {
        Ok(m) => m,
        Err(e) => panic!("parse failed: {e}\n{}", String::from_utf8_lossy(&v)),
    }
}

pub const SDP: &[u8] = b"v=0\r\n\
o=- 1718 1718 IN IP4 198.51.100.7\r\n\
s=Asterisk\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 10000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

/// Asterisk (chan_pjsip) calling our registered Contact over UDP.
pub const ASTERISK_HEAD: &str = "INVITE sip:uacd-office@192.0.2.10:5060;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKPj5f0c1a2b\r\n\
From: \"Alice\" <sip:601@pbx.example.com>;tag=8f3c2a1b-77\r\n\
To: <sip:uacd-office@192.0.2.10>\r\n\
Contact: <sip:asterisk@198.51.100.7:5060>\r\n\
Call-ID: 5b8e6e2d-4e0f-4c2a-9c1e@198.51.100.7\r\n\
CSeq: 31337 INVITE\r\n\
Allow: OPTIONS, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, REFER\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: \"Alice\" <sip:601@pbx.example.com>\r\n\
Max-Forwards: 70\r\n\
User-Agent: Asterisk PBX 20.5.0\r\n\
X-Custom-Trace:   abc ;  weird=1  \r\n\
Content-Type: application/sdp\r\n\
Content-Length:   {len}\r\n\
\r\n";

pub fn asterisk_invite() -> Message {
    parse(with_body(ASTERISK_HEAD, SDP))
}

/// Kamailio as the PBX's router over TCP: compact headers, a Record-Route,
/// two Vias (one folded line), the `line` parameter.
pub const KAMAILIO_HEAD: &str = "INVITE sip:someone@192.0.2.10;line=ln-42 SIP/2.0\r\n\
Record-Route: <sip:198.51.100.7;transport=tcp;lr;ftag=f1a2>\r\n\
v: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKd2a1.7f3e0;i=1\r\n\
v: SIP/2.0/UDP 203.0.113.50:5060;rport=5060;received=203.0.113.50;\r\n branch=z9hG4bK77ab\r\n\
f: <sip:+15551230000@pbx.example.com>;tag=f1a2\r\n\
t: <sip:someone@192.0.2.10>\r\n\
i: kam-call-1@203.0.113.50\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:caller@203.0.113.50:5060>\r\n\
Max-Forwards: 69\r\n\
X-Telnyx-Token: tok-ABC-123\r\n\
c: application/sdp\r\n\
l: {len}\r\n\
\r\n";

pub fn kamailio_invite() -> Message {
    parse(with_body(KAMAILIO_HEAD, SDP))
}

pub struct Dir(pub Vec<(ConnectionView, &'static str, &'static str)>);

impl Directory for Dir {
    type Entry = ConnectionView;
    fn by_user(&self, user: &str) -> Option<ConnectionView> {
        self.0
            .iter()
            .find(|(_, u, _)| *u == user)
            .map(|(c, _, _)| c.clone())
    }
    fn by_line(&self, line: &str) -> Option<ConnectionView> {
        self.0
            .iter()
            .find(|(_, _, l)| *l == line)
            .map(|(c, _, _)| c.clone())
    }
    fn by_flow(&self, flow: u64) -> Option<ConnectionView> {
        self.0
            .iter()
            .find(|(c, _, _)| c.registration_flow == Some(flow))
            .map(|(c, _, _)| c.clone())
    }
}

pub fn conn(id: &str) -> ConnectionView {
    ConnectionView {
        id: id.into(),
        active: true,
        registered: true,
        registration_flow: Some(7),
        pbx_addrs: vec![IpAddr::from(PBX)],
        destination_uri: Some("1006@assistant-abc123.sip.telnyx.com".into()),
        toward_pbx: false,
    }
}

pub fn dir() -> Dir {
    Dir(vec![
        (conn("office"), "uacd-office", "ln-42"),
        (
            ConnectionView {
                registration_flow: Some(9),
                pbx_addrs: vec![IpAddr::from([203, 0, 113, 99])],
                ..conn("branch")
            },
            "uacd-branch",
            "ln-99",
        ),
    ])
}
