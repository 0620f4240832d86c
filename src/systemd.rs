//! systemd service protocol (sd_notify(3)): READY=1 once the listeners and
//! the API are up, STATUS= with the registration count, RELOADING=1 around a
//! reload, STOPPING=1 and EXTEND_TIMEOUT_USEC= while unregistering, and
//! WATCHDOG=1 pings that are sent only after a health probe went through
//! the event loop, the SIP receive path and the registration supervisor.
//! Without `NOTIFY_SOCKET` every call is a no-op.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use sd_notify::NotifyState;

use crate::config::Transport;
use crate::registration::Supervisor;
use crate::sip::Method;
use crate::transaction::client::Timers;
use crate::transaction::{Layer, new_branch};
use crate::transport::Transports;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Before re-reading the configuration (`ExecReload=`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins: unregistering may take up to `work`.
pub fn stopping(work: Duration) {
    let usec = u32::try_from(work.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::Stopping,
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status("stopping: unregistering"),
    ]);
}

/// What the watchdog checks.
#[derive(Clone)]
pub struct Probe {
    pub layer: Layer,
    pub transports: Transports,
    pub supervisor: Supervisor,
}

impl Probe {
    /// `"N/M connections registered"`: the supervisor answers.
    pub fn status_line(&self) -> String {
        let (registered, applicable) = self.supervisor.registered_count();
        format!("{registered}/{applicable} connections registered")
    }

    /// An OPTIONS from the daemon to its own UDP listener: proves that the
    /// receive loop, the transaction layer and the request path all turn.
    /// Without a UDP listener, the event loop running this is the proof.
    pub async fn sip_alive(&self) -> Result<(), String> {
        let Some(listen) = self.transports.listen_addr(Transport::Udp) else {
            return Ok(());
        };
        let ip = if listen.ip().is_unspecified() {
            match listen.ip() {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            }
        } else {
            listen.ip()
        };
        let target = SocketAddr::new(ip, listen.port());
        let hop = self
            .transports
            .hop(Transport::Udp, target, "")
            .await
            .map_err(|e| e.to_string())?;
        let local = hop.local();
        let branch = new_branch();
        let host = match target.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let sent_by = if local.ip().is_unspecified() {
            format!("{host}:{}", local.port())
        } else {
            local.to_string()
        };
        let request = format!(
            "OPTIONS sip:{host}:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {sent_by};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:watchdog@{host}>;tag={tag:016x}\r\n\
             To: <sip:{host}:{port}>\r\n\
             Call-ID: {call:032x}@uacd-watchdog\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            port = target.port(),
            tag = rand::random::<u64>(),
            call = rand::random::<u128>(),
        );
        let timers = Timers {
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(400),
            t4: Duration::from_millis(400),
        };
        let resp = self
            .layer
            .request(&hop, Method::Options, &branch, Bytes::from(request), timers)
            .await
            .map_err(|e| e.to_string())?;
        match resp.status() {
            Some(200) => Ok(()),
            other => Err(format!("self OPTIONS answered {other:?}")),
        }
    }

    /// Pings the watchdog at half its period while the probe passes, and
    /// refreshes STATUS= every `status_every`; runs until dropped.
    pub async fn run(self, status_every: Duration) {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let period = watchdog.unwrap_or(status_every).min(status_every);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let line = self.status_line();
            if watchdog.is_some() {
                match self.sip_alive().await {
                    Ok(()) => send(&[NotifyState::Watchdog, NotifyState::Status(&line)]),
                    Err(e) => {
                        tracing::error!(error = %e, "health probe failed: watchdog not pinged");
                        status(&format!("unhealthy: {e}"));
                    }
                }
            } else {
                status(&line);
            }
        }
    }
}
