//! Typed views of single header values: Via (RFC 3261 §20.42, §18.2.1 and
//! RFC 3581 rport), name-addr / addr-spec for From, To, Contact, Route and
//! Record-Route (§20.10, §20.20, §20.39), and CSeq (§20.16).

use std::fmt;

use crate::sip::Method;
use crate::sip::error::ParseError;
use crate::sip::params::{Params, end_of_quoted, is_token_char, skip_lws};
use crate::sip::uri::{Host, Uri};

/// One Via value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Transport as written (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: String,
    /// sent-by host.
    pub host: Host,
    /// sent-by port.
    pub port: Option<u16>,
    /// `;branch=...;received=...;rport`.
    pub params: Params,
}

impl Via {
    /// Parses one Via value (no commas).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        let bad = |reason| ParseError::BadHeader {
            name: "Via",
            reason,
        };
        let b = s.as_bytes();
        let mut parts = [""; 3];
        let mut i = skip_lws(b, 0);
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                if i >= b.len() || b[i] != b'/' {
                    return Err(bad("bad sent-protocol"));
                }
                i = skip_lws(b, i + 1);
            }
            let start = i;
            while i < b.len() && is_token_char(b[i]) {
                i += 1;
            }
            if i == start {
                return Err(bad("bad sent-protocol"));
            }
            *part = &s[start..i];
            i = skip_lws(b, i);
        }
        if !parts[0].eq_ignore_ascii_case("SIP") || parts[1] != "2.0" {
            return Err(bad("not SIP/2.0"));
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b';' | b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        let sent_by = &s[start..i];
        let (host, port) = Host::parse_with_port(sent_by).map_err(|_| bad("bad sent-by"))?;
        let params = Params::parse_header(&s[i..]).map_err(bad)?;
        Ok(Via {
            transport: parts[2].to_owned(),
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// `None` if absent, `Some(None)` for a bare `;rport`, `Some(Some(port))` if filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// `"Display" <uri>;params`, `<uri>;params` or `uri;params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `+sip.instance`, `lr` outside `<>`...).
    pub params: Params,
}

impl NameAddr {
    /// A name-addr with no display name and no parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::new(),
        }
    }

    /// Parses one value; `name` is the header name used in errors.
    pub fn parse(s: &str, name: &'static str) -> Result<NameAddr, ParseError> {
        let bad = |reason| ParseError::BadHeader { name, reason };
        let s = s.trim();
        let b = s.as_bytes();
        let (display, rest) = if b.first() == Some(&b'"') {
            let end = end_of_quoted(b, 0).ok_or(bad("unterminated display name"))?;
            let disp = crate::sip::params::unquote(&s[..end]).into_owned();
            let rest = s[end..].trim_start();
            if !rest.starts_with('<') {
                return Err(bad("display name without <uri>"));
            }
            (Some(disp), rest)
        } else if let Some(lt) = s.find('<').filter(|&lt| !s[..lt].contains([':', ';', '"'])) {
            let disp = s[..lt].trim();
            if disp
                .bytes()
                .any(|c| !(is_token_char(c) || c == b' ' || c == b'\t' || c >= 0x80))
            {
                return Err(bad("bad display name"));
            }
            ((!disp.is_empty()).then(|| disp.to_owned()), &s[lt..])
        } else {
            (None, s)
        };
        if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or(bad("missing '>'"))?;
            let uri: Uri = inner[..gt].trim().parse()?;
            let params = Params::parse_header(&inner[gt + 1..]).map_err(bad)?;
            return Ok(NameAddr {
                display,
                uri,
                params,
            });
        }
        // addr-spec: parameters after the URI belong to the header (§20.10).
        let (uri, params) = match rest.find(|c: char| c == ';' || c.is_ascii_whitespace()) {
            Some(p) => rest.split_at(p),
            None => (rest, ""),
        };
        if uri.contains('?') || uri.contains(',') {
            return Err(bad("addr-spec with '?' or ','"));
        }
        Ok(NameAddr {
            display,
            uri: uri.parse()?,
            params: Params::parse_header(params).map_err(bad)?,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// The `expires` parameter as seconds.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// A CSeq value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (RFC 3261 §8.1.1.5: below 2^31, accepted up to u32).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1234 INVITE`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = |reason| ParseError::BadHeader {
            name: "CSeq",
            reason,
        };
        let s = s.trim();
        let (num, method) = s
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(bad("missing method"))?;
        let method = method.trim();
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("bad sequence number"));
        }
        if method.is_empty() || !method.bytes().all(is_token_char) {
            return Err(bad("bad method"));
        }
        Ok(CSeq {
            seq: num.parse().map_err(|_| bad("sequence number too large"))?,
            method: Method::from_bytes(method.as_bytes()),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}
