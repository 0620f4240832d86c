//! RFC 3261 §17 transaction layer: client transactions keyed by branch and
//! CSeq method (§17.1.3) in a sharded table, retransmissions and timeouts
//! driven by the pure machines in `client`, and the server side for
//! requests addressed to the daemon itself.

pub mod client;
pub mod invite_client;
pub mod invite_server;
pub mod non_invite_server;
mod server;

pub use server::ALLOW;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::sip::{Message, Method};
use crate::transport::{Hop, Inbound, InboundHandler, Transports};
use client::{Action, Event, NonInviteClient, Timer, Timers};

const SHARDS: usize = 64;

/// Why a client transaction ended without a final response.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Timer F (or B) fired: treated as 408 by the TU (§8.1.3.1).
    #[error("transaction timed out")]
    Timeout,
    /// The transport failed: treated as 503 by the TU (§8.1.3.1).
    #[error("transport error: {0}")]
    Transport(#[from] crate::transport::Error),
    #[error("flow closed during the transaction")]
    FlowClosed,
}

type Slot = (Method, mpsc::Sender<Message>);

/// Cheap-clone handle on the transaction layer.
#[derive(Clone)]
pub struct Layer {
    inner: Arc<LayerInner>,
}

struct LayerInner {
    shards: Vec<Mutex<HashMap<Box<str>, Slot>>>,
    hasher: std::collections::hash_map::RandomState,
    transports: OnceLock<Transports>,
    user_agent: String,
}

impl Layer {
    pub fn new(user_agent: &str) -> Layer {
        Layer {
            inner: Arc::new(LayerInner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: Default::default(),
                transports: OnceLock::new(),
                user_agent: user_agent.to_owned(),
            }),
        }
    }

    /// Completes the wiring once the transports are bound.
    pub fn attach(&self, transports: Transports) {
        let _ = self.inner.transports.set(transports);
    }

    fn shard(&self, branch: &str) -> &Mutex<HashMap<Box<str>, Slot>> {
        let h = self.inner.hasher.hash_one(branch);
        &self.inner.shards[(h as usize) % SHARDS]
    }

    fn register<'a>(
        &'a self,
        branch: &'a str,
        method: Method,
        tx: mpsc::Sender<Message>,
    ) -> Registration<'a> {
        let mut shard = self.shard(branch).lock().unwrap_or_else(|e| e.into_inner());
        shard.insert(branch.into(), (method, tx));
        Registration {
            layer: self,
            branch,
        }
    }

    /// Number of client transactions in flight.
    pub fn pending(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Runs one non-INVITE client transaction (§17.1.2): sends `request`
    /// over `hop`, retransmits on UDP, and returns the final response.
    /// `branch` must be the branch of the request's top Via.
    pub async fn request(
        &self,
        hop: &Hop,
        method: Method,
        branch: &str,
        request: Bytes,
        timers: Timers,
    ) -> Result<Message, TxError> {
        let (tx, mut rx) = mpsc::channel(4);
        let _registration = self.register(branch, method, tx);
        // Timer F bounds the first send too (a stream whose queue is full).
        match tokio::time::timeout(timers.timeout(), hop.send(request.clone())).await {
            Ok(sent) => sent?,
            Err(_) => return Err(TxError::Timeout),
        }
        let (mut machine, actions) = NonInviteClient::start(hop.reliable(), timers);
        let mut deadlines = Deadlines::default();
        let mut pending = actions;
        let mut final_response: Option<Message> = None;
        loop {
            for action in pending.drain(..) {
                match action {
                    Action::Retransmit => {
                        if let Err(e) = hop.send(request.clone()).await {
                            return Err(e.into());
                        }
                    }
                    Action::Arm(t, d) => deadlines.set(t, Some(Instant::now() + d)),
                    Action::Cancel(t) => deadlines.set(t, None),
                    Action::PassUp(code) if code >= 200 => {
                        if let Some(msg) = final_response.take() {
                            // Timer K only absorbs retransmitted responses;
                            // stray ones are dropped by the layer anyway.
                            return Ok(msg);
                        }
                    }
                    Action::PassUp(_) | Action::Terminate => {}
                    Action::ReportTimeout => return Err(TxError::Timeout),
                    Action::ReportTransportError => return Err(TxError::FlowClosed),
                }
            }
            let event = tokio::select! {
                // Responses first: a 200 queued just before the flow closed
                // must win over the closure.
                biased;
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        let code = msg.status().unwrap_or(0);
                        if code >= 200 {
                            final_response = Some(msg);
                        }
                        Event::Response(code)
                    }
                    None => Event::TransportError,
                },
                _ = sleep_opt(deadlines.e) => Event::TimerFired(Timer::E),
                _ = sleep_opt(deadlines.f) => Event::TimerFired(Timer::F),
                _ = sleep_opt(deadlines.k) => Event::TimerFired(Timer::K),
                _ = flow_closed(hop) => Event::TransportError,
            };
            pending = machine.step(event);
        }
    }

    fn on_response(&self, inbound: Inbound) {
        let msg = inbound.msg;
        let (Ok(via), Ok(cseq)) = (msg.top_via(), msg.cseq()) else {
            tracing::debug!(source = %inbound.source, "response without Via branch or CSeq dropped");
            return;
        };
        let Some(branch) = via.branch() else {
            return;
        };
        let sender = {
            let shard = self.shard(branch).lock().unwrap_or_else(|e| e.into_inner());
            match shard.get(branch) {
                Some((method, tx)) if *method == cseq.method => Some(tx.clone()),
                _ => None,
            }
        };
        match sender {
            Some(tx) => {
                // A full queue means retransmissions are piling up: dropping
                // one is what UDP would have done.
                let _ = tx.try_send(msg);
            }
            None => {
                tracing::debug!(source = %inbound.source, branch, "stray response dropped (§18.1.2)")
            }
        }
    }
}

impl InboundHandler for Layer {
    fn handle(&self, inbound: Inbound) {
        if inbound.msg.is_request() {
            if let Some(t) = self.inner.transports.get() {
                server::answer(t, &self.inner.user_agent, inbound);
            }
        } else {
            self.on_response(inbound);
        }
    }
}

/// Removes a client transaction from the table when its runner ends,
/// whichever way it ends (including cancellation).
struct Registration<'a> {
    layer: &'a Layer,
    branch: &'a str,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut shard = self
            .layer
            .shard(self.branch)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.remove(self.branch);
    }
}

#[derive(Default)]
struct Deadlines {
    e: Option<Instant>,
    f: Option<Instant>,
    k: Option<Instant>,
}

impl Deadlines {
    fn set(&mut self, t: Timer, at: Option<Instant>) {
        match t {
            Timer::E => self.e = at,
            Timer::F => self.f = at,
            Timer::K => self.k = at,
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flow_closed(hop: &Hop) {
    match hop {
        Hop::Stream(flow) => flow.closed().await,
        Hop::Udp { .. } => std::future::pending().await,
    }
}

/// A fresh RFC 3261 §8.1.1.7 branch (magic cookie + 96 random bits).
pub fn new_branch() -> String {
    format!("z9hG4bK{:024x}", rand::random::<u128>() >> 32)
}
