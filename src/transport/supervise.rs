//! Listener supervision (driving `limits::restart_delay`): the UDP receive
//! loops and the TCP/TLS accept loops are watched, and one that panics or
//! returns before shutdown is logged at error and started again.

use std::future::Future;
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::limits::restart_delay;
use crate::config::Transport;
use crate::metrics;

/// Runs a listener loop (`run()` makes a fresh one) until shutdown. A
/// loop that panics or returns before shutdown is logged at error and
/// started again on the same socket: the loops keep nothing but the
/// socket, so a restart loses nothing, while exiting would end every
/// registration and call because of one message that hit a bug (the
/// handler runs inline on the loop). Restarts back off to 5 s when a
/// loop keeps failing ([`restart_delay`]).
pub(super) fn run<F, Fut>(
    cancel: &CancellationToken,
    transport: Transport,
    local: SocketAddr,
    run: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let mut delay = None;
        loop {
            let started = tokio::time::Instant::now();
            let ended = tokio::spawn(run()).await;
            if cancel.is_cancelled() {
                return;
            }
            match ended {
                Ok(()) => {
                    tracing::error!(%transport, %local, "listener loop ended; restarting it")
                }
                Err(e) if e.is_panic() => {
                    tracing::error!(%transport, %local, "listener loop panicked; restarting it")
                }
                // Aborted: the runtime is shutting down.
                Err(_) => return,
            }
            metrics::transport_error(transport.uri_param());
            let wait = restart_delay(delay, started.elapsed());
            delay = Some(wait);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}
