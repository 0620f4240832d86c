//! The HTTP/1.1 server under the API and metrics routers: hyper with a
//! timer, so that a client gets [`Timeouts::header_read`] to send a
//! request's headers (also while a kept-alive connection waits for its next
//! request), and a connection on which nothing moves for
//! [`Timeouts::idle`] (a stalled body, an unread response) is closed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a client may take; see the module doc.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s for headers (a request's headers are one small write for any
    /// real client) and 120 s of silence (a slow body or reader; longer
    /// than the longest a handler is quiet: a DELETE waits up to
    /// `unregister_timeout_sec`, at most 60 s, for the unregistration).
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

/// Accepts on `listener` and serves `app` until `cancel`; then every
/// connection finishes its request in progress and closes.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    cancel: CancellationToken,
    timeouts: Timeouts,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    conns.spawn(connection(stream, app.clone(), cancel.clone(), timeouts));
                }
                Err(e) => {
                    // Out of descriptors, mostly: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn connection(stream: TcpStream, app: Router, cancel: CancellationToken, timeouts: Timeouts) {
    let last = Arc::new(Mutex::new(Instant::now()));
    let io = TokioIo::new(Watched {
        inner: stream,
        last: last.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let quiet_since = *last.lock().unwrap_or_else(|e| e.into_inner());
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = cancel.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(quiet_since + timeouts.idle) => {
                let now_quiet = *last.lock().unwrap_or_else(|e| e.into_inner());
                if now_quiet == quiet_since {
                    tracing::debug!(idle_sec = timeouts.idle.as_secs(), "idle HTTP connection closed");
                    return;
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved either way.
struct Watched {
    inner: TcpStream,
    last: Arc<Mutex<Instant>>,
}

impl Watched {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(timeouts: Timeouts) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve_http(listener, app, cancel.clone(), timeouts));
        (addr, cancel)
    }

    /// Reads until the server closes; `None` if it did not within 10 s.
    async fn closed_by_server(s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        read.ok().map(|_| got)
    }

    #[tokio::test]
    async fn half_sent_headers_are_cut_off() {
        let (addr, cancel) = start(Timeouts {
            header_read: Duration::from_millis(200),
            idle: Duration::from_secs(3600),
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(closed_by_server(&mut s).await.is_some(), "still open");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_silent_kept_alive_connection_is_closed() {
        let (addr, cancel) = start(Timeouts {
            header_read: Duration::from_millis(200),
            idle: Duration::from_secs(3600),
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = closed_by_server(&mut s).await.expect("still open");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_stalled_body_is_closed_when_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let app = Router::new().route("/", axum::routing::post(|body: String| async move { body }));
        tokio::spawn(serve_http(
            listener,
            app,
            cancel.clone(),
            Timeouts {
                header_read: Duration::from_secs(3600),
                idle: Duration::from_millis(200),
            },
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        let got = closed_by_server(&mut s).await.expect("still open");
        assert!(!String::from_utf8_lossy(&got).contains("200"));
        cancel.cancel();
    }
}
