//! A connection's published registration status: the driver writes it,
//! the API, routing, metrics and tests read or await it.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::driver::Snapshot;

/// One connection's status as its driver last published it: read by the
/// API, routing and metrics, awaited by tests. A lock and one `Notify`,
/// where a watch channel allocated nine `Notify`s with its value (456
/// bytes a connection).
#[derive(Debug)]
pub struct StatusCell {
    /// The snapshot and how many times it was published.
    current: Mutex<(Snapshot, u64)>,
    changed: Notify,
}

impl StatusCell {
    pub fn new(snapshot: Snapshot) -> Arc<StatusCell> {
        Arc::new(StatusCell {
            current: Mutex::new((snapshot, 0)),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (Snapshot, u64)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> Snapshot {
        self.lock().0.clone()
    }

    /// Reads a part of the snapshot without cloning it.
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.lock().0)
    }

    pub(super) fn publish(&self, snapshot: Snapshot) {
        {
            let mut cur = self.lock();
            cur.0 = snapshot;
            cur.1 += 1;
        }
        self.changed.notify_waiters();
    }

    /// The first snapshot, now or later, that satisfies `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        self.wait(|s, _| pred(s)).await.0
    }

    /// The snapshot once it has been published more than `seen` times,
    /// with the new count: every publication, none missed in between.
    pub async fn changed(&self, seen: u64) -> (Snapshot, u64) {
        self.wait(|_, n| n > seen).await
    }

    async fn wait(&self, pred: impl Fn(&Snapshot, u64) -> bool) -> (Snapshot, u64) {
        loop {
            // Registered before the check, so a publication between the
            // check and the await still wakes us.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let cur = self.lock();
                if pred(&cur.0, cur.1) {
                    return cur.clone();
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::RegStatus;

    #[tokio::test]
    async fn status_cell_wakes_waiters_and_counts_every_publication() {
        let cell = StatusCell::new(Snapshot::new(RegStatus::NotRegistered));
        let seen = 0;
        assert_eq!(cell.get().status, RegStatus::NotRegistered);
        let waiter = tokio::spawn({
            let cell = cell.clone();
            async move { cell.wait_for(|s| s.status == RegStatus::Success).await }
        });
        tokio::task::yield_now().await;
        cell.publish(Snapshot::new(RegStatus::Failed));
        cell.publish(Snapshot::new(RegStatus::Success));
        assert_eq!(waiter.await.unwrap().status, RegStatus::Success);
        // Two publications since `seen`: the next change is already there.
        let (snap, n) = cell.changed(seen).await;
        assert_eq!((snap.status, n), (RegStatus::Success, 2));
        assert_eq!(cell.read(|s| s.status), RegStatus::Success);
    }
}
