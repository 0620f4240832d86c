//! A connection (one PBX registration + its call destination), shared by the config
//! file (`[[connection]]`) and the JSON REST API: same field names, same validators.
//! Field rules follow RFC 3261 §25.1 (user part characters) and design.md Part 2.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::types::{ProxyUri, Secret, Transport};

pub const DEFAULT_EXPIRATION_SEC: u32 = 3600;
pub const MIN_EXPIRATION_SEC: u32 = 60;
pub const MAX_EXPIRATION_SEC: u32 = 86400;
/// Length of a generated connection password.
pub const GENERATED_PASSWORD_LEN: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Stable identifier; generated from `connection_name` when empty (see [`Connection::fill_defaults`]).
    #[serde(default)]
    pub id: String,
    pub connection_name: String,
    /// Owner; defaults to the first API token's user.
    #[serde(default)]
    pub user_id: String,
    /// Our own SIP user (Contact user part); unique across connections.
    #[serde(default)]
    pub user_name: String,
    /// Our own password for this connection; random when not given.
    #[serde(default = "generated_password", skip_serializing)]
    pub password: Secret,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default)]
    pub external_uac_settings: ExternalUacSettings,
    #[serde(default)]
    pub internal_uac_settings: InternalUacSettings,
    /// Calls from the PBX to `destination_uri`.
    #[serde(default)]
    pub inbound: CallSettings,
    /// Calls from the internal side toward the PBX.
    #[serde(default)]
    pub outbound: CallSettings,
}

/// Per-connection call settings of one direction (`inbound`, `outbound`);
/// `None` falls back to the daemon-wide value (`routing.timeout_*_sec`) or
/// no limit. Bounds: [`TIMEOUT_1XX_SECS`], [`TIMEOUT_2XX_SECS`], a
/// `channel_limit` of at least 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    /// 1..=120: no provisional response by then, fail over.
    #[serde(default)]
    pub timeout_1xx_secs: Option<u32>,
    /// 1..=600: ringing for longer, give up (408).
    #[serde(default)]
    pub timeout_2xx_secs: Option<u32>,
    /// Concurrent calls of this direction; beyond it, 486.
    #[serde(default)]
    pub channel_limit: Option<u32>,
}

/// Bounds of `timeout_1xx_secs` (per connection and direction).
pub const TIMEOUT_1XX_SECS: std::ops::RangeInclusive<u32> = 1..=120;
/// Bounds of `timeout_2xx_secs`.
pub const TIMEOUT_2XX_SECS: std::ops::RangeInclusive<u32> = 1..=600;

impl CallSettings {
    /// Checks one direction's settings; `keys` names them as
    /// (`timeout_1xx_secs`, `timeout_2xx_secs`, `channel_limit`) under the
    /// direction (`inbound.…` or `outbound.…`).
    fn check(&self, keys: [&'static str; 3], out: &mut Vec<FieldIssue>) {
        let in_range = |v: Option<u32>, r: &std::ops::RangeInclusive<u32>| match v {
            Some(n) if !r.contains(&n) => Err(format!(
                "must be between {} and {} (seconds)",
                r.start(),
                r.end()
            )),
            _ => Ok(()),
        };
        let checks = [
            in_range(self.timeout_1xx_secs, &TIMEOUT_1XX_SECS),
            in_range(self.timeout_2xx_secs, &TIMEOUT_2XX_SECS),
            match self.channel_limit {
                Some(0) => Err("must be at least 1 (leave it out for no limit)".into()),
                _ => Ok(()),
            },
        ];
        for (key, r) in keys.into_iter().zip(checks) {
            if let Err(reason) = r {
                out.push(FieldIssue { key, reason });
            }
        }
    }
}

/// How we register to the PBX.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalUacSettings {
    /// Registrar / PBX. Required in the config file; the API allows none (Not Applicable).
    #[serde(default)]
    pub proxy: Option<ProxyUri>,
    #[serde(default)]
    pub outbound_proxy: Option<ProxyUri>,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub auth_username: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub from_user: Option<String>,
    #[serde(default = "default_expiration")]
    pub expiration_sec: u32,
}

impl Default for ExternalUacSettings {
    fn default() -> Self {
        Self {
            proxy: None,
            outbound_proxy: None,
            transport: Transport::Udp,
            username: None,
            auth_username: None,
            password: None,
            from_user: None,
            expiration_sec: DEFAULT_EXPIRATION_SEC,
        }
    }
}

impl ExternalUacSettings {
    /// The digest username: `auth_username`, else `username` (empty if neither).
    pub fn auth_user(&self) -> &str {
        self.auth_username
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or("")
    }

    /// The From/To user: `from_user`, else `username` (empty if neither).
    pub fn from_user(&self) -> &str {
        self.from_user
            .as_deref()
            .or(self.username.as_deref())
            .unwrap_or("")
    }
}

/// Where calls from the PBX go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalUacSettings {
    #[serde(default)]
    pub destination_uri: Option<String>,
}

/// One problem with a connection field, before it is placed in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldIssue {
    /// Path relative to the connection, e.g. `external_uac_settings.username`.
    pub key: &'static str,
    pub reason: String,
}

impl Connection {
    /// Fills generated values: `id` from `connection_name`, `user_name` from `id`,
    /// `user_id` from `default_user_id`. Values already set are kept.
    pub fn fill_defaults(&mut self, default_user_id: Option<&str>) {
        if self.id.is_empty() {
            self.id = generated_id(&self.connection_name);
        }
        if self.user_name.is_empty() {
            self.user_name = generated_user_name(&self.id);
        }
        if let (true, Some(u)) = (self.user_id.is_empty(), default_user_id) {
            self.user_id = u.to_owned();
        }
    }

    /// The connection's host name under `sip.domain`: `<user_name>.<domain>`.
    pub fn fqdn(&self, domain: &str) -> String {
        format!("{}.{domain}", self.user_name.to_ascii_lowercase())
    }

    /// Checks every field (after [`Connection::fill_defaults`]); uniqueness across
    /// connections is the caller's job. `require_proxy` is true for file connections;
    /// `domain` is `sip.domain` (then `user_name` must be the first label of a host
    /// name).
    pub fn check(&self, require_proxy: bool, domain: Option<&str>) -> Vec<FieldIssue> {
        let mut out = Vec::new();
        let mut push = |key, r: Result<(), String>| {
            if let Err(reason) = r {
                out.push(FieldIssue { key, reason });
            }
        };
        push("id", validate_id(&self.id));
        push("connection_name", validate_name(&self.connection_name));
        push("user_id", validate_user_id(&self.user_id));
        push("user_name", validate_user_name(&self.user_name));
        if let Some(domain) = domain
            && validate_user_name(&self.user_name).is_ok()
        {
            push("user_name", validate_fqdn_label(&self.user_name, domain));
        }
        push("password", validate_password(self.password.expose()));
        let ext = &self.external_uac_settings;
        if require_proxy && ext.proxy.is_none() {
            push(
                "external_uac_settings.proxy",
                Err("missing required key".into()),
            );
        }
        if ext.proxy.is_some() && ext.username.is_none() {
            push(
                "external_uac_settings.username",
                Err("required when proxy is set".into()),
            );
        }
        if let Some(p) = &ext.proxy {
            push(
                "external_uac_settings.transport",
                check_transport_matches(p, ext.transport),
            );
        }
        if let Some(u) = &ext.username {
            push("external_uac_settings.username", validate_sip_user(u));
        }
        if let Some(u) = &ext.auth_username {
            push(
                "external_uac_settings.auth_username",
                validate_auth_username(u),
            );
        }
        if let Some(u) = &ext.from_user {
            push("external_uac_settings.from_user", validate_sip_user(u));
        }
        if let Some(p) = &ext.password {
            push(
                "external_uac_settings.password",
                validate_password(p.expose()),
            );
        }
        push(
            "external_uac_settings.expiration_sec",
            validate_expiration(ext.expiration_sec),
        );
        if let Some(d) = &self.internal_uac_settings.destination_uri {
            push(
                "internal_uac_settings.destination_uri",
                validate_destination_uri(d),
            );
        }
        self.inbound.check(
            [
                "inbound.timeout_1xx_secs",
                "inbound.timeout_2xx_secs",
                "inbound.channel_limit",
            ],
            &mut out,
        );
        self.outbound.check(
            [
                "outbound.timeout_1xx_secs",
                "outbound.timeout_2xx_secs",
                "outbound.channel_limit",
            ],
            &mut out,
        );
        out
    }
}

fn default_true() -> bool {
    true
}

fn default_expiration() -> u32 {
    DEFAULT_EXPIRATION_SEC
}

fn generated_password() -> Secret {
    Secret::random(GENERATED_PASSWORD_LEN)
}

fn sha256_hex(data: &str, chars: usize) -> String {
    sha2::Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(chars)
        .collect()
}

/// `conn-` + 16 hex of SHA-256(connection_name): stable across restarts.
pub fn generated_id(connection_name: &str) -> String {
    format!("conn-{}", sha256_hex(connection_name, 16))
}

/// `uacd` + 12 hex of SHA-256(id): stable across restarts.
pub fn generated_user_name(id: &str) -> String {
    format!("uacd{}", sha256_hex(id, 12))
}

/// `[A-Za-z0-9._-]`, 1..64 characters.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("may contain only A-Z a-z 0-9 . _ -".into());
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn validate_user_id(user_id: &str) -> Result<(), String> {
    if user_id.is_empty() {
        return Err("missing: set user_id or configure an [[api.tokens]] entry".into());
    }
    if user_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// RFC 3261 `unreserved` characters only (alphanumerics and `-_.!~*'()`), 1..64.
pub fn validate_user_name(user_name: &str) -> Result<(), String> {
    if user_name.is_empty() || user_name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !user_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b))
    {
        return Err("may contain only letters, digits and - _ . ! ~ * ' ( )".into());
    }
    Ok(())
}

/// With `sip.domain` set, `user_name` is the first label of the connection's
/// host name (RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1: letters, digits,
/// inner hyphens, at most 63). Lowercase only: host names compare without
/// case, so `Office` and `office` would be two connections with one fqdn
/// while `user_name` stays unique as written.
pub fn validate_fqdn_label(user_name: &str, domain: &str) -> Result<(), String> {
    let why = "must be a DNS label when sip.domain is set (it is the first label of the fqdn)";
    if user_name.len() > 63 {
        return Err(format!("{why}: at most 63 characters"));
    }
    if !user_name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("{why}: only a-z 0-9 - (lowercase)"));
    }
    if user_name.starts_with('-') || user_name.ends_with('-') {
        return Err(format!("{why}: no '-' at either end"));
    }
    if user_name.len() + 1 + domain.len() > super::types::MAX_HOST_NAME_LEN {
        return Err(format!(
            "{why}: {user_name}.{domain} is longer than {} characters",
            super::types::MAX_HOST_NAME_LEN
        ));
    }
    Ok(())
}

/// A user part that goes into a SIP URI unescaped (RFC 3261 §25.1 `user`).
pub fn validate_sip_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("must not be empty".into());
    }
    if !user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
    {
        return Err("contains characters not allowed in a SIP URI user part".into());
    }
    Ok(())
}

fn validate_auth_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("must not be empty".into());
    }
    if user.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn validate_password(p: &str) -> Result<(), String> {
    if p.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

pub fn validate_expiration(sec: u32) -> Result<(), String> {
    if (MIN_EXPIRATION_SEC..=MAX_EXPIRATION_SEC).contains(&sec) {
        Ok(())
    } else {
        Err(format!(
            "must be between {MIN_EXPIRATION_SEC} and {MAX_EXPIRATION_SEC}"
        ))
    }
}

/// `transport` must agree with the proxy's `sips:` scheme and `;transport=` parameter.
pub fn check_transport_matches(proxy: &ProxyUri, transport: Transport) -> Result<(), String> {
    if let Some(t) = proxy.transport.filter(|t| *t != transport) {
        return Err(format!(
            "{transport} conflicts with the proxy's ;transport={}",
            t.uri_param()
        ));
    }
    if proxy.tls && transport != Transport::Tls {
        return Err(format!(
            "{transport} conflicts with the proxy's sips: scheme"
        ));
    }
    Ok(())
}

/// `user@host`, `host`, or either behind `sip:` / `sips:`; no spaces.
pub fn validate_destination_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("must not be empty".into());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let lower = uri.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &uri[4..]
    } else if lower.starts_with("sips:") {
        &uri[5..]
    } else {
        uri
    };
    // The user part may itself hold ';' and '?' (RFC 3261 §25.1
    // user-unreserved), and '@' appears only after it: split there first,
    // as the SIP URI parser does, then cut the host at its parameters.
    let host = match rest.split_once('@') {
        Some(("", _)) => return Err("empty user part before '@'".into()),
        Some((_, host)) => host,
        None => rest,
    };
    let hostport = &host[..host.find([';', '?']).unwrap_or(host.len())];
    super::types::parse_hostport(hostport)
        .map(|_| ())
        .map_err(|e| format!("invalid host: {e}"))
}
