//! Operating the daemon as systemd runs it, on 127.0.0.50..59: the
//! sd_notify protocol on a socket this test owns (READY, STATUS, WATCHDOG,
//! RELOADING, STOPPING), SIGHUP reload against a Kamailio registrar (added,
//! changed, removed and untouched connections, the untouched one keeping its
//! Call-ID on the wire), a bad file on reload, `uacd status`, SIGTERM
//! unregistering everything with exit 0, and the unit file checked by
//! systemd-analyze.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Child, Kamailio, KamailioOpts, free_tcp_port, free_udp_port, poll_until, repo_dir,
    require_peer, temp_dir, test_ip, uacd_bin, wait_for_line,
};

const WAIT: Duration = Duration::from_secs(20);

/// The `[[connection]]` blocks: `(id, username)` registering to the PBX.
fn connections(pbx: &str, conns: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (id, user) in conns {
        s.push_str(&format!(
            r#"[[connection]]
id = "{id}"
connection_name = "conn {id}"
user_name = "uacd-{id}"
[connection.external_uac_settings]
proxy = "sip:{pbx}"
transport = "UDP"
username = "{user}"
password = "s3cret"
expiration_sec = 600
"#
        ));
    }
    s
}

fn config(ip: &str, port: u16, api: u16, dir: &Path, token: &str, conns: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:{ip}:{port}"]
[api]
listen = "{ip}:{api}"
[[api.tokens]]
token = "{token}"
user_id = "1"
[store]
path = "{store}"
[registration]
retry_interval_sec = 2
unregister_timeout_sec = 5
{conns}"#,
        store = dir.join("uacd.db").display()
    )
}

/// The daemon with `NOTIFY_SOCKET` (and a 2 s watchdog) pointed at `sock`.
fn start_uacd(dir: &Path, config_text: &str, notify: &Path) -> Child {
    let cfg = dir.join("uacd.toml");
    std::fs::write(&cfg, config_text).unwrap();
    let mut cmd = Command::new(uacd_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .current_dir(dir)
        .env("RUST_LOG", "uacd=debug")
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", "2000000");
    Child::spawn("uacd", cmd, dir)
}

/// `uacd status` against the daemon's API on `ip:api`.
fn uacd_status(ip: impl std::fmt::Display, api: u16, token: &str) -> std::process::Output {
    Command::new(uacd_bin())
        .args([
            "status",
            "--api",
            &format!("http://{ip}:{api}"),
            "--token",
            token,
        ])
        .output()
        .unwrap()
}

/// Reads notify datagrams until one satisfies `want` (all are kept).
fn expect_notify(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(m) = seen.iter().find(|m| want(m)) {
            return m.clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "notify message not seen; got:\n{seen:#?}");
        sock.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// The Call-ID usrloc holds for `aor` (None when it has no binding).
fn call_id_of(kam: &Kamailio, aor: &str) -> Option<String> {
    let dump = kam.ul_dump();
    let want = format!("AoR: {aor}");
    let mut lines = dump.lines().skip_while(|l| l.trim() != want);
    lines.next()?;
    lines
        .take_while(|l| !l.trim().starts_with("AoR: "))
        .find_map(|l| l.trim().strip_prefix("Call-ID: "))
        .map(|s| s.trim().to_owned())
}

fn wait_call_id(kam: &Kamailio, aor: &str) -> String {
    let mut id = None;
    poll_until(WAIT, || {
        id = call_id_of(kam, aor);
        id.is_some()
    })
    .unwrap_or_else(|_| panic!("no binding for {aor}:\n{}", kam.ul_dump()));
    id.unwrap()
}

#[test]
fn notify_reload_status_and_stop() {
    require_peer("kamailio");
    require_peer("kamcmd");
    let dir = temp_dir("ops");
    let ip = test_ip(50);
    let pbx_ip = test_ip(51);
    let kport = free_udp_port(pbx_ip);
    let kdir = dir.join("kamailio");
    std::fs::create_dir_all(&kdir).unwrap();
    let kam = Kamailio::start(KamailioOpts::new(pbx_ip, kport, "s3cret"), &kdir);
    let pbx = format!("{pbx_ip}:{kport}");
    let port = free_udp_port(ip);
    let api = free_tcp_port(ip);

    let notify_path: PathBuf = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let mut seen = Vec::new();
    let first = connections(&pbx, &[("a", "user-a"), ("b", "user-b"), ("c", "user-c")]);
    let mut uacd = start_uacd(
        &dir,
        &config(
            &ip.to_string(),
            port,
            api,
            &dir,
            "operations-token-1",
            &first,
        ),
        &notify_path,
    );

    expect_notify(&sock, &mut seen, |m| m.contains("READY=1"));
    for aor in ["user-a", "user-b", "user-c"] {
        wait_call_id(&kam, aor);
    }
    let call_a = wait_call_id(&kam, "user-a");
    // STATUS follows the registrations; WATCHDOG only after a healthy probe.
    expect_notify(&sock, &mut seen, |m| {
        m.contains("STATUS=3/3 connections registered")
    });
    expect_notify(&sock, &mut seen, |m| m.contains("WATCHDOG=1"));

    // `uacd status` against the running daemon.
    let out = uacd_status(ip, api, "operations-token-1");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(table.lines().count(), 4, "{table}");
    for id in ["a ", "b ", "c "] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(id) && l.contains("Success") && l.contains("200 OK")),
            "{table}"
        );
    }
    assert!(!table.contains("s3cret"));

    // A broken file on SIGHUP: logged, nothing changes.
    std::fs::write(dir.join("uacd.toml"), "[sip]\nlisten = 5\n").unwrap();
    uacd.signal("HUP");
    wait_for_line(uacd.stderr_path(), "reload rejected", WAIT).unwrap();
    assert_eq!(call_id_of(&kam, "user-a").as_deref(), Some(call_a.as_str()));

    // b removed, c changed (new username), d added, a untouched; new token.
    let second = connections(&pbx, &[("a", "user-a"), ("c", "user-c2"), ("d", "user-d")]);
    std::fs::write(
        dir.join("uacd.toml"),
        config(
            &ip.to_string(),
            port,
            api,
            &dir,
            "operations-token-2",
            &second,
        ),
    )
    .unwrap();
    uacd.signal("HUP");
    expect_notify(&sock, &mut seen, |m| m.contains("RELOADING=1"));
    wait_for_line(uacd.stderr_path(), "configuration reloaded", WAIT).unwrap();
    wait_call_id(&kam, "user-d");
    wait_call_id(&kam, "user-c2");
    poll_until(WAIT, || call_id_of(&kam, "user-b").is_none())
        .unwrap_or_else(|_| panic!("b still bound:\n{}", kam.ul_dump()));
    poll_until(WAIT, || call_id_of(&kam, "user-c").is_none())
        .unwrap_or_else(|_| panic!("old c binding still there:\n{}", kam.ul_dump()));
    assert_eq!(
        call_id_of(&kam, "user-a").as_deref(),
        Some(call_a.as_str()),
        "the untouched connection keeps its registration and Call-ID"
    );
    let old_token = uacd_status(ip, api, "operations-token-1");
    assert!(!old_token.status.success(), "the old token is gone at once");

    // api.listen moved: rebound at once, the old port closed; nothing else
    // changes (a's registration and Call-ID stay).
    let api2 = free_tcp_port(ip);
    std::fs::write(
        dir.join("uacd.toml"),
        config(
            &ip.to_string(),
            port,
            api2,
            &dir,
            "operations-token-2",
            &second,
        ),
    )
    .unwrap();
    uacd.signal("HUP");
    wait_for_line(uacd.stderr_path(), "API moved", WAIT).unwrap();
    let moved = uacd_status(ip, api2, "operations-token-2");
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(
        !uacd_status(ip, api, "operations-token-2").status.success(),
        "the old API port is closed"
    );
    assert_eq!(
        call_id_of(&kam, "user-a").as_deref(),
        Some(call_a.as_str()),
        "moving the API touches no registration"
    );

    // SIGTERM: STOPPING, every binding removed, exit 0.
    uacd.signal("TERM");
    let status = uacd.wait_timeout(WAIT).expect("uacd exits");
    assert_eq!(status.code(), Some(0));
    expect_notify(&sock, &mut seen, |m| {
        m.contains("STOPPING=1") && m.contains("EXTEND_TIMEOUT_USEC=")
    });
    for aor in ["user-a", "user-c2", "user-d"] {
        assert!(
            call_id_of(&kam, aor).is_none(),
            "{aor} still bound:\n{}",
            kam.ul_dump()
        );
    }
    let log = std::fs::read_to_string(uacd.stderr_path()).unwrap();
    assert!(!log.contains("s3cret"), "password in the log");
}

#[test]
fn unit_file_passes_systemd_analyze() {
    require_peer("systemd-analyze");
    let dir = temp_dir("unit");
    // verify wants the ExecStart binary to exist: point it at this build.
    let unit = std::fs::read_to_string(repo_dir().join("systemd/uacd.service")).unwrap();
    let unit = unit.replace("/usr/bin/uacd", &uacd_bin().display().to_string());
    let path = dir.join("uacd.service");
    std::fs::write(&path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let verify_out = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success(),
        "systemd-analyze verify:\n{verify_out}"
    );
    assert!(
        !verify_out.contains("uacd.service"),
        "systemd-analyze verify has remarks on the unit:\n{verify_out}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level:\n{text}{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
