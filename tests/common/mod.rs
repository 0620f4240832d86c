//! Shared helpers for the integration and interop tests (`mod common;`).
//!
//! Processes (uacd, SIPp, Kamailio) run as children of the test, log to files in
//! a per-test temp dir, and are stopped by PID when their handle drops. Every
//! wait is bounded and polls an observable event (a line in a log, a socket in
//! `/proc/net`, a child exiting) every 20 ms; there are no bare sleeps.
//!
//! Addresses: only 127.0.0.0/8. Each test FILE owns a block of ten addresses
//! (`test_ip(n)` = 127.0.0.n), so test binaries running in parallel never share
//! an address and fixed ports (5060) are safe within a block:
//!
//! | n       | test file                                   |
//! |---------|---------------------------------------------|
//! | 10..=19 | `infra_selftest.rs`                         |
//! | 20..=29 | `interop_sipp.rs`                           |
//! | 30      | free (`store_postgres.rs` uses 127.0.0.1 and random ports) |
//! | 31..=39 | `cluster.rs`                                |
//! | 40..=49 | `security_answers.rs`                       |
//! | 50..=59 | `operations.rs`                             |
//! | 70..=79 | `proxy_invite.rs`                           |
//! | 80..=85 | `api.rs`                                    |
//! | 86..=87 | `store.rs`                                  |
//! | 88..=89 | `api_contract.rs`                           |
//! | 90..=99 | `dns_failover.rs`                           |
//! | 140..=149 | `dns_edge_resolver.rs`                  |
//! | 150..=159 | `sip_trace.rs`                          |
//! | 160..=169 | `attack_dialog.rs`                      |
//! | 170..=179 | `interop_kamailio.rs`                   |
//! | 180..=189 | `outbound_calls.rs`                     |
//! | 190..=199 | `outbound_failover.rs`                  |
//! | 131..=133 | `overload.rs`                           |
//!
//! 60..=69 are free, but for 127.0.0.62/.63 (and .5/.6), which
//! the shell selftests (`scripts/sipp-selftest.sh`, `tests/kamailio/selftest.sh`)
//! use; the benchmarks in `bench/` use 127.0.0.90/.91 and 100..=130, so they
//! are not run beside the tests. `registrar_faults.rs` uses 127.0.1.0/24,
//! `flow_limits.rs` and `flow_keepalive.rs` 127.0.2.0/24 (the attackers need
//! many addresses; `flow_keepalive.rs` takes .50 and .51).
//! Within a file, give each test its own address of the block, because the
//! tests of one binary run in parallel.

#![allow(dead_code)]

pub mod dns;
pub mod dnsmasq;
pub mod postgres;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(20);

// === paths and addresses ===

/// The uacd binary built by cargo for this test run.
pub fn uacd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_uacd"))
}

/// The repository root (where `sipp-scenarios/` and `tests/kamailio/` live).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A SIPp scenario file from `sipp-scenarios/`, e.g. `scenario("registrar-digest.xml")`.
pub fn scenario(file: &str) -> PathBuf {
    let p = repo_dir().join("sipp-scenarios").join(file);
    assert!(p.is_file(), "no SIPp scenario {}", p.display());
    p
}

/// A fresh, empty directory under the system temp dir, unique per process and
/// call: `<tmp>/uacd-test-<pid>-<n>-<name>`. Left in place after the test so its
/// logs can be read; `/tmp` cleanup is the OS's business.
pub fn temp_dir(name: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("uacd-test-{}-{n}-{safe}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// 127.0.0.n; see the module docs for which test file owns which n.
pub fn test_ip(n: u8) -> Ipv4Addr {
    assert!(
        (2..=254).contains(&n),
        "test_ip({n}): use 2..=254 (127.0.0.1 is shared)"
    );
    Ipv4Addr::new(127, 0, 0, n)
}

/// Ports for the daemons and peers a test starts, below the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`, 32768–60999 by default).
/// A port read from a port-0 bind is in that range, and between the check
/// and the daemon's own bind the kernel may hand it to any outgoing
/// connection or port-0 bind of a test running beside it; below the range
/// only these helpers hand out ports, each at most once per test process
/// (test files own distinct IPs, so processes do not collide).
const TEST_PORTS: std::ops::Range<u16> = 20000..32768;

fn free_port(ip: Ipv4Addr) -> u16 {
    static HANDED: std::sync::Mutex<Vec<(Ipv4Addr, u16)>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let len = usize::from(TEST_PORTS.end - TEST_PORTS.start);
    // Spread the processes of successive runs over the range.
    let start = (std::process::id() as usize).wrapping_mul(7919) % len;
    for i in 0..len {
        let port = TEST_PORTS.start + ((start + i) % len) as u16;
        if handed.contains(&(ip, port)) {
            continue;
        }
        if UdpSocket::bind((ip, port)).is_ok() && TcpListener::bind((ip, port)).is_ok() {
            handed.push((ip, port));
            return port;
        }
    }
    panic!("no free port on {ip} in {TEST_PORTS:?}");
}

/// A port free on `ip` for UDP and TCP, handed out once per test process.
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    free_port(ip)
}

/// A port free on `ip` for TCP and UDP, handed out once per test process.
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    free_port(ip)
}

/// Panics (never skips) when `bin` is not on PATH: interop tests must fail in
/// CI when a peer is missing. `scripts/test.sh` installs the peers.
pub fn require_peer(bin: &str) {
    if find_on_path(bin).is_none() {
        panic!(
            "interop peer `{bin}` is not installed (not on PATH). Run scripts/test.sh, which \
             installs it (apt-get install sip-tester kamailio kamailio-tls-modules \
             kamailio-utils-modules prometheus systemd dnsmasq-base); interop tests fail rather than skip"
        );
    }
}

fn find_on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    // kamailio lives in /usr/sbin, which is not on every user's PATH
    let extra = std::env::split_paths(OsStr::new("/usr/sbin:/sbin"));
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Full path of a peer binary (PATH, then /usr/sbin:/sbin); panics like `require_peer`.
pub fn peer_path(bin: &str) -> PathBuf {
    require_peer(bin);
    find_on_path(bin).expect("checked by require_peer")
}

// === bounded waits ===

/// `/proc/net` spelling of an IPv4 socket address: `0500007F:13C4`.
fn proc_net_addr(ip: Ipv4Addr, port: u16) -> String {
    format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()))
}

fn proc_net_has(file: &str, ip: Ipv4Addr, port: u16, listen_only: bool) -> bool {
    let want = proc_net_addr(ip, port);
    let any = proc_net_addr(Ipv4Addr::UNSPECIFIED, port);
    let Ok(text) = fs::read_to_string(file) else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && (f[1] == want || f[1] == any) && (!listen_only || f[3] == "0A")
    })
}

/// Waits until a UDP socket is bound to `ip:port` (or 0.0.0.0:port).
pub fn wait_for_udp_listener(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), String> {
    poll_until(timeout, || proc_net_has("/proc/net/udp", ip, port, false))
        .map_err(|_| format!("nothing bound to udp {ip}:{port} after {timeout:?}"))
}

/// Waits until a TCP socket listens on `ip:port` (or 0.0.0.0:port). Reads
/// `/proc/net/tcp` instead of connecting, so the server sees no stray connection.
pub fn wait_for_tcp_listener(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), String> {
    poll_until(timeout, || proc_net_has("/proc/net/tcp", ip, port, true))
        .map_err(|_| format!("nothing listening on tcp {ip}:{port} after {timeout:?}"))
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until a line containing `needle` appears in the file at `path` (which
/// may not exist yet) and returns that line; on timeout, Err with the last 40
/// lines of the file.
pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> Result<String, String> {
    let mut found = None;
    let r = poll_until(timeout, || {
        let text = fs::read(path).unwrap_or_default();
        found = String::from_utf8_lossy(&text)
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned);
        found.is_some()
    });
    match (r, found) {
        (Ok(()), Some(line)) => Ok(line),
        _ => Err(format!(
            "no line containing {needle:?} in {} after {timeout:?}; last 40 lines:\n{}",
            path.display(),
            tail(path, 40)
        )),
    }
}

/// The last `n` lines of a text file ("" if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// === child processes ===

/// A child process with stdout/stderr in files, stopped by PID on drop
/// (SIGTERM, 5 s grace, then SIGKILL) and always reaped.
pub struct Child {
    name: String,
    inner: std::process::Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Child {
    /// Spawns `cmd` with stdin closed and output to `<dir>/<name>.stdout.log`
    /// and `<dir>/<name>.stderr.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Child {
        let stdout = dir.join(format!("{name}.stdout.log"));
        let stderr = dir.join(format!("{name}.stderr.log"));
        let out = File::create(&stdout).expect("create stdout log");
        let err = File::create(&stderr).expect("create stderr log");
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Child {
            name: name.to_owned(),
            inner,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// The exit status if the child has exited (reaps it), without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.inner.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `d` for the child to exit (polls every 20 ms).
    pub fn wait_timeout(&mut self, d: Duration) -> Option<ExitStatus> {
        let _ = poll_until(d, || self.try_status().is_some());
        self.status
    }

    /// Sends SIGTERM (`kill -TERM <pid>`), waits up to `grace`, then SIGKILLs.
    /// Returns the status if the child exited within the grace period.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_status() {
            return Some(s);
        }
        self.signal("TERM");
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM for {grace:?}; SIGKILL",
            self.name,
            self.pid()
        );
        let _ = self.inner.kill();
        self.status = self.inner.wait().ok();
        None
    }

    /// Sends a signal by name to this child only (`kill -<sig> <pid>`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

// === SIPp ===

/// Builder for one SIPp run with a scenario from `sipp-scenarios/`. Runs in
/// `dir` with `-nostdin -trace_err -trace_msg -trace_logs` and fixed log names
/// (`sipp_errors.log`, `sipp_messages.log`, `sipp_logs.log`).
///
/// ```ignore
/// let run = Sipp::new("registrar-digest.xml", &dir)
///     .local(ip, 5060)
///     .key("realm", "pbx.test").set("pw", "s3cret").key("expires_grant", "10")
///     .args(["-m", "1", "-timeout", "60", "-timeout_error"])
///     .start();
/// run.wait_success(Duration::from_secs(70));
/// ```
pub struct Sipp {
    scenario: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    name: String,
    /// `-i`/`-p`, when given: [`Sipp::start`] waits until the UDP socket is bound.
    local: Option<(Ipv4Addr, u16)>,
}

impl Sipp {
    pub fn new(scenario_file: &str, dir: &Path) -> Sipp {
        let name = scenario_file.trim_end_matches(".xml").to_owned();
        Sipp {
            scenario: scenario(scenario_file),
            dir: dir.to_owned(),
            args: Vec::new(),
            name,
            local: None,
        }
    }

    /// Name used for the log files (default: the scenario's file stem).
    pub fn name(mut self, name: &str) -> Sipp {
        self.name = name.to_owned();
        self
    }

    /// `-i ip -p port`.
    pub fn local(mut self, ip: Ipv4Addr, port: u16) -> Sipp {
        self.local = Some((ip, port));
        self.args([
            "-i".to_owned(),
            ip.to_string(),
            "-p".to_owned(),
            port.to_string(),
        ])
    }

    /// The remote host (UAC mode), e.g. `remote("127.0.0.10:5060")`.
    pub fn remote(self, addr: impl ToString) -> Sipp {
        self.arg(addr)
    }

    /// `-key name value` (a `[name]` keyword in the scenario).
    pub fn key(self, name: &str, value: &str) -> Sipp {
        self.args(["-key", name, value])
    }

    /// `-set name value` (a `[$name]` global variable in the scenario).
    pub fn set(self, name: &str, value: &str) -> Sipp {
        self.args(["-set", name, value])
    }

    pub fn arg(mut self, a: impl ToString) -> Sipp {
        self.args.push(a.to_string());
        self
    }

    pub fn args<I, S>(mut self, a: I) -> Sipp
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.args.extend(a.into_iter().map(|s| s.to_string()));
        self
    }

    pub fn start(self) -> SippRun {
        let errors = self.dir.join(format!("{}_errors.log", self.name));
        let messages = self.dir.join(format!("{}_messages.log", self.name));
        let logs = self.dir.join(format!("{}_logs.log", self.name));
        let mut cmd = Command::new(peer_path("sipp"));
        cmd.current_dir(&self.dir)
            .arg("-sf")
            .arg(&self.scenario)
            .args(&self.args)
            .args(["-nostdin", "-trace_err", "-trace_msg", "-trace_logs"])
            .arg("-error_file")
            .arg(&errors)
            .arg("-message_file")
            .arg(&messages)
            .arg("-log_file")
            .arg(&logs);
        let child = Child::spawn(&format!("sipp-{}", self.name), cmd, &self.dir);
        // Over UDP, a peer that sends before SIPp has bound its port gets
        // ICMP unreachable, which a registration treats as a transport
        // error and retries only after its backoff: wait for the socket.
        // (A SIPp that fails to start is reported by the test's own waits.)
        let udp = !self
            .args
            .windows(2)
            .any(|w| w[0] == "-t" && !w[1].starts_with('u'));
        if let (Some((ip, port)), true) = (self.local, udp) {
            let _ = wait_for_udp_listener(ip, port, Duration::from_secs(10));
        }
        SippRun {
            child,
            name: self.name,
            errors,
            messages,
            logs,
        }
    }
}

/// A running SIPp.
pub struct SippRun {
    pub child: Child,
    name: String,
    errors: PathBuf,
    messages: PathBuf,
    logs: PathBuf,
}

impl SippRun {
    pub fn messages_path(&self) -> &Path {
        &self.messages
    }

    pub fn logs_path(&self) -> &Path {
        &self.logs
    }

    /// Errors log, `<log>` lines and the last SIP messages, for failure reports.
    pub fn report(&self) -> String {
        format!(
            "--- {} errors ({}):\n{}\n--- scenario <log> lines:\n{}\n--- last messages:\n{}\n--- screen:\n{}",
            self.name,
            self.errors.display(),
            tail(&self.errors, 30),
            tail(&self.logs, 30),
            tail(&self.messages, 60),
            tail(self.child.stdout_path(), 25),
        )
    }

    /// Waits for SIPp to exit; panics with the report if it does not exit in time.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match self.child.wait_timeout(timeout) {
            Some(s) => s,
            None => {
                self.child.terminate(Duration::from_secs(2));
                panic!(
                    "sipp {} still running after {timeout:?}\n{}",
                    self.name,
                    self.report()
                )
            }
        }
    }

    /// Waits and asserts exit status 0 (the whole scenario passed).
    pub fn wait_success(&mut self, timeout: Duration) {
        let s = self.wait(timeout);
        assert!(
            s.success(),
            "sipp {} failed: {s}\n{}",
            self.name,
            self.report()
        );
    }

    /// Waits and asserts a non-zero exit status (the scenario's checks caught something).
    pub fn wait_failure(&mut self, timeout: Duration) {
        let s = self.wait(timeout);
        assert!(
            !s.success(),
            "sipp {} passed, a failure was expected\n{}",
            self.name,
            self.report()
        );
    }
}

// === Kamailio ===

/// Options for `Kamailio::start` (tests/kamailio/registrar.cfg, or another
/// config of that directory: `cfg`).
#[derive(Clone, Debug)]
pub struct KamailioOpts {
    pub ip: Ipv4Addr,
    /// udp + tcp port
    pub sip_port: u16,
    /// TLS listener; needs `tls_cert` or generates a self-signed cert with openssl
    pub tls_port: Option<u16>,
    /// (certificate, private key) PEM files for the TLS listener
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    pub password: String,
    /// Shorter expiries get 423 with Min-Expires (otherwise they are raised silently).
    pub min_expires: Option<u32>,
    /// Longer expiries are lowered to this (short values make refreshes come soon).
    pub max_expires: Option<u32>,
    /// Also route INVITEs to registered users (record-routed, stateful).
    pub pbx: bool,
    /// The config file in tests/kamailio/ (default `registrar.cfg`).
    pub cfg: &'static str,
    /// More `-A` defines for that config, e.g. `WITH_407`, `EXT_ADDR="..."`.
    pub defines: Vec<String>,
}

impl KamailioOpts {
    pub fn new(ip: Ipv4Addr, sip_port: u16, password: &str) -> KamailioOpts {
        KamailioOpts {
            ip,
            sip_port,
            tls_port: None,
            tls_cert: None,
            password: password.to_owned(),
            min_expires: None,
            max_expires: None,
            pbx: false,
            cfg: "registrar.cfg",
            defines: Vec::new(),
        }
    }
}

/// Kamailio as a digest-checking registrar for domain `pbx.test` (and its listen
/// IP), run in the foreground (`-DD -E`) as this test's child; stopped on drop.
pub struct Kamailio {
    pub child: Child,
    pub opts: KamailioOpts,
    dir: PathBuf,
    ctl: String,
}

/// Makes a self-signed certificate for `cn` with openssl; returns (cert, key).
pub fn self_signed_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{cn}.cert.pem"));
    let key = dir.join(format!("{cn}.key.pem"));
    let out = Command::new(peer_path("openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

impl Kamailio {
    /// Starts Kamailio in `dir` and waits (10 s max) for its udp/tcp(/tls) listeners.
    pub fn start(mut opts: KamailioOpts, dir: &Path) -> Kamailio {
        let kam = peer_path("kamailio");
        peer_path("kamcmd");
        let cfg = repo_dir().join("tests/kamailio").join(opts.cfg);
        let ctl = format!("unix:{}", dir.join("kamailio_ctl").display());
        let mut defines = vec![
            format!("LISTEN_ADDR={}", opts.ip),
            format!("SIP_PORT={}", opts.sip_port),
            format!("PASSWORD=\"{}\"", opts.password),
            format!("CTLSOCK=\"{ctl}\""),
        ];
        if let Some(m) = opts.min_expires {
            defines.push(format!("MIN_EXPIRES={m}"));
            defines.push("WITH_423".to_owned());
        }
        if opts.pbx {
            defines.push("WITH_PBX".to_owned());
        }
        if let Some(m) = opts.max_expires {
            defines.push(format!("MAX_EXPIRES={m}"));
        }
        defines.extend(opts.defines.iter().cloned());
        if let Some(tls_port) = opts.tls_port {
            let (cert, key) = opts
                .tls_cert
                .get_or_insert_with(|| self_signed_cert(dir, "pbx.test"))
                .clone();
            let tls_cfg = dir.join("tls.cfg");
            fs::write(
                &tls_cfg,
                format!(
                    "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                     require_certificate = no\nprivate_key = {}\ncertificate = {}\n\n\
                     [client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n\
                     require_certificate = no\n",
                    key.display(),
                    cert.display()
                ),
            )
            .expect("write tls.cfg");
            defines.push(format!("TLS_PORT={tls_port}"));
            defines.push("WITH_TLS".to_owned());
            defines.push(format!("TLSCFG=\"{}\"", tls_cfg.display()));
        }
        let base_args = |c: &mut Command| {
            c.arg("-f").arg(&cfg).args(["-m", "64", "-M", "8"]);
            for d in &defines {
                c.arg("-A").arg(d);
            }
        };
        let mut check = Command::new(&kam);
        base_args(&mut check);
        let out = check.arg("-c").output().expect("run kamailio -c");
        assert!(
            out.status.success(),
            "kamailio config check failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(&kam);
        base_args(&mut cmd);
        cmd.args(["-DD", "-E"]).current_dir(dir);
        let child = Child::spawn("kamailio", cmd, dir);
        let mut k = Kamailio {
            child,
            opts: opts.clone(),
            dir: dir.to_owned(),
            ctl,
        };
        let t = Duration::from_secs(10);
        let mut ready = wait_for_udp_listener(opts.ip, opts.sip_port, t)
            .and_then(|_| wait_for_tcp_listener(opts.ip, opts.sip_port, t));
        if let Some(p) = opts.tls_port {
            ready = ready.and_then(|_| wait_for_tcp_listener(opts.ip, p, t));
        }
        if let Err(e) = ready {
            let log = tail(k.log_path(), 40);
            k.child.terminate(Duration::from_secs(2));
            panic!("kamailio did not come up: {e}\n{log}");
        }
        k
    }

    /// Kamailio's log (stderr).
    pub fn log_path(&self) -> &Path {
        self.child.stderr_path()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `unix:/path/kamailio_ctl`, for `kamcmd -s`.
    pub fn ctl_socket(&self) -> &str {
        &self.ctl
    }

    /// Runs `kamcmd -s <ctl> <args...>` and returns stdout; panics on failure.
    pub fn rpc(&self, args: &[&str]) -> String {
        let out = Command::new(peer_path("kamcmd"))
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("run kamcmd");
        assert!(
            out.status.success(),
            "kamcmd {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ul.dump`: bindings as text (`Address: sip:...`, `Expires: N`, ...).
    pub fn ul_dump(&self) -> String {
        self.rpc(&["ul.dump"])
    }

    /// One statistic, e.g. `stat("usrloc:registered_users")`; None if absent.
    pub fn stat(&self, name: &str) -> Option<i64> {
        let group = name.split(':').next().unwrap_or(name);
        let text = self.rpc(&["stats.get_statistics", &format!("{group}:")]);
        text.lines()
            .filter_map(|l| l.split_once(" = "))
            .find(|(k, _)| k.trim() == name)
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    /// Waits until `ul.dump` contains `needle`; returns the dump.
    pub fn wait_for_binding(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let mut last = String::new();
        poll_until(timeout, || {
            last = self.ul_dump();
            last.contains(needle)
        })
        .map(|_| last.clone())
        .map_err(|_| format!("ul.dump has no {needle:?} after {timeout:?}:\n{last}"))
    }
}

// === uacd ===

/// uacd run as a child: `uacd run --config <dir>/uacd.toml`, `RUST_LOG=uacd=debug`
/// (unless RUST_LOG is set), stderr in `<dir>/uacd.stderr.log`. SIGTERM on drop.
pub struct Uacd {
    pub child: Child,
    dir: PathBuf,
    config: PathBuf,
}

impl Uacd {
    /// Writes `config_toml` to `<dir>/uacd.toml` and starts the daemon. A
    /// config without a `[store]` section gets `<dir>/uacd.db`, so that tests
    /// never share (or need) `/var/lib/uacd`.
    pub fn start(config_toml: &str, dir: &Path) -> Uacd {
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "uacd=debug".into());
        Uacd::start_logging(config_toml, dir, &log)
    }

    /// [`Uacd::start`] with `RUST_LOG=<rust_log>`.
    pub fn start_logging(config_toml: &str, dir: &Path, rust_log: &str) -> Uacd {
        let config = dir.join("uacd.toml");
        let mut text = config_toml.to_owned();
        if !text.lines().any(|l| l.trim() == "[store]") {
            text.push_str(&format!("\n[store]\npath = {:?}\n", dir.join("uacd.db")));
        }
        fs::write(&config, text).expect("write uacd.toml");
        let mut cmd = Command::new(uacd_bin());
        cmd.arg("run").arg("--config").arg(&config).current_dir(dir);
        cmd.env("RUST_LOG", rust_log);
        let child = Child::spawn("uacd", cmd, dir);
        Uacd {
            child,
            dir: dir.to_owned(),
            config,
        }
    }

    pub fn log_path(&self) -> &Path {
        self.child.stderr_path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for a log line containing `needle`; panics with the log tail.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        wait_for_line(self.log_path(), needle, timeout).unwrap_or_else(|e| panic!("uacd: {e}"))
    }

    /// SIGTERM, then waits up to `grace` (SIGKILL after that, returning None).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.terminate(grace)
    }
}

// === raw SIP over UDP ===

/// The next SIP message on `sock` within `timeout` (keepalive whitespace skipped).
pub fn recv_sip(sock: &UdpSocket, timeout: Duration) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !text.trim().is_empty() {
                    return Some((text, from));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// The values of header `name` (full name, any case), one per line.
pub fn sip_headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// A response to `req` copying Via, From, To (with `to_tag` when it has
/// none), Call-ID, CSeq and Record-Route, plus `extra` header lines.
pub fn sip_response(
    req: &str,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in sip_headers(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for rr in sip_headers(req, "Record-Route") {
        out.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    let to = sip_headers(req, "To")[0];
    let to = match to_tag {
        Some(t) if !to.contains(";tag=") => format!("{to};tag={t}"),
        _ => to.to_owned(),
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        sip_headers(req, "From")[0],
        sip_headers(req, "Call-ID")[0],
        sip_headers(req, "CSeq")[0],
    ));
    out
}
