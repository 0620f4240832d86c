//! The REST API (design.md Part 2, Telnyx v2 shapes) on `api.listen`:
//! `/v2/uac_connections` CRUD with live apply, registration status, the product's
//! `/v2/sip_registration_status`, `/healthz` and the OpenAPI document at
//! `/v2/openapi.json` (kept in `openapi/uacd.json`).

mod body;
mod error;
mod handlers;
mod query;
mod serve;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, ErrorObject, Source};

use crate::config::Config;
use crate::registration::{RegStatus, Supervisor};
use crate::store::StoreHandle;

/// The OpenAPI 3.1 document served at `GET /v2/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi/uacd.json");

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Shared>,
}

struct Shared {
    store: StoreHandle,
    supervisor: Supervisor,
    /// SHA-256 of each token, with the user it acts for (replaced on reload).
    tokens: std::sync::RwLock<Vec<([u8; 32], String)>>,
    /// Serialises writes (store + live apply) so that each id changes in order.
    write: tokio::sync::Mutex<()>,
    /// The `fqdn` of connection objects without `sip.domain`: where PBXes reach us.
    fqdn: String,
    /// `sip.domain`: each connection's `fqdn` is `<user_name>.<domain>`.
    domain: Option<String>,
    /// Whether `sip.listen` has a UDP socket (UDP connections need one).
    has_udp: bool,
    /// `limits.connections_per_user`.
    connections_per_user: usize,
    /// Cluster mode: this node's view of the cluster.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
}

impl ApiState {
    pub fn new(config: &Config, store: StoreHandle, supervisor: Supervisor) -> ApiState {
        let tokens = std::sync::RwLock::new(token_digests(config));
        ApiState {
            inner: Arc::new(Shared {
                store,
                supervisor,
                tokens,
                write: tokio::sync::Mutex::new(()),
                fqdn: fqdn(config),
                domain: config.sip.domain.clone(),
                has_udp: config
                    .sip
                    .listen
                    .iter()
                    .any(|l| l.transport == crate::config::Transport::Udp),
                connections_per_user: config.limits.connections_per_user,
                cluster: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Cluster mode: `GET /v2/cluster/nodes` shows this cluster's nodes.
    pub fn set_cluster(&self, cluster: crate::cluster::Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Takes the tokens of a reloaded configuration (at once).
    pub fn set_tokens(&self, config: &Config) {
        *self.inner.tokens.write().unwrap_or_else(|e| e.into_inner()) = token_digests(config);
    }

    /// Serialises a change of connections with the API's writes.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.write.lock().await
    }

    /// The user a bearer token acts for. Every configured token is compared
    /// (SHA-256 digests, constant time), so timing tells nothing about which
    /// or how much matched.
    fn user_for(&self, token: &str) -> Option<String> {
        let given = sha256(token.as_bytes());
        let mut found = None;
        let tokens = self.inner.tokens.read().unwrap_or_else(|e| e.into_inner());
        for (digest, user) in tokens.iter() {
            if crate::crypto::constant_time_eq(digest, &given) && found.is_none() {
                found = Some(user.clone());
            }
        }
        found
    }
}

/// The per-connection host names of `sip.domain`.
impl ApiState {
    /// `sip.domain`, which connection checks need (`user_name` is a label).
    fn domain(&self) -> Option<&str> {
        self.inner.domain.as_deref()
    }

    /// A connection object's `fqdn`: `<user_name>.<sip.domain>`, else the
    /// daemon-wide one.
    fn fqdn_of(&self, c: &crate::config::Connection) -> String {
        match self.domain() {
            Some(d) => c.fqdn(d),
            None => self.inner.fqdn.clone(),
        }
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// `sip.public_address`'s host, else the first SIP listener's IP, else the host name.
fn fqdn(config: &Config) -> String {
    if let Some(p) = &config.sip.public_address {
        return p.host.bare();
    }
    match config.sip.listen.first() {
        Some(l) if !l.addr.ip().is_unspecified() => l.addr.ip().to_string(),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
    }
}

/// The authenticated caller (`Authorization: Bearer <token>`); 401 otherwise.
pub struct Caller {
    pub user_id: String,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized());
        }
        state
            .user_for(token.trim())
            .map(|user_id| Caller { user_id })
            .ok_or_else(ApiError::unauthorized)
    }
}

fn token_digests(config: &Config) -> Vec<([u8; 32], String)> {
    config
        .api
        .tokens
        .iter()
        .map(|t| (sha256(t.token.expose().as_bytes()), t.user_id.clone()))
        .collect()
}

/// Every route. design.md: every endpoint needs a bearer token, `/metrics`
/// and `/healthz` included (any configured token will do: they show no
/// tenant's data). `metrics.listen`, when set, serves `/metrics` without a
/// token for a scraper on a private interface; `/v2/openapi.json` is public
/// so that tools can bootstrap from it.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/v2/uac_connections",
            get(handlers::list).post(handlers::create),
        )
        .route(
            "/v2/uac_connections/{id}",
            get(handlers::get_one)
                .patch(handlers::update)
                .delete(handlers::delete),
        )
        .route(
            "/v2/uac_connections/{id}/registration_status",
            get(handlers::registration_status),
        )
        .route(
            "/v2/sip_registration_status",
            get(handlers::sip_registration_status),
        )
        .route("/v2/cluster/nodes", get(cluster_nodes))
        .route("/v2/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("resource") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// `GET /v2/cluster/nodes` (any token): the nodes as this node saw them at
/// its last heartbeat; empty when not clustered.
async fn cluster_nodes(_caller: Caller, State(state): State<ApiState>) -> Response {
    let nodes = state
        .inner
        .cluster
        .get()
        .map(crate::cluster::Cluster::nodes)
        .unwrap_or_default();
    let data: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "node_id": n.node_id,
                "alive": n.alive,
                "connections": n.connections,
                "last_seen_at": view::rfc3339_ms(n.last_seen_ms),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "data": data })).into_response()
}

/// `GET /metrics`: the Prometheus text format; `uacd_registrations` is
/// counted from the live snapshots at each scrape.
async fn metrics(_caller: Caller, State(state): State<ApiState>) -> Response {
    metrics_response(&state.inner.supervisor)
}

/// The `/metrics` answer, shared with the `metrics.listen` server.
pub fn metrics_response(supervisor: &Supervisor) -> Response {
    let body = crate::metrics::render(|| {
        let mut statuses = supervisor.statuses();
        // Cluster mode: each node counts the connections it holds, so that
        // a sum over the nodes counts each connection once.
        if supervisor.is_clustered() {
            let held = supervisor.held();
            statuses.retain(|s| held.contains(&s.connection.id));
        }
        let mut per = [0usize; RegStatus::ALL.len()];
        for s in &statuses {
            per[usize::from(s.snapshot.status.code())] += 1;
        }
        crate::metrics::set_registrations(
            RegStatus::ALL.map(|st| (st.label(), per[usize::from(st.code())])),
        );
    });
    match body {
        Some(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        None => ApiError::not_found("metrics (no recorder installed)").into_response(),
    }
}

/// Serves only `GET /metrics` on `listener` (`metrics.listen`) until `cancel`.
pub async fn serve_metrics(
    listener: TcpListener,
    supervisor: Supervisor,
    cancel: CancellationToken,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let supervisor = supervisor.clone();
            async move { metrics_response(&supervisor) }
        }),
    );
    serve::serve_http(listener, app, cancel, serve::Timeouts::default()).await;
}

async fn healthz(_caller: Caller) -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the API on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, state: ApiState, cancel: CancellationToken) {
    let app = router(state);
    serve::serve_http(listener, app, cancel, serve::Timeouts::default()).await;
}
