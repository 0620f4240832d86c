//! One function per endpoint. Writes hold the API's write lock across the
//! store write (durable before the reply) and the live apply, so that changes
//! to one connection reach the supervisor in order. A rejected request
//! changes nothing: validation runs before any write.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::{
    self, check_known, check_uri_schemes, check_writable, infer_transport, merge_patch,
    to_connection, to_document,
};
use super::error::ApiError;
use super::query::{self, CredentialType};
use super::view;
use super::{ApiState, Caller};
use crate::config::{Connection, Transport};
use crate::store::{ListQuery, Owner, Row, now_ms};

fn data(status: StatusCode, v: Value) -> Response {
    (status, Json(json!({ "data": v }))).into_response()
}

impl ApiState {
    fn object(&self, row: &Row) -> Value {
        let snap = self.inner.supervisor.snapshot(&row.connection.id);
        view::connection(row, snap.as_ref(), &self.fqdn_of(&row.connection))
    }

    /// The caller's row `id`, or 404 (also for another tenant's id).
    async fn owned_row(&self, caller: &Caller, id: &str) -> Result<Row, ApiError> {
        let key = id.to_owned();
        let row = self.inner.store.run(move |s| s.get(&key)).await?;
        row.filter(|r| r.connection.user_id == caller.user_id)
            .ok_or_else(|| ApiError::not_found("connection"))
    }

    /// How many connections `user_id` owns (file and API alike).
    async fn connections_of(&self, user_id: &str) -> Result<u64, ApiError> {
        let q = ListQuery {
            user_id: user_id.to_owned(),
            name_contains: None,
            user_name_contains: None,
            sort: crate::store::Sort {
                key: crate::store::SortKey::CreatedAt,
                descending: false,
            },
            page_number: 1,
            page_size: 1,
        };
        Ok(self.inner.store.run(move |s| s.list(&q)).await?.total)
    }

    /// Checks that only the API can: a UDP connection needs a UDP listener.
    fn check_listeners(&self, c: &Connection) -> Result<(), ApiError> {
        let ext = &c.external_uac_settings;
        let uri = ext.outbound_proxy.as_ref().or(ext.proxy.as_ref());
        if !self.inner.has_udp
            && uri.is_some_and(|u| u.transport_or(ext.transport) == Transport::Udp)
        {
            return Err(ApiError::invalid(
                "/external_uac_settings/transport",
                "UDP needs a udp: address in sip.listen, and this daemon has none",
            ));
        }
        Ok(())
    }
}

/// A fresh connection id: 19 decimal digits, like the product's ids.
fn new_id() -> String {
    rand::random_range(1_000_000_000_000_000_000u64..=i64::MAX as u64).to_string()
}

pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let input = body::read_object(&headers, request).await?;
    check_writable(&input, &caller.user_id)?;
    check_uri_schemes(&input)?;
    let patch_ext = input.get("external_uac_settings").cloned();
    let mut doc = Value::Object(input);
    doc["id"] = Value::String(new_id());
    infer_transport(&mut doc, patch_ext.as_ref());
    let conn = to_connection(doc, &caller.user_id, state.domain())?;
    state.check_listeners(&conn)?;
    let _write = state.inner.write.lock().await;
    // Under the write lock: two creates at once cannot both take the last slot.
    let owned = state.connections_of(&caller.user_id).await?;
    if owned >= state.inner.connections_per_user as u64 {
        return Err(ApiError::connection_limit(
            &caller.user_id,
            state.inner.connections_per_user,
        ));
    }
    let now = now_ms();
    let row = Row {
        connection: conn,
        owner: Owner::Api,
        created_at: now,
        updated_at: now,
    };
    let stored = row.clone();
    state.inner.store.run(move |s| s.insert(&stored)).await?;
    state.inner.supervisor.upsert(row.connection.clone()).await;
    tracing::info!(connection_id = %row.connection.id, connection_name = %row.connection.connection_name, "connection created over the API");
    Ok(data(StatusCode::CREATED, state.object(&row)))
}

pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = query::parse_list(raw.as_deref())?;
    let q = ListQuery {
        user_id: caller.user_id,
        name_contains: p.name_contains,
        user_name_contains: p.user_name_contains,
        sort: p.sort,
        page_number: p.page_number,
        page_size: p.page_size,
    };
    let page = if p.none {
        crate::store::Page {
            rows: Vec::new(),
            total: 0,
        }
    } else {
        state.inner.store.run(move |s| s.list(&q)).await?
    };
    let items: Vec<Value> = page.rows.iter().map(|r| state.object(r)).collect();
    Ok(Json(json!({
        "data": items,
        "meta": {
            "page_number": p.page_number,
            "page_size": p.page_size,
            "total_pages": query::total_pages(page.total, p.page_size),
            "total_results": page.total,
        }
    }))
    .into_response())
}

pub async fn get_one(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = state.owned_row(&caller, &id).await?;
    Ok(data(StatusCode::OK, state.object(&row)))
}

pub async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let patch = body::read_object(&headers, request).await?;
    let _write = state.inner.write.lock().await;
    let row = state.owned_row(&caller, &id).await?;
    if row.owner == Owner::File {
        return Err(ApiError::file_owned(&id));
    }
    check_writable(&patch, &caller.user_id)?;
    check_known(&patch)?;
    check_uri_schemes(&patch)?;
    let patch_ext = patch.get("external_uac_settings").cloned();
    let patch = Value::Object(patch);
    let mut doc = to_document(&row.connection);
    merge_patch(&mut doc, &patch);
    doc["id"] = Value::String(row.connection.id.clone());
    infer_transport(&mut doc, patch_ext.as_ref());
    let conn = to_connection(doc, &caller.user_id, state.domain())?;
    state.check_listeners(&conn)?;
    if conn == row.connection {
        return Ok(data(StatusCode::OK, state.object(&row)));
    }
    let updated = Row {
        connection: conn,
        owner: Owner::Api,
        created_at: row.created_at,
        updated_at: now_ms().max(row.updated_at),
    };
    let stored = updated.clone();
    state.inner.store.run(move |s| s.update(&stored)).await?;
    let applied = state
        .inner
        .supervisor
        .upsert(updated.connection.clone())
        .await;
    tracing::info!(connection_id = %id, ?applied, "connection updated over the API");
    Ok(data(StatusCode::OK, state.object(&updated)))
}

pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _write = state.inner.write.lock().await;
    let row = state.owned_row(&caller, &id).await?;
    if row.owner == Owner::File {
        return Err(ApiError::file_owned(&id));
    }
    // Unregister first (bounded by registration.unregister_timeout_sec), then delete.
    let last = state.inner.supervisor.remove(&id).await;
    let key = id.clone();
    state.inner.store.run(move |s| s.delete(&key)).await?;
    tracing::info!(connection_id = %id, "connection deleted over the API");
    let snap = last.map(|s| s.snapshot);
    Ok(data(
        StatusCode::OK,
        view::connection(&row, snap.as_ref(), &state.fqdn_of(&row.connection)),
    ))
}

pub async fn registration_status(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = state.owned_row(&caller, &id).await?;
    let snap = state.inner.supervisor.snapshot(&row.connection.id);
    let mut v = view::registration_status(&row.connection.id, snap.as_ref());
    // Cluster mode: the node holding the connection now (null when none,
    // or when not clustered).
    v["node_id"] = json!(state.inner.supervisor.holder(&row.connection.id));
    Ok(data(StatusCode::OK, v))
}

/// `GET /v2/sip_registration_status`. 403 when the connection exists but `user_id` (or the caller) does
/// not own it; other credential types have no credentials here (404).
pub async fn sip_registration_status(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = query::parse_status(raw.as_deref())?;
    if p.credential_type != CredentialType::UacThirdParty {
        return Err(ApiError::not_found("credential"));
    }
    let key = p.connection_id.clone();
    let row = state
        .inner
        .store
        .run(move |s| s.get(&key))
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))?;
    if row.connection.user_id != p.user_id || row.connection.user_id != caller.user_id {
        return Err(ApiError::forbidden(
            "the connection is not owned by this user_id",
        ));
    }
    let snap = state.inner.supervisor.snapshot(&row.connection.id);
    Ok(Json(view::sip_registration_status(
        &row.connection,
        snap.as_ref(),
    ))
    .into_response())
}
