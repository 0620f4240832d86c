//! Builds our REGISTER (RFC 3261 §10.2) exactly as design.md's "What goes on
//! the wire" says: R-URI = registrar domain, To = From = AOR with no To tag,
//! one Contact, Call-ID kept for the connection's life, Expires always sent.

use std::fmt::Write;

use crate::config::Transport;

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
}
