//! A connection's published registration status: the driver writes it,
//! the API, routing, metrics and tests read or await it. The supervisor
//! asks the driver to stop through the same cell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::driver::Snapshot;

/// One connection's status as its driver last published it: read by the
/// API, routing and metrics, awaited by tests. A lock and one `Notify`,
/// where a watch channel allocated nine `Notify`s with its value (456
/// bytes a connection). The stop request shares the cell and its
/// `Notify`: a separate cancellation token was another 112-byte
/// allocation per connection, and cell and request always begin and end
/// together.
#[derive(Debug)]
pub struct StatusCell {
    /// The snapshot and how many times it was published.
    current: Mutex<(Snapshot, u64)>,
    /// Woken by each publication and by the stop request.
    changed: Notify,
    stop: AtomicBool,
}

impl StatusCell {
    pub fn new(snapshot: Snapshot) -> Arc<StatusCell> {
        Arc::new(StatusCell {
            current: Mutex::new((snapshot, 0)),
            changed: Notify::new(),
            stop: AtomicBool::new(false),
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

    /// Asks the driver to stop (it unregisters when registered).
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Resolves once [`StatusCell::stop`] has been called.
    pub(super) async fn stopped(&self) {
        loop {
            let signal = self.stop_signal();
            if self.is_stopped() {
                return;
            }
            signal.await;
        }
    }

    /// Wakes on the next stop request, or on a publication. Make it before
    /// reading [`StatusCell::is_stopped`]: `notify_waiters` reaches every
    /// `Notified` made before it, polled or not. Smaller than
    /// [`StatusCell::stopped`]'s future, for a select that lives as long as
    /// the connection.
    pub(super) fn stop_signal(&self) -> Notified<'_> {
        self.changed.notified()
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

    #[tokio::test]
    async fn a_stop_request_wakes_the_waiting_driver_and_stays_set() {
        let cell = StatusCell::new(Snapshot::new(RegStatus::NotRegistered));
        let driver = tokio::spawn({
            let cell = cell.clone();
            async move { cell.stopped().await }
        });
        tokio::task::yield_now().await;
        assert!(!driver.is_finished() && !cell.is_stopped());
        cell.publish(Snapshot::new(RegStatus::Success));
        tokio::task::yield_now().await;
        assert!(!driver.is_finished(), "a publication is not a stop");
        cell.stop();
        driver.await.unwrap();
        assert!(cell.is_stopped());
        cell.stopped().await;
    }
}
