//! SIP digest authentication as pure functions: parsing `WWW-Authenticate` /
//! `Proxy-Authenticate` challenges and `Authorization` values, choosing among several
//! challenges, and computing / verifying responses.
//! RFC 2617, RFC 7616 (SHA-256, SHA-512/256, -sess), RFC 8760 (SIP tokens), RFC 3261 §22.

use std::fmt;
use std::fmt::Write as _;

use crate::crypto::{constant_time_eq, hex};
use sha2::Digest as _;

/// A digest hash algorithm (RFC 7616 §3.3, SIP tokens per RFC 8760).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    /// Parses an `algorithm=` token, case-insensitively.
    pub fn from_token(token: &str) -> Result<Self, DigestError> {
        const ALL: [Algorithm; 6] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
            Algorithm::Sha512_256,
            Algorithm::Sha512_256Sess,
        ];
        ALL.into_iter()
            .find(|a| a.token().eq_ignore_ascii_case(token))
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(token.to_owned()))
    }

    /// The canonical token, as sent in `algorithm=`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (HA1 includes nonce and cnonce).
    pub fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Preference rank for [`select`]: higher is stronger; `-sess` ranks as its base.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 3,
        }
    }

    /// Lowercase hex of the hash of `data`.
    fn hash(self, data: &[u8]) -> String {
        self.hash_parts(&[data])
    }

    /// The hex hash of `parts` joined by `:`, fed to the hasher piece by
    /// piece (the per-REGISTER `format!` of each joined string and the
    /// per-byte `{:02x}` showed as ~10 % of uacd's CPU during a refresh).
    fn hash_parts(self, parts: &[&[u8]]) -> String {
        fn feed(parts: &[&[u8]], mut update: impl FnMut(&[u8])) {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    update(b":");
                }
                update(part);
            }
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => {
                let mut c = md5::Context::new();
                feed(parts, |b| c.consume(b));
                hex(&c.finalize().0)
            }
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                let mut h = sha2::Sha256::new();
                feed(parts, |b| h.update(b));
                hex(&h.finalize())
            }
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => {
                let mut h = sha2::Sha512_256::new();
                feed(parts, |b| h.update(b));
                hex(&h.finalize())
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Quality of protection (RFC 7616 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    /// The token as sent in `qop=`.
    pub fn token(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if token.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

/// One parsed `Digest` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Supported qop values offered; empty = no qop (RFC 2069 compatibility).
    pub qop: Vec<Qop>,
    pub stale: bool,
    pub userhash: bool,
}

/// Our credentials for one challenge. Debug never shows the password.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A parsed `Authorization` / `Proxy-Authorization` value (server side, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// As sent; absent means MD5.
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<Qop>,
    pub nc: Option<u32>,
    pub userhash: bool,
}

/// Why a challenge or authorization value could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The scheme is not `Digest` (e.g. `Basic`); look for another challenge.
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// A mandatory parameter is absent.
    #[error("missing digest parameter {0}")]
    MissingParam(&'static str),
    /// `algorithm=` names something we do not implement.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `qop=` offers only values we do not implement.
    #[error("no supported qop offered")]
    UnsupportedQop,
    /// The value does not follow the auth-param grammar.
    #[error("malformed digest header: {0}")]
    Malformed(&'static str),
}

/// Parses a challenge header value, e.g.
/// `Digest realm="a,b", nonce="x", qop="auth,auth-int", algorithm=SHA-256, stale=TRUE`.
pub fn parse_challenge(value: &str) -> Result<Challenge, DigestError> {
    let params = parse_digest_params(value)?;
    let mut realm = None;
    let mut nonce = None;
    let mut opaque = None;
    let mut algorithm = Algorithm::Md5;
    let mut qop = None;
    let mut stale = false;
    let mut userhash = false;
    for (name, val) in params {
        match name.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(val),
            "nonce" => nonce = Some(val),
            "opaque" => opaque = Some(val),
            "algorithm" => algorithm = Algorithm::from_token(val.trim())?,
            "qop" => {
                let offered: Vec<Qop> = val
                    .split(',')
                    .filter_map(|t| Qop::from_token(t.trim()))
                    .collect();
                qop = Some(offered);
            }
            "stale" => stale = val.trim().eq_ignore_ascii_case("true"),
            "userhash" => userhash = val.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let qop = match qop {
        Some(list) if list.is_empty() => return Err(DigestError::UnsupportedQop),
        Some(mut list) => {
            list.dedup();
            list
        }
        None => Vec::new(),
    };
    Ok(Challenge {
        realm: realm.ok_or(DigestError::MissingParam("realm"))?,
        nonce: nonce.ok_or(DigestError::MissingParam("nonce"))?,
        opaque,
        algorithm,
        qop,
        stale,
        userhash,
    })
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, DigestError> {
    let params = parse_digest_params(value)?;
    let mut username = None;
    let mut realm = None;
    let mut nonce = None;
    let mut uri = None;
    let mut response = None;
    let mut algorithm = Algorithm::Md5;
    let mut cnonce = None;
    let mut opaque = None;
    let mut qop = None;
    let mut nc = None;
    let mut userhash = false;
    for (name, val) in params {
        match name.to_ascii_lowercase().as_str() {
            "username" => username = Some(val),
            "realm" => realm = Some(val),
            "nonce" => nonce = Some(val),
            "uri" => uri = Some(val),
            "response" => response = Some(val),
            "algorithm" => algorithm = Algorithm::from_token(val.trim())?,
            "cnonce" => cnonce = Some(val),
            "opaque" => opaque = Some(val),
            "qop" => {
                qop = Some(Qop::from_token(val.trim()).ok_or(DigestError::UnsupportedQop)?);
            }
            "nc" => {
                let v = val.trim();
                if v.len() != 8 {
                    return Err(DigestError::Malformed("nc must be 8 hex digits"));
                }
                nc = Some(
                    u32::from_str_radix(v, 16)
                        .map_err(|_| DigestError::Malformed("nc must be 8 hex digits"))?,
                );
            }
            "userhash" => userhash = val.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    if qop.is_some() && (cnonce.is_none() || nc.is_none()) {
        return Err(DigestError::MissingParam(if cnonce.is_none() {
            "cnonce"
        } else {
            "nc"
        }));
    }
    Ok(Authorization {
        username: username.ok_or(DigestError::MissingParam("username"))?,
        realm: realm.ok_or(DigestError::MissingParam("realm"))?,
        nonce: nonce.ok_or(DigestError::MissingParam("nonce"))?,
        uri: uri.ok_or(DigestError::MissingParam("uri"))?,
        response: response.ok_or(DigestError::MissingParam("response"))?,
        algorithm,
        cnonce,
        opaque,
        qop,
        nc,
        userhash,
    })
}

/// Among several challenges of one response (RFC 3261 §22.3), keeps per realm the
/// strongest algorithm (SHA-512-256 > SHA-256 > MD5; `-sess` ranks as its base; on a
/// tie the first wins), in order of each realm's first appearance.
pub fn select<'a>(challenges: &'a [Challenge]) -> Vec<&'a Challenge> {
    let mut chosen: Vec<&'a Challenge> = Vec::new();
    for ch in challenges {
        match chosen.iter_mut().find(|c| c.realm == ch.realm) {
            Some(slot) => {
                if ch.algorithm.strength() > slot.algorithm.strength() {
                    *slot = ch;
                }
            }
            None => chosen.push(ch),
        }
    }
    chosen
}

/// Builds the `Authorization` / `Proxy-Authorization` header value answering `ch`.
///
/// `uri` must be exactly the Request-URI sent. qop `auth` is preferred when offered,
/// else `auth-int` (over `body`); without qop, `cnonce`/`nc`/`qop` are omitted.
/// `userhash` is not used: the plain username is always sent (RFC 7616 §3.4.4 lets
/// the client choose).
pub fn authorization(
    ch: &Challenge,
    creds: &Credentials,
    method: &str,
    uri: &str,
    body: &[u8],
    cnonce: &str,
    nc: u32,
) -> String {
    let qop = choose_qop(&ch.qop);
    let response = compute_response(
        ch.algorithm,
        creds.username,
        &ch.realm,
        creds.password,
        &ch.nonce,
        method,
        uri,
        body,
        qop.map(|q| (q, cnonce, nc)),
    );
    let mut out = String::with_capacity(256);
    out.push_str("Digest username=");
    push_quoted(&mut out, creds.username);
    out.push_str(", realm=");
    push_quoted(&mut out, &ch.realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, &ch.nonce);
    out.push_str(", uri=");
    push_quoted(&mut out, uri);
    out.push_str(", response=");
    push_quoted(&mut out, &response);
    out.push_str(", algorithm=");
    out.push_str(ch.algorithm.token());
    if qop.is_some() {
        out.push_str(", cnonce=");
        push_quoted(&mut out, cnonce);
    }
    if let Some(opaque) = &ch.opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, opaque);
    }
    if let Some(q) = qop {
        let _ = write!(out, ", qop={}, nc={nc:08x}", q.token());
    }
    out
}

/// A fresh random client nonce: 32 lowercase hex characters.
pub fn new_cnonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Nonce counts (`nc`) per realm: 1 for a new nonce, +1 on each reuse of the same one.
/// Only the latest nonce of each realm is remembered, so memory stays bounded.
/// A list, not a map: one registration sees one or two realms, and this lives
/// as long as the connection (a one-entry HashMap was ~240 bytes of table).
/// Realm and nonce are kept as 64-bit fingerprints under a key drawn at
/// start-up, not as copies of strings the challenge cache already holds: two
/// fewer allocations per connection. Two nonces of one realm that collide
/// (odds 2^-64, and the key is unknown to the registrar) would only carry
/// the count on, which a registrar accepts (RFC 7616 §3.4: `nc` must grow).
#[derive(Clone, Debug, Default)]
pub struct NonceCounts {
    by_realm: Vec<(u64, u64, u32)>,
}

/// The fingerprint of a realm or a nonce within this process.
fn fingerprint(s: &str) -> u64 {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    std::hash::BuildHasher::hash_one(KEY.get_or_init(Default::default), s)
}

impl NonceCounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `nc` to send with the next request answering (`realm`, `nonce`).
    pub fn next(&mut self, realm: &str, nonce: &str) -> u32 {
        let (realm, nonce) = (fingerprint(realm), fingerprint(nonce));
        match self.by_realm.iter_mut().find(|(r, _, _)| *r == realm) {
            Some((_, known, count)) if *known == nonce => {
                *count = count.saturating_add(1);
                *count
            }
            Some((_, known, count)) => {
                *known = nonce;
                *count = 1;
                1
            }
            None => {
                // One realm is the rule: room for one, not Vec's default four.
                self.by_realm.reserve_exact(1);
                self.by_realm.push((realm, nonce, 1));
                1
            }
        }
    }
}

/// Server-side check of an `Authorization` value against the challenge we sent.
pub fn verify(
    ch: &Challenge,
    authz_value: &str,
    password: &str,
    method: &str,
    body: &[u8],
) -> bool {
    let Ok(a) = parse_authorization(authz_value) else {
        return false;
    };
    if a.realm != ch.realm || a.nonce != ch.nonce || a.algorithm != ch.algorithm {
        return false;
    }
    if ch.opaque.is_some() && a.opaque != ch.opaque {
        return false;
    }
    let qop = match (a.qop, ch.qop.is_empty()) {
        (None, true) => None,
        (Some(q), false) if ch.qop.contains(&q) => match (&a.cnonce, a.nc) {
            (Some(cnonce), Some(nc)) => Some((q, cnonce.as_str(), nc)),
            _ => return false,
        },
        _ => return false,
    };
    let expected = compute_response(
        a.algorithm,
        &a.username,
        &a.realm,
        password,
        &a.nonce,
        method,
        &a.uri,
        body,
        qop,
    );
    constant_time_eq(
        expected.as_bytes(),
        a.response.to_ascii_lowercase().as_bytes(),
    )
}

fn choose_qop(offered: &[Qop]) -> Option<Qop> {
    if offered.contains(&Qop::Auth) {
        Some(Qop::Auth)
    } else if offered.contains(&Qop::AuthInt) {
        Some(Qop::AuthInt)
    } else {
        None
    }
}

/// RFC 7616 §3.4.1–3.4.3 response computation.
#[allow(clippy::too_many_arguments)]
fn compute_response(
    alg: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    body: &[u8],
    qop: Option<(Qop, &str, u32)>,
) -> String {
    let b = str::as_bytes;
    let mut ha1 = alg.hash_parts(&[b(username), b(realm), b(password)]);
    if alg.is_sess() {
        let cnonce = qop.map(|(_, c, _)| c).unwrap_or("");
        ha1 = alg.hash_parts(&[b(&ha1), b(nonce), b(cnonce)]);
    }
    let ha2 = match qop {
        Some((Qop::AuthInt, _, _)) => alg.hash_parts(&[b(method), b(uri), b(&alg.hash(body))]),
        _ => alg.hash_parts(&[b(method), b(uri)]),
    };
    match qop {
        Some((q, cnonce, nc)) => {
            let nc = format!("{nc:08x}");
            alg.hash_parts(&[b(&ha1), b(nonce), b(&nc), b(cnonce), b(q.token()), b(&ha2)])
        }
        None => alg.hash_parts(&[b(&ha1), b(nonce), b(&ha2)]),
    }
}

fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Splits `Digest a=b, c="d, e"` into (name, unquoted value) pairs.
fn parse_digest_params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let s = value.trim_start();
    let scheme_end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
    if !s[..scheme_end].eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    let mut rest = s[scheme_end..].chars().peekable();
    let mut params = Vec::new();
    loop {
        // Skip separators and whitespace between params.
        while rest
            .peek()
            .is_some_and(|c| *c == ',' || c.is_ascii_whitespace())
        {
            rest.next();
        }
        if rest.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = rest.peek() {
            if is_token_char(c) {
                name.push(c);
                rest.next();
            } else {
                break;
            }
        }
        if name.is_empty() {
            return Err(DigestError::Malformed("expected a parameter name"));
        }
        while rest.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            rest.next();
        }
        if rest.next() != Some('=') {
            return Err(DigestError::Malformed("expected '=' after parameter name"));
        }
        while rest.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            rest.next();
        }
        let mut val = String::new();
        if rest.peek() == Some(&'"') {
            rest.next();
            let mut closed = false;
            while let Some(c) = rest.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match rest.next() {
                        Some(e) => val.push(e),
                        None => break,
                    },
                    _ => val.push(c),
                }
            }
            if !closed {
                return Err(DigestError::Malformed("unterminated quoted string"));
            }
        } else {
            while let Some(&c) = rest.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                val.push(c);
                rest.next();
            }
            if val.is_empty() {
                return Err(DigestError::Malformed("empty parameter value"));
            }
        }
        while rest.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            rest.next();
        }
        match rest.peek() {
            None | Some(',') => {}
            Some(_) => return Err(DigestError::Malformed("expected ',' between parameters")),
        }
        params.push((name, val));
    }
    Ok(params)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

#[cfg(test)]
mod tests;
