//! Starts the subsystems in order (transports, transaction layer,
//! registrations), runs until the shutdown future resolves, then stops
//! them: unregister within the deadline, close listeners.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Transport};
use crate::dns::Dns;
use crate::registration::{Context, Supervisor};
use crate::transaction::Layer;
use crate::transaction::client::Timers;
use crate::transport::{self, Transports};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Transport(#[from] transport::Error),
    #[error("connection {id:?} uses UDP but sip.listen has no udp: address")]
    NoUdpListener { id: String },
    #[error(transparent)]
    Dns(#[from] crate::dns::Error),
}

/// A running daemon.
pub struct App {
    pub transports: Transports,
    pub supervisor: Supervisor,
    cancel: CancellationToken,
    config: Arc<Config>,
}

impl App {
    /// Binds every listener and starts every registration.
    pub async fn start(config: Config) -> Result<App, AppError> {
        App::start_with_timers(config, Timers::default()).await
    }

    /// Like [`App::start`] with other RFC 3261 timer values (tests use a
    /// short T1 so that Timer F fires in seconds).
    pub async fn start_with_timers(config: Config, timers: Timers) -> Result<App, AppError> {
        let config = Arc::new(config);
        let has_udp = config
            .sip
            .listen
            .iter()
            .any(|l| l.transport == Transport::Udp);
        if let Some(c) = config.connections.iter().find(|c| {
            let ext = &c.external_uac_settings;
            let uri = ext.outbound_proxy.as_ref().or(ext.proxy.as_ref());
            c.active
                && !has_udp
                && uri.is_some_and(|u| {
                    crate::registration::transport_for(u, ext.transport) == Transport::Udp
                })
        }) {
            return Err(AppError::NoUdpListener { id: c.id.clone() });
        }
        let cancel = CancellationToken::new();
        let layer = Layer::new(&config.sip.user_agent);
        let transports =
            Transports::bind(&config, Arc::new(layer.clone()), cancel.child_token()).await?;
        layer.attach(transports.clone());
        for l in &config.sip.listen {
            tracing::info!(transport = %l.transport, addr = %l.addr, "listening");
        }
        // NAPTR/SRV choices are limited to the transports we listen on
        // (a TLS or TCP destination needs our Record-Route on that transport).
        let mut allowed: Vec<Transport> = Vec::new();
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            if config.sip.listen.iter().any(|l| l.transport == t) {
                allowed.push(t);
            }
        }
        let dns = Arc::new(Dns::new(&config.dns, allowed)?);
        let mut ctx = Context::new(config.clone(), layer, transports.clone(), dns);
        ctx.timers = timers;
        let ctx = Arc::new(ctx);
        let mut supervisor = Supervisor::new(ctx);
        for c in &config.connections {
            supervisor.start(c.clone());
        }
        tracing::info!(connections = supervisor.len(), "uacd started");
        Ok(App {
            transports,
            supervisor,
            cancel,
            config,
        })
    }

    /// Runs until `shutdown` resolves, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }

    /// Unregisters every connection (bounded by
    /// `registration.unregister_timeout_sec`) and closes the listeners.
    pub async fn stop(self) {
        tracing::info!("shutting down: unregistering");
        let deadline = Duration::from_secs(self.config.registration.unregister_timeout_sec);
        self.supervisor.shutdown(deadline).await;
        self.cancel.cancel();
        tracing::info!("uacd stopped");
    }
}
