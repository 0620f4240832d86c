use super::*;

const MUFASA: Credentials<'static> = Credentials {
    username: "Mufasa",
    password: "Circle Of Life",
};

fn response_of(authz: &str) -> String {
    parse_authorization(authz).expect("authz parses").response
}

#[test]
fn rfc2617_section_3_5_vector() {
    let ch = parse_challenge(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    assert_eq!(ch.algorithm, Algorithm::Md5);
    assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
    let authz = authorization(&ch, &MUFASA, "GET", "/dir/index.html", b"", "0a4f113b", 1);
    assert_eq!(response_of(&authz), "6629fae49393a05397450978507c4ef1");
    assert_eq!(
        authz,
        "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
         response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", \
         opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001"
    );
    assert!(verify(&ch, &authz, "Circle Of Life", "GET", b""));
    assert!(!verify(&ch, &authz, "wrong", "GET", b""));
    assert!(!verify(&ch, &authz, "Circle Of Life", "POST", b""));
}

fn rfc7616_challenge(alg: &str) -> Challenge {
    parse_challenge(&format!(
        r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
    ))
    .unwrap()
}

#[test]
fn rfc7616_section_3_9_1_vectors() {
    let creds = Credentials {
        username: "Mufasa",
        password: "Circle of Life",
    };
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    for (alg, expected) in [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        (
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let ch = rfc7616_challenge(alg);
        let authz = authorization(&ch, &creds, "GET", "/dir/index.html", b"", cnonce, 1);
        assert_eq!(response_of(&authz), expected, "{alg}");
        assert!(authz.contains(&format!("algorithm={alg},")), "{authz}");
        assert!(verify(&ch, &authz, "Circle of Life", "GET", b""));
    }
}

#[test]
fn every_algorithm_round_trips_through_verify() {
    for alg in [
        "MD5",
        "md5-SESS",
        "SHA-256",
        "sha-256-sess",
        "SHA-512-256",
        "SHA-512-256-sess",
    ] {
        let ch = rfc7616_challenge(alg);
        let authz = authorization(
            &ch,
            &MUFASA,
            "REGISTER",
            "sip:pbx.example.com",
            b"",
            "abc",
            7,
        );
        let a = parse_authorization(&authz).unwrap();
        assert_eq!(a.algorithm, ch.algorithm);
        let hex_len = if alg.to_ascii_lowercase().starts_with("md5") {
            32
        } else {
            64
        };
        assert_eq!(a.response.len(), hex_len, "{alg}");
        assert!(
            verify(&ch, &authz, "Circle Of Life", "REGISTER", b""),
            "{alg}"
        );
        assert!(
            !verify(&ch, &authz, "Circle of Life", "REGISTER", b""),
            "{alg}"
        );
    }
}

#[test]
fn sess_differs_from_base_and_depends_on_cnonce() {
    let base = rfc7616_challenge("SHA-256");
    let sess = rfc7616_challenge("SHA-256-sess");
    let r = |ch: &Challenge, cnonce| {
        response_of(&authorization(ch, &MUFASA, "GET", "/", b"", cnonce, 1))
    };
    assert_ne!(r(&base, "c1"), r(&sess, "c1"));
    assert_ne!(r(&sess, "c1"), r(&sess, "c2"));
}

#[test]
fn auth_int_hashes_the_body() {
    let ch = parse_challenge(r#"Digest realm="r", nonce="n", qop="auth-int""#).unwrap();
    let body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n";
    let authz = authorization(&ch, &MUFASA, "INVITE", "sip:1@h", body, "cn", 1);
    assert!(authz.contains("qop=auth-int, nc=00000001"), "{authz}");
    assert!(verify(&ch, &authz, "Circle Of Life", "INVITE", body));
    assert!(!verify(&ch, &authz, "Circle Of Life", "INVITE", b"other"));
}

#[test]
fn auth_is_preferred_over_auth_int() {
    let ch = parse_challenge(r#"Digest realm="r", nonce="n", qop="auth-int,auth""#).unwrap();
    let authz = authorization(&ch, &MUFASA, "REGISTER", "sip:h", b"x", "cn", 1);
    assert!(authz.contains("qop=auth,"), "{authz}");
}

#[test]
fn no_qop_omits_cnonce_nc_and_qop() {
    let ch = parse_challenge(r#"Digest realm="r", nonce="n""#).unwrap();
    assert!(ch.qop.is_empty());
    let authz = authorization(&ch, &MUFASA, "REGISTER", "sip:h", b"", "cn", 1);
    assert!(!authz.contains("cnonce"));
    assert!(!authz.contains("nc="));
    assert!(!authz.contains("qop"));
    assert!(!authz.contains("opaque"));
    assert!(verify(&ch, &authz, "Circle Of Life", "REGISTER", b""));
    // RFC 2069: response = H(HA1:nonce:HA2)
    let ha1 = format!("{:x}", md5::compute("Mufasa:r:Circle Of Life"));
    let ha2 = format!("{:x}", md5::compute("REGISTER:sip:h"));
    let expected = format!("{:x}", md5::compute(format!("{ha1}:n:{ha2}")));
    assert_eq!(response_of(&authz), expected);
}

#[test]
fn nc_is_eight_lowercase_hex_digits() {
    let ch = parse_challenge(r#"Digest realm="r", nonce="n", qop=auth"#).unwrap();
    for (nc, text) in [
        (9, "nc=00000009"),
        (10, "nc=0000000a"),
        (255, "nc=000000ff"),
        (256, "nc=00000100"),
        (u32::MAX, "nc=ffffffff"),
    ] {
        let authz = authorization(&ch, &MUFASA, "REGISTER", "sip:h", b"", "cn", nc);
        assert!(authz.ends_with(text), "{authz}");
        assert_eq!(parse_authorization(&authz).unwrap().nc, Some(nc));
        assert!(verify(&ch, &authz, "Circle Of Life", "REGISTER", b""));
    }
}

#[test]
fn nonce_counts_per_nonce() {
    let mut nc = NonceCounts::new();
    assert_eq!(nc.next("r", "n1"), 1);
    assert_eq!(nc.next("r", "n1"), 2);
    assert_eq!(nc.next("other", "n1"), 1);
    assert_eq!(nc.next("r", "n1"), 3);
    assert_eq!(nc.next("r", "n2"), 1);
    assert_eq!(nc.next("r", "n2"), 2);
}

#[test]
fn cnonce_is_random_hex() {
    let a = new_cnonce();
    let b = new_cnonce();
    assert!(a.len() >= 16 && a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn select_keeps_strongest_per_realm_in_first_appearance_order() {
    let chs: Vec<Challenge> = [
        r#"Digest realm="b", nonce="1", algorithm=MD5"#,
        r#"Digest realm="a", nonce="2", algorithm=SHA-256-sess"#,
        r#"Digest realm="b", nonce="3", algorithm=SHA-512-256"#,
        r#"Digest realm="a", nonce="4", algorithm=SHA-256"#,
        r#"Digest realm="b", nonce="5", algorithm=SHA-256"#,
        r#"Digest realm="c", nonce="6""#,
        r#"Digest realm="c", nonce="7", algorithm=MD5-sess"#,
    ]
    .iter()
    .map(|v| parse_challenge(v).unwrap())
    .collect();
    let picked: Vec<(&str, &str)> = select(&chs)
        .into_iter()
        .map(|c| (c.realm.as_str(), c.nonce.as_str()))
        .collect();
    assert_eq!(picked, vec![("b", "3"), ("a", "2"), ("c", "6")]);
    assert!(select(&[]).is_empty());
}

#[test]
fn parse_oddities() {
    let ch = parse_challenge(
        "  dIgEsT   realm = \"a,b\" ,,nonce=\"x\\\"y\",  QOP=\"auth-int , foo\",algorithm=sha-512-256 , stale=TRUE, userhash=true, domain=\"sip:x\", future=tok",
    )
    .unwrap();
    assert_eq!(ch.realm, "a,b");
    assert_eq!(ch.nonce, "x\"y");
    assert_eq!(ch.qop, vec![Qop::AuthInt]);
    assert_eq!(ch.algorithm, Algorithm::Sha512_256);
    assert!(ch.stale && ch.userhash);
    assert_eq!(ch.opaque, None);

    let ch = parse_challenge(r#"Digest realm="r", nonce="n", stale=false"#).unwrap();
    assert!(!ch.stale);
}

#[test]
fn parse_errors() {
    use DigestError::*;
    let cases: [(&str, DigestError); 10] = [
        (r#"Basic realm="r""#, NotDigest),
        ("", NotDigest),
        ("Digestrealm=\"r\"", NotDigest),
        (r#"Digest nonce="n""#, MissingParam("realm")),
        (r#"Digest realm="r""#, MissingParam("nonce")),
        (
            r#"Digest realm="r", nonce="n", algorithm=SHA-1"#,
            UnsupportedAlgorithm("SHA-1".into()),
        ),
        (
            r#"Digest realm="r", nonce="n", qop="auth-conf""#,
            UnsupportedQop,
        ),
        (
            r#"Digest realm="r", nonce="n"#,
            Malformed("unterminated quoted string"),
        ),
        (
            r#"Digest realm"#,
            Malformed("expected '=' after parameter name"),
        ),
        (
            r#"Digest realm="r" nonce="n""#,
            Malformed("expected ',' between parameters"),
        ),
    ];
    for (input, err) in cases {
        assert_eq!(parse_challenge(input), Err(err), "{input}");
    }
    assert!(matches!(parse_challenge("Digest =x"), Err(Malformed(_))));
    assert!(matches!(parse_challenge("Digest a=,"), Err(Malformed(_))));
    assert!(matches!(
        parse_challenge("Digest a=\"\\"),
        Err(Malformed(_))
    ));
    // Multi-byte input never panics.
    assert!(parse_challenge("Digest\u{a0}réalm=\"é\"").is_err());
    assert!(parse_challenge("Digést realm=\"r\"").is_err());
}

#[test]
fn authorization_values_are_escaped_and_parse_back() {
    let ch = parse_challenge(r#"Digest realm="we \"quote\"", nonce="n\\1", qop=auth"#).unwrap();
    let creds = Credentials {
        username: "a\"b",
        password: "p",
    };
    let authz = authorization(&ch, &creds, "REGISTER", "sip:h;transport=tcp", b"", "c", 1);
    let a = parse_authorization(&authz).unwrap();
    assert_eq!(a.username, "a\"b");
    assert_eq!(a.realm, "we \"quote\"");
    assert_eq!(a.nonce, "n\\1");
    assert_eq!(a.uri, "sip:h;transport=tcp");
    assert!(verify(&ch, &authz, "p", "REGISTER", b""));
}

#[test]
fn verify_rejects_mismatches() {
    let ch = parse_challenge(r#"Digest realm="r", nonce="n", qop=auth, opaque="o""#).unwrap();
    let authz = authorization(&ch, &MUFASA, "REGISTER", "sip:h", b"", "c", 1);
    let other_nonce = Challenge {
        nonce: "m".into(),
        ..ch.clone()
    };
    assert!(!verify(
        &other_nonce,
        &authz,
        "Circle Of Life",
        "REGISTER",
        b""
    ));
    let other_opaque = Challenge {
        opaque: Some("x".into()),
        ..ch.clone()
    };
    assert!(!verify(
        &other_opaque,
        &authz,
        "Circle Of Life",
        "REGISTER",
        b""
    ));
    let sha = Challenge {
        algorithm: Algorithm::Sha256,
        ..ch.clone()
    };
    assert!(!verify(&sha, &authz, "Circle Of Life", "REGISTER", b""));
    // qop required by the challenge but missing from the answer.
    let no_qop = authz.replace(", qop=auth, nc=00000001", "");
    assert!(!verify(&ch, &no_qop, "Circle Of Life", "REGISTER", b""));
    assert!(!verify(
        &ch,
        "Digest garbage",
        "Circle Of Life",
        "REGISTER",
        b""
    ));
    assert!(matches!(
        parse_authorization(&authz.replace("nc=00000001", "nc=1")),
        Err(DigestError::Malformed(_))
    ));
}

#[test]
fn credentials_debug_hides_password() {
    let dbg = format!("{MUFASA:?}");
    assert!(dbg.contains("Mufasa"));
    assert!(dbg.contains("***"));
    assert!(!dbg.contains("Circle"));
}
