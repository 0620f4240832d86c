//! The daemon's TOML config (design.md Part 2 "Config file"): typed sections with
//! defaults, every key checked, unknown keys rejected, and every problem reported at
//! once as `file:line: key: reason`. Connections share their types with the REST API.

mod cluster;
mod connection;
mod reader;
mod sections;
pub(crate) use sections::{CALL_KEYS, EXTERNAL_KEYS, INTERNAL_KEYS};
mod types;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use toml::de::DeTable;

pub use connection::{
    CallSettings, Connection, ExternalUacSettings, FieldIssue, InternalUacSettings,
    TIMEOUT_1XX_SECS, TIMEOUT_2XX_SECS, generated_id, generated_user_name,
};
pub use types::{
    Cidr, ListenAddr, ProxyUri, PublicAddress, PublicHost, Secret, Transport, UnknownTransport,
    parse_domain,
};

use reader::{Ctx, TableView};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub sip: SipConfig,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub store: StoreConfig,
    /// `[cluster]`: present exactly when `store.url` is set.
    pub cluster: Option<ClusterConfig>,
    pub registration: RegistrationConfig,
    pub routing: RoutingConfig,
    pub limits: LimitsConfig,
    pub trace: TraceConfig,
    /// The file's connections. `App` moves them into the store at start-up
    /// (and a reload's into the store again): the running config has none.
    pub connections: Vec<Connection>,
    /// Ids of the file connections that set no `password`: theirs was generated
    /// at load, and the store keeps the first one generated across restarts.
    pub generated_passwords: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipConfig {
    pub listen: Vec<ListenAddr>,
    /// Put in Contact, Via and Record-Route when behind NAT.
    pub public_address: Option<PublicAddress>,
    pub user_agent: String,
    /// Sources (besides loopback and the PBXes) whose OPTIONS to the daemon
    /// itself are answered: health checks and monitors.
    pub monitors: Vec<Cidr>,
    /// `sip.domain`: when set, each connection's `fqdn` is
    /// `<user_name>.<domain>`, and an INVITE for that host is a call toward
    /// the connection's PBX.
    pub domain: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub verify_server: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty = the system resolver.
    pub nameservers: Vec<SocketAddr>,
    pub greylist_sec: u64,
    /// A name with both A and AAAA records gives its IPv6 targets first
    /// (default: IPv4 first).
    pub prefer_ipv6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<ApiToken>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub token: Secret,
    pub user_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
    pub per_connection_labels: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// PostgreSQL (cluster mode); exclusive with `path`.
    pub url: Option<Secret>,
    /// `password_file`'s content, for `url`.
    pub password: Option<Secret>,
}

/// `[cluster]` (with `store.url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Unique per node.
    pub node_id: String,
    /// A node that stops renewing loses its connections after this.
    pub lease_sec: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationConfig {
    pub retry_interval_sec: u64,
    pub max_retry_interval_sec: u64,
    pub forbidden_retry_interval_sec: u64,
    pub max_register_rate_per_sec: u32,
    pub unregister_timeout_sec: u64,
    /// CRLF keepalive toward each UDP registrar in use (0: off).
    pub udp_keepalive_sec: u64,
}

/// SIP tracing (`[trace]`); the log side needs no key
/// (`RUST_LOG=info,uacd::sip=trace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// A HEP v3 collector (Homer, sngrep -L) that gets every SIP message.
    pub hep: Option<SocketAddr>,
    /// The capture agent id in each HEP packet.
    pub hep_capture_id: u32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            hep: None,
            hep_capture_id: 2001,
        }
    }
}

/// Bounds on what the network and the API can make the daemon hold
/// (`[limits]`). Every map that input can grow has one; the defaults and
/// their reasoning are in the README.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Inbound TCP/TLS flows at once; beyond it new ones are closed at accept.
    pub inbound_flows: usize,
    /// Inbound TCP/TLS flows at once from one IP address.
    pub inbound_flows_per_ip: usize,
    /// An inbound flow that received nothing for this long, and that no
    /// registration uses, is closed.
    pub inbound_flow_idle_sec: u64,
    /// Once a message's first byte arrived on a stream, its headers (and
    /// the body they announce) must be complete within this long or the
    /// flow is closed; also the deadline of an inbound TLS handshake.
    pub header_timeout_sec: u64,
    /// TLS handshakes in progress at once (inbound).
    pub tls_handshakes: usize,
    /// Error answers (4xx-6xx the daemon makes itself) per source IP and
    /// second, for sources that are not verified parties; beyond it
    /// requests from that IP are dropped unanswered.
    pub error_replies_per_ip_per_sec: u32,
    /// Dialogs the daemon remembers (target refreshes, the gauge).
    pub dialogs: usize,
    /// Names the DNS cache holds (least recently used evicted first).
    pub dns_cache_entries: usize,
    /// Connections one `user_id` may own through the API.
    pub connections_per_user: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            inbound_flows: 4096,
            inbound_flows_per_ip: 64,
            inbound_flow_idle_sec: 120,
            header_timeout_sec: 10,
            tls_handshakes: 64,
            error_replies_per_ip_per_sec: 10,
            dialogs: 100_000,
            dns_cache_entries: 10_000,
            connections_per_user: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    pub timeout_1xx_sec: u64,
    pub timeout_2xx_sec: u64,
    pub failover_codes: Vec<u16>,
    /// The only sources of calls toward a PBX (the internal side); empty
    /// turns that direction off.
    pub internal_sources: Vec<Cidr>,
    /// Put the internal caller's identity (its From) in
    /// P-Asserted-Identity of a call toward a PBX (RFC 3325).
    pub assert_caller_identity: bool,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: SocketAddr::from(([0, 0, 0, 0], 5060)),
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: SocketAddr::from(([0, 0, 0, 0], 5060)),
                },
            ],
            public_address: None,
            user_agent: "uacd".into(),
            monitors: Vec::new(),
            domain: None,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            certificate: None,
            private_key: None,
            ca_file: None,
            verify_server: true,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            greylist_sec: 30,
            prefer_ipv6: false,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/uacd/uacd.db"),
            url: None,
            password: None,
        }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            retry_interval_sec: 30,
            max_retry_interval_sec: 600,
            forbidden_retry_interval_sec: 600,
            max_register_rate_per_sec: 200,
            unregister_timeout_sec: 5,
            udp_keepalive_sec: 25,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            timeout_1xx_sec: 2,
            timeout_2xx_sec: 120,
            failover_codes: vec![408, 480, 503, 504],
            internal_sources: Vec::new(),
            assert_caller_identity: false,
        }
    }
}

/// One problem in a config file. `line` is 1-based; 0 means the whole file
/// (e.g. it could not be read). `key` is a dotted path such as
/// `connection[1].external_uac_settings.transport` (indices from 0), empty for syntax errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in a config file, in line order; Display prints one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Reads and parses the config file at `path` (relative `token_file`s resolve
/// against its directory).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors {
            issues: vec![ConfigIssue {
                file: name,
                line: 0,
                key: String::new(),
                reason: format!("cannot read config file: {e}"),
            }],
        }),
    }
}

/// Parses config `text`; `file_name` names it in issues and is the base directory
/// for relative `token_file` paths.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(file_name, text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            ctx.report(&span, "", format!("TOML syntax error: {}", e.message()));
        }
        return Err(finish(ctx));
    }
    let base_dir = Path::new(file_name).parent().unwrap_or(Path::new(""));
    let root = TableView::new(
        &mut ctx,
        doc.get_ref(),
        doc.span(),
        String::new(),
        &[
            "sip",
            "tls",
            "dns",
            "api",
            "metrics",
            "store",
            "cluster",
            "registration",
            "routing",
            "limits",
            "trace",
            "connection",
        ],
    );
    let config = sections::read(&mut ctx, &root, base_dir);
    if ctx.issues.is_empty() {
        Ok(config)
    } else {
        Err(finish(ctx))
    }
}

fn finish(ctx: Ctx) -> ConfigErrors {
    let mut issues = ctx.issues;
    issues.sort_by_key(|i| i.line);
    issues.dedup();
    ConfigErrors { issues }
}

/// `127.0.0.1:5353`, `127.0.0.1` (port 53), `[::1]:53`, `::1`.
fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| "expected an IP address with optional port, e.g. \"127.0.0.1:5353\"".into())
}

/// Keys already seen, to report duplicates with the line of the first one.
struct Seen<'a> {
    what: &'a str,
    first: HashMap<String, (String, usize)>,
}

impl<'a> Seen<'a> {
    fn new(what: &'a str) -> Self {
        Self {
            what,
            first: HashMap::new(),
        }
    }

    /// Records `value` at (`key`, `line`); returns the reason if it was seen before.
    fn check(&mut self, value: &str, key: &str, line: usize) -> Option<String> {
        match self.first.get(value) {
            Some((k, l)) => Some(format!(
                "duplicate {} {value:?} (first at {k}, line {l})",
                self.what
            )),
            None => {
                self.first.insert(value.to_owned(), (key.to_owned(), line));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
