//! Request bodies: content type and size checks, JSON parsing, RFC 7396
//! merge patch, and validation of a connection through the shared serde type
//! and `Connection::check`, with every problem mapped to a JSON pointer.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::config::{CALL_KEYS, Connection, EXTERNAL_KEYS, INTERNAL_KEYS, ProxyUri};

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Fields of the connection object that the server sets; a body may not.
const READ_ONLY: &[&str] = &[
    "id",
    "record_type",
    "fqdn",
    "registration_status",
    "registration_status_updated_at",
    "last_registered_ip",
    "created_at",
    "updated_at",
];

/// `application/json` or any `application/*+json`, parameters ignored.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads a JSON object body: 415 for another content type, 413 over
/// [`MAX_BODY`], 400 for malformed JSON, 422 for JSON that is not an object.
pub async fn read_object(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY))?;
    parse_object(&bytes)
}

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut m)) => {
            m.values_mut().for_each(integral_floats);
            Ok(m)
        }
        Ok(_) => Err(ApiError::invalid(
            "",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::malformed_json(format!("malformed JSON: {e}"))),
    }
}

/// JSON has one number type: `3600.0` is the integer 3600 (as JSON Schema's
/// `integer` says), so integral floats become integers before typed parsing.
fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                *v = Value::from(f as u64);
            } else if f.fract() == 0.0 && f < 0.0 && f > i64::MIN as f64 {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats),
        Value::Object(o) => o.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// Through the API `proxy` and `outbound_proxy` are SIP URIs with their
/// scheme, as the OpenAPI document says. (The config file also takes a bare
/// `host[:port]`.)
pub fn check_uri_schemes(body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(Value::Object(ext)) = body.get("external_uac_settings") else {
        return Ok(());
    };
    for key in ["proxy", "outbound_proxy"] {
        if let Some(Value::String(uri)) = ext.get(key) {
            let scheme = uri.split_once(':').map(|(s, _)| s);
            if !scheme
                .is_some_and(|s| s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips"))
            {
                return Err(ApiError::invalid(
                    format!("/external_uac_settings/{key}"),
                    "must be a SIP URI starting with sip: or sips:",
                ));
            }
        }
    }
    Ok(())
}

/// Rejects server-set fields, `user_id` included (the token's user owns
/// what it creates).
pub fn check_writable(body: &Map<String, Value>, caller: &str) -> Result<(), ApiError> {
    let mut issues = Vec::new();
    for key in READ_ONLY {
        if body.contains_key(*key) {
            issues.push((format!("/{key}"), "is read-only".to_owned()));
        }
    }
    if body.contains_key("user_id") {
        issues.push((
            "/user_id".to_owned(),
            format!("is read-only: connections belong to the token's user ({caller})"),
        ));
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_all(issues))
    }
}

const TOP_KEYS: &[&str] = &[
    "connection_name",
    "user_name",
    "password",
    "active",
    "external_uac_settings",
    "internal_uac_settings",
    "inbound",
    "outbound",
];

/// Unknown members of a patch are rejected even when `null` (a merge would
/// drop them silently). Read-only members are [`check_writable`]'s.
pub fn check_known(patch: &Map<String, Value>) -> Result<(), ApiError> {
    let mut issues = Vec::new();
    let mut unknown = |obj: &Map<String, Value>, known: &[&str], prefix: &str| {
        for k in obj.keys() {
            if !known.contains(&k.as_str())
                && !(prefix.is_empty() && (READ_ONLY.contains(&k.as_str()) || k == "user_id"))
            {
                issues.push((
                    format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")),
                    "unknown field".to_owned(),
                ));
            }
        }
    };
    unknown(patch, TOP_KEYS, "");
    for (key, known) in [
        ("external_uac_settings", EXTERNAL_KEYS),
        ("internal_uac_settings", INTERNAL_KEYS),
        ("inbound", CALL_KEYS),
        ("outbound", CALL_KEYS),
    ] {
        if let Some(Value::Object(o)) = patch.get(key) {
            unknown(o, known, &format!("/{key}"));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_all(issues))
    }
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The stored connection as a JSON document including its passwords (the
/// base a PATCH is merged into). Never sent to a client.
pub fn to_document(c: &Connection) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("password".into(), Value::String(c.password.expose().into()));
        if let (Some(ext), Some(pw)) = (
            o.get_mut("external_uac_settings")
                .and_then(Value::as_object_mut),
            &c.external_uac_settings.password,
        ) {
            ext.insert("password".into(), Value::String(pw.expose().into()));
        }
    }
    v
}

/// When `ext` sets a proxy but no transport, the transport follows the URI
/// (`;transport=`, `sips:`) as in the config file; else the default (UDP).
pub fn infer_transport(doc: &mut Value, patch_ext: Option<&Value>) {
    let Some(patch_ext) = patch_ext.and_then(Value::as_object) else {
        return;
    };
    if patch_ext.contains_key("transport") {
        return;
    }
    let Some(proxy) = patch_ext.get("proxy").and_then(Value::as_str) else {
        return;
    };
    let Ok(uri) = proxy.parse::<ProxyUri>() else {
        return;
    };
    let Some(t) = uri.named_transport() else {
        return;
    };
    if let Some(ext) = doc
        .get_mut("external_uac_settings")
        .and_then(Value::as_object_mut)
    {
        ext.insert("transport".into(), Value::String(t.via_token().into()));
    }
}

/// `a.b` → `/a/b` (RFC 6901 escaping).
pub fn pointer(dotted: &str) -> String {
    if dotted.is_empty() {
        return String::new();
    }
    dotted
        .split('.')
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The name inside the first pair of backticks of a serde message
/// (`unknown field `x``, `missing field `x``).
fn quoted_name(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Deserializes `doc` into a connection, mapping a serde failure to a 422 at
/// the offending field's pointer; then fills defaults for `caller` and runs the
/// shared field checks (every issue reported) under `domain` (`sip.domain`).
pub fn to_connection(
    doc: Value,
    caller: &str,
    domain: Option<&str>,
) -> Result<Connection, ApiError> {
    // An empty user_name would read as absent and be generated: say so instead.
    if doc.get("user_name").and_then(Value::as_str) == Some("") {
        return Err(ApiError::invalid(
            "/user_name",
            "must be 1 to 64 characters",
        ));
    }
    // serde reads a struct from a JSON array too (its fields in order, the
    // defaulted ones may be left out), so `"outbound": []` would pass as
    // the defaults: the schema says object.
    for key in [
        "external_uac_settings",
        "internal_uac_settings",
        "inbound",
        "outbound",
    ] {
        if doc.get(key).is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(ApiError::invalid(format!("/{key}"), "must be an object"));
        }
    }
    let mut conn: Connection = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let msg = e.inner().to_string();
        let mut dotted = path.join(".");
        let detail = if msg.starts_with("unknown field") || msg.starts_with("missing field") {
            if let Some(name) = quoted_name(&msg)
                && !dotted.ends_with(name)
            {
                if !dotted.is_empty() {
                    dotted.push('.');
                }
                dotted.push_str(name);
            }
            if msg.starts_with("unknown") {
                "unknown field".to_owned()
            } else {
                "is required".to_owned()
            }
        } else if dotted.ends_with("password") {
            // Never echo (a fragment of) a password back.
            "must be a string".to_owned()
        } else {
            // serde's "invalid type: ..., expected ..." with the position removed.
            msg.split(" at line ").next().unwrap_or(&msg).to_owned()
        };
        ApiError::invalid(pointer(&dotted), detail)
    })?;
    conn.fill_defaults(Some(caller));
    let issues = conn.check(false, domain);
    if issues.is_empty() {
        Ok(conn)
    } else {
        Err(ApiError::invalid_all(
            issues
                .into_iter()
                .map(|i| (pointer(i.key), i.reason))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;
