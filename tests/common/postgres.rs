//! A throwaway PostgreSQL 15 server for one test (cluster mode): `initdb`
//! in a temp dir owned by `nobody` (PostgreSQL refuses to run as root),
//! `postgres` on 127.0.0.1 with a free port, trust authentication, no
//! fsync; stopped by PID (SIGINT, PostgreSQL's fast shutdown) on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Child, free_tcp_port, temp_dir, wait_for_line};

/// Debian's `postgresql` package (not on PATH).
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: usize,
}

/// Runs `cmd` as nobody:nogroup (the temp dir is theirs).
fn as_nobody(bin: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(Path::new(BIN).join(bin));
    c
}

impl Postgres {
    /// initdb + start; panics (never skips) when PostgreSQL is missing:
    /// scripts/test.sh installs it.
    pub fn start(name: &str) -> Postgres {
        assert!(
            Path::new(BIN).join("postgres").is_file(),
            "PostgreSQL 15 is not installed ({BIN}); scripts/test.sh installs it (apt-get install postgresql)"
        );
        let dir = temp_dir(name);
        let ok = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown {}", dir.display());
        let out = as_nobody("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "uacd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            port: free_tcp_port(Ipv4Addr::LOCALHOST),
            child: None,
            starts: 0,
        };
        pg.resume();
        pg
    }

    /// `postgres://uacd@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://uacd@127.0.0.1:{}/postgres", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fast shutdown (SIGINT): clients are disconnected at once.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.signal("INT");
            if c.wait_timeout(Duration::from_secs(10)).is_none() {
                c.signal("KILL");
                c.wait_timeout(Duration::from_secs(5));
            }
        }
    }

    /// Starts the server again on the same port and data (after `stop`).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let name = format!("postgres-{}", self.starts);
        let mut cmd = as_nobody("postgres");
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=100"]);
        let child = Child::spawn(&name, cmd, &self.dir);
        let log = child.stderr_path().to_owned();
        self.child = Some(child);
        wait_for_line(
            &log,
            "database system is ready to accept connections",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("postgres did not start: {e}"));
    }

    /// Runs one SQL statement with psql; its output (unaligned, no header).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
