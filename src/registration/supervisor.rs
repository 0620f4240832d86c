//! Owns one driver task per connection, their stop tokens and status
//! channels; starts them, and on shutdown unregisters them all within a
//! deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::driver::{Driver, Snapshot};
use super::{Context, RegStatus};
use crate::config::Connection;

/// A connection and the live status of its registration.
#[derive(Debug, Clone)]
pub struct ConnectionStatus {
    pub connection: Arc<Connection>,
    pub snapshot: Snapshot,
}

struct Entry {
    connection: Arc<Connection>,
    status: watch::Receiver<Snapshot>,
    stop: CancellationToken,
}

pub struct Supervisor {
    ctx: Arc<Context>,
    entries: HashMap<String, Entry>,
    /// Insertion order, for stable listings.
    order: Vec<String>,
    tasks: JoinSet<()>,
}

impl Supervisor {
    pub fn new(ctx: Arc<Context>) -> Supervisor {
        Supervisor {
            ctx,
            entries: HashMap::new(),
            order: Vec::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Starts registering `conn` (or records it as Not Applicable when it is
    /// inactive or has no proxy).
    pub fn start(&mut self, conn: Connection) {
        let conn = Arc::new(conn);
        let applicable = conn.active && conn.external_uac_settings.proxy.is_some();
        let initial = if applicable {
            RegStatus::NotRegistered
        } else {
            RegStatus::NotApplicable
        };
        let (tx, rx) = watch::channel(Snapshot::new(initial));
        let stop = CancellationToken::new();
        if applicable {
            let driver = Driver::new(self.ctx.clone(), conn.clone(), tx, stop.clone());
            self.tasks.spawn(driver.run());
        } else {
            tracing::info!(connection_id = %conn.id, connection_name = %conn.connection_name, "connection not applicable (inactive or no proxy)");
        }
        self.order.push(conn.id.clone());
        self.entries.insert(
            conn.id.clone(),
            Entry {
                connection: conn,
                status: rx,
                stop,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every connection with its current snapshot, in start order.
    pub fn statuses(&self) -> Vec<ConnectionStatus> {
        self.order
            .iter()
            .filter_map(|id| self.entries.get(id))
            .map(|e| ConnectionStatus {
                connection: e.connection.clone(),
                snapshot: e.status.borrow().clone(),
            })
            .collect()
    }

    /// A receiver that sees every status change of one connection.
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<Snapshot>> {
        self.entries.get(id).map(|e| e.status.clone())
    }

    /// Unregisters everything (`Expires: 0`) and waits for the drivers, at
    /// most `deadline`; drivers still running then are aborted.
    pub async fn shutdown(mut self, deadline: Duration) {
        for e in self.entries.values() {
            e.stop.cancel();
        }
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, drain).await.is_err() {
            tracing::warn!(
                remaining = self.tasks.len(),
                "unregistration deadline passed; abandoning the rest"
            );
            self.tasks.abort_all();
        }
        let registered = self
            .entries
            .values()
            .filter(|e| e.status.borrow().status == RegStatus::Success)
            .count();
        tracing::info!(still_registered = registered, "registrations stopped");
    }
}
