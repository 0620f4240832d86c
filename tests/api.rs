//! The REST API against the real `uacd` binary with a temp store, on
//! 127.0.0.80..=85 (one address per test): CRUD, PATCH merge semantics, every
//! error code, tenant isolation in every verb, pagination/filter/sort,
//! `/v2/sip_registration_status`, and live apply end to end with SIPp registrars. Each test
//! ends by grepping the daemon's log and every API response for the passwords
//! it used.

mod api_client;
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use api_client::{Api, Resp};
use common::{
    Sipp, Uacd, free_tcp_port, poll_until, require_peer, temp_dir, test_ip, wait_for_tcp_listener,
};
use serde_json::{Value, json};

const TOKEN_A: &str = "token-a-7f3c9e0b2d";
const TOKEN_B: &str = "token-b-1d44aa9c3e";
const START_WAIT: Duration = Duration::from_secs(20);
const STATUS_WAIT: Duration = Duration::from_secs(15);
const SIPP_WAIT: Duration = Duration::from_secs(60);

struct Daemon {
    uacd: Uacd,
    /// Acts for user 323.
    a: Api,
    /// Acts for user 999 (its token comes from a token_file).
    b: Api,
    ip: Ipv4Addr,
}

impl Daemon {
    /// uacd with SIP on `ip:5060` (UDP+TCP), the API on `ip:<free port>`,
    /// tokens A (user 323, inline) and B (user 999, token_file), and `extra`
    /// appended (connections, `{ip}` replaced).
    fn start(n: u8, name: &str, extra: &str) -> Daemon {
        let dir = temp_dir(name);
        let ip = test_ip(n);
        let port = free_tcp_port(ip);
        std::fs::write(dir.join("token-b.txt"), format!("{TOKEN_B}\n")).unwrap();
        let config = format!(
            r#"[sip]
listen = ["udp:{ip}:5060", "tcp:{ip}:5060"]
[api]
listen = "{ip}:{port}"
[[api.tokens]]
token = "{TOKEN_A}"
user_id = "323"
[[api.tokens]]
token_file = "token-b.txt"
user_id = "999"
[registration]
retry_interval_sec = 30
max_retry_interval_sec = 30
unregister_timeout_sec = 5
{}"#,
            extra.replace("{ip}", &ip.to_string())
        );
        let uacd = Uacd::start(&config, &dir);
        wait_for_tcp_listener(ip, port, START_WAIT).unwrap_or_else(|e| {
            panic!("{e}\n{}", common::tail(uacd.log_path(), 40));
        });
        let a = Api::new(SocketAddr::from((ip, port)), TOKEN_A);
        let b = a.with_token(Some(TOKEN_B));
        Daemon { uacd, a, b, ip }
    }

    /// Fails if any password appears in the daemon's log or any API response.
    fn assert_no_leak(&self, passwords: &[&str]) {
        // /metrics is part of what must never show a password.
        let m = self.a.get("/metrics");
        assert_eq!(m.status, 200, "{m:?}");
        let log = std::fs::read_to_string(self.uacd.log_path()).unwrap();
        let transcript = self.a.transcript();
        assert!(!transcript.is_empty());
        for pw in passwords {
            assert!(!log.contains(pw), "password {pw:?} in the daemon's log");
            assert!(
                !transcript.contains(pw),
                "password {pw:?} in an API response:\n{transcript}"
            );
        }
    }
}

fn data(r: &Resp) -> Value {
    r.json()["data"].clone()
}

fn expect(r: &Resp, status: u16) -> &Resp {
    assert_eq!(r.status, status, "{r:?}");
    r
}

/// Asserts the error format: `errors[0]` has code, title, detail, and the source.
fn expect_error(r: &Resp, status: u16, source: &str) {
    expect(r, status);
    let v = r.json();
    let e = &v["errors"][0];
    for k in ["code", "title", "detail"] {
        assert!(e[k].is_string(), "errors[0].{k} missing: {v}");
    }
    assert_eq!(r.error_source(), source, "{v}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
}

fn wait_status(api: &Api, id: &str, want: u64) -> Value {
    let mut last = Value::Null;
    let ok = poll_until(STATUS_WAIT, || {
        last = data(&api.get(&format!("/v2/uac_connections/{id}/registration_status")));
        last["registration_status"] == want
    });
    assert!(ok.is_ok(), "{id} never reached status {want}; last: {last}");
    last
}

#[test]
fn crud_merge_patch_and_every_error_code() {
    let d = Daemon::start(
        80,
        "api-crud",
        r#"
[[connection]]
id = "file-pbx"
connection_name = "File PBX"
user_id = "323"
[connection.external_uac_settings]
proxy = "sip:{ip}:5099"
username = "f"
"#,
    );
    let a = &d.a;

    // Create: connection_name only; credentials generated, nothing registers.
    let r = a.post("/v2/uac_connections", &json!({"connection_name": "Office"}));
    expect(&r, 201);
    let c = data(&r);
    let id = c["id"].as_str().unwrap().to_owned();
    assert!(
        id.len() == 19 && id.bytes().all(|b| b.is_ascii_digit()),
        "{c}"
    );
    assert_eq!(c["record_type"], "uac_connection");
    assert_eq!(c["connection_name"], "Office");
    assert_eq!(c["user_id"], "323");
    assert_eq!(c["active"], true);
    assert_eq!(c["registration_status"], 0, "no proxy: Not Applicable");
    assert!(c["user_name"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(c["fqdn"], d.ip.to_string());
    for k in ["created_at", "updated_at", "registration_status_updated_at"] {
        assert!(c[k].as_str().is_some_and(|t| t.ends_with('Z')), "{k}: {c}");
    }
    assert!(c.get("password").is_none(), "{c}");
    assert_eq!(data(&a.get(&format!("/v2/uac_connections/{id}"))), c);

    // PATCH: nested objects merge, passwords stay write-only.
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"external_uac_settings": {"proxy": "sip:{ip}:5098".replace("{ip}", &d.ip.to_string()), "username": "reg", "password": "Ext-Secret-80", "transport": "TCP"},
                "internal_uac_settings": {"destination_uri": "1006@assistant-abc123.sip.telnyx.com"}}),
    );
    let c1 = data(expect(&r, 200));
    assert_eq!(c1["external_uac_settings"]["username"], "reg");
    assert!(
        c1["external_uac_settings"].get("password").is_none(),
        "{c1}"
    );
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"connection_name": "Office 2", "external_uac_settings": {"from_user": "601"}}),
    );
    let c2 = data(expect(&r, 200));
    assert_eq!(c2["connection_name"], "Office 2");
    let ext = &c2["external_uac_settings"];
    assert_eq!(ext["from_user"], "601");
    assert_eq!(ext["username"], "reg", "merged, not replaced: {c2}");
    assert_eq!(ext["transport"], "TCP");
    assert_eq!(
        c2["internal_uac_settings"]["destination_uri"],
        "1006@assistant-abc123.sip.telnyx.com"
    );
    assert_eq!(c2["created_at"], c["created_at"]);
    // null removes a member (RFC 7396).
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"external_uac_settings": {"from_user": null}}),
    );
    assert_eq!(
        data(expect(&r, 200))["external_uac_settings"]["from_user"],
        Value::Null
    );
    // Per-direction call settings: null when unset, merged like the others.
    let unset = json!({"timeout_1xx_secs": null, "timeout_2xx_secs": null, "channel_limit": null});
    assert_eq!((&c["inbound"], &c["outbound"]), (&unset, &unset), "{c}");
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"inbound": {"channel_limit": 2, "timeout_1xx_secs": 5}, "outbound": {"timeout_2xx_secs": 90}}),
    );
    expect(&r, 200);
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"inbound": {"channel_limit": null, "timeout_2xx_secs": 30}}),
    );
    let c3 = data(expect(&r, 200));
    assert_eq!(
        c3["inbound"],
        json!({"timeout_1xx_secs": 5, "timeout_2xx_secs": 30, "channel_limit": null})
    );
    assert_eq!(c3["outbound"]["timeout_2xx_secs"], 90);
    assert_eq!(
        data(&a.get(&format!("/v2/uac_connections/{id}")))["inbound"],
        c3["inbound"]
    );

    // Errors; none of them changes anything.
    let path = format!("/v2/uac_connections/{id}");
    let before = data(&a.get(&path));
    expect_error(&a.with_token(None).get(&path), 401, "<none>");
    expect_error(&a.with_token(Some("wrong")).get(&path), 401, "<none>");
    let basic = a.with_token(None).send(
        "GET",
        &path,
        &[("Authorization", "Basic Zm9vOmJhcg==")],
        None,
    );
    expect_error(&basic, 401, "<none>");
    assert_eq!(basic.header("www-authenticate"), Some("Bearer"));
    let r = a.send(
        "PATCH",
        &path,
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    expect_error(&r, 415, "<none>");
    let r = a.send(
        "POST",
        "/v2/uac_connections",
        &[],
        Some(b"{\"connection_name\":\"x\"}"),
    );
    expect_error(&r, 415, "<none>");
    let big = json!({"connection_name": "x".repeat(70 * 1024)});
    expect_error(&a.post("/v2/uac_connections", &big), 413, "<none>");
    let r = a.send(
        "PATCH",
        &path,
        &[("Content-Type", "application/json")],
        Some(b"{\"connection_name\": "),
    );
    expect_error(&r, 400, "<none>");
    for (body, pointer) in [
        (json!({"bogus": 1}), "/bogus"),
        (json!({"connection_name": 7}), "/connection_name"),
        (json!({"connection_name": ""}), "/connection_name"),
        (
            json!({"external_uac_settings": {"transport": "SCTP"}}),
            "/external_uac_settings/transport",
        ),
        (
            json!({"external_uac_settings": {"expiration_sec": 59}}),
            "/external_uac_settings/expiration_sec",
        ),
        (
            json!({"external_uac_settings": {"expiration_sec": 86401}}),
            "/external_uac_settings/expiration_sec",
        ),
        (
            json!({"external_uac_settings": {"expiration_sec": -5}}),
            "/external_uac_settings/expiration_sec",
        ),
        (
            json!({"external_uac_settings": {"proxy": "http://x"}}),
            "/external_uac_settings/proxy",
        ),
        (
            json!({"external_uac_settings": {"extra": true}}),
            "/external_uac_settings/extra",
        ),
        (
            // The API wants the scheme (the config file takes a bare host).
            json!({"external_uac_settings": {"outbound_proxy": "G"}}),
            "/external_uac_settings/outbound_proxy",
        ),
        (
            json!({"external_uac_settings": {"proxy": "127.0.0.81:5060", "username": "u"}}),
            "/external_uac_settings/proxy",
        ),
        (
            // Rejected before anything is sent: nothing listens there.
            json!({"external_uac_settings": {
                "proxy": "sips:127.0.0.81:5061", "username": "u", "transport": "TCP"}}),
            "/external_uac_settings/transport",
        ),
        (json!({"active": "yes"}), "/active"),
        (
            json!({"inbound": {"channel_limit": 0}}),
            "/inbound/channel_limit",
        ),
        (
            json!({"outbound": {"timeout_1xx_secs": 121}}),
            "/outbound/timeout_1xx_secs",
        ),
        (json!({"outbound": {"limit": 1}}), "/outbound/limit"),
        (json!({"id": "123"}), "/id"),
        (json!({"user_id": "999"}), "/user_id"),
        (json!({"user_id": "323"}), "/user_id"),
        (json!({"registration_status": 4}), "/registration_status"),
    ] {
        expect_error(&a.patch(&path, &body), 422, pointer);
    }
    expect_error(
        &a.post("/v2/uac_connections", &json!({})),
        422,
        "/connection_name",
    );
    expect_error(&a.post("/v2/uac_connections", &json!([1])), 422, "");
    let taken = c["user_name"].as_str().unwrap();
    expect_error(
        &a.post(
            "/v2/uac_connections",
            &json!({"connection_name": "dup", "user_name": taken}),
        ),
        409,
        "/user_name",
    );
    expect_error(
        &a.post(
            "/v2/uac_connections",
            &json!({"connection_name": "x", "user_name": ""}),
        ),
        422,
        "/user_name",
    );
    expect_error(
        &a.patch(
            &path,
            &json!({"": null, "external_uac_settings": {"nope": null}}),
        ),
        422,
        "/",
    );
    let strip = |mut v: Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("registration_status");
        o.remove("registration_status_updated_at");
        o.remove("last_registered_ip");
        v
    };
    let after = data(&a.get(&path));
    assert_eq!(
        strip(after),
        strip(before),
        "rejected requests changed nothing"
    );
    let integral = json!({"external_uac_settings": {"expiration_sec": 600.0}});
    assert_eq!(
        data(expect(&a.patch(&path, &integral), 200))["external_uac_settings"]["expiration_sec"],
        600,
        "600.0 is the integer 600"
    );
    // A merge patch's null removes the member: transport back to its default.
    let reset = json!({"external_uac_settings": {"transport": null}});
    assert_eq!(
        data(expect(&a.patch(&path, &reset), 200))["external_uac_settings"]["transport"],
        "UDP"
    );

    // File-owned: readable, not changeable.
    let f = data(expect(&a.get("/v2/uac_connections/file-pbx"), 200));
    assert_eq!(f["connection_name"], "File PBX");
    expect_error(
        &a.patch(
            "/v2/uac_connections/file-pbx",
            &json!({"connection_name": "x"}),
        ),
        409,
        "<none>",
    );
    expect_error(&a.delete("/v2/uac_connections/file-pbx"), 409, "<none>");

    // Unknown paths and methods answer in the error format too.
    expect_error(&a.get("/v2/nothing"), 404, "<none>");
    expect_error(&a.get("/v2/uac_connections/0000"), 404, "<none>");
    expect_error(&a.send("PUT", &path, &[], None), 405, "<none>");

    // Delete returns the deleted object; then it is gone.
    let r = a.delete(&path);
    let gone = data(expect(&r, 200));
    assert_eq!(gone["id"], id.as_str());
    assert_eq!(gone["connection_name"], "Office 2");
    expect_error(&a.get(&path), 404, "<none>");
    expect_error(&a.delete(&path), 404, "<none>");

    // design.md: every endpoint needs a token, /healthz and /metrics too;
    // the OpenAPI document is public.
    for path in ["/healthz", "/metrics"] {
        expect_error(&a.with_token(None).get(path), 401, "<none>");
        expect_error(&a.with_token(Some("wrong")).get(path), 401, "<none>");
    }
    let h = a.get("/healthz");
    assert_eq!(h.status, 200);
    let doc = a.with_token(None).get("/v2/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    d.assert_no_leak(&["Ext-Secret-80", TOKEN_A, TOKEN_B]);
}

#[test]
fn another_tenants_connection_is_invisible_in_every_verb() {
    let d = Daemon::start(81, "api-tenants", "");
    let (a, b) = (&d.a, &d.b);
    // Before any SIP traffic, every labelled counter of the contract is
    // already there at 0 for its known labels (dashboards and alerts see 0,
    // not nothing).
    let m = a.get("/metrics");
    for series in [
        "uacd_calls_total{direction=\"inbound\",result=\"answered\"} 0",
        "uacd_calls_total{direction=\"inbound\",result=\"503\"} 0",
        "uacd_calls_total{direction=\"inbound\",result=\"rejected_source\"} 0",
        "uacd_calls_total{direction=\"outbound\",result=\"answered\"} 0",
        "uacd_calls_total{direction=\"outbound\",result=\"480\"} 0",
        "uacd_calls_total{direction=\"outbound\",result=\"rejected_source\"} 0",
        "uacd_register_requests_total{response=\"200\"} 0",
        "uacd_register_requests_total{response=\"timeout\"} 0",
        "uacd_sip_messages_total{direction=\"in\",kind=\"INVITE\"} 0",
        "uacd_sip_messages_total{direction=\"out\",kind=\"2xx\"} 0",
        "uacd_transport_errors_total{transport=\"udp\"} 0",
        "uacd_failovers_total 0",
    ] {
        assert!(
            m.body.lines().any(|l| l == series),
            "no {series}:\n{}",
            m.body
        );
    }
    let c = data(expect(
        &a.post("/v2/uac_connections", &json!({"connection_name": "A's"})),
        201,
    ));
    let id = c["id"].as_str().unwrap();
    let path = format!("/v2/uac_connections/{id}");

    expect_error(&b.get(&path), 404, "<none>");
    expect_error(
        &b.get(&format!("{path}/registration_status")),
        404,
        "<none>",
    );
    expect_error(
        &b.patch(&path, &json!({"connection_name": "stolen"})),
        404,
        "<none>",
    );
    expect_error(&b.delete(&path), 404, "<none>");
    let list = expect(&b.get("/v2/uac_connections"), 200).json();
    assert_eq!(list["data"], json!([]));
    assert_eq!(list["meta"]["total_results"], 0);
    // B cannot create for A.
    expect_error(
        &b.post(
            "/v2/uac_connections",
            &json!({"connection_name": "x", "user_id": "323"}),
        ),
        422,
        "/user_id",
    );
    // The connection exists but is not B's: 403, not 404.
    let q = |conn: &str, user: &str| {
        format!(
            "/v2/sip_registration_status?credential_type=uac_third-party_credential&connection_id={conn}&user_id={user}"
        )
    };
    expect_error(&b.get(&q(id, "999")), 403, "<none>");
    expect_error(&b.get(&q(id, "323")), 403, "<none>");
    expect_error(&a.get(&q(id, "999")), 403, "<none>");
    // Untouched.
    assert_eq!(data(&a.get(&path))["connection_name"], "A's");
    assert_eq!(
        expect(&a.get("/v2/uac_connections"), 200).json()["meta"]["total_results"],
        1
    );
}

#[test]
fn seed_002_sip_registration_status_shape_and_errors() {
    let d = Daemon::start(
        82,
        "api-seed002",
        r#"
[[connection]]
id = "2954035328656082602"
connection_name = "Office PBX"
user_id = "323"
active = false
[connection.external_uac_settings]
proxy = "sip:{ip}:5099"
outbound_proxy = "sip:{ip}:5098"
transport = "UDP"
username = "telnyx-reg"
auth_username = "telnyx-auth"
password = "Seed-Secret-82"
from_user = "601"
[connection.internal_uac_settings]
destination_uri = "1006@assistant-abc123.sip.telnyx.com"
"#,
    );
    let a = &d.a;
    let base = "/v2/sip_registration_status";
    let ok = a.get(&format!(
        "{base}?credential_type=uac_third-party_credential&connection_id=2954035328656082602&user_id=323"
    ));
    let v = expect(&ok, 200).json();
    let ip = d.ip;
    assert_eq!(
        v,
        json!({
            "connection_id": "2954035328656082602",
            "user_id": "323",
            "connection_name": "Office PBX",
            "username": "telnyx-reg",
            "pair_state": "INACTIVE",
            "registered": false,
            "last_registration_response": null,
            "third-party_uac_settings": {
                "proxy": format!("sip:{ip}:5099"),
                "outbound_proxy": format!("sip:{ip}:5098"),
                "transport": "UDP",
                "username": "telnyx-reg",
                "auth_username": "telnyx-auth",
                "from_user": "601",
                "expiration_sec": 3600,
                "password": "***"
            },
            "internal_uac_settings": {"destination_uri": "1006@assistant-abc123.sip.telnyx.com"}
        })
    );
    for (q, param) in [
        ("connection_id=1&user_id=323", "credential_type"),
        (
            "credential_type=bogus&connection_id=1&user_id=323",
            "credential_type",
        ),
        (
            "credential_type=uac_third-party_credential&user_id=323",
            "connection_id",
        ),
        (
            "credential_type=uac_third-party_credential&connection_id=1",
            "user_id",
        ),
        (
            "credential_type=uac_third-party_credential&connection_id=&user_id=323",
            "connection_id",
        ),
    ] {
        expect_error(&a.get(&format!("{base}?{q}")), 400, param);
    }
    expect_error(&a.get(base), 400, "credential_type");
    expect_error(
        &a.get(&format!("{base}?credential_type=uac_third-party_credential&connection_id=2954035328656082602&user_id=1")),
        403,
        "<none>",
    );
    expect_error(
        &a.get(&format!(
            "{base}?credential_type=uac_third-party_credential&connection_id=404404&user_id=323"
        )),
        404,
        "<none>",
    );
    expect_error(
        &a.get(&format!("{base}?credential_type=telephony_credential&connection_id=2954035328656082602&user_id=323")),
        404,
        "<none>",
    );
    expect_error(
        &a.with_token(None).get(&format!("{base}?credential_type=uac_third-party_credential&connection_id=2954035328656082602&user_id=323")),
        401,
        "<none>",
    );
    d.assert_no_leak(&["Seed-Secret-82"]);
}

#[test]
fn pagination_filters_and_sort() {
    let d = Daemon::start(83, "api-pages", "");
    let a = &d.a;
    let names = [
        "delta",
        "Alpha office",
        "charlie",
        "bravo OFFICE",
        "echo",
        "foxtrot",
        "golf",
    ];
    let mut ids = Vec::new();
    for n in names {
        ids.push(
            data(expect(
                &a.post("/v2/uac_connections", &json!({"connection_name": n})),
                201,
            ))["id"]
                .clone(),
        );
    }
    d.b.post(
        "/v2/uac_connections",
        &json!({"connection_name": "b's office"}),
    );
    let list = |q: &str| expect(&a.get(&format!("/v2/uac_connections?{q}")), 200).json();
    let names_of = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["connection_name"].as_str().unwrap().to_owned())
            .collect()
    };

    let v = list("page[size]=3");
    assert_eq!(
        v["meta"],
        json!({"page_number": 1, "page_size": 3, "total_pages": 3, "total_results": 7})
    );
    assert_eq!(
        names_of(&v),
        ["golf", "foxtrot", "echo"],
        "default: newest first"
    );
    let v = list("page%5Bnumber%5D=3&page%5Bsize%5D=3");
    assert_eq!(names_of(&v), ["delta"]);
    assert_eq!(v["meta"]["page_number"], 3);
    let v = list("page[number]=9&page[size]=3");
    assert_eq!(v["data"], json!([]));
    let v = list("sort=connection_name&page[size]=250");
    assert_eq!(
        names_of(&v),
        [
            "Alpha office",
            "bravo OFFICE",
            "charlie",
            "delta",
            "echo",
            "foxtrot",
            "golf"
        ]
    );
    let v = list("sort=-connection_name&page[size]=2");
    assert_eq!(names_of(&v), ["golf", "foxtrot"]);
    let v = list("sort=created_at&page[size]=1");
    assert_eq!(v["data"][0]["id"], ids[0]);
    let v = list("filter[connection_name][contains]=office&sort=connection_name");
    assert_eq!(
        names_of(&v),
        ["Alpha office", "bravo OFFICE"],
        "case-insensitive, own only"
    );
    assert_eq!(v["meta"]["total_results"], 2);
    let v = list("filter[connection_name][contains]=%25");
    assert_eq!(v["meta"]["total_results"], 0, "% is literal");
    for (q, param) in [
        ("page[size]=0", "page[size]"),
        ("page[size]=251", "page[size]"),
        ("page[number]=0", "page[number]"),
        ("page[number]=x", "page[number]"),
        ("sort=auth_type", "sort"),
        ("filter[user_id]=1", "filter[user_id]"),
    ] {
        expect_error(&a.get(&format!("/v2/uac_connections?{q}")), 400, param);
    }
}

/// `registrar-unregister.xml` on `ip:port`: one binding, then `Expires: 0`.
fn unregister_registrar(
    ip: Ipv4Addr,
    port: u16,
    dir: &Path,
    name: &str,
    pw: &str,
) -> common::SippRun {
    require_peer("sipp");
    Sipp::new("registrar-unregister.xml", dir)
        .name(name)
        .local(ip, port)
        .key("realm", "pbx.test")
        .set("pw", pw)
        .args(["-m", "1", "-timeout", "50", "-timeout_error"])
        .start()
}

#[test]
fn live_apply_with_sipp_create_rename_delete() {
    const PW: &str = "Sipp-Secret-84";
    let d = Daemon::start(84, "api-sipp-live", "");
    let a = &d.a;
    let mut sipp = unregister_registrar(d.ip, 5070, d.uacd.dir(), "reg", PW);
    let r = a.post(
        "/v2/uac_connections",
        &json!({
            "connection_name": "SIPp PBX",
            "external_uac_settings": {"proxy": format!("sip:{}:5070", d.ip), "username": "telnyx-reg", "password": PW, "transport": "UDP"},
            "internal_uac_settings": {"destination_uri": "1006@assistant-abc123.sip.telnyx.com"}
        }),
    );
    let id = data(expect(&r, 201))["id"].as_str().unwrap().to_owned();
    let st = wait_status(a, &id, 4);
    assert_eq!(st["registration_status_name"], "Success");
    assert_eq!(st["registered"], true);
    assert_eq!(st["last_registration_response"], "200 OK");
    assert!(st["expires_at"].is_string(), "{st}");
    assert!(st["last_registered_ip"].is_string(), "{st}");
    let status_at = st["registration_status_updated_at"].clone();

    // Name and internal settings only: the registration is not touched (the
    // registrar would see Expires: 0 and end the scenario; a new Call-ID would
    // be discarded by SIPp).
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"connection_name": "Renamed", "internal_uac_settings": {"destination_uri": "2000@cc-app-xyz789.sip.telnyx.com"}}),
    );
    let c = data(expect(&r, 200));
    assert_eq!(
        c["internal_uac_settings"]["destination_uri"],
        "2000@cc-app-xyz789.sip.telnyx.com"
    );
    assert_eq!(c["registration_status"], 4);
    assert_eq!(
        c["last_registered_ip"], st["last_registered_ip"],
        "the connection object says where it registered, as the status endpoint does"
    );
    assert_eq!(
        c["registration_status_updated_at"], status_at,
        "registration untouched"
    );
    assert!(
        sipp.child.try_status().is_none(),
        "registrar saw an unregister:\n{}",
        sipp.report()
    );

    // Delete: Expires: 0 reaches the registrar (the scenario ends only then).
    let r = a.delete(&format!("/v2/uac_connections/{id}"));
    let gone = data(expect(&r, 200));
    assert_eq!(gone["registration_status"], 5, "{gone}");
    sipp.wait_success(SIPP_WAIT);
    d.assert_no_leak(&[PW]);
}

#[test]
fn live_apply_with_sipp_new_registrar_then_inactive() {
    const PW: &str = "Sipp-Secret-85";
    let d = Daemon::start(85, "api-sipp-move", "");
    let a = &d.a;
    let mut first = unregister_registrar(d.ip, 5070, d.uacd.dir(), "first", PW);
    let mut second = unregister_registrar(d.ip, 5071, d.uacd.dir(), "second", PW);
    let r = a.post(
        "/v2/uac_connections",
        &json!({
            "connection_name": "Moving PBX",
            "external_uac_settings": {"proxy": format!("sip:{}:5070", d.ip), "username": "telnyx-reg", "password": PW}
        }),
    );
    let id = data(expect(&r, 201))["id"].as_str().unwrap().to_owned();
    wait_status(a, &id, 4);

    // External settings change: old binding removed, new one made.
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"external_uac_settings": {"proxy": format!("sip:{}:5071", d.ip)}}),
    );
    expect(&r, 200);
    first.wait_success(SIPP_WAIT);
    wait_status(a, &id, 4);

    // active: false unregisters and keeps the row.
    let r = a.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"active": false}),
    );
    let c = data(expect(&r, 200));
    assert_eq!(c["active"], false);
    assert_eq!(c["registration_status"], 0);
    second.wait_success(SIPP_WAIT);
    expect(&a.get(&format!("/v2/uac_connections/{id}")), 200);
    d.assert_no_leak(&[PW]);
}

/// In-process: what routing reads (`Supervisor::connection_by_user`) follows
/// API writes at once — a changed `destination_uri` is seen by the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_lookup_follows_api_writes() {
    let ip = test_ip(80);
    let text = format!(
        "[sip]\nlisten = [\"udp:{ip}:5062\"]\n[api]\nlisten = \"{ip}:0\"\n\
         [[api.tokens]]\ntoken = \"{TOKEN_A}\"\nuser_id = \"323\"\n"
    );
    let config = uacd::config::parse(&text, "inproc.toml").expect("valid config");
    let app = uacd::app::App::start_with_timers(config, Default::default())
        .await
        .expect("starts");
    let api = Api::new(app.api_addr().await, TOKEN_A);
    let call = |f: Box<dyn FnOnce(&Api) -> Resp + Send>| {
        let api = api.clone();
        tokio::task::spawn_blocking(move || f(&api))
    };
    let r = call(Box::new(|a| {
        a.post(
            "/v2/uac_connections",
            &json!({"connection_name": "Routed", "user_name": "routed-1",
                    "internal_uac_settings": {"destination_uri": "1006@assistant-abc123.sip.telnyx.com"}}),
        )
    }))
    .await
    .unwrap();
    let id = data(expect(&r, 201))["id"].as_str().unwrap().to_owned();
    let c = app
        .supervisor
        .connection_by_user("routed-1")
        .expect("known to routing");
    assert_eq!(
        c.internal_uac_settings.destination_uri.as_deref(),
        Some("1006@assistant-abc123.sip.telnyx.com")
    );
    let path = format!("/v2/uac_connections/{id}");
    let p = path.clone();
    let r = call(Box::new(move |a| {
        a.patch(&p, &json!({"user_name": "routed-2", "internal_uac_settings": {"destination_uri": "2000@cc-app-xyz789.sip.telnyx.com"}}))
    }))
    .await
    .unwrap();
    expect(&r, 200);
    assert!(app.supervisor.connection_by_user("routed-1").is_none());
    let c = app
        .supervisor
        .connection_by_user("routed-2")
        .expect("renamed user");
    assert_eq!(
        c.internal_uac_settings.destination_uri.as_deref(),
        Some("2000@cc-app-xyz789.sip.telnyx.com")
    );
    let r = call(Box::new(move |a| a.delete(&path))).await.unwrap();
    expect(&r, 200);
    assert!(app.supervisor.connection_by_user("routed-2").is_none());
    app.stop().await;
}

/// In-process, with `sip.domain`: each connection's `fqdn` is
/// `<user_name>.<sip.domain>`, and a user_name that is not a DNS label is
/// refused (422 at /user_name) on POST and PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fqdn_follows_sip_domain() {
    let ip = test_ip(80);
    let text = format!(
        "[sip]\nlisten = [\"udp:{ip}:5064\"]\ndomain = \"UAC.Example.net\"\n[api]\nlisten = \"{ip}:0\"\n\
         [[api.tokens]]\ntoken = \"{TOKEN_A}\"\nuser_id = \"323\"\n"
    );
    let config = uacd::config::parse(&text, "domain.toml").expect("valid config");
    let app = uacd::app::App::start_with_timers(config, Default::default())
        .await
        .expect("starts");
    let api = Api::new(app.api_addr().await, TOKEN_A);
    let checks = tokio::task::spawn_blocking(move || {
        let a = &api;
        let r = a.post(
            "/v2/uac_connections",
            &json!({"connection_name": "Domain", "user_name": "office-7"}),
        );
        let c = data(expect(&r, 201));
        assert_eq!(c["fqdn"], "office-7.uac.example.net", "{c}");
        let path = format!("/v2/uac_connections/{}", c["id"].as_str().unwrap());
        let listed = expect(&a.get("/v2/uac_connections"), 200).json();
        assert_eq!(listed["data"][0]["fqdn"], "office-7.uac.example.net");
        let r = a.patch(&path, &json!({"user_name": "office-8"}));
        assert_eq!(data(expect(&r, 200))["fqdn"], "office-8.uac.example.net");
        expect_error(
            &a.patch(&path, &json!({"user_name": "Office_8"})),
            422,
            "/user_name",
        );
        expect_error(
            &a.post(
                "/v2/uac_connections",
                &json!({"connection_name": "Bad", "user_name": "a.b"}),
            ),
            422,
            "/user_name",
        );
        let generated = a.post("/v2/uac_connections", &json!({"connection_name": "Gen"}));
        let g = data(expect(&generated, 201));
        assert_eq!(
            g["fqdn"],
            format!("{}.uac.example.net", g["user_name"].as_str().unwrap())
        );
        assert_eq!(data(&a.get(&path))["fqdn"], "office-8.uac.example.net");
    });
    let result = checks.await;
    app.stop().await;
    result.unwrap();
}
