//! Contract test: schemathesis (from PyPI, installed by scripts/test.sh into
//! `.venv-test/`) runs every phase and check against a real uacd, using the
//! OpenAPI document that uacd serves at `/v2/openapi.json` (openapi/uacd.json),
//! on 127.0.0.88 (uacd) and 127.0.0.89 (where generated registrars are sent,
//! see tests/contract/uacd_contract_hooks.py). Fails, never skips, when
//! schemathesis is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Child, Uacd, free_tcp_port, repo_dir, temp_dir, test_ip, wait_for_tcp_listener};

const TOKEN: &str = "contract-token-88";
/// Bound on the whole schemathesis run.
const RUN_WAIT: Duration = Duration::from_secs(300);

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("UACD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".venv-test/bin/schemathesis"));
    assert!(
        path.is_file(),
        "schemathesis not found at {} (set UACD_SCHEMATHESIS, or run scripts/test.sh, which \
         installs it into .venv-test/); the contract test fails rather than skips",
        path.display()
    );
    path
}

#[test]
fn schemathesis_finds_no_contract_violation() {
    let st = schemathesis();
    let dir = temp_dir("api-contract");
    let ip = test_ip(88);
    let port = free_tcp_port(ip);
    let config = format!(
        r#"[sip]
listen = ["udp:{ip}:5060", "tcp:{ip}:5060"]
[api]
listen = "{ip}:{port}"
[[api.tokens]]
token = "{TOKEN}"
user_id = "323"
[[api.tokens]]
token = "contract-other-tenant"
user_id = "999"
[registration]
retry_interval_sec = 30
unregister_timeout_sec = 1
[[connection]]
id = "file-owned"
connection_name = "From the file"
user_id = "323"
[connection.external_uac_settings]
proxy = "sip:{blackhole}:5099"
username = "f"
"#,
        blackhole = test_ip(89)
    );
    let uacd = Uacd::start(&config, &dir);
    wait_for_tcp_listener(ip, port, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", common::tail(uacd.log_path(), 40)));

    let base = format!("http://{ip}:{port}");
    let contract_dir = repo_dir().join("tests/contract");
    let mut cmd = Command::new(st);
    cmd.current_dir(&dir)
        .env("SCHEMATHESIS_HOOKS", "uacd_contract_hooks")
        .env("PYTHONPATH", &contract_dir)
        .env("UACD_CONTRACT_BLACKHOLE", test_ip(89).to_string())
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(contract_dir.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("{base}/v2/openapi.json"))
        .args(["--url", &base])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ]);
    let mut run = Child::spawn("schemathesis", cmd, &dir);
    let status = run.wait_timeout(RUN_WAIT);
    let out = common::tail(run.stdout_path(), 120);
    let err = common::tail(run.stderr_path(), 40);
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("schemathesis found contract violations ({s}):\n{out}\n{err}"),
        None => panic!("schemathesis did not finish within {RUN_WAIT:?}:\n{out}\n{err}"),
    }
    assert!(out.contains("passed"), "{out}");
    let log = std::fs::read_to_string(uacd.log_path()).unwrap();
    assert!(!log.contains("panicked"), "uacd panicked:\n{log}");
}
