//! `uacd check-config`: exit 0 on a good file, else every problem as
//! `file:line: key: reason` and exit 1; `uacd run` refuses a bad file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn uacd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uacd"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uacd-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &Path) -> Output {
    uacd()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("uacd runs")
}

#[test]
fn example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/uacd.toml");
    let out = check(&example);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 connections)"));
}

#[test]
fn every_problem_is_reported_with_file_line_and_key() {
    let text = r#"[sip]
listen = ["udp:127.0.0.1:5060"]
colour = "blue"

[[api.tokens]]
token = "check-config-token"
user_id = "1"

[[connection]]
id = "a"
connection_name = "A"
[connection.external_uac_settings]
proxy = "http://pbx"
transport = "SCTP"
username = "u"
expiration_sec = 59

[[connection]]
id = "a"
connection_name = "B"
[connection.external_uac_settings]
proxy = "sip:pbx.example.com"
username = "u"
expiration_sec = "long"
"#;
    let path = write("bad.toml", text);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for (line, key) in [
        (3, "sip.colour"),
        (13, "connection[0].external_uac_settings.proxy"),
        (14, "connection[0].external_uac_settings.transport"),
        (16, "connection[0].external_uac_settings.expiration_sec"),
        (19, "connection[1].id"),
        (24, "connection[1].external_uac_settings.expiration_sec"),
    ] {
        let prefix = format!("{file}:{line}: {key}: ");
        assert!(
            err.lines().any(|l| l.starts_with(&prefix)),
            "missing {prefix:?} in:\n{err}"
        );
    }
    assert!(!err.contains("s3cret"));
}

#[test]
fn syntax_error_names_its_line_and_run_refuses_to_start() {
    let path = write(
        "syntax.toml",
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\"\n[api]\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:", path.display())), "{err}");
    let out = uacd()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the daemon never starts half-configured"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = check(Path::new("/nonexistent/uacd.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/uacd.toml"));
}
