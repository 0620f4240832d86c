//! What the API returns: the connection object (design.md Part 2; passwords
//! never included), its registration status, the product's flat status object,
//! and RFC 3339 timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::Connection;
use crate::registration::{RegStatus, Snapshot};
use crate::store::Row;

/// `2026-11-23T11:50:02.123Z` for Unix milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

pub fn rfc3339(t: SystemTime) -> String {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    rfc3339_ms(ms)
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 → (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn status_of(snap: Option<&Snapshot>) -> (RegStatus, Option<String>) {
    match snap {
        Some(s) => (s.status, Some(rfc3339(s.updated_at))),
        None => (RegStatus::NotApplicable, None),
    }
}

/// Where the last successful registration went (`ip:port` of the registrar
/// that accepted it), on the connection object and the status endpoint alike.
fn last_registered_ip(snap: Option<&Snapshot>) -> Option<String> {
    snap.and_then(|s| s.last_registered_ip)
        .map(|a| a.to_string())
}

/// The connection object of design.md Part 2.
pub fn connection(row: &Row, snap: Option<&Snapshot>, fqdn: &str) -> Value {
    let c = &row.connection;
    let (status, updated) = status_of(snap);
    // Serialize skips both passwords (write-only).
    let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("record_type".into(), json!("uac_connection"));
        o.insert("fqdn".into(), json!(fqdn));
        o.insert("registration_status".into(), json!(status.code()));
        o.insert("registration_status_updated_at".into(), json!(updated));
        o.insert("last_registered_ip".into(), json!(last_registered_ip(snap)));
        o.insert("created_at".into(), json!(rfc3339_ms(row.created_at)));
        o.insert("updated_at".into(), json!(rfc3339_ms(row.updated_at)));
    }
    v
}

/// `GET /v2/uac_connections/{id}/registration_status`.
pub fn registration_status(id: &str, snap: Option<&Snapshot>) -> Value {
    let (status, updated) = status_of(snap);
    json!({
        "id": id,
        "record_type": "registration_status",
        "registration_status": status.code(),
        "registration_status_name": status.name(),
        "registration_status_updated_at": updated,
        "last_registered_ip": last_registered_ip(snap),
        "last_registration_response": snap.and_then(|s| s.last_response.clone()),
        "registered": status == RegStatus::Success,
        "expires_at": snap.and_then(|s| s.expires_at).map(rfc3339),
    })
}

/// The product's flat status object (no `data` wrapper); the password is always `"***"`.
pub fn sip_registration_status(c: &Connection, snap: Option<&Snapshot>) -> Value {
    let ext = &c.external_uac_settings;
    let (status, _) = status_of(snap);
    json!({
        "connection_id": c.id,
        "user_id": c.user_id,
        "connection_name": c.connection_name,
        "username": ext.username,
        "pair_state": if c.active { "ACTIVE" } else { "INACTIVE" },
        "registered": status == RegStatus::Success,
        "last_registration_response": snap.and_then(|s| s.last_response.clone()),
        "third-party_uac_settings": {
            "proxy": ext.proxy.as_ref().map(ToString::to_string),
            "outbound_proxy": ext.outbound_proxy.as_ref().map(ToString::to_string),
            "transport": ext.transport.via_token(),
            "username": ext.username,
            "auth_username": ext.auth_username,
            "from_user": ext.from_user,
            "expiration_sec": ext.expiration_sec,
            "password": "***",
        },
        "internal_uac_settings": {
            "destination_uri": c.internal_uac_settings.destination_uri,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_434_602_001), "2026-11-23T11:50:02.001Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
