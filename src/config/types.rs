//! Value types of the config shared with the REST API: transports, listen addresses,
//! proxy URIs (RFC 3261 §19.1 `sip:`/`sips:` host[:port];transport=) and secrets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use rand::Rng as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SIP transport (RFC 3261 §18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    /// The token in a Via header (`SIP/2.0/UDP`).
    pub fn via_token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The value of a `;transport=` URI parameter.
    pub fn uri_param(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub fn default_port(&self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }

    /// Whether the transport is a byte stream (framed by Content-Length).
    pub fn is_stream(&self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The transport a SIP URI names by itself (RFC 3263 §4.1): `sips:`
    /// means TLS (RFC 3261 §26.2.2); else the `transport=` parameter; else
    /// none, and the caller's setting or DNS decides. The one rule for
    /// config, API, registration, DNS and routing. (A connection whose
    /// `sips:` proxy has a `transport=` other than `tls` is refused by
    /// validation before it gets here.)
    pub fn named_by(sips: bool, param: Option<Transport>) -> Option<Transport> {
        if sips { Some(Transport::Tls) } else { param }
    }
}

/// A transport name that is none of UDP, TCP, TLS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (expected UDP, TCP or TLS)")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|t| t.via_token().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

impl Serialize for Transport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.via_token())
    }
}

impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `sip.public_address`: the address PBXes reach us at behind NAT, put in
/// Via, Contact and Record-Route instead of the listener's:
/// `203.0.113.10`, `203.0.113.10:5070`, `[2001:db8::1]:5060`,
/// `edge.example.com[:5060]`. Without a port, the listener's port is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicAddress {
    pub host: PublicHost,
    pub port: Option<u16>,
}

/// The host of [`PublicAddress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicHost {
    Ip(IpAddr),
    /// A domain name, as written.
    Name(String),
}

impl PublicHost {
    /// The host without brackets (an IPv6 address bare).
    pub fn bare(&self) -> String {
        match self {
            PublicHost::Ip(ip) => ip.to_string(),
            PublicHost::Name(n) => n.clone(),
        }
    }
}

impl fmt::Display for PublicHost {
    /// As in a URI or Via: IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            PublicHost::Ip(ip) => write!(f, "{ip}"),
            PublicHost::Name(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for PublicAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl FromStr for PublicAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.chars().any(char::is_whitespace) {
            return Err("must not contain spaces".into());
        }
        let (host, port) = parse_hostport(s)?;
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => PublicHost::Ip(ip),
            // As written: it goes into Via, Contact and Record-Route.
            Err(_) => PublicHost::Name(s.split(':').next().unwrap_or(&host).to_owned()),
        };
        Ok(PublicAddress { host, port })
    }
}

/// A socket to listen on: `udp:0.0.0.0:5060`, `tls:[::1]:5061`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (t, addr) = s
            .split_once(':')
            .ok_or("expected transport:address:port, e.g. \"udp:0.0.0.0:5060\"")?;
        let transport = t.parse::<Transport>().map_err(|e| e.to_string())?;
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| format!("invalid socket address {addr:?} (IPv6 in brackets)"))?;
        Ok(Self { transport, addr })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.uri_param(), self.addr)
    }
}

/// Where we register to / send via: `sip:pbx.example.com:5060;transport=tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyUri {
    /// `sips:` scheme.
    pub tls: bool,
    /// Domain, IPv4, or IPv6 without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// From a `;transport=` parameter.
    pub transport: Option<Transport>,
}

impl ProxyUri {
    /// The transport the URI names by itself ([`Transport::named_by`]).
    pub fn named_transport(&self) -> Option<Transport> {
        Transport::named_by(self.tls, self.transport)
    }

    /// The transport to reach this URI with: the one it names, else the
    /// connection's `transport`.
    pub fn transport_or(&self, configured: Transport) -> Transport {
        self.named_transport().unwrap_or(configured)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "sips" } else { "sip" }
    }

    /// `sip:host` / `sips:host`, no port.
    pub fn domain_uri(&self) -> String {
        format!("{}:{}", self.scheme(), self.host_for_aor())
    }

    /// The REGISTER Request-URI: the registrar's domain, `scheme:host`
    /// (design.md, RFC 3261 §10.2). A port is kept only when it is not the
    /// default for `transport`: registrars that check "is this R-URI me"
    /// (Kamailio's `uri == myself`) compare the port too.
    pub fn request_uri(&self, transport: Transport) -> String {
        match self.port {
            Some(p) if p != transport.default_port() => {
                format!("{}:{}:{p}", self.scheme(), self.host_for_aor())
            }
            _ => self.domain_uri(),
        }
    }

    /// The host as written in an AOR (`user@host`): IPv6 bracketed, no port.
    pub fn host_for_aor(&self) -> String {
        bracket_host(&self.host)
    }
}

impl FromStr for ProxyUri {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty URI".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        let (tls, rest) = split_scheme(s)?;
        if rest.contains('?') {
            return Err("URI headers (?...) are not allowed here".into());
        }
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or_default();
        if hostport.contains('@') {
            return Err(
                "must not contain a user part (user@): give the host only; the user is `username`"
                    .into(),
            );
        }
        let (host, port) = parse_hostport(hostport)?;
        let mut transport = None;
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.eq_ignore_ascii_case("transport") {
                let t = value.parse::<Transport>().map_err(|e| e.to_string())?;
                if transport.replace(t).is_some() {
                    return Err("transport parameter given twice".into());
                }
            } else if name.eq_ignore_ascii_case("lr") && value.is_empty() {
                // Loose routing flag: harmless, ignored.
            } else {
                return Err(format!("unsupported URI parameter {param:?}"));
            }
        }
        if tls && transport == Some(Transport::Udp) {
            return Err("sips: requires TLS, not transport=udp".into());
        }
        Ok(Self {
            tls,
            host,
            port,
            transport,
        })
    }
}

impl fmt::Display for ProxyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.domain_uri())?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(t) = self.transport {
            write!(f, ";transport={}", t.uri_param())?;
        }
        Ok(())
    }
}

impl Serialize for ProxyUri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Splits an optional `sip:` / `sips:` scheme; any other scheme is an error.
fn split_scheme(s: &str) -> Result<(bool, &str), String> {
    if let Some((scheme, rest)) = s.split_once(':') {
        // `sip:`/`sips:` always is the scheme (`sip:10.0.0.1:5060`); another
        // alphabetic prefix not followed by a port number is an unsupported
        // scheme, while `host:5060` is a host and port.
        let sip_scheme = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
        let is_scheme = sip_scheme
            || !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-".contains(c))
                && !rest.starts_with(|c: char| c.is_ascii_digit());
        if is_scheme {
            return if scheme.eq_ignore_ascii_case("sip") {
                Ok((false, rest))
            } else if scheme.eq_ignore_ascii_case("sips") {
                Ok((true, rest))
            } else {
                Err(format!(
                    "unsupported URI scheme {scheme:?} (expected sip: or sips:)"
                ))
            };
        }
    }
    Ok((false, s))
}

/// `host[:port]` with IPv6 in brackets; returns the host without brackets.
pub(super) fn parse_hostport(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("invalid IPv6 address {v6:?}"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected ':port' after ']'")?),
        };
        (v6.to_owned(), port)
    } else {
        if s.matches(':').count() > 1 {
            return Err("IPv6 addresses must be in brackets, e.g. [2001:db8::1]:5060".into());
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        check_host(host)?;
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("invalid port {p:?} (1..65535)")),
        },
    };
    Ok((host, port))
}

/// A domain name (RFC 3261 `hostname`) or IPv4 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.len() > 253 {
        return Err("host name too long".into());
    }
    let labels = || host.strip_suffix('.').unwrap_or(host).split('.');
    if labels().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("invalid IPv4 address {host:?}"));
    }
    for label in labels() {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("invalid host name {host:?}"));
        }
    }
    Ok(())
}

/// The longest host name (RFC 1035 §2.3.4, without the trailing dot).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// `sip.domain`: a DNS host name (RFC 1123 §2.1), lowercased; not an IP
/// address, no port, no empty label (a trailing dot included).
pub fn parse_domain(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.starts_with('[') || s.parse::<IpAddr>().is_ok() {
        return Err("must be a host name, not an IP address".into());
    }
    if s.contains(':') {
        return Err("must be a host name without a port".into());
    }
    if s.len() > MAX_HOST_NAME_LEN {
        return Err(format!("longer than {MAX_HOST_NAME_LEN} characters"));
    }
    let labels: Vec<&str> = s.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("has an empty label (two dots, or a dot at either end)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} may contain only letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} must not begin or end with '-'"));
        }
    }
    // RFC 3696 §2: a top-level label is never all digits (it would read
    // as an IPv4 address).
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the last label must not be all digits".into());
    }
    Ok(s.to_ascii_lowercase())
}

fn bracket_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A password or token. Debug and Display print `***`; it is never serialized.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A random alphanumeric secret of `len` characters.
    pub fn random(len: usize) -> Self {
        let s = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        Self(s)
    }

    /// The plain value, for the places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32`; a bare address is a
/// block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
