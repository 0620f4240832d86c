use super::*;

const EXAMPLE: &str = include_str!("../../config/uacd.toml");

/// A minimal valid config with one connection; `extra` is appended to its external settings.
fn one_conn(extra_ext: &str) -> String {
    format!(
        "[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"u1\"\n\n[[connection]]\nconnection_name = \"A\"\n[connection.external_uac_settings]\nproxy = \"sip:pbx.example.com\"\nusername = \"100\"\n{extra_ext}"
    )
}

/// The issues as `line: key: reason` strings (file name dropped).
fn issues(text: &str) -> Vec<String> {
    match parse(text, "t.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e
            .issues
            .iter()
            .map(|i| format!("{}: {}: {}", i.line, i.key, i.reason))
            .collect(),
    }
}

fn assert_one(text: &str, line: usize, key: &str, reason_part: &str) {
    let got = issues(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    let prefix = format!("{line}: {key}: ");
    assert!(
        got[0].starts_with(&prefix) && got[0].contains(reason_part),
        "want {prefix}..{reason_part}.., got {got:#?}"
    );
}

#[test]
fn example_parses_with_defaults() {
    let c = parse(EXAMPLE, "uacd.toml").unwrap();
    assert_eq!(c.sip.listen.len(), 2);
    assert_eq!(c.sip.listen[1].to_string(), "tcp:127.0.0.1:5060");
    assert_eq!(c.sip.user_agent, "uacd");
    assert!(c.tls.verify_server && c.tls.certificate.is_none());
    assert!(c.dns.nameservers.is_empty());
    assert_eq!(c.dns.greylist_sec, 30);
    assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.api.tokens[0].token.expose(),
        "change-me-to-a-long-random-token"
    );
    assert_eq!(c.api.tokens[0].user_id, "323");
    assert_eq!(c.metrics, MetricsConfig::default());
    assert_eq!(
        c.store.path,
        PathBuf::from("uacd.db"),
        "relative to the file"
    );
    let abs = parse(EXAMPLE, "/etc/uacd/uacd.toml").unwrap();
    assert_eq!(abs.store.path, PathBuf::from("/etc/uacd/uacd.db"));
    assert_eq!(c.registration, RegistrationConfig::default());
    assert_eq!(c.routing, RoutingConfig::default());
    let conn = &c.connections[0];
    assert_eq!(conn.id, "office-pbx");
    assert_eq!(conn.connection_name, "Office PBX");
    assert_eq!(conn.user_id, "323");
    assert_eq!(conn.user_name, generated_user_name("office-pbx"));
    assert_eq!(conn.password.expose().len(), 20);
    assert!(conn.active);
    let ext = &conn.external_uac_settings;
    let proxy = ext.proxy.as_ref().unwrap();
    assert_eq!(
        proxy.request_uri(Transport::Tcp),
        "sip:pbx.example.com",
        "design.md: the domain"
    );
    assert_eq!(proxy.to_string(), "sip:pbx.example.com:5060");
    assert_eq!(proxy.domain_uri(), "sip:pbx.example.com");
    assert_eq!(ext.transport, Transport::Tcp);
    assert_eq!(ext.auth_user(), "telnyx-reg");
    assert_eq!(ext.from_user(), "telnyx-reg");
    assert_eq!(ext.password.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(ext.expiration_sec, 3600);
    assert_eq!(
        conn.internal_uac_settings.destination_uri.as_deref(),
        Some("1006@assistant-abc123.sip.telnyx.com")
    );
}

#[test]
fn empty_file_gives_all_defaults() {
    let c = parse("", "x.toml").unwrap();
    assert_eq!(c.sip, SipConfig::default());
    assert_eq!(c.sip.listen[0].to_string(), "udp:0.0.0.0:5060");
    assert!(c.connections.is_empty());
}

#[test]
fn generated_values_are_stable_and_defaulted() {
    let a = parse(&one_conn(""), "t.toml").unwrap();
    let b = parse(&one_conn(""), "t.toml").unwrap();
    let (ca, cb) = (&a.connections[0], &b.connections[0]);
    assert_eq!(ca.id, generated_id("A"));
    assert!(ca.id.starts_with("conn-") && ca.id.len() == 21);
    assert_eq!(ca.id, cb.id);
    assert_eq!(ca.user_name, cb.user_name);
    assert!(ca.user_name.starts_with("uacd") && ca.user_name.len() == 16);
    assert_eq!(ca.user_id, "u1");
    assert_ne!(ca.password, cb.password, "passwords are random");
    assert_eq!(ca.external_uac_settings.transport, Transport::Udp);
}

#[test]
fn transport_follows_proxy_uri_when_absent() {
    let text = one_conn("").replace("sip:pbx.example.com", "sips:pbx.example.com");
    let c = parse(&text, "t.toml").unwrap();
    assert_eq!(
        c.connections[0].external_uac_settings.transport,
        Transport::Tls
    );
    let text = one_conn("").replace("sip:pbx.example.com", "sip:pbx;transport=TCP");
    let c = parse(&text, "t.toml").unwrap();
    assert_eq!(
        c.connections[0].external_uac_settings.transport,
        Transport::Tcp
    );
    assert_one(
        &one_conn("transport = \"udp\"").replace("sip:pbx.example.com", "sip:pbx;transport=tcp"),
        10,
        "connection[0].external_uac_settings.transport",
        "conflicts",
    );
    assert_one(
        &one_conn("transport = \"tcp\"").replace("sip:pbx.example.com", "sips:pbx"),
        10,
        "connection[0].external_uac_settings.transport",
        "TCP conflicts with the proxy's sips: scheme",
    );
}

#[test]
fn wrong_transport() {
    assert_one(
        &one_conn("transport = \"SCTP\""),
        10,
        "connection[0].external_uac_settings.transport",
        "unknown transport \"SCTP\"",
    );
    let c = parse(&one_conn("transport = \"tls\""), "t.toml").unwrap();
    assert_eq!(
        c.connections[0].external_uac_settings.transport,
        Transport::Tls
    );
}

#[test]
fn bad_proxy_uris() {
    for bad in [
        "",
        "http://pbx",
        "sip:",
        "sip:pbx:99999",
        "sip:pbx:0",
        "sip:pbx:x",
        "sip:user@pbx",
        "sip:pbx example.com",
        "2001:db8::1",
        "sip:pbx;transport=sctp",
        "sips:pbx;transport=udp",
        "sip:pbx..com",
        "sip:300.1.1.1",
        "sip:[::1",
        "sip:pbx?x=y",
    ] {
        let text = one_conn("").replace("\"sip:pbx.example.com\"", &format!("{bad:?}"));
        assert_one(
            &text,
            8,
            "connection[0].external_uac_settings.proxy",
            "invalid URI",
        );
    }
}

#[test]
fn proxy_uri_forms() {
    let p = |s: &str| s.parse::<ProxyUri>().unwrap();
    let u = p("sip:pbx.example.com:5060");
    assert_eq!(
        (u.tls, u.host.as_str(), u.port, u.transport),
        (false, "pbx.example.com", Some(5060), None)
    );
    assert_eq!(u.to_string(), "sip:pbx.example.com:5060");
    assert_eq!(p("sips:pbx").to_string(), "sips:pbx");
    assert!(p("SIPS:pbx").tls);
    assert_eq!(
        p("pbx.example.com").request_uri(Transport::Udp),
        "sip:pbx.example.com"
    );
    assert_eq!(
        p("10.0.0.1:5070").request_uri(Transport::Udp),
        "sip:10.0.0.1:5070"
    );
    assert_eq!(p("sips:pbx:5061").request_uri(Transport::Tls), "sips:pbx");
    let v6 = p("[2001:db8::1]:5060");
    assert_eq!(v6.host, "2001:db8::1");
    assert_eq!(v6.host_for_aor(), "[2001:db8::1]");
    assert_eq!(v6.to_string(), "sip:[2001:db8::1]:5060");
    assert_eq!(v6.domain_uri(), "sip:[2001:db8::1]");
    let t = p("sip:pbx;transport=tcp;lr");
    assert_eq!(t.transport, Some(Transport::Tcp));
    assert_eq!(t.to_string(), "sip:pbx;transport=tcp");
    assert_eq!(p(&t.to_string()), t);
}

#[test]
fn expiration_bounds() {
    for (v, ok) in [(59, false), (60, true), (86400, true), (86401, false)] {
        let text = one_conn(&format!("expiration_sec = {v}"));
        if ok {
            assert!(issues(&text).is_empty(), "{v}");
        } else {
            assert_one(
                &text,
                10,
                "connection[0].external_uac_settings.expiration_sec",
                "must be between 60 and 86400",
            );
        }
    }
    assert_one(
        &one_conn("expiration_sec = \"x\""),
        10,
        "connection[0].external_uac_settings.expiration_sec",
        "expected an integer, found string",
    );
    assert_one(
        &one_conn("expiration_sec = -5"),
        10,
        "connection[0].external_uac_settings.expiration_sec",
        "must be between",
    );
}

#[test]
fn duplicate_ids_and_user_names() {
    let text = "[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"u\"\n\
        [[connection]]\nid = \"a\"\nconnection_name = \"A\"\nuser_name = \"same\"\n\
        [connection.external_uac_settings]\nproxy = \"pbx\"\nusername = \"1\"\n\
        [[connection]]\nid = \"a\"\nconnection_name = \"B\"\nuser_name = \"same\"\n\
        [connection.external_uac_settings]\nproxy = \"pbx\"\nusername = \"2\"\n";
    assert_eq!(
        issues(text),
        vec![
            "12: connection[1].id: duplicate id \"a\" (first at connection[0].id, line 5)",
            "14: connection[1].user_name: duplicate user_name \"same\" (first at connection[0].user_name, line 7)",
        ]
    );
    // Same connection_name and no id: the generated ids collide.
    let two = format!(
        "{}\n{}",
        one_conn(""),
        one_conn("").split_once("\n\n").unwrap().1
    );
    let got = issues(&two);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("11: connection[1].id: duplicate id"),
        "{got:#?}"
    );
    assert!(got[0].ends_with("set it explicitly"), "{got:#?}");
    assert!(
        got[1].starts_with("11: connection[1].user_name: duplicate"),
        "{got:#?}"
    );
}

#[test]
fn unknown_keys_everywhere_with_lines() {
    let text = "bogus = 1\n[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nlisen = []\n\
        [[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"u\"\nrole = \"x\"\n\
        [[connection]]\nconnection_name = \"A\"\nnmae = \"typo\"\n\
        [connection.external_uac_settings]\nproxy = \"pbx\"\nusername = \"1\"\nexpires = 60\n";
    let got = issues(text);
    let keys: Vec<&str> = got
        .iter()
        .map(|s| s.split(": unknown key").next().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            "1: bogus",
            "4: sip.lisen",
            "8: api.tokens[0].role",
            "11: connection[0].nmae",
            "15: connection[0].external_uac_settings.expires",
        ]
    );
    assert!(got[0].contains("expected one of: sip, tls"), "{got:#?}");
}

#[test]
fn syntax_error_has_its_line() {
    let got = issues("[sip]\nuser_agent = \"uacd\"\nlisten = [\"udp:1.2.3.4:5\"\n\n[dns]\n");
    assert!(!got.is_empty());
    assert!(got[0].contains(": : TOML syntax error") || got[0].contains("TOML syntax error"));
    let e = parse("a = 1\nb = \nc = 2\n", "f.toml").unwrap_err();
    assert_eq!(e.issues[0].line, 2);
    assert!(
        e.to_string().starts_with("f.toml:2: TOML syntax error: "),
        "{e}"
    );
    let e = parse("[sip]\nuser_agent = \"a\"\nuser_agent = \"b\"\n", "f.toml").unwrap_err();
    assert_eq!(e.issues[0].line, 3, "{e}");
    assert!(e.to_string().contains("duplicate key"));
}

#[test]
fn several_problems_reported_at_once_in_line_order() {
    let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\", \"sctp:1.2.3.4:5\", \"tls:127.0.0.1:5061\"]\n\
        [api]\nlisten = \"localhost:80\"\n\
        [registration]\nretry_interval_sec = 0\nunregister_timeout_sec = 61\nmax_register_rate_per_sec = 0\n\
        [routing]\ntimeout_1xx_sec = 21\ntimeout_2xx_sec = 0\nfailover_codes = [200, 503, 503, \"x\"]\n\
        [dns]\nnameservers = [\"127.0.0.1\", \"[::1]:5353\", \"nope\"]\n\
        [[connection]]\nconnection_name = \"A\"\nuser_name = \"bad name\"\n\
        [connection.external_uac_settings]\nusername = \"x y\"\n\
        [connection.internal_uac_settings]\ndestination_uri = \"1006@\"\n";
    let e = parse(text, "c.toml").unwrap_err();
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    let expect = [
        "c.toml:2: sip.listen[1]: duplicate listen address",
        "c.toml:2: sip.listen[2]: unknown transport",
        "c.toml:2: sip.listen[3]: a tls listener needs",
        "c.toml:4: api.listen: expected IP:port",
        "c.toml:6: registration.retry_interval_sec: must be at least 1",
        "c.toml:7: registration.unregister_timeout_sec: must be between 1 and 60",
        "c.toml:8: registration.max_register_rate_per_sec: must be between 1 and",
        "c.toml:10: routing.timeout_1xx_sec: must be between 1 and 20",
        "c.toml:11: routing.timeout_2xx_sec: must be between 1 and 600",
        "c.toml:12: routing.failover_codes[0]: must be a SIP status code",
        "c.toml:12: routing.failover_codes[2]: duplicate code 503",
        "c.toml:12: routing.failover_codes[3]: expected an integer, found string",
        "c.toml:14: dns.nameservers[2]: expected an IP address",
        "c.toml:15: connection[0].user_id: missing",
        "c.toml:17: connection[0].user_name: may contain only",
        "c.toml:18: connection[0].external_uac_settings.proxy: missing required key",
        "c.toml:19: connection[0].external_uac_settings.username: contains characters",
        "c.toml:21: connection[0].internal_uac_settings.destination_uri: invalid host: empty host",
    ];
    for want in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{shown}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{shown}");
    let sorted = e.issues.windows(2).all(|w| w[0].line <= w[1].line);
    assert!(sorted);
}

#[test]
fn nameservers_and_registration_order() {
    let c = parse(
        "[dns]\nnameservers = [\"127.0.0.1\", \"[::1]:5353\", \"::1\"]\ngreylist_sec = 0\n",
        "t",
    )
    .unwrap();
    let ns: Vec<String> = c.dns.nameservers.iter().map(|a| a.to_string()).collect();
    assert_eq!(ns, vec!["127.0.0.1:53", "[::1]:5353", "[::1]:53"]);
    assert_one(
        "[registration]\nretry_interval_sec = 60\nmax_retry_interval_sec = 30\n",
        3,
        "registration.max_retry_interval_sec",
        "at least retry_interval_sec (60)",
    );
}

#[test]
fn tls_listener_with_certificate_and_types() {
    let c = parse(
        "[sip]\nlisten = [\"TLS:[::1]:5061\"]\npublic_address = \"[2001:db8::5]:5070\"\n[tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\nverify_server = false\n[metrics]\nlisten = \"127.0.0.1:9464\"\nper_connection_labels = true\n",
        "t",
    )
    .unwrap();
    assert_eq!(c.sip.listen[0].transport, Transport::Tls);
    assert_eq!(
        c.sip
            .public_address
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("[2001:db8::5]:5070")
    );
    assert!(!c.tls.verify_server);
    assert!(c.metrics.per_connection_labels);
    assert_one(
        "[tls]\ncertificate = \"c.pem\"\n",
        1,
        "tls.private_key",
        "together",
    );
    assert_one(
        "[tls]\nverify_server = \"yes\"\n",
        2,
        "tls.verify_server",
        "expected a boolean",
    );
    assert_one("sip = 3\n", 1, "sip", "expected a table, found integer");
}

#[test]
fn api_tokens_rules() {
    assert_one(
        "[[api.tokens]]\nuser_id = \"u\"\n",
        1,
        "api.tokens[0].token",
        "missing required key",
    );
    assert_one(
        "[[api.tokens]]\ntoken = \"test-token-0123456\"\n",
        1,
        "api.tokens[0].user_id",
        "missing required key",
    );
    assert_one(
        "[[api.tokens]]\ntoken = \"test-token-0123456\"\ntoken_file = \"f\"\nuser_id = \"u\"\n",
        3,
        "api.tokens[0].token_file",
        "not both",
    );
    assert_one(
        "[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"u\"\n[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"v\"\n",
        5,
        "api.tokens[1].token",
        "duplicate token",
    );
    // RFC-free, but a bearer token must not be guessable by trying.
    assert_one(
        "[[api.tokens]]\ntoken = \"fifteen-chars-x\"\nuser_id = \"u\"\n",
        2,
        "api.tokens[0].token",
        "shorter than 16 characters",
    );
    assert!(issues("[[api.tokens]]\ntoken = \"sixteen-chars-xy\"\nuser_id = \"u\"\n").is_empty());
    // No token and no user_id: the connection has no owner.
    assert_one(
        "[[connection]]\nconnection_name = \"A\"\n[connection.external_uac_settings]\nproxy = \"p\"\nusername = \"u\"\n",
        1,
        "connection[0].user_id",
        "missing",
    );
}

#[test]
fn token_file_is_read_trimmed_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "  secret-from-file\n").unwrap();
    let cfg = dir.path().join("uacd.toml");
    std::fs::write(
        &cfg,
        "[[api.tokens]]\ntoken_file = \"tok\"\nuser_id = \"9\"\n[[api.tokens]]\ntoken_file = \"missing\"\nuser_id = \"8\"\n",
    )
    .unwrap();
    let e = load(&cfg).unwrap_err();
    assert_eq!(e.issues.len(), 1, "{e}");
    assert_eq!(e.issues[0].line, 5);
    assert_eq!(e.issues[0].key, "api.tokens[1].token_file");
    assert!(e.issues[0].reason.starts_with("cannot read"));
    std::fs::write(dir.path().join("missing"), "token-from-file-2").unwrap();
    let c = load(&cfg).unwrap();
    assert_eq!(c.api.tokens[0].token.expose(), "secret-from-file");
    assert_eq!(c.api.tokens[1].token.expose(), "token-from-file-2");
    let e = load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(
        e.to_string().contains("nope.toml: cannot read config file"),
        "{e}"
    );
}

#[test]
fn debug_never_shows_secrets() {
    let c = parse(EXAMPLE, "uacd.toml").unwrap();
    let dbg = format!("{c:?} {c:#?}");
    assert!(!dbg.contains("change-me-to-a-long-random-token"));
    assert!(!dbg.contains("s3cret"));
    assert!(!dbg.contains(c.connections[0].password.expose()));
    assert!(dbg.contains("***"));
    assert_eq!(c.api.tokens[0].token.to_string(), "***");
}

#[test]
fn connection_serde_for_the_api() {
    let json_like: Connection = toml::from_str(
        "connection_name = \"X\"\n[external_uac_settings]\nproxy = \"sip:pbx:5070\"\ntransport = \"tcp\"\nusername = \"1\"\npassword = \"pw\"\n",
    )
    .unwrap();
    assert!(json_like.active);
    assert_eq!(json_like.external_uac_settings.transport, Transport::Tcp);
    assert_eq!(json_like.password.expose().len(), 20);
    let mut c = json_like.clone();
    c.fill_defaults(Some("owner"));
    assert!(
        c.check(false, None).is_empty(),
        "{:?}",
        c.check(false, None)
    );
    let out = toml::to_string(&c).unwrap();
    assert!(!out.contains("password"), "{out}");
    assert!(out.contains("proxy = \"sip:pbx:5070\""), "{out}");
    assert!(out.contains("transport = \"TCP\""), "{out}");
    let err = toml::from_str::<Connection>("connection_name = \"X\"\nbogus = 1\n").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    // The API may omit the proxy.
    let mut no_proxy: Connection = toml::from_str("connection_name = \"Y\"\n").unwrap();
    no_proxy.fill_defaults(Some("o"));
    assert!(no_proxy.check(false, None).is_empty());
    assert_eq!(
        no_proxy.check(true, None)[0].key,
        "external_uac_settings.proxy"
    );
}

#[test]
fn destination_uri_forms() {
    for ok in [
        "1006@host.example",
        "sip:1006@h",
        "sips:h:5061;transport=tls",
        "h",
        "a@[::1]:5060",
        "?x;y@h",
        "1006;isup-oli=0@h;transport=tcp?X-A=1",
    ] {
        assert!(connection::validate_destination_uri(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a b@h", "@h", "1006@", "tel:+1", "u@h:0", "u@;x", "?u"] {
        assert!(connection::validate_destination_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn transport_and_listen_helpers() {
    assert_eq!("udp".parse::<Transport>().unwrap(), Transport::Udp);
    assert_eq!("Tls".parse::<Transport>().unwrap().default_port(), 5061);
    assert_eq!(Transport::Tcp.to_string(), "TCP");
    assert_eq!(Transport::Tcp.uri_param(), "tcp");
    assert!(Transport::Tcp.is_stream() && !Transport::Udp.is_stream());
    assert!("udp:0.0.0.0".parse::<ListenAddr>().is_err());
    assert!("0.0.0.0:5060".parse::<ListenAddr>().is_err());
    assert_eq!(
        "tls:[::1]:5061".parse::<ListenAddr>().unwrap().to_string(),
        "tls:[::1]:5061"
    );
}

#[test]
fn odd_shapes_are_reported_not_panics() {
    for text in [
        "[[connection]]\n",
        "connection = 5\n",
        "connection = [1, {}]\n",
        "[api]\ntokens = \"x\"\n",
        "[sip]\nlisten = [1, \"udp:é:1\"]\n",
        "[routing]\nfailover_codes = [99999999999999999999999]\n",
        "\u{feff}[sip]\r\nuser_agent = \"\\u0007\"\r\n",
        "[[connection]]\nid = \"\"\nconnection_name = \"\"\nuser_name = \"\"\npassword = \"\\u0000\"\n",
    ] {
        assert!(parse(text, "t").is_err(), "{text:?}");
    }
    let got = issues("[[connection]]\n");
    assert_eq!(
        got[0],
        "1: connection[0].connection_name: missing required key"
    );
}

#[test]
fn proxy_with_numeric_host_and_scheme() {
    let p: ProxyUri = "sip:127.0.0.10:5060".parse().unwrap();
    assert_eq!(
        (p.host.as_str(), p.port, p.tls),
        ("127.0.0.10", Some(5060), false)
    );
    let p: ProxyUri = "sips:10.0.0.1".parse().unwrap();
    assert_eq!((p.host.as_str(), p.port, p.tls), ("10.0.0.1", None, true));
    let p: ProxyUri = "sip:[2001:db8::1]:5070".parse().unwrap();
    assert_eq!((p.host.as_str(), p.port), ("2001:db8::1", Some(5070)));
    let p: ProxyUri = "10.0.0.1:5070".parse().unwrap();
    assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", Some(5070)));
}

#[test]
fn public_address_forms() {
    use std::net::IpAddr;
    let ip = |s: &str| PublicHost::Ip(s.parse::<IpAddr>().unwrap());
    let ok = |s: &str, host: PublicHost, port: Option<u16>| {
        let p: PublicAddress = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(p, PublicAddress { host, port }, "{s}");
        assert_eq!(p.to_string(), s, "{s} prints as written");
    };
    ok("203.0.113.10", ip("203.0.113.10"), None);
    ok("203.0.113.10:5070", ip("203.0.113.10"), Some(5070));
    ok("[2001:db8::1]:5060", ip("2001:db8::1"), Some(5060));
    ok("[2001:db8::1]", ip("2001:db8::1"), None);
    ok(
        "edge.example.com",
        PublicHost::Name("edge.example.com".into()),
        None,
    );
    ok(
        "edge.example.com:5070",
        PublicHost::Name("edge.example.com".into()),
        Some(5070),
    );
    ok(
        "Edge.Example.com",
        PublicHost::Name("Edge.Example.com".into()),
        None,
    );
    assert_eq!(
        "[2001:db8::1]:5060"
            .parse::<PublicAddress>()
            .unwrap()
            .host
            .bare(),
        "2001:db8::1"
    );
    let err = |s: &str| s.parse::<PublicAddress>().unwrap_err();
    assert!(err("2001:db8::1").contains("in brackets"));
    assert!(err("edge.example.com:x").contains("invalid port"));
    assert!(err("edge .example.com").contains("spaces"));
}

#[test]
fn limits_defaults_values_and_bounds() {
    let cfg = parse("", "l.toml").unwrap();
    assert_eq!(cfg.limits, LimitsConfig::default());
    let cfg = parse(
        "[limits]\ninbound_flows = 10\ninbound_flows_per_ip = 2\ninbound_flow_idle_sec = 5\n\
         header_timeout_sec = 3\ntls_handshakes = 4\nerror_replies_per_ip_per_sec = 7\n\
         dialogs = 50\ndns_cache_entries = 60\nconnections_per_user = 70\n\
         [sip]\nmonitors = [\"192.0.2.0/24\", \"2001:db8::1\"]\n",
        "l.toml",
    )
    .unwrap();
    let l = &cfg.limits;
    assert_eq!(
        (
            l.inbound_flows,
            l.inbound_flows_per_ip,
            l.inbound_flow_idle_sec
        ),
        (10, 2, 5)
    );
    assert_eq!(
        (
            l.header_timeout_sec,
            l.tls_handshakes,
            l.error_replies_per_ip_per_sec
        ),
        (3, 4, 7)
    );
    assert_eq!(
        (l.dialogs, l.dns_cache_entries, l.connections_per_user),
        (50, 60, 70)
    );
    let m = &cfg.sip.monitors;
    assert!(m[0].contains("192.0.2.77".parse().unwrap()));
    assert!(!m[0].contains("192.0.3.1".parse().unwrap()));
    assert!(m[1].contains("2001:db8::1".parse().unwrap()));
    assert!(!m[1].contains("2001:db8::2".parse().unwrap()));
    assert_one(
        "[limits]\ninbound_flows = 0\n",
        2,
        "limits.inbound_flows",
        "must be between 1",
    );
    assert_one(
        "[limits]\nheader_timeout_sec = 301\n",
        2,
        "limits.header_timeout_sec",
        "must be between 1 and 300",
    );
    assert_one("[limits]\nflows = 1\n", 2, "limits.flows", "unknown key");
    assert_one(
        "[sip]\nmonitors = [\"10.0.0.0/33\"]\n",
        2,
        "sip.monitors[0]",
        "prefix length must be 0..=32",
    );
    assert_one(
        "[sip]\nmonitors = [\"nope/8\"]\n",
        2,
        "sip.monitors[0]",
        "is not an IP address",
    );
}

#[test]
fn cidr_membership() {
    let c: Cidr = "10.1.0.0/16".parse().unwrap();
    assert!(c.contains("10.1.255.3".parse().unwrap()));
    assert!(
        c.contains("::ffff:10.1.2.3".parse().unwrap()),
        "IPv4-mapped counts as IPv4"
    );
    assert!(!c.contains("10.2.0.1".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.9".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
    assert_eq!(c.to_string(), "10.1.0.0/16");
}

#[test]
fn sip_domain_is_a_lowercased_host_name() {
    let cfg = parse("[sip]\ndomain = \"UAC.Example.NET\"\n", "d.toml").unwrap();
    assert_eq!(cfg.sip.domain.as_deref(), Some("uac.example.net"));
    assert_eq!(parse("", "d.toml").unwrap().sip.domain, None);
    for (value, reason) in [
        ("", "must not be empty"),
        ("192.0.2.1", "not an IP address"),
        ("2001:db8::1", "not an IP address"),
        ("[2001:db8::1]", "not an IP address"),
        ("uac.example.net:5060", "without a port"),
        ("uac..example.net", "empty label"),
        ("uac.example.net.", "empty label"),
        (".uac.example.net", "empty label"),
        ("uac_1.example.net", "only letters, digits and '-'"),
        ("uac example.net", "only letters, digits and '-'"),
        ("-uac.example.net", "must not begin or end with '-'"),
        ("uac.example.123", "last label must not be all digits"),
    ] {
        assert_one(
            &format!("[sip]\ndomain = {value:?}\n"),
            2,
            "sip.domain",
            reason,
        );
    }
    let long = format!("{}.net", "a".repeat(64));
    assert_one(
        &format!("[sip]\ndomain = {long:?}\n"),
        2,
        "sip.domain",
        "longer than 63",
    );
    let too_long = vec!["a".repeat(63); 4].join(".") + ".net";
    assert_one(
        &format!("[sip]\ndomain = {too_long:?}\n"),
        2,
        "sip.domain",
        "longer than 253",
    );
    assert_one("[sip]\ndomain = 5\n", 2, "sip.domain", "expected a string");
}

#[test]
fn with_sip_domain_user_names_are_dns_labels() {
    let text = |user_name: &str| {
        format!(
            "[sip]\ndomain = \"uac.example.net\"\n[[connection]]\nconnection_name = \"A\"\nuser_id = \"u\"\nuser_name = {user_name:?}\n[connection.external_uac_settings]\nproxy = \"sip:pbx\"\nusername = \"1\"\n"
        )
    };
    let cfg = parse(&text("office-1"), "d.toml").unwrap();
    assert_eq!(
        cfg.connections[0].fqdn(cfg.sip.domain.as_deref().unwrap()),
        "office-1.uac.example.net"
    );
    for (user_name, reason) in [
        ("Office", "only a-z 0-9 - (lowercase)"),
        ("a_b", "only a-z 0-9 - (lowercase)"),
        ("a.b", "only a-z 0-9 - (lowercase)"),
        ("-a", "no '-' at either end"),
        ("a-", "no '-' at either end"),
    ] {
        assert_one(&text(user_name), 6, "connection[0].user_name", reason);
    }
    assert_one(
        &text(&"a".repeat(64)),
        6,
        "connection[0].user_name",
        "at most 63 characters",
    );
    // The same names are fine without sip.domain.
    for user_name in ["Office", "a_b", "a.b", "-a"] {
        let no_domain = text(user_name).replace("[sip]\ndomain = \"uac.example.net\"\n", "");
        assert!(issues(&no_domain).is_empty(), "{user_name}");
    }
    // A generated user_name is a label.
    let generated = one_conn("").replace("[[api", "[sip]\ndomain = \"uac.example.net\"\n[[api");
    let cfg = parse(&generated, "d.toml").unwrap();
    assert!(cfg.connections[0].user_name.starts_with("uacd"));
    // The whole fqdn must fit in 253 characters.
    let long_domain = vec!["a".repeat(63); 3].join(".") + ".net";
    let text = text(&"b".repeat(63)).replace("uac.example.net", &long_domain);
    assert_one(&text, 6, "connection[0].user_name", "longer than 253");
}

#[test]
fn routing_internal_sources_and_caller_identity() {
    let cfg = parse(
        "[routing]\ninternal_sources = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nassert_caller_identity = true\n",
        "r.toml",
    )
    .unwrap();
    let r = &cfg.routing;
    assert!(r.internal_sources[0].contains("10.9.8.7".parse().unwrap()));
    assert!(r.internal_sources[1].contains("2001:db8::5".parse().unwrap()));
    assert!(!r.internal_sources[0].contains("192.0.2.1".parse().unwrap()));
    assert!(r.assert_caller_identity);
    let d = parse("", "r.toml").unwrap().routing;
    assert!(d.internal_sources.is_empty() && !d.assert_caller_identity);
    assert_one(
        "[routing]\ninternal_sources = [\"10.0.0.0/8\", \"nope\"]\n",
        2,
        "routing.internal_sources[1]",
        "is not an IP address",
    );
    assert_one(
        "[routing]\ninternal_sources = \"10.0.0.0/8\"\n",
        2,
        "routing.internal_sources",
        "expected an array",
    );
    assert_one(
        "[routing]\nassert_caller_identity = \"yes\"\n",
        2,
        "routing.assert_caller_identity",
        "expected a boolean",
    );
}

/// `one_conn` with `tables` appended after the connection's external settings.
fn conn_with(tables: &str) -> String {
    format!("{}{tables}", one_conn(""))
}

#[test]
fn call_settings_tables_dotted_keys_and_defaults() {
    let cfg = parse(
        &conn_with(
            "[connection.inbound]\ntimeout_1xx_secs = 5\ntimeout_2xx_secs = 600\nchannel_limit = 2\n\
             [connection.outbound]\nchannel_limit = 1\n",
        ),
        "c.toml",
    )
    .unwrap();
    let c = &cfg.connections[0];
    assert_eq!(
        c.inbound,
        CallSettings {
            timeout_1xx_secs: Some(5),
            timeout_2xx_secs: Some(600),
            channel_limit: Some(2),
        }
    );
    assert_eq!(
        c.outbound,
        CallSettings {
            channel_limit: Some(1),
            ..CallSettings::default()
        }
    );
    // Dotted keys and inline tables in the [[connection]] table itself.
    let dotted = "[[api.tokens]]\ntoken = \"test-token-0123456\"\nuser_id = \"u1\"\n\
        [[connection]]\nconnection_name = \"A\"\ninbound.channel_limit = 3\n\
        outbound = { timeout_1xx_secs = 120, timeout_2xx_secs = 1 }\n\
        external_uac_settings = { proxy = \"sip:pbx\", username = \"1\" }\n";
    let c = parse(dotted, "c.toml").unwrap().connections.remove(0);
    assert_eq!(c.inbound.channel_limit, Some(3));
    assert_eq!(
        (c.outbound.timeout_1xx_secs, c.outbound.timeout_2xx_secs),
        (Some(120), Some(1))
    );
    let none = parse(&one_conn(""), "c.toml")
        .unwrap()
        .connections
        .remove(0);
    assert_eq!(
        (none.inbound, none.outbound),
        (CallSettings::default(), CallSettings::default())
    );
}

#[test]
fn call_settings_bounds_and_unknown_keys() {
    for (table, key, value, reason) in [
        (
            "inbound",
            "timeout_1xx_secs",
            "0",
            "must be between 1 and 120",
        ),
        (
            "inbound",
            "timeout_1xx_secs",
            "121",
            "must be between 1 and 120",
        ),
        (
            "outbound",
            "timeout_1xx_secs",
            "0",
            "must be between 1 and 120",
        ),
        (
            "inbound",
            "timeout_2xx_secs",
            "601",
            "must be between 1 and 600",
        ),
        (
            "outbound",
            "timeout_2xx_secs",
            "0",
            "must be between 1 and 600",
        ),
        (
            "outbound",
            "timeout_2xx_secs",
            "99999999999",
            "must be between 1 and 600",
        ),
        ("inbound", "channel_limit", "0", "must be at least 1"),
        ("outbound", "channel_limit", "0", "must be at least 1"),
        (
            "outbound",
            "channel_limit",
            "-1",
            "must be a non-negative integer",
        ),
        (
            "inbound",
            "channel_limit",
            "\"2\"",
            "expected an integer, found string",
        ),
        (
            "inbound",
            "nope",
            "1",
            "unknown key (expected one of: timeout_1xx_secs, timeout_2xx_secs, channel_limit)",
        ),
    ] {
        let text = conn_with(&format!("[connection.{table}]\n{key} = {value}\n"));
        // one_conn is 9 lines; the table header is line 10, the key line 11.
        assert_one(&text, 11, &format!("connection[0].{table}.{key}"), reason);
    }
    assert_one(
        &one_conn("").replace(
            "connection_name = \"A\"\n",
            "connection_name = \"A\"\ninbound = 5\n",
        ),
        7,
        "connection[0].inbound",
        "expected a table",
    );
    // A huge channel_limit is no limit in practice.
    let c = parse(
        &conn_with("[connection.inbound]\nchannel_limit = 99999999999\n"),
        "c.toml",
    )
    .unwrap()
    .connections
    .remove(0);
    assert_eq!(c.inbound.channel_limit, Some(u32::MAX));
}

#[test]
fn call_settings_checks_are_shared_with_the_api() {
    let mut c: Connection = serde_json::from_str(
        r#"{"connection_name": "X", "inbound": {"timeout_1xx_secs": 121, "channel_limit": 0},
            "outbound": {"timeout_2xx_secs": 0, "timeout_1xx_secs": null}}"#,
    )
    .unwrap();
    c.fill_defaults(Some("o"));
    let keys: Vec<&str> = c.check(false, None).iter().map(|i| i.key).collect();
    assert_eq!(
        keys,
        [
            "inbound.timeout_1xx_secs",
            "inbound.channel_limit",
            "outbound.timeout_2xx_secs"
        ]
    );
    let v = serde_json::to_value(CallSettings::default()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"timeout_1xx_secs": null, "timeout_2xx_secs": null, "channel_limit": null})
    );
}
