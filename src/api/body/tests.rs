use axum::http::StatusCode;
use serde_json::json;

use super::*;
use crate::config::Transport;

fn pointers(e: &ApiError) -> Vec<String> {
    e.errors
        .iter()
        .map(|o| {
            o.source
                .as_ref()
                .and_then(|s| s.pointer.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn doc(v: Value) -> Value {
    let mut v = v;
    v["id"] = json!("1000000000000000001");
    v
}

#[test]
fn pointer_escapes_per_rfc_6901() {
    assert_eq!(
        pointer("external_uac_settings.transport"),
        "/external_uac_settings/transport"
    );
    assert_eq!(pointer("a~b"), "/a~0b");
    assert_eq!(pointer(""), "");
}

#[test]
fn a_minimal_connection_gets_generated_credentials() {
    let c = to_connection(doc(json!({"connection_name": "Office"})), "323", None).unwrap();
    assert_eq!(c.user_id, "323");
    assert!(c.user_name.starts_with("uacd"));
    assert_eq!(c.password.expose().len(), 20);
    assert!(c.active);
}

#[test]
fn type_errors_unknown_fields_and_enums_point_at_the_field() {
    for (body, want) in [
        (json!({"connection_name": 5}), "/connection_name"),
        (json!({}), "/connection_name"),
        (json!({"connection_name": "x", "bogus": 1}), "/bogus"),
        (
            json!({"connection_name": "x", "external_uac_settings": {"transport": "SCTP"}}),
            "/external_uac_settings/transport",
        ),
        (
            json!({"connection_name": "x", "external_uac_settings": {"nope": 1}}),
            "/external_uac_settings/nope",
        ),
        (
            json!({"connection_name": "x", "external_uac_settings": {"expiration_sec": -1}}),
            "/external_uac_settings/expiration_sec",
        ),
        (json!({"connection_name": "x", "active": "yes"}), "/active"),
        (
            json!({"connection_name": "x", "internal_uac_settings": {"destination_uri": 1}}),
            "/internal_uac_settings/destination_uri",
        ),
    ] {
        let e = to_connection(doc(body.clone()), "1", None).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(pointers(&e), [want], "{body}");
    }
}

/// serde would read these structs from arrays (fields in order, defaults
/// for the rest): the schema says object, and so does the answer.
#[test]
fn settings_given_as_arrays_or_scalars_are_refused() {
    for key in [
        "external_uac_settings",
        "internal_uac_settings",
        "inbound",
        "outbound",
    ] {
        for bad in [json!([]), json!([null, 5]), json!(true), json!("x")] {
            let body = json!({"connection_name": "x", key: bad});
            let e = to_connection(doc(body.clone()), "1", None).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(pointers(&e), [format!("/{key}")], "{body}");
        }
    }
}

#[test]
fn field_checks_report_every_issue_with_pointers() {
    let e = to_connection(
        doc(json!({
            "connection_name": "x",
            "external_uac_settings": {"proxy": "sip:pbx.test", "expiration_sec": 10},
            "internal_uac_settings": {"destination_uri": "a b"}
        })),
        "1",
        None,
    )
    .unwrap_err();
    assert_eq!(
        pointers(&e),
        [
            "/external_uac_settings/username",
            "/external_uac_settings/expiration_sec",
            "/internal_uac_settings/destination_uri"
        ]
    );
}

#[test]
fn a_wrongly_typed_password_is_not_echoed() {
    let e = to_connection(
        doc(json!({"connection_name": "x", "password": ["hunter2-secret"]})),
        "1",
        None,
    )
    .unwrap_err();
    let text = serde_json::to_string(&e.errors).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(pointers(&e), ["/password"]);
}

#[test]
fn read_only_fields_and_user_ids_are_rejected() {
    let body = json!({"id": "1", "created_at": "x", "user_id": "other", "connection_name": "x"});
    let e = check_writable(body.as_object().unwrap(), "323").unwrap_err();
    assert_eq!(pointers(&e), ["/id", "/created_at", "/user_id"]);
    let own = json!({"user_id": "323", "connection_name": "x"});
    assert_eq!(
        pointers(&check_writable(own.as_object().unwrap(), "323").unwrap_err()),
        ["/user_id"]
    );
    let ok = json!({"connection_name": "x", "active": false});
    assert!(check_writable(ok.as_object().unwrap(), "323").is_ok());
}

#[test]
fn merge_patch_follows_rfc_7396() {
    let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "keep": 1});
    merge_patch(&mut t, &json!({"a": "z", "c": {"f": null, "h": 2}}));
    assert_eq!(t, json!({"a": "z", "c": {"d": "e", "h": 2}, "keep": 1}));
    let mut t = json!({"a": [1, 2]});
    merge_patch(&mut t, &json!({"a": [3]}));
    assert_eq!(t, json!({"a": [3]}), "arrays are replaced");
}

#[test]
fn patch_keeps_passwords_and_nested_fields() {
    let c = to_connection(
        doc(json!({
            "connection_name": "x",
            "password": "own-pw",
            "external_uac_settings": {"proxy": "sip:pbx.test", "username": "u", "password": "ext-pw", "transport": "TCP"}
        })),
        "1",
        None,
    )
    .unwrap();
    let mut d = to_document(&c);
    merge_patch(&mut d, &json!({"external_uac_settings": {"username": "v"}}));
    let p = to_connection(d, "1", None).unwrap();
    assert_eq!(p.password.expose(), "own-pw");
    let ext = &p.external_uac_settings;
    assert_eq!(ext.password.as_ref().map(|s| s.expose()), Some("ext-pw"));
    assert_eq!(ext.username.as_deref(), Some("v"));
    assert_eq!(ext.transport, Transport::Tcp);
    assert_eq!(ext.proxy, c.external_uac_settings.proxy);
}

#[test]
fn transport_follows_the_proxy_uri_when_not_given() {
    let body = json!({"connection_name": "x", "external_uac_settings": {"proxy": "sip:pbx.test;transport=tcp", "username": "u"}});
    let mut d = doc(body.clone());
    infer_transport(&mut d, body.get("external_uac_settings"));
    assert_eq!(
        to_connection(d, "1", None)
            .unwrap()
            .external_uac_settings
            .transport,
        Transport::Tcp
    );
}

#[test]
fn integral_floats_are_integers() {
    let m = parse_object(br#"{"a": 3600.0, "b": {"c": [-2.0, 1.5]}}"#).unwrap();
    assert_eq!(Value::Object(m), json!({"a": 3600, "b": {"c": [-2, 1.5]}}));
}

#[test]
fn bodies_must_be_json_objects() {
    assert_eq!(
        parse_object(b"{").unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        parse_object(b"[1]").unwrap_err().status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut h = HeaderMap::new();
    assert!(!is_json(&h));
    h.insert(
        header::CONTENT_TYPE,
        "application/json; charset=utf-8".parse().unwrap(),
    );
    assert!(is_json(&h));
    h.insert(
        header::CONTENT_TYPE,
        "application/merge-patch+json".parse().unwrap(),
    );
    assert!(is_json(&h));
    h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert!(!is_json(&h));
}

#[test]
fn unknown_patch_members_are_rejected_even_when_null() {
    let p = json!({"": null, "external_uac_settings": {"nope": null, "proxy": null}, "internal_uac_settings": {"x": 1}});
    let e = check_known(p.as_object().unwrap()).unwrap_err();
    assert_eq!(
        pointers(&e),
        [
            "/",
            "/external_uac_settings/nope",
            "/internal_uac_settings/x"
        ]
    );
    let ok = json!({"connection_name": "x", "external_uac_settings": {"proxy": null}});
    assert!(check_known(ok.as_object().unwrap()).is_ok());
}

#[test]
fn call_settings_are_read_checked_and_pointed_at() {
    let c = to_connection(
        doc(json!({"connection_name": "x",
            "inbound": {"timeout_1xx_secs": 5, "channel_limit": 2},
            "outbound": {"timeout_2xx_secs": 600, "channel_limit": null}})),
        "1",
        None,
    )
    .unwrap();
    assert_eq!(
        (c.inbound.timeout_1xx_secs, c.inbound.timeout_2xx_secs),
        (Some(5), None)
    );
    assert_eq!(c.inbound.channel_limit, Some(2));
    assert_eq!(c.outbound.timeout_2xx_secs, Some(600));
    assert_eq!(c.outbound.channel_limit, None);
    for (body, want) in [
        (
            json!({"inbound": {"channel_limit": 0}}),
            "/inbound/channel_limit",
        ),
        (
            json!({"inbound": {"channel_limit": -1}}),
            "/inbound/channel_limit",
        ),
        (
            json!({"inbound": {"channel_limit": 4_294_967_296u64}}),
            "/inbound/channel_limit",
        ),
        (
            json!({"inbound": {"channel_limit": "2"}}),
            "/inbound/channel_limit",
        ),
        (
            json!({"inbound": {"timeout_1xx_secs": 121}}),
            "/inbound/timeout_1xx_secs",
        ),
        (
            json!({"outbound": {"timeout_1xx_secs": 0}}),
            "/outbound/timeout_1xx_secs",
        ),
        (
            json!({"outbound": {"timeout_2xx_secs": 601}}),
            "/outbound/timeout_2xx_secs",
        ),
        (json!({"outbound": {"nope": 1}}), "/outbound/nope"),
        (json!({"outbound": 5}), "/outbound"),
    ] {
        let mut body = body;
        body["connection_name"] = json!("x");
        let e = to_connection(doc(body.clone()), "1", None).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(pointers(&e), [want], "{body}");
    }
    let e = to_connection(
        doc(json!({"connection_name": "x", "inbound": {"timeout_2xx_secs": 0}})),
        "1",
        None,
    )
    .unwrap_err();
    assert_eq!(e.errors[0].detail, "must be between 1 and 600 (seconds)");
}

#[test]
fn call_settings_are_returned_with_nulls_and_merge_on_patch() {
    let c = to_connection(
        doc(
            json!({"connection_name": "x", "inbound": {"channel_limit": 2, "timeout_1xx_secs": 5}}),
        ),
        "1",
        None,
    )
    .unwrap();
    let mut d = to_document(&c);
    assert_eq!(
        d["outbound"],
        json!({"timeout_1xx_secs": null, "timeout_2xx_secs": null, "channel_limit": null})
    );
    merge_patch(
        &mut d,
        &json!({"inbound": {"channel_limit": null, "timeout_2xx_secs": 30}, "outbound": {"channel_limit": 1}}),
    );
    let p = to_connection(d, "1", None).unwrap();
    assert_eq!(p.inbound.channel_limit, None, "null removes");
    assert_eq!(p.inbound.timeout_1xx_secs, Some(5), "kept");
    assert_eq!(p.inbound.timeout_2xx_secs, Some(30));
    assert_eq!(p.outbound.channel_limit, Some(1));
    // A whole object set to null goes back to the defaults.
    let mut d = to_document(&p);
    merge_patch(&mut d, &json!({"inbound": null}));
    assert_eq!(
        to_connection(d, "1", None).unwrap().inbound,
        crate::config::CallSettings::default()
    );
    let unknown = json!({"inbound": {"limit": null}, "outbound": {"channel_limit": null}});
    assert_eq!(
        pointers(&check_known(unknown.as_object().unwrap()).unwrap_err()),
        ["/inbound/limit"]
    );
}

#[test]
fn with_sip_domain_a_user_name_must_be_a_dns_label() {
    let body = |u: &str| doc(json!({"connection_name": "x", "user_name": u}));
    let domain = Some("uac.example.net");
    let c = to_connection(body("office-1"), "1", domain).unwrap();
    assert_eq!(c.fqdn("uac.example.net"), "office-1.uac.example.net");
    for bad in ["Office", "a_b", "a.b", "-a"] {
        let e = to_connection(body(bad), "1", domain).unwrap_err();
        assert_eq!(pointers(&e), ["/user_name"], "{bad}");
        assert!(e.errors[0].detail.contains("DNS label"), "{bad}");
        assert!(to_connection(body(bad), "1", None).is_ok(), "{bad}");
    }
    // The generated user_name is a label.
    let g = to_connection(doc(json!({"connection_name": "x"})), "1", domain).unwrap();
    assert!(g.user_name.starts_with("uacd"));
}
