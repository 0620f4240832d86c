//! Reads each section of the spanned TOML document into the typed config, applying
//! defaults and reporting every invalid value at its line (design.md Part 2).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::connection::{self, CallSettings, Connection, ExternalUacSettings, InternalUacSettings};
use super::reader::{At, Ctx, TableView, empty_view};
use super::types::{Cidr, ListenAddr, ProxyUri, PublicAddress, Secret, Transport};
use super::{
    ApiConfig, ApiToken, Config, DnsConfig, LimitsConfig, MetricsConfig, RegistrationConfig,
    RoutingConfig, Seen, SipConfig, TlsConfig, TraceConfig, parse_nameserver,
};

const ANY: std::ops::RangeInclusive<u64> = 0..=u64::MAX;
const POSITIVE: std::ops::RangeInclusive<u64> = 1..=u64::MAX;

pub(super) fn read(ctx: &mut Ctx, root: &TableView<'_, '_>, base_dir: &Path) -> Config {
    let empty = DeTable::new();
    let section = |ctx: &mut Ctx, name: &str, known: &[&str]| {
        root.table(ctx, name, known)
            .unwrap_or_else(|| empty_view(&empty, name, 0..0))
    };
    let sip = section(
        ctx,
        "sip",
        &[
            "listen",
            "public_address",
            "user_agent",
            "monitors",
            "domain",
        ],
    );
    let tls = section(
        ctx,
        "tls",
        &["certificate", "private_key", "ca_file", "verify_server"],
    );
    let dns = section(ctx, "dns", &["nameservers", "greylist_sec", "prefer_ipv6"]);
    let api = section(ctx, "api", &["listen", "tokens"]);
    let metrics = section(ctx, "metrics", &["listen", "per_connection_labels"]);
    let store = section(ctx, "store", super::cluster::STORE_KEYS);
    let cluster = section(ctx, "cluster", super::cluster::CLUSTER_KEYS);
    let registration = section(
        ctx,
        "registration",
        &[
            "retry_interval_sec",
            "max_retry_interval_sec",
            "forbidden_retry_interval_sec",
            "max_register_rate_per_sec",
            "unregister_timeout_sec",
            "udp_keepalive_sec",
        ],
    );
    let routing = section(
        ctx,
        "routing",
        &[
            "timeout_1xx_sec",
            "timeout_2xx_sec",
            "failover_codes",
            "internal_sources",
            "assert_caller_identity",
        ],
    );
    let limits = section(ctx, "limits", LIMIT_KEYS);
    let trace = section(ctx, "trace", &["hep", "hep_capture_id"]);

    let tls = read_tls(ctx, &tls);
    let sip = read_sip(ctx, &sip, &tls);
    let api = read_api(ctx, &api, base_dir);
    let default_user = api.tokens.first().map(|t| t.user_id.clone());
    let store_path = path_of(ctx, &store, "path");
    let (store, cluster) = super::cluster::read(ctx, &store, &cluster, base_dir, store_path);
    let (connections, generated_passwords) =
        read_connections(ctx, root, default_user.as_deref(), sip.domain.as_deref());
    Config {
        sip,
        tls,
        dns: read_dns(ctx, &dns),
        api,
        metrics: read_metrics(ctx, &metrics),
        // A relative path is relative to the config file's directory, like token_file.
        store,
        cluster,
        registration: read_registration(ctx, &registration),
        routing: read_routing(ctx, &routing),
        limits: read_limits(ctx, &limits),
        trace: TraceConfig {
            hep: socket_addr(ctx, &trace, "hep"),
            hep_capture_id: trace
                .uint(ctx, "hep_capture_id", 0..=u64::from(u32::MAX))
                .map_or(2001, |v| u32::try_from(v.into_inner()).unwrap_or(u32::MAX)),
        },
        connections,
        generated_passwords,
    }
}

/// Parses a string value with `f`, reporting its failure at the value's line.
fn parsed<T>(
    ctx: &mut Ctx,
    v: &At<String>,
    key: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    match f(v.get_ref()) {
        Ok(t) => Some(t),
        Err(reason) => {
            ctx.report(&v.span(), key, reason);
            None
        }
    }
}

fn socket_addr(ctx: &mut Ctx, t: &TableView<'_, '_>, key: &str) -> Option<SocketAddr> {
    let v = t.str(ctx, key)?;
    parsed(ctx, &v, &t.key(key), |s| {
        s.parse::<SocketAddr>()
            .map_err(|_| "expected IP:port, e.g. \"127.0.0.1:8080\" (IPv6 in brackets)".into())
    })
}

fn path_of(ctx: &mut Ctx, t: &TableView<'_, '_>, key: &str) -> Option<PathBuf> {
    let v = t.str(ctx, key)?;
    parsed(ctx, &v, &t.key(key), |s| {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(PathBuf::from(s))
        }
    })
}

fn read_tls(ctx: &mut Ctx, t: &TableView<'_, '_>) -> TlsConfig {
    let cfg = TlsConfig {
        certificate: path_of(ctx, t, "certificate"),
        private_key: path_of(ctx, t, "private_key"),
        ca_file: path_of(ctx, t, "ca_file"),
        verify_server: t.bool(ctx, "verify_server").is_none_or(|b| b.into_inner()),
    };
    if t.has("certificate") != t.has("private_key") {
        let missing = if t.has("certificate") {
            "private_key"
        } else {
            "certificate"
        };
        ctx.report(
            &t.span,
            &t.key(missing),
            "certificate and private_key must be given together",
        );
    }
    cfg
}

fn read_sip(ctx: &mut Ctx, t: &TableView<'_, '_>, tls: &TlsConfig) -> SipConfig {
    let mut cfg = SipConfig::default();
    if let Some(entries) = t.str_array(ctx, "listen") {
        cfg.listen.clear();
        let mut seen = Seen::new("listen address");
        for (key, v) in entries {
            let Some(l) = parsed(ctx, &v, &key, |s| s.parse::<ListenAddr>()) else {
                continue;
            };
            let line = ctx.line(v.span().start);
            if let Some(reason) = seen.check(&l.to_string(), &key, line) {
                ctx.report(&v.span(), &key, reason);
                continue;
            }
            if l.transport == Transport::Tls
                && (tls.certificate.is_none() || tls.private_key.is_none())
            {
                ctx.report(
                    &v.span(),
                    &key,
                    "a tls listener needs tls.certificate and tls.private_key",
                );
            }
            cfg.listen.push(l);
        }
        if cfg.listen.is_empty() && t.has("listen") {
            ctx.report(
                &t.span,
                &t.key("listen"),
                "at least one listen address is needed",
            );
        }
    }
    if let Some(v) = t.str(ctx, "public_address") {
        cfg.public_address = parsed(ctx, &v, &t.key("public_address"), |s| {
            s.parse::<PublicAddress>()
        });
    }
    if let Some(v) = t.str(ctx, "user_agent") {
        cfg.user_agent = parsed(ctx, &v, &t.key("user_agent"), |s| {
            if s.trim().is_empty() || s.chars().any(char::is_control) {
                Err("must be non-empty text without control characters".into())
            } else {
                Ok(s.to_owned())
            }
        })
        .unwrap_or(cfg.user_agent);
    }
    for (key, v) in t.str_array(ctx, "monitors").unwrap_or_default() {
        if let Some(c) = parsed(ctx, &v, &key, |s| s.parse::<Cidr>()) {
            cfg.monitors.push(c);
        }
    }
    read_sip_domain(ctx, t, &mut cfg);
    cfg
}

fn read_dns(ctx: &mut Ctx, t: &TableView<'_, '_>) -> DnsConfig {
    let mut cfg = DnsConfig::default();
    for (key, v) in t.str_array(ctx, "nameservers").unwrap_or_default() {
        if let Some(a) = parsed(ctx, &v, &key, parse_nameserver) {
            cfg.nameservers.push(a);
        }
    }
    if let Some(n) = t.uint(ctx, "greylist_sec", ANY) {
        cfg.greylist_sec = n.into_inner();
    }
    if let Some(b) = t.bool(ctx, "prefer_ipv6") {
        cfg.prefer_ipv6 = b.into_inner();
    }
    cfg
}

fn read_api(ctx: &mut Ctx, t: &TableView<'_, '_>, base_dir: &Path) -> ApiConfig {
    let mut cfg = ApiConfig::default();
    if let Some(a) = socket_addr(ctx, t, "listen") {
        cfg.listen = a;
    }
    let mut seen = Seen::new("token");
    for tok in t.table_array(ctx, "tokens", &["token", "token_file", "user_id"]) {
        let token = match (tok.str(ctx, "token"), tok.str(ctx, "token_file")) {
            (Some(_), Some(f)) => {
                ctx.report(
                    &f.span(),
                    &tok.key("token_file"),
                    "give token or token_file, not both",
                );
                None
            }
            (Some(v), None) => Some((v.get_ref().clone(), v.span(), tok.key("token"))),
            (None, Some(f)) => read_token_file(ctx, &tok, &f, base_dir),
            (None, None) => {
                if !tok.has("token") && !tok.has("token_file") {
                    tok.missing(ctx, "token");
                }
                None
            }
        };
        let user_id = match tok.str(ctx, "user_id") {
            Some(u) if u.get_ref().trim().is_empty() => {
                ctx.report(&u.span(), &tok.key("user_id"), "must not be empty");
                None
            }
            Some(u) => Some(u.into_inner()),
            None => {
                if !tok.has("user_id") {
                    tok.missing(ctx, "user_id");
                }
                None
            }
        };
        if let Some((token, span, key)) = &token {
            if token.is_empty() {
                ctx.report(span, key, "token is empty");
                continue;
            }
            // A short bearer token can be guessed by trying: the API is
            // reachable by whoever reaches api.listen.
            if token.chars().count() < MIN_TOKEN_LEN {
                ctx.report(
                    span,
                    key,
                    format!("token is shorter than {MIN_TOKEN_LEN} characters"),
                );
                continue;
            }
            // Report the value's position, never the token itself.
            let line = ctx.line(span.start);
            if seen.check(token, key, line).is_some() {
                ctx.report(
                    span,
                    key,
                    "duplicate token (same as another api.tokens entry)",
                );
            }
        }
        if let (Some((token, _, _)), Some(user_id)) = (token, user_id) {
            cfg.tokens.push(ApiToken {
                token: Secret::new(token),
                user_id,
            });
        }
    }
    cfg
}

/// The shortest bearer token accepted (characters).
pub const MIN_TOKEN_LEN: usize = 16;

fn read_token_file(
    ctx: &mut Ctx,
    tok: &TableView<'_, '_>,
    f: &At<String>,
    base_dir: &Path,
) -> Option<(String, Range<usize>, String)> {
    let key = tok.key("token_file");
    let path = base_dir.join(f.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(s) => Some((s.trim().to_owned(), f.span(), key)),
        Err(e) => {
            ctx.report(
                &f.span(),
                &key,
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn read_metrics(ctx: &mut Ctx, t: &TableView<'_, '_>) -> MetricsConfig {
    MetricsConfig {
        listen: socket_addr(ctx, t, "listen"),
        per_connection_labels: t
            .bool(ctx, "per_connection_labels")
            .is_some_and(|b| b.into_inner()),
    }
}

fn read_registration(ctx: &mut Ctx, t: &TableView<'_, '_>) -> RegistrationConfig {
    let mut cfg = RegistrationConfig::default();
    let retry = t.uint(ctx, "retry_interval_sec", POSITIVE);
    if let Some(v) = &retry {
        cfg.retry_interval_sec = *v.get_ref();
    }
    let max = t.uint(ctx, "max_retry_interval_sec", POSITIVE);
    if let Some(v) = &max {
        cfg.max_retry_interval_sec = *v.get_ref();
    }
    if let Some(v) = t.uint(ctx, "forbidden_retry_interval_sec", POSITIVE) {
        cfg.forbidden_retry_interval_sec = v.into_inner();
    }
    if let Some(v) = t.uint(ctx, "max_register_rate_per_sec", 1..=u64::from(u32::MAX)) {
        cfg.max_register_rate_per_sec = u32::try_from(v.into_inner()).unwrap_or(u32::MAX);
    }
    if let Some(v) = t.uint(ctx, "unregister_timeout_sec", 1..=60) {
        cfg.unregister_timeout_sec = v.into_inner();
    }
    if let Some(v) = t.uint(ctx, "udp_keepalive_sec", 0..=3600) {
        cfg.udp_keepalive_sec = v.into_inner();
    }
    if cfg.max_retry_interval_sec < cfg.retry_interval_sec {
        let span = max.or(retry).map_or(t.span.clone(), |v| v.span());
        ctx.report(
            &span,
            &t.key("max_retry_interval_sec"),
            format!(
                "must be at least retry_interval_sec ({})",
                cfg.retry_interval_sec
            ),
        );
    }
    cfg
}

fn read_routing(ctx: &mut Ctx, t: &TableView<'_, '_>) -> RoutingConfig {
    let mut cfg = RoutingConfig::default();
    if let Some(v) = t.uint(ctx, "timeout_1xx_sec", 1..=20) {
        cfg.timeout_1xx_sec = v.into_inner();
    }
    if let Some(v) = t.uint(ctx, "timeout_2xx_sec", 1..=600) {
        cfg.timeout_2xx_sec = v.into_inner();
    }
    if let Some(arr) = t.array(ctx, "failover_codes") {
        cfg.failover_codes.clear();
        for (i, v) in arr.get_ref().iter().enumerate() {
            let key = format!("{}[{i}]", t.key("failover_codes"));
            match super::reader::int_of(v.get_ref()) {
                Some(n @ 300..=699) => {
                    let code = u16::try_from(n).unwrap_or_default();
                    if cfg.failover_codes.contains(&code) {
                        ctx.report(&v.span(), &key, format!("duplicate code {code}"));
                    } else {
                        cfg.failover_codes.push(code);
                    }
                }
                _ if v.get_ref().is_integer() => {
                    ctx.report(
                        &v.span(),
                        &key,
                        "must be a SIP status code between 300 and 699",
                    );
                }
                _ => {
                    let reason = format!("expected an integer, found {}", v.get_ref().type_str());
                    ctx.report(&v.span(), &key, reason);
                }
            }
        }
    }
    read_routing_toward_pbx(ctx, t, &mut cfg);
    cfg
}

const LIMIT_KEYS: &[&str] = &[
    "inbound_flows",
    "inbound_flows_per_ip",
    "inbound_flow_idle_sec",
    "header_timeout_sec",
    "tls_handshakes",
    "error_replies_per_ip_per_sec",
    "dialogs",
    "dns_cache_entries",
    "connections_per_user",
];

fn read_limits(ctx: &mut Ctx, t: &TableView<'_, '_>) -> LimitsConfig {
    let mut cfg = LimitsConfig::default();
    let count =
        |ctx: &mut Ctx, key: &str, range: std::ops::RangeInclusive<u64>, slot: &mut usize| {
            if let Some(v) = t.uint(ctx, key, range) {
                *slot = usize::try_from(v.into_inner()).unwrap_or(usize::MAX);
            }
        };
    count(ctx, "inbound_flows", 1..=1_000_000, &mut cfg.inbound_flows);
    count(
        ctx,
        "inbound_flows_per_ip",
        1..=1_000_000,
        &mut cfg.inbound_flows_per_ip,
    );
    count(ctx, "tls_handshakes", 1..=100_000, &mut cfg.tls_handshakes);
    count(ctx, "dialogs", 1..=10_000_000, &mut cfg.dialogs);
    count(
        ctx,
        "dns_cache_entries",
        1..=10_000_000,
        &mut cfg.dns_cache_entries,
    );
    count(
        ctx,
        "connections_per_user",
        1..=10_000_000,
        &mut cfg.connections_per_user,
    );
    if let Some(v) = t.uint(ctx, "inbound_flow_idle_sec", 1..=86_400) {
        cfg.inbound_flow_idle_sec = v.into_inner();
    }
    if let Some(v) = t.uint(ctx, "header_timeout_sec", 1..=300) {
        cfg.header_timeout_sec = v.into_inner();
    }
    if let Some(v) = t.uint(ctx, "error_replies_per_ip_per_sec", 1..=1_000_000) {
        cfg.error_replies_per_ip_per_sec = u32::try_from(v.into_inner()).unwrap_or(u32::MAX);
    }
    cfg
}

const CONNECTION_KEYS: &[&str] = &[
    "id",
    "connection_name",
    "user_id",
    "user_name",
    "password",
    "active",
    "external_uac_settings",
    "internal_uac_settings",
    "inbound",
    "outbound",
];
/// The members of `external_uac_settings` (the config file and the API
/// accept the same ones).
pub(crate) const EXTERNAL_KEYS: &[&str] = &[
    "proxy",
    "outbound_proxy",
    "transport",
    "username",
    "auth_username",
    "password",
    "from_user",
    "expiration_sec",
];
/// The members of `internal_uac_settings`.
pub(crate) const INTERNAL_KEYS: &[&str] = &["destination_uri"];

fn read_connections(
    ctx: &mut Ctx,
    root: &TableView<'_, '_>,
    default_user: Option<&str>,
    domain: Option<&str>,
) -> (Vec<Connection>, BTreeSet<String>) {
    let mut out = Vec::new();
    let mut generated = BTreeSet::new();
    let mut ids = Seen::new("id");
    let mut user_names = Seen::new("user_name");
    for t in root.table_array(ctx, "connection", CONNECTION_KEYS) {
        let Some(conn) = read_connection(ctx, &t, default_user, domain) else {
            continue;
        };
        // Uniqueness, at the explicit key's line or else the [[connection]] header.
        for (key, value, seen) in [
            ("id", &conn.id, &mut ids),
            ("user_name", &conn.user_name, &mut user_names),
        ] {
            let span = t.span_of(key).unwrap_or_else(|| t.span.clone());
            let line = ctx.line(span.start);
            if let Some(mut reason) = seen.check(value, &t.key(key), line) {
                if !t.has(key) {
                    reason.push_str("; generated: set it explicitly");
                }
                ctx.report(&span, &t.key(key), reason);
            }
        }
        if !t.has("password") {
            generated.insert(conn.id.clone());
        }
        out.push(conn);
    }
    (out, generated)
}

/// One `[[connection]]`: reads, fills defaults, and runs the shared field checks.
fn read_connection(
    ctx: &mut Ctx,
    t: &TableView<'_, '_>,
    default_user: Option<&str>,
    domain: Option<&str>,
) -> Option<Connection> {
    let before = ctx.issues.len();
    let empty = DeTable::new();
    let ext_view = t
        .table(ctx, "external_uac_settings", EXTERNAL_KEYS)
        .unwrap_or_else(|| empty_view(&empty, &t.key("external_uac_settings"), t.span.clone()));
    let int_view = t
        .table(ctx, "internal_uac_settings", INTERNAL_KEYS)
        .unwrap_or_else(|| empty_view(&empty, &t.key("internal_uac_settings"), t.span.clone()));
    let (inbound_view, inbound) = read_call_settings(ctx, t, "inbound", &empty);
    let (outbound_view, outbound) = read_call_settings(ctx, t, "outbound", &empty);

    let text = |ctx: &mut Ctx, v: &TableView<'_, '_>, key| v.str(ctx, key).map(At::into_inner);
    let connection_name = text(ctx, t, "connection_name");
    if connection_name.is_none() && !t.has("connection_name") {
        t.missing(ctx, "connection_name");
    }
    let proxy = |ctx: &mut Ctx, key| {
        let v = ext_view.str(ctx, key)?;
        parsed(ctx, &v, &ext_view.key(key), |s| {
            s.parse::<ProxyUri>()
                .map_err(|e| format!("invalid URI: {e}"))
        })
    };
    let proxy_uri = proxy(ctx, "proxy");
    let outbound_proxy = proxy(ctx, "outbound_proxy");
    let transport = match ext_view.str(ctx, "transport") {
        Some(v) => parsed(ctx, &v, &ext_view.key("transport"), |s| {
            s.parse::<Transport>().map_err(|e| e.to_string())
        }),
        // Absent: follow the proxy URI (;transport= or sips:), else UDP.
        None => Some(
            proxy_uri
                .as_ref()
                .and_then(ProxyUri::named_transport)
                .unwrap_or(Transport::Udp),
        ),
    };
    let expiration = ext_view.uint(ctx, "expiration_sec", 0..=u64::from(u32::MAX));
    let mut conn = Connection {
        id: text(ctx, t, "id").unwrap_or_default(),
        connection_name: connection_name.unwrap_or_default(),
        user_id: text(ctx, t, "user_id").unwrap_or_default(),
        user_name: text(ctx, t, "user_name").unwrap_or_default(),
        password: text(ctx, t, "password").map_or_else(
            || Secret::random(connection::GENERATED_PASSWORD_LEN),
            Secret::new,
        ),
        active: t.bool(ctx, "active").is_none_or(|b| b.into_inner()),
        external_uac_settings: ExternalUacSettings {
            proxy: proxy_uri,
            outbound_proxy,
            transport: transport.unwrap_or_default(),
            username: text(ctx, &ext_view, "username"),
            auth_username: text(ctx, &ext_view, "auth_username"),
            password: text(ctx, &ext_view, "password").map(Secret::new),
            from_user: text(ctx, &ext_view, "from_user"),
            expiration_sec: expiration
                .as_ref()
                .map_or(connection::DEFAULT_EXPIRATION_SEC, |v| {
                    u32::try_from(*v.get_ref()).unwrap_or(u32::MAX)
                }),
        },
        internal_uac_settings: InternalUacSettings {
            destination_uri: text(ctx, &int_view, "destination_uri"),
        },
        inbound,
        outbound,
    };
    let id_known = t.has("id") || !conn.connection_name.is_empty();
    conn.fill_defaults(default_user);
    let reported = ctx.issues[before..].to_vec();
    for issue in conn.check(true, domain) {
        let (view, key) = match issue.key.split_once('.') {
            Some(("external_uac_settings", k)) => (&ext_view, k),
            Some(("internal_uac_settings", k)) => (&int_view, k),
            Some(("inbound", k)) => (&inbound_view, k),
            Some(("outbound", k)) => (&outbound_view, k),
            _ => (t, issue.key),
        };
        let full_key = view.key(key);
        let ext = &conn.external_uac_settings;
        // Skip what was already reported: a value that failed to read (an invalid proxy
        // reads as absent), and a username "required" because of a proxy that is not.
        let already = reported.iter().any(|r| r.key == full_key)
            || (key == "proxy" && ext_view.has("proxy"))
            || (key == "username" && ext.proxy.is_none() && ext.username.is_none())
            || (key == "transport" && transport.is_none());
        if !already {
            let span = view.span_of(key).unwrap_or_else(|| view.span.clone());
            ctx.report(&span, &full_key, issue.reason);
        }
    }
    id_known.then_some(conn)
}

/// `sip.domain`: the parent of every connection's host name.
fn read_sip_domain(ctx: &mut Ctx, t: &TableView<'_, '_>, cfg: &mut SipConfig) {
    if let Some(v) = t.str(ctx, "domain") {
        cfg.domain = parsed(ctx, &v, &t.key("domain"), super::types::parse_domain);
    }
}

/// The `[routing]` keys of calls toward a PBX: `internal_sources` (CIDRs,
/// like `sip.monitors`) and `assert_caller_identity`.
fn read_routing_toward_pbx(ctx: &mut Ctx, t: &TableView<'_, '_>, cfg: &mut RoutingConfig) {
    for (key, v) in t.str_array(ctx, "internal_sources").unwrap_or_default() {
        if let Some(c) = parsed(ctx, &v, &key, |s| s.parse::<Cidr>()) {
            cfg.internal_sources.push(c);
        }
    }
    if let Some(b) = t.bool(ctx, "assert_caller_identity") {
        cfg.assert_caller_identity = b.into_inner();
    }
}

/// The members of a connection's `inbound` and `outbound` tables.
pub(crate) const CALL_KEYS: &[&str] = &["timeout_1xx_secs", "timeout_2xx_secs", "channel_limit"];

/// A connection's `[connection.inbound]` / `[connection.outbound]` (or
/// `inbound.channel_limit = 2`): read as integers here, bounds checked by
/// `Connection::check` (shared with the API). A value past `u32::MAX` reads
/// as `u32::MAX`: out of range for a timeout, and no limit in practice for
/// `channel_limit`.
fn read_call_settings<'a, 'i>(
    ctx: &mut Ctx,
    t: &TableView<'a, 'i>,
    name: &str,
    empty: &'a DeTable<'static>,
) -> (TableView<'a, 'i>, CallSettings) {
    let view = t
        .table(ctx, name, CALL_KEYS)
        .unwrap_or_else(|| empty_view(empty, &t.key(name), t.span.clone()));
    let mut num = |key| {
        view.uint(ctx, key, ANY)
            .map(|v| u32::try_from(v.into_inner()).unwrap_or(u32::MAX))
    };
    let settings = CallSettings {
        timeout_1xx_secs: num("timeout_1xx_secs"),
        timeout_2xx_secs: num("timeout_2xx_secs"),
        channel_limit: num("channel_limit"),
    };
    (view, settings)
}
