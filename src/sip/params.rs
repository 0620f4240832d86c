//! Ordered `;name[=value]` parameter lists of URIs and header fields
//! (RFC 3261 §19.1.1 uri-parameters, §20 generic-param, §25.1 grammar).
//!
//! Names compare case-insensitively; names and values keep their spelling.

use std::borrow::Cow;
use std::fmt;

/// An ordered parameter list. Values keep their original text, including the
/// quotes of a quoted-string (use [`unquote`] to strip them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    /// An empty list.
    pub fn new() -> Params {
        Params(Vec::new())
    }

    /// `None` if absent, `Some(None)` for a flag (`;lr`), `Some(Some(v))` otherwise.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    /// Whether `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Replaces the first `name` or appends it.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// Appends without looking for an existing entry.
    pub fn push(&mut self, name: &str, value: Option<&str>) {
        self.0.push((name.to_owned(), value.map(str::to_owned)));
    }

    /// Removes every `name`; returns whether one was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.0.len() != before
    }

    /// Iterates `(name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses URI parameters: `;a=b;lr` (no LWS, no quotes; RFC 3261 §19.1.1).
    pub(crate) fn parse_uri(s: &str) -> Result<Params, &'static str> {
        let mut out = Params::new();
        if s.is_empty() {
            return Ok(out);
        }
        let rest = s.strip_prefix(';').ok_or("parameter without ';'")?;
        for part in rest.split(';') {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (part, None),
            };
            if name.is_empty() || !name.bytes().all(is_param_char) {
                return Err("bad parameter name");
            }
            if value.is_some_and(|v| !v.bytes().all(is_param_char)) {
                return Err("bad parameter value");
            }
            out.push(name, value);
        }
        Ok(out)
    }

    /// Parses header parameters with LWS and quoted values (`; a = "x,y" ;lr`).
    ///
    /// Returns the list and whatever follows it that is not a parameter
    /// (normally empty; a comma for list values is never passed in here).
    pub(crate) fn parse_header(s: &str) -> Result<Params, &'static str> {
        let mut out = Params::new();
        let b = s.as_bytes();
        let mut i = skip_lws(b, 0);
        while i < b.len() {
            if b[i] != b';' {
                return Err("junk after value");
            }
            i = skip_lws(b, i + 1);
            let start = i;
            while i < b.len() && is_token_char(b[i]) {
                i += 1;
            }
            if i == start {
                return Err("empty parameter name");
            }
            let name = &s[start..i];
            i = skip_lws(b, i);
            let mut value = None;
            if i < b.len() && b[i] == b'=' {
                i = skip_lws(b, i + 1);
                let vstart = i;
                if i < b.len() && b[i] == b'"' {
                    i = end_of_quoted(b, i).ok_or("unterminated quoted string")?;
                } else if i < b.len() && b[i] == b'[' {
                    i = memchr::memchr(b']', &b[i..])
                        .map(|p| i + p + 1)
                        .ok_or("unterminated '['")?;
                } else {
                    while i < b.len()
                        && !matches!(b[i], b';' | b',' | b' ' | b'\t' | b'\r' | b'\n' | b'"')
                    {
                        i += 1;
                    }
                }
                if i == vstart {
                    return Err("empty parameter value");
                }
                value = Some(&s[vstart..i]);
                i = skip_lws(b, i);
            }
            out.push(name, value);
        }
        Ok(out)
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Strips the quotes and backslash escapes of a quoted-string; other text is
/// returned unchanged.
pub fn unquote(s: &str) -> Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Characters allowed (unescaped or `%`-escaped) in URI parameter names and values.
fn is_param_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()%[]/:&+$".contains(&b)
}

/// Skips SP, HTAB, CR and LF from `i`.
pub(crate) fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Given `b[i] == '"'`, the index just past the closing quote.
pub(crate) fn end_of_quoted(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}
