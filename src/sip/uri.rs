//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966); other schemes are kept
//! opaque so that they can be relayed unchanged.
//!
//! `Display` re-serialises canonically (IPv6 hosts in brackets).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::sip::error::ParseError;
use crate::sip::params::Params;

/// URI scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme, e.g. `urn`; the rest of the URI is kept in `Uri::user`.
    Other(String),
}

impl Scheme {
    /// The scheme as written without the colon (`sip`, `sips`, `tel`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

/// The host part of a URI or Via sent-by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name (kept as written); empty for `tel:` and opaque URIs.
    Domain(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Host {
        match ip {
            std::net::IpAddr::V4(a) => Host::V4(a),
            std::net::IpAddr::V6(a) => Host::V6(a),
        }
    }
}

impl Host {
    /// The address, for an IP host (a domain that is written as an address
    /// counts too).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Host::V4(a) => Some((*a).into()),
            Host::V6(a) => Some((*a).into()),
            Host::Domain(d) => d.parse().ok(),
        }
    }

    /// Parses `domain`, `1.2.3.4` or `[v6]`.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(ParseError::BadUri("unterminated IPv6 reference"))?;
            return inner
                .parse()
                .map(Host::V6)
                .map_err(|_| ParseError::BadUri("bad IPv6 address"));
        }
        if s.is_empty() {
            return Err(ParseError::BadUri("empty host"));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s
                .parse()
                .map(Host::V4)
                .map_err(|_| ParseError::BadUri("bad IPv4 address"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(ParseError::BadUri("bad host name"));
        }
        Ok(Host::Domain(s.to_owned()))
    }

    /// Parses `host[:port]`.
    pub fn parse_with_port(s: &str) -> Result<(Host, Option<u16>), ParseError> {
        let (host, port) = if s.starts_with('[') {
            let end = s
                .find(']')
                .ok_or(ParseError::BadUri("unterminated IPv6 reference"))?;
            let rest = &s[end + 1..];
            let port = match rest {
                "" => None,
                _ => Some(
                    rest.strip_prefix(':')
                        .ok_or(ParseError::BadUri("junk after IPv6 reference"))?,
                ),
            };
            (&s[..=end], port)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(
                p.parse()
                    .map_err(|_| ParseError::BadUri("port out of range"))?,
            ),
            Some(_) => return Err(ParseError::BadUri("bad port")),
            None => None,
        };
        Ok((Host::parse(host)?, port))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A parsed URI.
///
/// For `tel:` the number is in `user` and `host` is an empty domain; for other
/// schemes everything after the colon is kept verbatim in `user`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// Scheme.
    pub scheme: Scheme,
    /// User part, escapes (`%41`) kept as written.
    pub user: Option<String>,
    /// Password of `user:password@`.
    pub password: Option<String>,
    /// Host.
    pub host: Host,
    /// Port.
    pub port: Option<u16>,
    /// `;uri-parameters`.
    pub params: Params,
    /// `?headers`, without the `?`.
    pub headers: Option<String>,
}

impl Uri {
    /// A `sip:` URI with the given user and host.
    pub fn sip(user: Option<&str>, host: Host, port: Option<u16>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_owned),
            password: None,
            host,
            port,
            params: Params::new(),
            headers: None,
        }
    }

    /// Whether uacd can route or answer this scheme: `sip`, `sips`, `tel`
    /// (anything else is 416, RFC 3261 §8.2.2.1, §16.3 item 2).
    pub fn scheme_understood(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel)
    }

    /// Whether the scheme is `sip` or `sips`.
    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }
}

fn parse_scheme(s: &str) -> Result<(Scheme, &str), ParseError> {
    let (scheme, rest) = s.split_once(':').ok_or(ParseError::BadUri("no scheme"))?;
    let first_alpha = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic());
    if !first_alpha
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(ParseError::BadUri("bad scheme"));
    }
    let scheme = if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else {
        Scheme::Other(scheme.to_owned())
    };
    Ok((scheme, rest))
}

impl FromStr for Uri {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Uri, ParseError> {
        if s.bytes()
            .any(|b| b <= b' ' || b == 0x7f || b"<>\"".contains(&b))
        {
            return Err(ParseError::BadUri("forbidden character"));
        }
        let (scheme, rest) = parse_scheme(s)?;
        if rest.is_empty() {
            return Err(ParseError::BadUri("empty URI"));
        }
        match scheme {
            Scheme::Sip | Scheme::Sips => parse_sip(scheme, rest),
            Scheme::Tel => {
                let (number, params) = match rest.find(';') {
                    Some(p) => rest.split_at(p),
                    None => (rest, ""),
                };
                if number.is_empty() {
                    return Err(ParseError::BadUri("empty telephone number"));
                }
                Ok(Uri {
                    scheme,
                    user: Some(number.to_owned()),
                    password: None,
                    host: Host::Domain(String::new()),
                    port: None,
                    params: Params::parse_uri(params).map_err(ParseError::BadUri)?,
                    headers: None,
                })
            }
            Scheme::Other(_) => Ok(Uri {
                scheme,
                user: Some(rest.to_owned()),
                password: None,
                host: Host::Domain(String::new()),
                port: None,
                params: Params::new(),
                headers: None,
            }),
        }
    }
}

fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, ParseError> {
    let (userinfo, hostpart) = match rest.find('@') {
        Some(p) => (Some(&rest[..p]), &rest[p + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p.to_owned())),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(ParseError::BadUri("empty user"));
            }
            (Some(u.to_owned()), p)
        }
        None => (None, None),
    };
    let (hostpart, headers) = match hostpart.split_once('?') {
        Some((h, q)) => (h, Some(q.to_owned())),
        None => (hostpart, None),
    };
    let (hostport, params) = match hostpart.find(';') {
        Some(p) => hostpart.split_at(p),
        None => (hostpart, ""),
    };
    let (host, port) = Host::parse_with_port(hostport)?;
    Ok(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params: Params::parse_uri(params).map_err(ParseError::BadUri)?,
        headers,
    })
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        match self.scheme {
            Scheme::Tel => write!(f, "{}{}", self.user.as_deref().unwrap_or(""), self.params),
            Scheme::Other(_) => f.write_str(self.user.as_deref().unwrap_or("")),
            Scheme::Sip | Scheme::Sips => {
                if let Some(u) = &self.user {
                    f.write_str(u)?;
                    if let Some(p) = &self.password {
                        write!(f, ":{p}")?;
                    }
                    f.write_str("@")?;
                }
                write!(f, "{}", self.host)?;
                if let Some(p) = self.port {
                    write!(f, ":{p}")?;
                }
                write!(f, "{}", self.params)?;
                if let Some(h) = &self.headers {
                    write!(f, "?{h}")?;
                }
                Ok(())
            }
        }
    }
}
