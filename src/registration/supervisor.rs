//! Owns one driver task per connection, their stop tokens and status
//! channels; starts, replaces and removes them while the daemon runs (live
//! apply from the API), and on shutdown unregisters them all within a deadline.
//!
//! [`Supervisor`] is a cheap-clone handle (`Arc` inside) shared by the app, the
//! API handlers and routing. Its std `Mutex` is held for a few map operations,
//! never across an `.await`. Changes to one connection id must be serialised
//! by the caller (the API does so with its write lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::driver::{Continuity, Driver, Snapshot};
use super::status::StatusCell;
use super::{Pacer, Pacing, RegStatus};
use crate::config::Connection;
use crate::context::Context;

/// A connection and the live status of its registration.
#[derive(Debug, Clone)]
pub struct ConnectionStatus {
    pub connection: Arc<Connection>,
    pub snapshot: Snapshot,
}

/// What [`Supervisor::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new connection: registration started (or Not Applicable).
    Started,
    /// External settings, `active` or `user_name` changed: the old binding was
    /// unregistered and a new registration started.
    Restarted,
    /// Only name, internal settings or our own password changed: the running
    /// registration (and its Call-ID) was left alone.
    Updated,
    /// Nothing changed.
    Unchanged,
}

struct Entry {
    connection: Arc<Connection>,
    /// Its status, and the driver's stop request.
    status: Arc<StatusCell>,
    task: Option<JoinHandle<()>>,
    /// Start order, for stable listings.
    seq: u64,
}

impl Entry {
    fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            connection: self.connection.clone(),
            snapshot: self.status.get(),
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// `user_name` → id, for routing's per-call lookup.
    by_user: HashMap<String, String>,
    next_seq: u64,
    /// Set by [`Supervisor::shutdown`]: nothing starts afterwards (a late API
    /// write must not leave a binding behind).
    closed: bool,
    /// Cluster mode: only held connections run a driver.
    gate: Option<Gate>,
}

/// Cluster mode: the connections this node holds (by lease), and the
/// status the holders of the others last persisted.
struct Gate {
    node_id: Arc<str>,
    /// Keys the Call-ID every holder of a connection uses.
    key: [u8; 16],
    held: HashMap<String, Continuity>,
    remote: HashMap<String, (Snapshot, Option<String>)>,
}

/// Whether a connection may run its driver here.
enum Gated {
    /// Not clustered: every connection runs.
    Free,
    Held(Continuity),
    NotHeld,
}

struct Inner {
    ctx: Arc<Context>,
    pace: Arc<Pacing>,
    state: Mutex<State>,
    /// Which receive thread the next driver runs on.
    next_thread: AtomicUsize,
}

impl State {
    /// The entry's status; clustered, a connection held elsewhere shows
    /// what its holder persisted.
    fn status_of(&self, e: &Entry) -> ConnectionStatus {
        if let Some(snap) = self.remote_of(e) {
            return ConnectionStatus {
                connection: e.connection.clone(),
                snapshot: snap.clone(),
            };
        }
        e.status()
    }

    /// Clustered: what the holder persisted for a connection held elsewhere.
    fn remote_of(&self, e: &Entry) -> Option<&Snapshot> {
        let g = self.gate.as_ref()?;
        if g.held.contains_key(&e.connection.id) {
            return None;
        }
        g.remote.get(&e.connection.id).map(|(snap, _)| snap)
    }

    /// [`State::status_of`]'s status alone, without cloning the snapshot.
    fn reg_status_of(&self, e: &Entry) -> RegStatus {
        match self.remote_of(e) {
            Some(snap) => snap.status,
            None => e.status.read(|s| s.status),
        }
    }
}

#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// A driver that was told to stop, to be waited for outside the lock.
struct Stopping {
    status: Arc<StatusCell>,
    task: Option<JoinHandle<()>>,
}

impl Stopping {
    /// Cancels the driver (it sends `Expires: 0` when registered) and waits
    /// for it at most `deadline`; aborts it after that.
    async fn finish(self, deadline: Duration) {
        self.status.stop();
        if let Some(mut task) = self.task
            && tokio::time::timeout(deadline, &mut task).await.is_err()
        {
            tracing::warn!("unregistration deadline passed; abandoning the binding");
            task.abort();
        }
    }
}

impl Supervisor {
    pub fn new(ctx: Arc<Context>) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                pace: Arc::new(Pacing {
                    pacer: Pacer::new(ctx.config.registration.max_register_rate_per_sec),
                    epoch: tokio::time::Instant::now(),
                }),
                ctx,
                state: Mutex::new(State::default()),
                next_thread: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs a driver on a UDP receive thread, taking them in turn: the
    /// answers to its REGISTERs are read on one of them, and waking a task
    /// on the same thread costs no futex wake and context switch, which
    /// waking one on the async runtime's workers did for every answer
    /// (bench/RESULTS.md, "Registrations and the receive threads"). Without
    /// a UDP listener the drivers run on the workers. A receive thread stops
    /// only after the shutdown's unregistrations (the app stops the
    /// transports after [`Supervisor::shutdown`]).
    fn spawn_driver(&self, run: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        let threads = self.inner.ctx.transports.receive_runtimes();
        if threads.is_empty() {
            return tokio::spawn(run);
        }
        let k = self.inner.next_thread.fetch_add(1, Ordering::Relaxed);
        threads[k % threads.len()].spawn(run)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unregister_deadline(&self) -> Duration {
        Duration::from_secs(self.inner.ctx.config.registration.unregister_timeout_sec)
    }

    fn gated(&self, id: &str) -> Gated {
        match &self.state().gate {
            None => Gated::Free,
            Some(g) => g.held.get(id).cloned().map_or(Gated::NotHeld, Gated::Held),
        }
    }

    /// Spawns the driver for `conn` (none when it is inactive or has no
    /// proxy, or, clustered, when another node holds it).
    fn spawn(&self, conn: &Arc<Connection>) -> (Arc<StatusCell>, Option<JoinHandle<()>>) {
        let applicable = conn.active && conn.external_uac_settings.proxy.is_some();
        let initial = if applicable {
            RegStatus::NotRegistered
        } else {
            RegStatus::NotApplicable
        };
        let cell = StatusCell::new(Snapshot::new(initial));
        let continuity = match self.gated(&conn.id) {
            Gated::Free => None,
            Gated::Held(c) => Some(c),
            Gated::NotHeld => return (cell, None),
        };
        let task = if applicable {
            let driver = Driver::new(
                self.inner.ctx.clone(),
                self.inner.pace.clone(),
                conn.clone(),
                cell.clone(),
                continuity,
            );
            Some(self.spawn_driver(Box::new(driver).run()))
        } else {
            tracing::debug!(connection_id = %conn.id, connection_name = %conn.connection_name, "connection not applicable (inactive or no proxy)");
            None
        };
        (cell, task)
    }

    /// Starts registering `conn` (or records it as Not Applicable when it is
    /// inactive or has no proxy). A connection with the same id is replaced
    /// without waiting for its unregistration: use [`Supervisor::upsert`] for
    /// live changes.
    pub fn start(&self, conn: Connection) {
        if self.state().closed {
            tracing::warn!(connection_id = %conn.id, "not started: shutting down");
            return;
        }
        let conn = Arc::new(conn);
        let (status, task) = self.spawn(&conn);
        let mut st = self.state();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.by_user.insert(conn.user_name.clone(), conn.id.clone());
        if let Some(old) = st.entries.insert(
            conn.id.clone(),
            Entry {
                connection: conn,
                status,
                task,
                seq,
            },
        ) {
            old.status.stop();
            if old.connection.user_name != st.entries[&old.connection.id].connection.user_name {
                st.by_user.remove(&old.connection.user_name);
            }
        }
    }

    /// Applies a new or changed connection. A change to `external_uac_settings`,
    /// `active` or `user_name` unregisters the old binding (bounded by
    /// `registration.unregister_timeout_sec`) before registering the new one;
    /// any other change only swaps the connection that the API and routing see.
    pub async fn upsert(&self, conn: Connection) -> Applied {
        let conn = Arc::new(conn);
        let stopping = {
            let mut st = self.state();
            let Some(entry) = st.entries.get_mut(&conn.id) else {
                drop(st);
                self.start(Arc::unwrap_or_clone(conn));
                return Applied::Started;
            };
            let old = entry.connection.clone();
            if *old == *conn {
                return Applied::Unchanged;
            }
            entry.connection = conn.clone();
            let restart = old.external_uac_settings != conn.external_uac_settings
                || old.active != conn.active
                || old.user_name != conn.user_name;
            if old.user_name != conn.user_name {
                st.by_user.remove(&old.user_name);
                st.by_user.insert(conn.user_name.clone(), conn.id.clone());
            }
            if !restart {
                return Applied::Updated;
            }
            let entry = st.entries.get_mut(&conn.id).expect("present above");
            Stopping {
                status: entry.status.clone(),
                task: entry.task.take(),
            }
        };
        tracing::info!(connection_id = %conn.id, "registration settings changed: unregistering the old binding");
        stopping.finish(self.unregister_deadline()).await;
        if self.state().closed {
            return Applied::Restarted;
        }
        let (status, task) = self.spawn(&conn);
        let mut st = self.state();
        let closed = st.closed;
        match st.entries.get_mut(&conn.id) {
            Some(e) if !closed => {
                e.status = status;
                e.task = task;
            }
            // Removed or shut down meanwhile (callers should serialise): do
            // not leak a driver.
            _ => status.stop(),
        }
        Applied::Restarted
    }

    /// Unregisters (`Expires: 0`, bounded wait) and forgets a connection;
    /// returns it with its last status, or None if unknown.
    pub async fn remove(&self, id: &str) -> Option<ConnectionStatus> {
        let entry = {
            let mut st = self.state();
            let e = st.entries.remove(id)?;
            if let Some(g) = st.gate.as_mut() {
                g.held.remove(id);
                g.remote.remove(id);
            }
            if st
                .by_user
                .get(&e.connection.user_name)
                .is_some_and(|i| i == id)
            {
                st.by_user.remove(&e.connection.user_name);
            }
            e
        };
        Stopping {
            status: entry.status.clone(),
            task: entry.task,
        }
        .finish(self.unregister_deadline())
        .await;
        let snapshot = entry.status.get();
        Some(ConnectionStatus {
            connection: entry.connection,
            snapshot,
        })
    }

    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state().entries.is_empty()
    }

    /// One connection with its current snapshot.
    pub fn get(&self, id: &str) -> Option<ConnectionStatus> {
        let st = self.state();
        st.entries.get(id).map(|e| st.status_of(e))
    }

    /// The connection whose Contact user is `user`, with its status.
    pub fn by_user(&self, user: &str) -> Option<ConnectionStatus> {
        let st = self.state();
        let id = st.by_user.get(user)?;
        st.entries.get(id).map(|e| st.status_of(e))
    }

    /// The connection whose registration lives on TCP/TLS flow `flow`, when
    /// it is the only one there: several lines registered over one flow are
    /// told apart by the Request-URI's user or `line` only, never by which
    /// one a map yields first. Linear in the number of connections: routing
    /// asks only when neither the user nor `line` names a connection.
    pub fn by_flow(&self, flow: u64) -> Option<ConnectionStatus> {
        let st = self.state();
        let mut on_flow = st
            .entries
            .values()
            .filter(|e| e.status.read(|s| s.flow) == Some(flow));
        let only = on_flow.next()?;
        if on_flow.next().is_some() {
            tracing::debug!(
                flow,
                "a request on a flow shared by several lines names none of them"
            );
            return None;
        }
        Some(only.status())
    }

    /// The current snapshot of one connection.
    pub fn snapshot(&self, id: &str) -> Option<Snapshot> {
        let st = self.state();
        st.entries.get(id).map(|e| st.status_of(e).snapshot)
    }

    /// The connection whose Contact user is `user_name` (routing looks this up
    /// on each inbound call, so a changed `destination_uri` applies at once).
    pub fn connection_by_user(&self, user_name: &str) -> Option<Arc<Connection>> {
        let st = self.state();
        let id = st.by_user.get(user_name)?;
        st.entries.get(id).map(|e| e.connection.clone())
    }

    /// Every connection with its current snapshot, in start order.
    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        let st = self.state();
        // Sorted as references: moving 10,000 statuses through the sort
        // cost more than reading them.
        let mut v: Vec<&Entry> = st.entries.values().collect();
        v.sort_unstable_by_key(|e| e.seq);
        v.into_iter().map(|e| st.status_of(e)).collect()
    }

    /// How many connections are registered, and how many could be (every
    /// one but the not-applicable): the daemon's one-line status, counted
    /// in place (the watchdog asks for it every few seconds).
    pub fn registered_count(&self) -> (usize, usize) {
        let st = self.state();
        st.entries
            .values()
            .fold((0, 0), |(ok, all), e| match st.reg_status_of(e) {
                RegStatus::Success => (ok + 1, all + 1),
                RegStatus::NotApplicable => (ok, all),
                _ => (ok, all + 1),
            })
    }

    /// The status of one connection as its driver publishes it (until the
    /// connection is restarted or removed).
    pub fn watch(&self, id: &str) -> Option<Arc<StatusCell>> {
        self.state().entries.get(id).map(|e| e.status.clone())
    }

    /// Unregisters everything (`Expires: 0`) and waits for the drivers, at
    /// most `deadline`; drivers still running then are aborted.
    pub async fn shutdown(&self, deadline: Duration) {
        let entries: Vec<Entry> = {
            let mut st = self.state();
            st.closed = true;
            st.by_user.clear();
            st.entries.drain().map(|(_, e)| e).collect()
        };
        for e in &entries {
            e.status.stop();
        }
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut statuses = Vec::new();
        for mut e in entries {
            tasks.extend(e.task.take());
            statuses.push(e.status);
        }
        let remaining = tasks.len();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let drain = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            let left = aborts.iter().filter(|a| !a.is_finished()).count();
            tracing::warn!(
                remaining = left,
                of = remaining,
                "unregistration deadline passed; abandoning the rest"
            );
            for a in aborts {
                a.abort();
            }
        }
        let registered = statuses
            .iter()
            .filter(|s| s.read(|s| s.status) == RegStatus::Success)
            .count();
        tracing::info!(still_registered = registered, "registrations stopped");
    }
}

/// Cluster mode (driven by `cluster::Cluster`): the node holds connections
/// by lease and runs drivers only for those.
impl Supervisor {
    /// Switches to cluster mode before any connection starts: from now on
    /// only connections passed to [`Supervisor::hold`] register here.
    pub fn clustered(&self, node_id: &str, key: [u8; 16]) {
        self.state().gate = Some(Gate {
            node_id: node_id.into(),
            key,
            held: HashMap::new(),
            remote: HashMap::new(),
        });
    }

    /// The Call-ID every holder of connection `id` uses: keyed by the shared
    /// key, so that a new holder continues the binding's Call-ID.
    fn cluster_call_id(key: &[u8; 16], id: &str) -> Arc<str> {
        let mac = crate::crypto::hmac_sha256(key, &[b"uacd register call-id\0", id.as_bytes()]);
        format!("{}@uacd", crate::crypto::hex(&mac[..16])).into()
    }

    /// This node now holds `id` (a claim returned `cseq_base` for its
    /// epoch): its driver starts, with the shared Call-ID and CSeqs from
    /// `cseq_base` on. Holding it already changes nothing.
    pub fn hold(&self, id: &str, cseq_base: u32) {
        let conn = {
            let mut st = self.state();
            if st.closed {
                return;
            }
            let Some(g) = st.gate.as_mut() else { return };
            if g.held.contains_key(id) {
                return;
            }
            let c = Continuity {
                call_id: Supervisor::cluster_call_id(&g.key, id),
                cseq: Arc::new(AtomicU32::new(cseq_base)),
            };
            g.held.insert(id.to_owned(), c);
            match st.entries.get(id) {
                Some(e) => e.connection.clone(),
                None => return,
            }
        };
        let (status, task) = self.spawn(&conn);
        let mut st = self.state();
        match st.entries.get_mut(id) {
            Some(e) if e.task.is_none() => {
                e.status = status;
                e.task = task;
            }
            _ => status.stop(),
        }
    }

    /// This node no longer holds `id` (handed over, or taken as dead): its
    /// driver is aborted without `Expires: 0`, since the binding is now the
    /// next holder's to refresh.
    pub fn unhold(&self, id: &str) {
        let mut st = self.state();
        let Some(g) = st.gate.as_mut() else { return };
        if g.held.remove(id).is_none() {
            return;
        }
        if let Some(e) = st.entries.get_mut(id) {
            if let Some(t) = e.task.take() {
                t.abort();
            }
            e.status.stop();
            e.status = StatusCell::new(Snapshot::new(RegStatus::NotRegistered));
        }
    }

    /// Whether this node drives any connection under a cluster lease.
    pub fn holds_any(&self) -> bool {
        self.state()
            .gate
            .as_ref()
            .is_some_and(|g| !g.held.is_empty())
    }

    /// The ids this node holds.
    pub fn held(&self) -> std::collections::BTreeSet<String> {
        let st = self.state();
        st.gate
            .as_ref()
            .map(|g| g.held.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every known connection id.
    pub fn ids(&self) -> Vec<String> {
        self.state().entries.keys().cloned().collect()
    }

    /// Records what the holder (`node_id`) of connection `id` persisted.
    pub fn set_remote(&self, id: &str, snapshot: Snapshot, node_id: Option<String>) {
        if let Some(g) = self.state().gate.as_mut() {
            g.remote.insert(id.to_owned(), (snapshot, node_id));
        }
    }

    /// Clustered, the node that holds `id` now as far as this node knows
    /// (itself, or what the status table says); None when not clustered.
    pub fn holder(&self, id: &str) -> Option<String> {
        let st = self.state();
        let g = st.gate.as_ref()?;
        if g.held.contains_key(id) {
            return Some(g.node_id.to_string());
        }
        g.remote.get(id).and_then(|(_, n)| n.clone())
    }

    /// Whether this supervisor runs in cluster mode.
    pub fn is_clustered(&self) -> bool {
        self.state().gate.is_some()
    }
}
