//! Drives `cluster/lease.rs`: every tick (a third of `lease_sec`) a
//! heartbeat, then the plan against the assignment over the live nodes:
//! claims start drivers, releases and losses stop them without
//! `Expires: 0`. A node whose heartbeats fail stops every driver when its
//! leases may be about to expire on the database. Beside it, a follower
//! applies other nodes' API writes (change counter) and mirrors the
//! registration status of every connection through the database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{self, Validity};
use super::{ClusterDb, DbError, Settings, StatusRow};
use crate::registration::{RegStatus, Snapshot, Supervisor};

/// One node as the database last showed it to us (`GET /v2/cluster/nodes`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    pub node_id: String,
    /// Heartbeat within `lease_sec`, by the database clock.
    pub alive: bool,
    /// Leases it holds.
    pub connections: u64,
    /// Unix milliseconds of its last heartbeat.
    #[serde(skip)]
    pub last_seen_ms: i64,
}

/// How often other nodes' writes are read (and every 4th time, statuses).
const FOLLOW: Duration = Duration::from_millis(250);

/// Claims per round: each is a short statement, and the rest waits a tick
/// (new registrations are paced anyway).
const MAX_CLAIMS: usize = 5000;

/// A cheap-clone handle on this node's part in the cluster.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    db: Arc<dyn ClusterDb>,
    supervisor: Supervisor,
    view: Mutex<Vec<NodeView>>,
    /// Held connection → its lease epoch (fences our status writes).
    epochs: Mutex<HashMap<String, u64>>,
    /// Last status pushed per held connection (`updated_at`).
    pushed: Mutex<HashMap<String, SystemTime>>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Cluster {
    pub fn new(settings: Settings, db: Arc<dyn ClusterDb>, supervisor: Supervisor) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                settings,
                db,
                supervisor,
                view: Mutex::new(Vec::new()),
                epochs: Mutex::new(HashMap::new()),
                pushed: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// The nodes as of the last heartbeat.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.inner
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn tick(&self) -> Duration {
        lease::tick(self.inner.settings.lease)
    }

    /// Runs one blocking database call with the tick as its deadline.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ClusterDb, &str) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let inner = self.inner.clone();
        let job =
            tokio::task::spawn_blocking(move || f(inner.db.as_ref(), &inner.settings.node_id));
        match tokio::time::timeout(self.tick(), job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("database call timed out".into()),
        }
    }

    /// Gives back what an earlier run of this node held (a restart after
    /// `kill -9`): the next claim raises each epoch.
    pub async fn join(&self) -> Result<(), DbError> {
        self.call(|db, me| db.join(me)).await
    }

    /// Starts the lease loop and the follower; `mark` is the change mark
    /// read before the connections were loaded.
    pub fn spawn(&self, cancel: CancellationToken, mark: i64) -> Vec<JoinHandle<()>> {
        let leases = {
            let c = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move { c.lease_loop(cancel).await })
        };
        let follow = {
            let c = self.clone();
            tokio::spawn(async move { c.follow_loop(cancel, mark).await })
        };
        vec![leases, follow]
    }

    async fn lease_loop(self, cancel: CancellationToken) {
        let mut validity = Validity::new(self.inner.settings.lease);
        let mut every = tokio::time::interval(self.tick());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first round only heartbeats: nodes started together then see
        // each other before anyone claims, instead of the first one taking
        // everything and handing most of it over a tick later.
        let mut first = true;
        loop {
            // Our leases run out at `validity.until()` whether or not a tick
            // comes first: give them up then, not at the next failed round.
            let expiry = validity
                .until()
                .filter(|_| self.inner.supervisor.holds_any());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
                _ = sleep_until_some(expiry) => {
                    self.give_up(&mut validity, "no heartbeat committed");
                    continue;
                }
            }
            let claims = !std::mem::take(&mut first);
            if let Err(e) = self.round(&mut validity, claims).await {
                if !validity.valid(Instant::now()) && self.inner.supervisor.holds_any() {
                    self.give_up(&mut validity, &e.to_string());
                } else {
                    tracing::warn!(error = %e, "cluster: heartbeat failed");
                }
            }
        }
    }

    /// Stops every registration we drive once our leases may have expired
    /// (never unregistering: another node may hold them now).
    fn give_up(&self, validity: &mut Validity, why: &str) {
        let sup = &self.inner.supervisor;
        let held = sup.held();
        for id in &held {
            sup.unhold(id);
        }
        tracing::error!(error = %why, connections = held.len(), "cluster: database unreachable until our leases may have expired; stopped our registrations (not unregistering: another node may hold them now)");
        self.epochs().clear();
        validity.reset();
        crate::metrics::connections_owned(0);
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.inner.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One heartbeat and what follows from it.
    async fn round(&self, validity: &mut Validity, claims: bool) -> Result<(), DbError> {
        let lease = self.inner.settings.lease;
        let sent = Instant::now();
        let beat = self.call(move |db, me| db.heartbeat(me, lease)).await?;
        validity.renewed(sent);
        let me = self.node_id().to_owned();
        let sup = &self.inner.supervisor;
        let ids = sup.ids();
        let mut live: Vec<&str> = beat
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.node_id.as_str())
            .collect();
        if !live.contains(&me.as_str()) {
            live.push(&me);
        }
        crate::metrics::cluster_nodes(live.len());
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let desired = lease::assign(&id_refs, &live);
        let running = sup.held();
        let plan = lease::plan(&me, &desired, &running, &beat.held);
        *self.inner.view.lock().unwrap_or_else(|e| e.into_inner()) = beat.nodes.clone();
        for id in &plan.lost {
            tracing::warn!(connection_id = %id, "cluster: lease lost to another node; stopping (no unregister)");
            sup.unhold(id);
            self.epochs().remove(id);
        }
        if !plan.release.is_empty() {
            for id in &plan.release {
                sup.unhold(id);
                self.epochs().remove(id);
            }
            tracing::info!(
                connections = plan.release.len(),
                "cluster: handing over connections"
            );
            let ids = plan.release.clone();
            self.call(move |db, me| db.release(me, &ids)).await?;
        }
        if claims && !plan.claim.is_empty() && validity.valid(Instant::now()) {
            let ids: Vec<String> = plan.claim.iter().take(MAX_CLAIMS).cloned().collect();
            let got = self.call(move |db, me| db.claim(me, &ids, lease)).await?;
            let took = got.iter().filter(|c| c.took_over).count();
            if !got.is_empty() {
                tracing::info!(
                    claimed = got.len(),
                    taken_over = took,
                    "cluster: connections claimed"
                );
            }
            crate::metrics::takeovers(took as u64);
            for c in got {
                self.epochs().insert(c.id.clone(), c.epoch);
                sup.hold(&c.id, lease::cseq_base(c.epoch));
            }
        }
        crate::metrics::connections_owned(sup.held().len());
        self.push_status().await
    }

    /// Persists the status of held connections that changed since last pushed.
    async fn push_status(&self) -> Result<(), DbError> {
        let sup = &self.inner.supervisor;
        let epochs = self.epochs().clone();
        let mut rows = Vec::new();
        {
            let pushed = self.inner.pushed.lock().unwrap_or_else(|e| e.into_inner());
            for (id, epoch) in &epochs {
                let Some(s) = sup.snapshot(id) else { continue };
                if pushed.get(id) == Some(&s.updated_at) {
                    continue;
                }
                rows.push((
                    StatusRow {
                        connection_id: id.clone(),
                        node_id: Some(self.node_id().to_owned()),
                        status: s.status.code(),
                        last_response: s.last_response.clone(),
                        registered_ip: s.last_registered_ip.map(|a| a.to_string()),
                        expires_at: s.expires_at.map(ms),
                        updated_at: ms(s.updated_at),
                    },
                    *epoch,
                ));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let stamps: Vec<(String, SystemTime)> = rows
            .iter()
            .map(|(r, _)| (r.connection_id.clone(), at(r.updated_at)))
            .collect();
        self.call(move |db, me| db.put_status(me, &rows)).await?;
        let mut pushed = self.inner.pushed.lock().unwrap_or_else(|e| e.into_inner());
        pushed.retain(|id, _| epochs.contains_key(id));
        for (id, t) in stamps {
            pushed.insert(id, t);
        }
        Ok(())
    }

    async fn follow_loop(self, cancel: CancellationToken, mut mark: i64) {
        let mut status_mark = 0i64;
        let mut polls = 0u64;
        let mut every = tokio::time::interval(FOLLOW);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.call(move |db, _| db.changes_since(mark)).await {
                Ok(ch) => {
                    mark = ch.mark;
                    let sup = &self.inner.supervisor;
                    for id in ch.deleted {
                        if sup.remove(&id).await.is_some() {
                            tracing::info!(connection_id = %id, "cluster: connection deleted on another node");
                        }
                    }
                    for conn in ch.upserted {
                        sup.upsert(conn).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cluster: change poll failed"),
            }
            polls += 1;
            if polls % 4 != 1 {
                continue;
            }
            match self.call(move |db, _| db.statuses_since(status_mark)).await {
                Ok((rows, next)) => {
                    status_mark = next;
                    self.mirror(rows);
                }
                Err(e) => tracing::debug!(error = %e, "cluster: status poll failed"),
            }
        }
    }

    /// Shows other holders' persisted statuses in our supervisor.
    fn mirror(&self, rows: Vec<StatusRow>) {
        let sup = &self.inner.supervisor;
        for r in rows {
            if r.node_id.as_deref() == Some(self.node_id()) {
                continue;
            }
            let status = RegStatus::ALL
                .into_iter()
                .find(|s| s.code() == r.status)
                .unwrap_or(RegStatus::NotRegistered);
            let mut snap = Snapshot::new(status);
            snap.last_response = r.last_response;
            snap.last_registered_ip = r.registered_ip.and_then(|a| a.parse::<SocketAddr>().ok());
            snap.updated_at = at(r.updated_at);
            snap.expires_at = r.expires_at.map(at);
            sup.set_remote(&r.connection_id, snap, r.node_id);
        }
    }

    /// SIGTERM: stops every driver without `Expires: 0` and frees our
    /// leases and node row at once, so that the others claim them at their
    /// next tick instead of after `lease_sec`.
    pub async fn leave(&self) {
        let sup = &self.inner.supervisor;
        let held = sup.held();
        for id in &held {
            sup.unhold(id);
        }
        self.epochs().clear();
        match self.call(|db, me| db.leave(me)).await {
            Ok(()) => tracing::info!(
                connections = held.len(),
                "cluster: left; connections handed over"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: could not hand over; the others take over when our leases expire")
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
