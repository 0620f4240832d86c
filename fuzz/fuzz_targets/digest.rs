//! Digest challenge parsing (RFC 2617, RFC 7616, RFC 8760, RFC 3261 §22).
//! The input is NUL-separated: challenge values (one per line), then the
//! username, password and Request-URI to answer with. Properties: for every
//! challenge that parses, our Authorization parses back to the same realm,
//! nonce, opaque, algorithm, username and uri, our own verifier accepts it and
//! refuses it under another password; `select` keeps one challenge per realm,
//! each one of those offered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uacd::sip::digest::{
    Credentials, authorization, parse_authorization, parse_challenge, select, verify,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let values = parts.next().unwrap_or("");
    let username = parts.next().unwrap_or("alice");
    let password = parts.next().unwrap_or("s3cret");
    let uri = parts.next().unwrap_or("sip:pbx.example.com");
    let creds = Credentials { username, password };
    let body = b"v=0\r\n";

    let mut challenges = Vec::new();
    for value in values.split('\n') {
        let _ = parse_authorization(value);
        let Ok(ch) = parse_challenge(value) else {
            continue;
        };
        let authz = authorization(&ch, &creds, "REGISTER", uri, body, "0a4f113b", 1);
        let parsed = match parse_authorization(&authz) {
            Ok(a) => a,
            Err(e) => panic!("our Authorization does not parse ({e:?}): {authz}"),
        };
        assert_eq!(parsed.realm, ch.realm);
        assert_eq!(parsed.nonce, ch.nonce);
        assert_eq!(parsed.opaque, ch.opaque);
        assert_eq!(parsed.algorithm, ch.algorithm);
        assert_eq!(parsed.username, username);
        assert_eq!(parsed.uri, uri);
        assert!(
            verify(&ch, &authz, password, "REGISTER", body),
            "our own answer is refused: {authz}"
        );
        let wrong = format!("{password}x");
        assert!(
            !verify(&ch, &authz, &wrong, "REGISTER", body),
            "a wrong password is accepted"
        );
        challenges.push(ch);
    }
    let chosen = select(&challenges);
    for (i, c) in chosen.iter().enumerate() {
        assert!(challenges.iter().any(|o| o == *c));
        assert!(
            chosen[..i].iter().all(|o| o.realm != c.realm),
            "two challenges for one realm"
        );
    }
    for c in &challenges {
        assert!(
            chosen.iter().any(|o| o.realm == c.realm),
            "a realm was dropped"
        );
    }
});
