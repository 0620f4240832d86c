use bytes::Bytes;

use super::*;
use crate::sip::digest::parse_authorization;

fn msg(s: &str) -> Message {
    Message::parse_datagram(Bytes::from(s.replace('\n', "\r\n"))).unwrap()
}

fn invite() -> Message {
    msg("INVITE sip:2000@u1.uac.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp1
From: \"Front Desk\" <sip:app@10.0.0.1>;tag=caller1
To: <sip:2000@u1.uac.test>
Call-ID: call-1
CSeq: 10 INVITE
Authorization: Digest username=\"app\", realm=\"x\", nonce=\"n\", uri=\"sip:x\", response=\"0\"
Content-Length: 0

")
}

const OURS: &str = "sip:u1@192.0.2.10:5060;transport=udp;line=c1";

fn mapping() -> Mapping {
    Mapping::for_invite(&invite(), "telnyx-reg", "2000", "pbx.test:5070", OURS).unwrap()
}

fn header(m: &Message, name: HeaderName) -> String {
    m.header(name).unwrap().value().into_owned()
}

#[test]
fn a_host_under_the_domain_names_a_connection() {
    assert_eq!(connection_user("u1.uac.test", "uac.test"), Some("u1"));
    assert_eq!(connection_user("U1.UAC.Test.", "uac.test"), Some("U1"));
    assert_eq!(connection_user("uac.test", "uac.test"), None);
    assert_eq!(connection_user(".uac.test", "uac.test"), None);
    assert_eq!(connection_user("a.b.uac.test", "uac.test"), None);
    assert_eq!(connection_user("u1xuac.test", "uac.test"), None);
    assert_eq!(connection_user("u1.uac.test.evil", "uac.test"), None);
}

#[test]
fn toward_the_pbx_the_caller_is_the_registered_user_and_the_callee_the_extension() {
    let mut m = invite();
    mapping().apply(&mut m, Side::Pbx);
    assert_eq!(
        header(&m, HeaderName::From),
        "\"Front Desk\" <sip:telnyx-reg@pbx.test:5070>;tag=caller1"
    );
    assert_eq!(header(&m, HeaderName::To), "<sip:2000@pbx.test:5070>");
    assert_eq!(header(&m, HeaderName::CSeq), "10 INVITE");
    assert!(
        m.header(HeaderName::Authorization).is_none(),
        "the internal side's credentials never reach the PBX"
    );
}

#[test]
fn the_caller_s_cseq_runs_ahead_toward_the_pbx_and_back_for_its_responses() {
    let mut map = mapping();
    map.cseq_offset = 1;
    let mut bye = msg("BYE sip:ext@10.0.0.9 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp2
From: <sip:app@10.0.0.1>;tag=caller1
To: <sip:2000@u1.uac.test>;tag=pbx9
Call-ID: call-1
CSeq: 11 BYE
Content-Length: 0

");
    map.apply(&mut bye, Side::Pbx);
    assert_eq!(header(&bye, HeaderName::CSeq), "12 BYE");
    assert_eq!(
        header(&bye, HeaderName::To),
        "<sip:2000@pbx.test:5070>;tag=pbx9"
    );
    let mut ok = msg("SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp2
From: \"Front Desk\" <sip:telnyx-reg@pbx.test:5070>;tag=caller1
To: <sip:2000@pbx.test:5070>;tag=pbx9
Call-ID: call-1
CSeq: 12 BYE
Content-Length: 0

");
    map.apply(&mut ok, Side::Internal);
    assert_eq!(header(&ok, HeaderName::CSeq), "11 BYE");
    assert_eq!(
        header(&ok, HeaderName::From),
        "\"Front Desk\" <sip:app@10.0.0.1>;tag=caller1"
    );
    assert_eq!(
        header(&ok, HeaderName::To),
        "<sip:2000@u1.uac.test>;tag=pbx9"
    );
}

#[test]
fn the_pbx_s_requests_keep_their_cseq_and_swap_identities() {
    let mut map = mapping();
    map.cseq_offset = 3;
    let mut bye = msg("BYE sip:app@10.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKpbx1
From: <sip:2000@pbx.test:5070>;tag=pbx9
To: \"Front Desk\" <sip:telnyx-reg@pbx.test:5070>;tag=caller1
Call-ID: call-1
CSeq: 7 BYE
Content-Length: 0

");
    map.apply(&mut bye, Side::Internal);
    assert_eq!(header(&bye, HeaderName::CSeq), "7 BYE");
    assert_eq!(
        header(&bye, HeaderName::From),
        "<sip:2000@u1.uac.test>;tag=pbx9"
    );
    assert_eq!(
        header(&bye, HeaderName::To),
        "\"Front Desk\" <sip:app@10.0.0.1>;tag=caller1"
    );
    // And the internal side's answer goes back in the PBX's terms.
    let mut ok = msg("SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKpbx1
From: <sip:2000@u1.uac.test>;tag=pbx9
To: \"Front Desk\" <sip:app@10.0.0.1>;tag=caller1
Call-ID: call-1
CSeq: 7 BYE
Content-Length: 0

");
    map.apply(&mut ok, Side::Pbx);
    assert_eq!(header(&ok, HeaderName::CSeq), "7 BYE");
    assert_eq!(
        header(&ok, HeaderName::From),
        "<sip:2000@pbx.test:5070>;tag=pbx9"
    );
}

#[test]
fn an_invite_without_a_from_tag_has_no_views() {
    let m = msg("INVITE sip:2000@u1.uac.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp1
From: <sip:app@10.0.0.1>
To: <sip:2000@u1.uac.test>
Call-ID: call-1
CSeq: 10 INVITE
Content-Length: 0

");
    assert_eq!(
        Mapping::for_invite(&m, "u", "2000", "pbx.test", OURS),
        Err(MappingError::NoFromTag)
    );
}

fn challenge(code: u16, header: &str, stale: bool) -> Message {
    let stale = if stale { ", stale=true" } else { "" };
    msg(&format!(
        "SIP/2.0 {code} Unauthorized
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx
From: <sip:telnyx-reg@pbx.test>;tag=caller1
To: <sip:2000@pbx.test>;tag=k1
Call-ID: call-1
CSeq: 10 INVITE
{header}: Digest realm=\"pbx.test\", nonce=\"abc\", qop=\"auth\"{stale}
Content-Length: 0

"
    ))
}

fn creds() -> Credentials<'static> {
    Credentials {
        username: "telnyx-reg",
        password: "s3cret",
    }
}

#[test]
fn a_401_is_answered_once_with_authorization_and_a_second_one_refused() {
    let mut sent = invite();
    mapping().apply(&mut sent, Side::Pbx);
    let mut answered = Answered::default();
    let auth = answer_challenge(
        &challenge(401, "WWW-Authenticate", false),
        &sent,
        &creds(),
        &mut answered,
        "cn",
    )
    .unwrap();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].0, "Authorization");
    let parsed = parse_authorization(&auth[0].1).unwrap();
    assert_eq!(parsed.username, "telnyx-reg");
    assert_eq!(
        parsed.uri, "sip:2000@u1.uac.test",
        "the Request-URI as sent"
    );
    assert_eq!(parsed.nc, Some(1));
    // The same realm again, not stale: the password is wrong.
    assert_eq!(
        answer_challenge(
            &challenge(401, "WWW-Authenticate", false),
            &sent,
            &creds(),
            &mut answered,
            "cn",
        ),
        Err(AuthRefused::Rejected)
    );
    // stale=true: the nonce expired, the credentials were right.
    assert!(
        answer_challenge(
            &challenge(401, "WWW-Authenticate", true),
            &sent,
            &creds(),
            &mut answered,
            "cn",
        )
        .is_ok()
    );
}

#[test]
fn a_407_is_answered_with_proxy_authorization() {
    let auth = answer_challenge(
        &challenge(407, "Proxy-Authenticate", false),
        &invite(),
        &creds(),
        &mut Answered::default(),
        "cn",
    )
    .unwrap();
    assert_eq!(auth[0].0, "Proxy-Authorization");
}

#[test]
fn a_challenge_without_digest_is_not_answered() {
    let resp = challenge(401, "X-Nothing", false);
    assert_eq!(
        answer_challenge(&resp, &invite(), &creds(), &mut Answered::default(), "c"),
        Err(AuthRefused::NoChallenge)
    );
}

#[test]
fn the_authenticated_resend_is_a_new_transaction_with_the_next_cseq() {
    let auth = vec![("Authorization", "Digest username=\"u\"".to_owned())];
    let out = authenticated_resend(
        &invite(),
        &auth,
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnew;rport",
    )
    .unwrap();
    assert_eq!(header(&out, HeaderName::CSeq), "11 INVITE");
    assert_eq!(out.top_via().unwrap().branch(), Some("z9hG4bKnew"));
    assert_eq!(out.vias().unwrap().len(), 1);
    assert_eq!(
        out.header_values(HeaderName::Authorization),
        vec!["Digest username=\"u\""]
    );
}

#[test]
fn toward_the_pbx_the_contact_is_ours_and_the_pbx_s_requests_go_to_the_caller_s() {
    let mut m = invite();
    m.append_header("Contact", "<sip:bot@10.0.0.1:5060>;+sip.instance=\"x\"");
    let mut map = Mapping::for_invite(&m, "telnyx-reg", "2000", "pbx.test", OURS).unwrap();
    assert_eq!(map.caller_target(), Some("sip:bot@10.0.0.1:5060"));
    map.apply(&mut m, Side::Pbx);
    assert_eq!(header(&m, HeaderName::Contact), format!("<{OURS}>"));
    assert!(map.is_our_contact(&"sip:u1@192.0.2.10:5060".parse().unwrap()));
    assert!(!map.is_our_contact(&"sip:bot@10.0.0.1:5060".parse().unwrap()));
    // A target refresh of the caller moves where the PBX's requests go.
    let mut reinvite = invite();
    reinvite.append_header("Contact", "<sip:bot@10.0.0.7:5070>");
    map.follow_caller(&reinvite);
    assert_eq!(map.caller_target(), Some("sip:bot@10.0.0.7:5070"));
    // The PBX's own Contact reaches the caller unchanged.
    let mut ok = msg("SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp1
From: <sip:telnyx-reg@pbx.test>;tag=caller1
To: <sip:2000@pbx.test>;tag=pbx9
Call-ID: call-1
CSeq: 10 INVITE
Contact: <sip:2000@192.0.2.99:5060>
Content-Length: 0

");
    map.apply(&mut ok, Side::Internal);
    assert_eq!(
        header(&ok, HeaderName::Contact),
        "<sip:2000@192.0.2.99:5060>"
    );
}

#[test]
fn a_pbx_that_keeps_challenging_gets_at_most_max_answers() {
    // stale=true every time, or a new realm every time: bounded either way.
    for fresh_realm in [false, true] {
        let sent = invite();
        let mut answered = Answered::default();
        let mut ok = 0;
        for i in 0..10 {
            let resp = if fresh_realm {
                msg(&format!(
                    "SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx
From: <sip:telnyx-reg@pbx.test>;tag=caller1
To: <sip:2000@pbx.test>;tag=k1
Call-ID: call-1
CSeq: 10 INVITE
WWW-Authenticate: Digest realm=\"r{i}\", nonce=\"n{i}\"
Content-Length: 0

"
                ))
            } else {
                challenge(401, "WWW-Authenticate", true)
            };
            match answer_challenge(&resp, &sent, &creds(), &mut answered, "cn") {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e, AuthRefused::Rejected);
                    break;
                }
            }
        }
        assert_eq!(ok, MAX_ANSWERS, "fresh realm each time: {fresh_realm}");
    }
}

#[test]
fn the_caller_s_identity_claims_never_reach_the_pbx() {
    // In-dialog requests and responses too, not only the initial INVITE.
    let map = mapping();
    let mut update = msg("UPDATE sip:ext@10.0.0.9 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKapp3
From: <sip:app@10.0.0.1>;tag=caller1
To: <sip:2000@u1.uac.test>;tag=pbx9
Call-ID: call-1
CSeq: 12 UPDATE
P-Asserted-Identity: <sip:ceo@pbx.test>
P-Preferred-Identity: <sip:ceo@pbx.test>
Content-Length: 0

");
    map.apply(&mut update, Side::Pbx);
    let mut ok = msg("SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKpbx1
From: <sip:2000@u1.uac.test>;tag=pbx9
To: <sip:app@10.0.0.1>;tag=caller1
Call-ID: call-1
CSeq: 7 INFO
P-Asserted-Identity: <sip:ceo@pbx.test>
Content-Length: 0

");
    map.apply(&mut ok, Side::Pbx);
    for m in [&update, &ok] {
        assert!(
            m.headers()
                .all(|h| !h.is_named("P-Asserted-Identity") && !h.is_named("P-Preferred-Identity")),
            "{}",
            String::from_utf8_lossy(&m.to_bytes())
        );
    }
}
