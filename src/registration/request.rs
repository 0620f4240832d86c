//! Builds our REGISTER (RFC 3261 §10.2) exactly as design.md's "What goes on
//! the wire" says: R-URI = registrar domain, To = From = AOR with no To tag,
//! one Contact, Call-ID kept for the connection's life, Expires always sent
//! (in cluster mode, earlier holders' Contacts with `expires=0` beside it);
//! and what the machine needs from the answer.

use std::fmt::Write;

use std::net::SocketAddr;

use super::state::{AuthKind, Reply};
use crate::config::Transport;
use crate::sip::digest;
use crate::sip::{HeaderName, Message};

/// Everything one REGISTER carries.
#[derive(Debug)]
pub struct RegisterRequest<'a> {
    /// `sip:pbx.example.com` (or `sips:`), port kept when configured.
    pub request_uri: &'a str,
    /// `sip:<from_user>@<domain>`, used for both From and To.
    pub aor: &'a str,
    pub from_tag: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub transport: Transport,
    /// Via sent-by, `host:port`.
    pub sent_by: &'a str,
    pub branch: &'a str,
    /// Full Contact URI, e.g. `sip:uacd1@192.0.2.1:5060;transport=udp`.
    pub contact: &'a str,
    /// Cluster mode: earlier holders' Contact URIs, removed with `expires=0`.
    pub remove: &'a [String],
    pub expires: u32,
    pub user_agent: &'a str,
    /// `(header name, value)` digest answers.
    pub auth: &'a [(&'static str, String)],
}

/// Serialises the REGISTER; one allocation sized for the common case.
pub fn build(r: &RegisterRequest<'_>) -> Vec<u8> {
    let mut s =
        String::with_capacity(512 + r.auth.iter().map(|(_, v)| v.len() + 24).sum::<usize>());
    // `write!` into a String cannot fail.
    let _ = write!(
        s,
        "REGISTER {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {sent_by};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{aor}>;tag={tag}\r\n\
         To: <{aor}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: {expires}\r\n",
        ruri = r.request_uri,
        via = r.transport.via_token(),
        sent_by = r.sent_by,
        branch = r.branch,
        aor = r.aor,
        tag = r.from_tag,
        call_id = r.call_id,
        cseq = r.cseq,
        contact = r.contact,
        expires = r.expires,
    );
    for uri in r.remove {
        let _ = write!(s, "Contact: <{uri}>;expires=0\r\n");
    }
    for (name, value) in r.auth {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(
        s,
        "Allow: {}\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
        crate::transaction::ALLOW,
        r.user_agent
    );
    s.into_bytes()
}

/// Extracts what the machine needs from a final response.
pub(super) fn to_reply(msg: &Message, contact_user: &str, source: SocketAddr) -> Reply {
    let code = msg.status().unwrap_or(500);
    let mut challenges = Vec::new();
    for (name, kind) in [
        (HeaderName::ProxyAuthenticate, AuthKind::Proxy),
        (HeaderName::WwwAuthenticate, AuthKind::Www),
    ] {
        let parsed: Vec<_> = msg
            .header_values(name)
            .into_iter()
            .filter_map(|v| digest::parse_challenge(&v).ok())
            .collect();
        for ch in digest::select(&parsed) {
            challenges.push((kind, ch.clone()));
        }
    }
    let (granted, binding_missing) = if (200..300).contains(&code) {
        let contacts = msg.contacts().unwrap_or_default();
        let ours = contacts
            .iter()
            .find(|c| c.uri.user.as_deref() == Some(contact_user));
        let param = ours
            .and_then(|c| c.params.get("expires"))
            .flatten()
            .and_then(|v| v.trim().parse::<u32>().ok());
        (
            param.or(msg.expires()),
            !contacts.is_empty() && ours.is_none(),
        )
    } else {
        (None, false)
    };
    Reply {
        code,
        challenges,
        granted,
        binding_missing,
        min_expires: msg.min_expires(),
        retry_after: msg.retry_after(),
        source,
    }
}

/// Cluster mode: the bindings of our Contact user in a 2xx that are not
/// at `sent_by` (our `host:port`): an earlier holder's, to be removed.
pub(super) fn stale_bindings(msg: &Message, contact_user: &str, sent_by: &str) -> Vec<String> {
    if !msg.status().is_some_and(|c| (200..300).contains(&c)) {
        return Vec::new();
    }
    msg.contacts()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.uri.user.as_deref() == Some(contact_user))
        .filter(|c| {
            // A registrar may drop a default port: only a port it shows can
            // tell us apart from an earlier holder at the same host.
            let (host, port) = sent_by.rsplit_once(':').unwrap_or((sent_by, ""));
            !c.uri.host.to_string().eq_ignore_ascii_case(host)
                || c.uri.port.is_some_and(|p| p.to_string() != port)
        })
        .filter(|c| {
            c.params
                .get("expires")
                .flatten()
                .is_none_or(|v| v.trim() != "0")
        })
        .map(|c| c.uri.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderName, Message};
    use bytes::Bytes;

    fn sample(auth: &[(&'static str, String)]) -> Message {
        let bytes = build(&RegisterRequest {
            request_uri: "sip:pbx.test",
            aor: "sip:601@pbx.test",
            from_tag: "ft1",
            call_id: "cid-1@uacd",
            cseq: 7,
            transport: Transport::Tcp,
            sent_by: "127.0.0.1:5060",
            branch: "z9hG4bKabc",
            remove: &[],
            contact: "sip:uacd1@127.0.0.1:5060;transport=tcp",
            expires: 3600,
            user_agent: "uacd",
            auth,
        });
        Message::parse_stream(Bytes::from(bytes)).expect("our REGISTER parses")
    }

    #[test]
    fn register_follows_the_wire_contract() {
        let m = sample(&[]);
        assert_eq!(m.request_uri().unwrap().to_string(), "sip:pbx.test");
        assert!(
            m.to_header().unwrap().tag().is_none(),
            "no To tag on a new REGISTER (RFC 3261 §8.1.1.2)"
        );
        assert_eq!(m.from_header().unwrap().tag(), Some("ft1"));
        assert_eq!(
            m.contacts().unwrap().len(),
            1,
            "one Contact: our binding only"
        );
        assert_eq!(m.expires(), Some(3600));
        let cseq = m.cseq().unwrap();
        assert_eq!(cseq.seq, 7);
        assert_eq!(m.call_id().unwrap(), "cid-1@uacd");
        let via = m.top_via().unwrap();
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.branch(), Some("z9hG4bKabc"));
        assert!(via.rport().is_some(), "rport on every Via (RFC 3581)");
        assert_eq!(m.max_forwards(), Some(70));
        m.validate_request().unwrap();
    }

    #[test]
    fn digest_answers_are_added_verbatim() {
        let m = sample(&[("Authorization", "Digest username=\"a\", nc=00000001".into())]);
        let v: Vec<_> = m
            .header_values(HeaderName::Authorization)
            .into_iter()
            .collect();
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("nc=00000001"));
    }

    #[test]
    fn an_earlier_holders_binding_is_removed_beside_ours() {
        let bytes = build(&RegisterRequest {
            request_uri: "sip:pbx.test",
            aor: "sip:601@pbx.test",
            from_tag: "ft1",
            call_id: "cid-1@uacd",
            cseq: (2 << 16) | 1,
            transport: Transport::Udp,
            sent_by: "127.0.0.32:5060",
            branch: "z9hG4bKdef",
            remove: &["sip:uacd1@127.0.0.31:5060;transport=udp".into()],
            contact: "sip:uacd1@127.0.0.32:5060;transport=udp",
            expires: 600,
            user_agent: "uacd",
            auth: &[],
        });
        let m = Message::parse_datagram(Bytes::from(bytes)).unwrap();
        let c = m.contacts().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].uri.host.to_string(), "127.0.0.32");
        assert_eq!(c[1].params.get("expires").flatten(), Some("0"));
        assert_eq!(m.expires(), Some(600), "ours keeps the Expires header");
    }

    fn ok_with(contacts: &str) -> Message {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.32:5060;branch=z9hG4bKdef\r\n\
             From: <sip:601@pbx.test>;tag=ft1\r\nTo: <sip:601@pbx.test>;tag=r\r\n\
             Call-ID: cid-1@uacd\r\nCSeq: 131073 REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n"
        );
        Message::parse_datagram(Bytes::from(text)).unwrap()
    }

    #[test]
    fn stale_bindings_are_our_users_at_other_addresses_still_live() {
        let m = ok_with(
            "Contact: <sip:uacd1@127.0.0.32:5060;transport=udp>;expires=600\r\n\
             Contact: <sip:uacd1@127.0.0.31:5060;transport=udp>;expires=200\r\n\
             Contact: <sip:uacd1@127.0.0.33:5060>;expires=0\r\n\
             Contact: <sip:phone@192.0.2.9:5060>;expires=300\r\n",
        );
        assert_eq!(
            stale_bindings(&m, "uacd1", "127.0.0.32:5060"),
            ["sip:uacd1@127.0.0.31:5060;transport=udp"]
        );
        assert!(stale_bindings(&m, "uacd1", "127.0.0.31:5060").len() == 1);
        let only_ours = ok_with("Contact: <sip:uacd1@127.0.0.32:5060>;expires=600\r\n");
        assert!(stale_bindings(&only_ours, "uacd1", "127.0.0.32:5060").is_empty());
        let no_port = ok_with("Contact: <sip:uacd1@127.0.0.32;transport=tls>;expires=600\r\n");
        assert!(
            stale_bindings(&no_port, "uacd1", "127.0.0.32:5061").is_empty(),
            "a dropped default port is still ours"
        );
        let other_port = ok_with("Contact: <sip:uacd1@127.0.0.32:5070>;expires=600\r\n");
        assert_eq!(
            stale_bindings(&other_port, "uacd1", "127.0.0.32:5060").len(),
            1
        );
    }
}
