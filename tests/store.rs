//! The embedded store through the real binary, on 127.0.0.86..=87: an API
//! write acknowledged just before `kill -9` is there after a restart and
//! registers again; config-file connections are synced on each start and a
//! generated password is kept across restarts; the file is 0600; a corrupt or
//! unopenable store stops the start with a clear error.

mod api_client;
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use api_client::Api;
use common::{
    Sipp, Uacd, free_tcp_port, poll_until, require_peer, temp_dir, test_ip, wait_for_tcp_listener,
};
use serde_json::{Value, json};

const TOKEN: &str = "store-test-token";
const WAIT: Duration = Duration::from_secs(20);

fn config(ip: Ipv4Addr, sip_port: u16, api_port: u16, extra: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:{ip}:{sip_port}"]
[api]
listen = "{ip}:{api_port}"
[[api.tokens]]
token = "{TOKEN}"
user_id = "323"
[store]
path = "uacd.db"
[registration]
retry_interval_sec = 1
max_retry_interval_sec = 2
unregister_timeout_sec = 5
{extra}"#
    )
}

fn start(cfg: &str, dir: &Path, ip: Ipv4Addr, api_port: u16) -> (Uacd, Api) {
    let uacd = Uacd::start(cfg, dir);
    if let Err(e) = wait_for_tcp_listener(ip, api_port, WAIT) {
        panic!("{e}\n{}", common::tail(uacd.log_path(), 40));
    }
    (uacd, Api::new(SocketAddr::from((ip, api_port)), TOKEN))
}

fn kill_9(uacd: &mut Uacd) {
    uacd.child.signal("KILL");
    let status = uacd.child.wait_timeout(WAIT).expect("uacd dies on SIGKILL");
    assert!(!status.success());
}

fn data(r: &api_client::Resp) -> Value {
    r.json()["data"].clone()
}

#[test]
fn kill_9_right_after_writes_loses_nothing_and_registration_resumes() {
    const PW: &str = "Kill9-Secret-86";
    let dir = temp_dir("store-kill9");
    let ip = test_ip(86);
    let api_port = free_tcp_port(ip);
    let cfg = config(ip, 5060, api_port, "");
    let (mut uacd, api) = start(&cfg, &dir, ip, api_port);

    let r = api.post(
        "/v2/uac_connections",
        &json!({"connection_name": "Survivor", "external_uac_settings": {"proxy": format!("sip:{ip}:5070"), "username": "telnyx-reg", "password": PW}}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let id = data(&r)["id"].as_str().unwrap().to_owned();
    let r = api.post("/v2/uac_connections", &json!({"connection_name": "Doomed"}));
    let doomed = data(&r)["id"].as_str().unwrap().to_owned();
    let r = api.delete(&format!("/v2/uac_connections/{doomed}"));
    assert_eq!(r.status, 200);
    let r = api.patch(
        &format!("/v2/uac_connections/{id}"),
        &json!({"internal_uac_settings": {"destination_uri": "1006@assistant-abc123.sip.telnyx.com"}}),
    );
    assert_eq!(r.status, 200);
    kill_9(&mut uacd);
    let mode = std::fs::metadata(dir.join("uacd.db"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the store holds passwords");

    // Restart: everything acknowledged is there, and it registers again.
    require_peer("sipp");
    let mut sipp = Sipp::new("registrar-unregister.xml", &dir)
        .local(ip, 5070)
        .key("realm", "pbx.test")
        .set("pw", PW)
        .args(["-m", "1", "-timeout", "50", "-timeout_error"])
        .start();
    let (mut uacd, api) = start(&cfg, &dir, ip, api_port);
    let c = data(&api.get(&format!("/v2/uac_connections/{id}")));
    assert_eq!(c["connection_name"], "Survivor");
    assert_eq!(
        c["internal_uac_settings"]["destination_uri"],
        "1006@assistant-abc123.sip.telnyx.com"
    );
    assert_eq!(
        api.get(&format!("/v2/uac_connections/{doomed}")).status,
        404
    );
    let mut last = Value::Null;
    let registered = poll_until(WAIT, || {
        last = data(&api.get(&format!("/v2/uac_connections/{id}/registration_status")));
        last["registration_status"] == 4
    });
    assert!(registered.is_ok(), "not registered after restart: {last}");
    // SIGTERM: unregisters (the registrar's scenario ends with Expires: 0).
    let status = uacd.terminate(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    sipp.wait_success(Duration::from_secs(60));
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(!log.contains(PW) && !api.transcript().contains(PW));
}

fn stored_password(db: &Path, id: &str) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT password FROM connections WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn file_connections_are_synced_and_a_generated_password_survives_restarts() {
    let dir = temp_dir("store-file-sync");
    let ip = test_ip(87);
    let api_port = free_tcp_port(ip);
    let conn = |id: &str, name: &str| {
        format!(
            "[[connection]]\nid = \"{id}\"\nconnection_name = \"{name}\"\n\
             [connection.external_uac_settings]\nproxy = \"sip:{ip}:5099\"\nusername = \"u\"\n"
        )
    };
    let cfg1 = config(
        ip,
        5060,
        api_port,
        &(conn("f1", "One") + &conn("f2", "Two")),
    );
    let (mut uacd, api) = start(&cfg1, &dir, ip, api_port);
    let created = api.post(
        "/v2/uac_connections",
        &json!({"connection_name": "From the API"}),
    );
    assert_eq!(created.status, 201);
    let api_id = data(&created)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        uacd.terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let db = dir.join("uacd.db");
    let pw1 = stored_password(&db, "f1");
    assert_eq!(pw1.len(), 20);

    // Same file again: the generated password is reused, not regenerated.
    let (mut uacd, _api) = start(&cfg1, &dir, ip, api_port);
    assert_eq!(
        uacd.terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(stored_password(&db, "f1"), pw1);

    // f1 renamed, f2 gone from the file: the store follows; API rows stay.
    let cfg2 = config(ip, 5060, api_port, &conn("f1", "One renamed"));
    let (mut uacd, api) = start(&cfg2, &dir, ip, api_port);
    let f1 = data(&api.get("/v2/uac_connections/f1"));
    assert_eq!(f1["connection_name"], "One renamed");
    assert_eq!(api.get("/v2/uac_connections/f2").status, 404);
    assert_eq!(
        api.get(&format!("/v2/uac_connections/{api_id}")).status,
        200
    );
    let r = api.patch(
        &format!("/v2/uac_connections/{api_id}"),
        &json!({"connection_name": "still mine"}),
    );
    assert_eq!(r.status, 200, "API rows stay API-owned: {r:?}");
    assert_eq!(
        api.patch("/v2/uac_connections/f1", &json!({"active": false}))
            .status,
        409
    );
    assert_eq!(
        uacd.terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(stored_password(&db, "f1"), pw1);
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(!log.contains(&pw1));
}

#[test]
fn a_corrupt_or_unopenable_store_is_a_clear_start_error() {
    let ip = test_ip(87);
    // Corrupt: the daemon must refuse to start, naming the file.
    let dir = temp_dir("store-corrupt");
    std::fs::write(dir.join("uacd.db"), vec![b'#'; 4096]).unwrap();
    let mut uacd = Uacd::start(&config(ip, 5064, free_tcp_port(ip), ""), &dir);
    let status = uacd.child.wait_timeout(WAIT).expect("uacd exits");
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(
        log.contains("uacd.db") && (log.contains("corrupt") || log.contains("not a database")),
        "{log}"
    );
    assert_eq!(
        std::fs::read(dir.join("uacd.db")).unwrap(),
        vec![b'#'; 4096],
        "left as it was"
    );

    // Unopenable: its directory cannot be created.
    let dir = temp_dir("store-unopenable");
    std::fs::write(dir.join("not-a-dir"), b"").unwrap();
    let cfg = config(ip, 5066, free_tcp_port(ip), "")
        .replace("path = \"uacd.db\"", "path = \"not-a-dir/uacd.db\"");
    let mut uacd = Uacd::start(&cfg, &dir);
    let status = uacd.child.wait_timeout(WAIT).expect("uacd exits");
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(log.contains("cannot open the store"), "{log}");
}
