//! Starts the subsystems in order (store, transports, transaction layer,
//! registrations, API), runs until the shutdown future resolves, then stops
//! them: close the API, unregister within the deadline, close listeners.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::cluster::{Cluster, ClusterDb};
use crate::registration::Applied;
use crate::store::{Owner, PgStore, SqliteStore, StoreError, StoreHandle, now_ms};

use crate::config::{Config, Transport};
use crate::context::Context;
use crate::dns::Dns;
use crate::registration::{ConnectionStatus, Supervisor};
use crate::routing::{ConnectionEntry, Directory, Router};
use crate::transaction::Layer;
use crate::transaction::client::Timers;
use crate::transport::{self, Transports};

/// Routing's directory over the live registrations: the connection a
/// request names, with the state of its registration.
struct Registrations(Supervisor);

impl Directory for Registrations {
    type Entry = ConnectionEntry;
    fn by_user(&self, user: &str) -> Option<ConnectionEntry> {
        self.0.by_user(user).map(entry)
    }
    fn by_line(&self, line: &str) -> Option<ConnectionEntry> {
        self.0.get(line).map(entry)
    }
    fn by_flow(&self, flow: u64) -> Option<ConnectionEntry> {
        self.0.by_flow(flow).map(entry)
    }
}

/// An idle inbound flow is kept while a registration lives on it.
impl transport::FlowUsers for Registrations {
    fn uses_flow(&self, flow: u64) -> bool {
        self.0.by_flow(flow).is_some()
    }
}

fn entry(s: ConnectionStatus) -> ConnectionEntry {
    ConnectionEntry {
        registered: s.snapshot.status == crate::registration::RegStatus::Success,
        flow: s.snapshot.flow,
        registrar: s.snapshot.last_registered_ip,
        connection: s.connection,
    }
}

/// The PBX addresses for the transaction layer's reply rules: each
/// connection's registrar (the address that accepted us) and what its
/// `proxy` and `outbound_proxy` resolve to in the DNS cache (never a new
/// query: this is asked on a receive loop). Rebuilt at most once a second.
struct PbxAddrs {
    supervisor: Supervisor,
    dns: Arc<Dns>,
    snapshot: std::sync::Mutex<Option<(tokio::time::Instant, Arc<HashSet<IpAddr>>)>>,
}

const PBX_ADDRS_REFRESH: Duration = Duration::from_secs(1);

impl PbxAddrs {
    fn collect(&self) -> HashSet<IpAddr> {
        let mut set = HashSet::new();
        for s in self.supervisor.statuses() {
            set.extend(s.snapshot.last_registered_ip.map(|a| a.ip()));
            let ext = &s.connection.external_uac_settings;
            for uri in [ext.proxy.as_ref(), ext.outbound_proxy.as_ref()]
                .into_iter()
                .flatten()
            {
                let q = crate::dns::Query::with_transport(uri, ext.transport);
                set.extend(self.dns.cached_addrs(&q));
            }
        }
        set
    }
}

impl crate::transaction::Peers for PbxAddrs {
    fn is_pbx(&self, ip: IpAddr) -> bool {
        let now = tokio::time::Instant::now();
        let fresh = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| now < *at + PBX_ADDRS_REFRESH)
            .map(|(_, set)| set.clone());
        let set = match fresh {
            Some(set) => set,
            None => {
                let set = Arc::new(self.collect());
                *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, set.clone()));
                set
            }
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        set.contains(&ip)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Transport(#[from] transport::Error),
    #[error("connection {id:?} uses UDP but sip.listen has no udp: address")]
    NoUdpListener { id: String },
    #[error(transparent)]
    Dns(#[from] crate::dns::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen for the API on {addr}: {source}")]
    ApiListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running daemon.
pub struct App {
    pub transports: Transports,
    pub layer: Layer,
    pub supervisor: Supervisor,
    pub store: StoreHandle,
    api_state: ApiState,
    /// The API and metrics servers; rebound by a reload that moves them.
    listeners: tokio::sync::Mutex<Listeners>,
    cancel: CancellationToken,
    /// Fired when a server that must not stop has stopped.
    failed: CancellationToken,
    config: Arc<Config>,
    /// Cluster mode: this node's lease loop and follower, stopped before
    /// the hand-over.
    cluster: Option<(Cluster, CancellationToken, Vec<JoinHandle<()>>)>,
}

/// One HTTP server task and what it was started for.
struct Server {
    /// The configured address (port 0 stays 0 here).
    configured: SocketAddr,
    /// The bound address.
    bound: SocketAddr,
    task: JoinHandle<()>,
    cancel: CancellationToken,
}

impl Server {
    /// Stops accepting; in-flight requests get a moment.
    async fn stop(self) {
        self.cancel.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

struct Listeners {
    api: Server,
    metrics: Option<Server>,
}

async fn bind_http(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AppError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::ApiListen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AppError::ApiListen { addr, source })?;
    Ok((listener, bound))
}

/// Runs an HTTP server task; if it ends (or panics) before it was told to
/// stop, that is logged at error and `failed` fires, so that the daemon
/// exits non-zero and systemd restarts it. (axum contains a handler's panic
/// in its connection's task: only the accept loop itself can end this, and
/// then nothing would answer on the port again.)
fn watched(
    what: &'static str,
    bound: SocketAddr,
    server: impl Future<Output = ()> + Send + 'static,
    cancel: &CancellationToken,
    failed: &CancellationToken,
) -> JoinHandle<()> {
    let (cancel, failed) = (cancel.clone(), failed.clone());
    tokio::spawn(async move {
        let ended = tokio::spawn(server).await;
        if !cancel.is_cancelled() {
            let panicked = ended.is_err_and(|e| e.is_panic());
            tracing::error!(server = what, addr = %bound, panicked, "HTTP server stopped; exiting so that the daemon is restarted");
            failed.cancel();
        }
    })
}

fn start_api(
    listener: tokio::net::TcpListener,
    configured: SocketAddr,
    bound: SocketAddr,
    state: &ApiState,
    (parent, failed): (&CancellationToken, &CancellationToken),
) -> Server {
    let cancel = parent.child_token();
    let serve = api::serve(listener, state.clone(), cancel.clone());
    let task = watched("api", bound, serve, &cancel, failed);
    tracing::info!(addr = %bound, "API listening");
    Server {
        configured,
        bound,
        task,
        cancel,
    }
}

fn start_metrics(
    listener: tokio::net::TcpListener,
    configured: SocketAddr,
    bound: SocketAddr,
    supervisor: &Supervisor,
    (parent, failed): (&CancellationToken, &CancellationToken),
) -> Server {
    let cancel = parent.child_token();
    let serve = api::serve_metrics(listener, supervisor.clone(), cancel.clone());
    let task = watched("metrics", bound, serve, &cancel, failed);
    tracing::info!(addr = %bound, "metrics listening");
    Server {
        configured,
        bound,
        task,
        cancel,
    }
}

impl App {
    /// Opens the store at `store.path`, binds every listener, starts every
    /// registration and the API.
    pub async fn start(config: Config) -> Result<App, AppError> {
        if let (Some(url), Some(cl)) = (&config.store.url, &config.cluster) {
            let (url, password) = (url.clone(), config.store.password.clone());
            let pg = tokio::task::spawn_blocking(move || {
                let pg = PgStore::open(url.expose(), password.as_ref().map(|p| p.expose()))?;
                let key = pg.dialog_secret()?;
                Ok::<_, StoreError>((pg, key))
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
            let (pg, secret) = pg?;
            tracing::info!(url = %pg.shown(), node_id = %cl.node_id, lease_sec = cl.lease_sec, "cluster store opened");
            let pg = Arc::new(pg);
            let settings = crate::cluster::Settings {
                node_id: cl.node_id.clone(),
                lease: Duration::from_secs(cl.lease_sec),
            };
            let store = StoreHandle::from_arc(pg.clone());
            return App::start_inner(
                config,
                store,
                Timers::default(),
                secret,
                Some((settings, pg)),
            )
            .await;
        }
        let path = config.store.path.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        tracing::info!(path = %config.store.path.display(), "store opened");
        let secret = dialog_secret(&config);
        App::start_with(config, StoreHandle::new(store), Timers::default(), secret).await
    }

    /// Like [`App::start`] with other RFC 3261 timer values (tests use a
    /// short T1 so that Timer F fires in seconds) and an in-memory store.
    pub async fn start_with_timers(config: Config, timers: Timers) -> Result<App, AppError> {
        let store = SqliteStore::open_in_memory()?;
        App::start_with(config, StoreHandle::new(store), timers, rand::random()).await
    }

    /// Starts with a given store (and the key of the dialog tokens): the file's connections are synced into it
    /// (file-owned rows inserted, updated or removed), then every stored
    /// connection, file- or API-owned, starts registering.
    pub async fn start_with(
        config: Config,
        store: StoreHandle,
        timers: Timers,
        dialog_secret: [u8; 16],
    ) -> Result<App, AppError> {
        App::start_inner(config, store, timers, dialog_secret, None).await
    }

    async fn start_inner(
        mut config: Config,
        store: StoreHandle,
        timers: Timers,
        dialog_secret: [u8; 16],
        cluster_db: Option<(crate::cluster::Settings, Arc<dyn ClusterDb>)>,
    ) -> Result<App, AppError> {
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
                && uri.is_some_and(|u| u.transport_or(ext.transport) == Transport::Udp)
        }) {
            return Err(AppError::NoUdpListener { id: c.id.clone() });
        }
        // The file's connections live on in the store and the supervisor;
        // the daemon's config keeps none (a copy is ~0.5 KiB per connection
        // that nothing reads: a reload parses the file again).
        let mut file = std::mem::take(&mut config.connections);
        let generated = std::mem::take(&mut config.generated_passwords);
        // Cluster mode: the change mark before the full read, so that the
        // follower misses no write made meanwhile (it re-applies a few).
        let mark = match &cluster_db {
            Some((_, db)) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.change_mark())
                    .await
                    .map_err(|e| StoreError::Task(e.to_string()))?
                    .map_err(StoreError::Pg)?
            }
            None => 0,
        };
        let rows = store
            .run(move |s| {
                let report = s.sync_file(&mut file, &generated, now_ms())?;
                tracing::info!(
                    inserted = report.inserted,
                    updated = report.updated,
                    removed = report.removed,
                    "config connections synced into the store"
                );
                Ok(report.after)
            })
            .await?;
        let config = Arc::new(config);
        let cancel = CancellationToken::new();
        let layer = Layer::new(&config.sip.user_agent);
        // The internal side is as trusted as a monitor: its calls toward a
        // PBX get their 403/480/486 whatever their size.
        let verified = config
            .sip
            .monitors
            .iter()
            .chain(&config.routing.internal_sources)
            .cloned()
            .collect();
        layer.configure_replies(verified, config.limits.error_replies_per_ip_per_sec);
        let transports =
            Transports::bind(&config, Arc::new(layer.clone()), cancel.child_token()).await?;
        layer.attach(transports.clone());
        for l in &config.sip.listen {
            tracing::info!(transport = %l.transport, addr = %l.addr, "listening");
        }
        // NAPTR/SRV choices are limited to the transports we listen on
        // (a TLS or TCP destination needs our Record-Route on that transport).
        let mut allowed: Vec<Transport> = Vec::new();
        for t in Transport::ALL {
            if config.sip.listen.iter().any(|l| l.transport == t) {
                allowed.push(t);
            }
        }
        let dns = Arc::new(
            Dns::new(&config.dns, allowed)?.with_cache_entries(config.limits.dns_cache_entries),
        );
        let mut ctx = Context::new(config.clone(), layer, transports.clone(), dns);
        ctx.timers = timers;
        let ctx = Arc::new(ctx);
        let supervisor = Supervisor::new(ctx.clone());
        ctx.layer.set_peers(Arc::new(PbxAddrs {
            supervisor: supervisor.clone(),
            dns: ctx.dns.clone(),
            snapshot: std::sync::Mutex::new(None),
        }));
        transports.set_flow_users(Arc::new(Registrations(supervisor.clone())));
        // Calls may come as soon as the first registration succeeds.
        let router = Router::new(
            ctx.clone(),
            Arc::new(Registrations(supervisor.clone())),
            dialog_secret,
        );
        ctx.layer.set_router(Arc::new(router));
        let cluster = match cluster_db {
            Some((settings, db)) => {
                supervisor.clustered(&settings.node_id, dialog_secret);
                let c = Cluster::new(settings, db, supervisor.clone());
                c.join().await.map_err(StoreError::Pg)?;
                Some(c)
            }
            None => None,
        };
        for row in rows {
            supervisor.start(row.connection);
        }
        let (listener, bound) = bind_http(config.api.listen).await?;
        let state = ApiState::new(&config, store.clone(), supervisor.clone());
        let cluster = cluster.map(|c| {
            state.set_cluster(c.clone());
            let stop = cancel.child_token();
            let tasks = c.spawn(stop.clone(), mark);
            (c, stop, tasks)
        });
        let failed = CancellationToken::new();
        let api = start_api(
            listener,
            config.api.listen,
            bound,
            &state,
            (&cancel, &failed),
        );
        let metrics = match config.metrics.listen {
            Some(addr) => {
                let (listener, bound) = bind_http(addr).await?;
                Some(start_metrics(
                    listener,
                    addr,
                    bound,
                    &supervisor,
                    (&cancel, &failed),
                ))
            }
            None => None,
        };
        tracing::info!(connections = supervisor.len(), "uacd started");
        Ok(App {
            layer: ctx.layer.clone(),
            transports,
            supervisor,
            store,
            api_state: state,
            listeners: tokio::sync::Mutex::new(Listeners { api, metrics }),
            cancel,
            failed,
            config,
            cluster,
        })
    }

    /// SIGHUP: re-reads the configuration file and validates all of it
    /// first (a bad file is logged and ignored: the running configuration
    /// stays). Then the file's connections are synced into the store and
    /// applied live: new ones start, removed ones unregister, changed ones
    /// re-register, untouched ones keep their registration (same Call-ID
    /// and CSeq). API tokens take effect at once; a moved `api.listen` or
    /// `metrics.listen` is rebound (the old one stays when the new one cannot
    /// be bound); other changed sections are named in the log as needing a
    /// restart.
    pub async fn reload(&self, path: &std::path::Path) {
        let mut new = match crate::config::load(path) {
            Ok(c) => c,
            Err(errors) => {
                for line in errors.to_string().lines() {
                    tracing::error!("reload rejected: {line}");
                }
                tracing::warn!("configuration not reloaded; the running one stays");
                return;
            }
        };
        let old = &self.config;
        let mut restart = Vec::new();
        for (key, changed) in [
            ("sip", new.sip != old.sip),
            ("tls", new.tls != old.tls),
            ("dns", new.dns != old.dns),
            (
                "metrics.per_connection_labels",
                new.metrics.per_connection_labels != old.metrics.per_connection_labels,
            ),
            ("store", new.store != old.store),
            ("registration", new.registration != old.registration),
            ("routing", new.routing != old.routing),
            ("limits", new.limits != old.limits),
        ] {
            if changed {
                restart.push(key);
            }
        }
        let mut file = std::mem::take(&mut new.connections);
        let generated = new.generated_passwords.clone();
        // One writer at a time: an API write cannot interleave.
        let _write = self.api_state.write_lock().await;
        let synced = self
            .store
            .run(move |s| {
                let mut report = s.sync_file(&mut file, &generated, now_ms())?;
                let after = std::mem::take(&mut report.after);
                Ok((report, after))
            })
            .await;
        let (report, after) = match synced {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "reload: connections not applied; the running ones stay");
                return;
            }
        };
        let mut counts = [0usize; 4];
        // Removed connections unregister side by side: N of them take one
        // unregister deadline, not N.
        let mut removals = tokio::task::JoinSet::new();
        for id in &report.removed_ids {
            let (supervisor, id) = (self.supervisor.clone(), id.clone());
            removals.spawn(async move { supervisor.remove(&id).await });
            counts[3] += 1;
        }
        while removals.join_next().await.is_some() {}
        for row in after.into_iter().filter(|r| r.owner == Owner::File) {
            match self.supervisor.upsert(row.connection).await {
                Applied::Started => counts[0] += 1,
                Applied::Restarted => counts[1] += 1,
                Applied::Updated | Applied::Unchanged => counts[2] += 1,
            }
        }
        self.api_state.set_tokens(&new);
        self.rebind(&new).await;
        tracing::info!(
            started = counts[0],
            restarted = counts[1],
            kept = counts[2],
            removed = counts[3],
            store_inserted = report.inserted,
            store_updated = report.updated,
            store_removed = report.removed,
            "configuration reloaded"
        );
        if !restart.is_empty() {
            tracing::warn!(sections = %restart.join(", "), "changed settings take effect after a restart");
        }
    }

    /// Where the API listens now (the bound address when `api.listen` has
    /// port 0).
    pub async fn api_addr(&self) -> SocketAddr {
        self.listeners.lock().await.api.bound
    }

    /// Moves the API and metrics servers to the addresses of `new`. The new
    /// socket is bound before the old one closes, so a failed bind leaves
    /// the API where it was.
    async fn rebind(&self, new: &Config) {
        let mut l = self.listeners.lock().await;
        if new.api.listen != l.api.configured {
            match bind_http(new.api.listen).await {
                Ok((listener, bound)) => {
                    let next = start_api(
                        listener,
                        new.api.listen,
                        bound,
                        &self.api_state,
                        (&self.cancel, &self.failed),
                    );
                    let old = std::mem::replace(&mut l.api, next);
                    tracing::info!(from = %old.bound, to = %bound, "API moved");
                    old.stop().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, addr = %l.api.bound, "reload: api.listen not moved; the API stays where it is")
                }
            }
        }
        let current = l.metrics.as_ref().map(|m| m.configured);
        if new.metrics.listen != current {
            let next = match new.metrics.listen {
                Some(addr) => match bind_http(addr).await {
                    Ok((listener, bound)) => Some(start_metrics(
                        listener,
                        addr,
                        bound,
                        &self.supervisor,
                        (&self.cancel, &self.failed),
                    )),
                    Err(e) => {
                        tracing::error!(error = %e, "reload: metrics.listen not moved");
                        return;
                    }
                },
                None => None,
            };
            if let Some(old) = std::mem::replace(&mut l.metrics, next) {
                tracing::info!(addr = %old.bound, "metrics listener closed");
                old.stop().await;
            }
        }
    }

    /// The handles the systemd watchdog probes.
    pub fn probe(&self) -> crate::systemd::Probe {
        crate::systemd::Probe {
            layer: self.layer.clone(),
            transports: self.transports.clone(),
            supervisor: self.supervisor.clone(),
        }
    }

    /// How long stopping may take: API close, unregistration, margin.
    pub fn stop_budget(&self) -> Duration {
        Duration::from_secs(self.config.registration.unregister_timeout_sec + 5)
    }

    /// Resolves when a server the daemon cannot do without has stopped on
    /// its own (logged at error): the caller stops and exits non-zero.
    pub async fn failed(&self) {
        self.failed.cancelled().await
    }

    /// Runs until `shutdown` resolves, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }

    /// Unregisters every connection (bounded by
    /// `registration.unregister_timeout_sec`) and closes the listeners.
    pub async fn stop(self) {
        tracing::info!("shutting down: closing the API, unregistering");
        // No new API writes while unregistering; in-flight requests get a moment.
        let listeners = self.listeners.into_inner();
        listeners.api.stop().await;
        if let Some(m) = listeners.metrics {
            m.stop().await;
        }
        // Cluster mode: hand over instead of unregistering, so that the
        // other nodes refresh the bindings as they are.
        if let Some((cluster, stop, tasks)) = self.cluster {
            // The loops end first (a round half done must not start a
            // driver after the hand-over), then the leases go.
            stop.cancel();
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
            cluster.leave().await;
        }
        let deadline = Duration::from_secs(self.config.registration.unregister_timeout_sec);
        self.supervisor.shutdown(deadline).await;
        self.cancel.cancel();
        tracing::info!("uacd stopped");
    }
}

/// The key of the dialog tokens in our Record-Route entries: kept next to
/// the store (`<store>.key`, 0600) so that dialogs set up before a restart
/// can still be routed; random when it cannot be kept.
fn dialog_secret(config: &Config) -> [u8; 16] {
    use std::io::Write;
    let path = config.store.path.with_extension("key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 16]>::try_from(bytes.as_slice())
    {
        return key;
    }
    let key: [u8; 16] = rand::random();
    // Written beside the final name and renamed over it: a crash leaves
    // either no key or a whole one, never a short file.
    let tmp = path.with_extension(format!("key.tmp{}", std::process::id()));
    let written = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&key)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
    };
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "dialog key not saved; calls set up before a restart will not route in-dialog requests after it");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[tokio::test]
    async fn an_http_server_that_stops_on_its_own_fails_the_daemon() {
        let (cancel, failed) = (CancellationToken::new(), CancellationToken::new());
        let task = watched(
            "api",
            addr(),
            async { panic!("accept loop bug") },
            &cancel,
            &failed,
        );
        task.await.unwrap();
        assert!(failed.is_cancelled());

        let failed = CancellationToken::new();
        watched("metrics", addr(), async {}, &cancel, &failed)
            .await
            .unwrap();
        assert!(failed.is_cancelled(), "returning early fails it too");
    }

    #[tokio::test]
    async fn an_http_server_told_to_stop_does_not() {
        let (cancel, failed) = (CancellationToken::new(), CancellationToken::new());
        let stop = cancel.clone();
        let task = watched(
            "api",
            addr(),
            async move { stop.cancelled().await },
            &cancel,
            &failed,
        );
        cancel.cancel();
        task.await.unwrap();
        assert!(!failed.is_cancelled());
    }
}
