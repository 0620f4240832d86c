//! Drives `reply_gate.rs`: knows who is verified (the PBX addresses through
//! [`Peers`], 127.0.0.1 and ::1, `sip.monitors`), keeps the per-IP error
//! budgets (sharded, [`MAX_TRACKED_IPS`] in all) and judges each answer the
//! daemon builds before it is sent.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::time::Instant;

use super::reply_gate::{self, Answer, ErrorBudget, MAX_TRACKED_IPS, Verdict};
use crate::config::Cidr;

const SHARDS: usize = 64;

/// Which addresses belong to the PBXes of the configured connections.
/// Must not block: it is asked on a socket's receive loop.
pub trait Peers: Send + Sync + 'static {
    fn is_pbx(&self, ip: IpAddr) -> bool;
}

/// `sip.monitors` and `limits.error_replies_per_ip_per_sec`.
struct Settings {
    monitors: Vec<Cidr>,
    budgets: Vec<Mutex<ErrorBudget>>,
}

impl Settings {
    fn new(monitors: Vec<Cidr>, per_sec: u32) -> Settings {
        Settings {
            monitors,
            budgets: (0..SHARDS)
                .map(|_| Mutex::new(ErrorBudget::new(per_sec, MAX_TRACKED_IPS / SHARDS)))
                .collect(),
        }
    }
}

#[derive(Default)]
pub(super) struct Replies {
    settings: OnceLock<Settings>,
    peers: OnceLock<Arc<dyn Peers>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Replies {
    pub(super) fn configure(&self, monitors: Vec<Cidr>, per_sec: u32) {
        let _ = self.settings.set(Settings::new(monitors, per_sec));
    }

    pub(super) fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    fn settings(&self) -> &Settings {
        self.settings.get_or_init(|| {
            let d = crate::config::LimitsConfig::default();
            Settings::new(Vec::new(), d.error_replies_per_ip_per_sec)
        })
    }

    /// 127.0.0.1 / ::1, a monitor, or a PBX address.
    pub(super) fn is_verified(&self, ip: IpAddr) -> bool {
        reply_gate::is_local_probe(ip)
            || self.settings().monitors.iter().any(|c| c.contains(ip))
            || self.peers.get().is_some_and(|p| p.is_pbx(ip))
    }

    /// Judges one answer to `source` (`own`: one of our listening
    /// addresses, e.g. the watchdog's self-probe); the error budget is spent
    /// only when the answer passed the other rules.
    pub(super) fn judge(
        &self,
        source: IpAddr,
        own: bool,
        options: bool,
        code: u16,
        request_len: usize,
        response_len: usize,
    ) -> Verdict {
        let answer = Answer {
            verified: own || self.is_verified(source),
            options,
            code,
            request_len,
            response_len,
        };
        let verdict = reply_gate::judge(answer, || {
            let shard = std::hash::BuildHasher::hash_one(&self.hasher, source) as usize % SHARDS;
            self.settings().budgets[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(source, Instant::now())
        });
        if verdict != Verdict::Send {
            tracing::debug!(%source, code, request_len, response_len, reason = verdict.label(), "answer not sent");
        }
        verdict
    }
}
