//! `uacd status`: one aligned line per connection (id, name, transport,
//! proxy, status name, last response, updated-at), read from a running
//! daemon's REST API with a plain blocking HTTP/1.1 client (loopback use;
//! no TLS). Exit status 1 with a clear message when the daemon cannot be
//! reached or refuses the token.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The API's largest page.
const PAGE_SIZE: u32 = 250;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("bad --api URL {0:?}: expected http://host:port")]
    BadUrl(String),
    #[error("cannot reach the uacd API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the uacd API at {url} refused the token (401); pass --token or set one in the config")]
    Unauthorized { url: String },
    #[error("the uacd API at {url} answered {status} to {path}: {body}")]
    Unexpected {
        url: String,
        path: String,
        status: u16,
        body: String,
    },
}

/// `http://host:port` → `host:port`.
fn authority(url: &str) -> Result<String, StatusError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StatusError::BadUrl(url.to_owned()))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(StatusError::BadUrl(url.to_owned()));
    }
    Ok(
        if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        },
    )
}

fn get(url: &str, token: &str, path: &str) -> Result<Value, StatusError> {
    let host = authority(url)?;
    let unreachable = |reason: String| StatusError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| unreachable(e.to_string()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| unreachable(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| unreachable("malformed HTTP response".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unreachable("malformed HTTP status line".into()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    match status {
        200 => serde_json::from_str(&body).map_err(|e| unreachable(format!("bad JSON: {e}"))),
        401 => Err(StatusError::Unauthorized {
            url: url.to_owned(),
        }),
        _ => Err(StatusError::Unexpected {
            url: url.to_owned(),
            path: path.to_owned(),
            status,
            body: body.chars().take(200).collect(),
        }),
    }
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: String,
    pub name: String,
    pub transport: String,
    pub proxy: String,
    pub status: String,
    pub last_response: String,
    pub updated_at: String,
    /// Cluster mode: the node that holds the connection.
    pub node: Option<String>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Every connection the token's user owns, with its live registration.
pub fn collect(url: &str, token: &str) -> Result<Vec<Line>, StatusError> {
    let mut lines = Vec::new();
    let mut page = 1u32;
    loop {
        let list = get(
            url,
            token,
            &format!("/v2/uac_connections?page%5Bsize%5D={PAGE_SIZE}&page%5Bnumber%5D={page}"),
        )?;
        let items = list["data"].as_array().cloned().unwrap_or_default();
        for c in &items {
            let id = text(&c["id"]);
            let status = get(
                url,
                token,
                &format!("/v2/uac_connections/{id}/registration_status"),
            )?;
            let s = &status["data"];
            lines.push(Line {
                name: text(&c["connection_name"]),
                transport: text(&c["external_uac_settings"]["transport"]),
                proxy: text(&c["external_uac_settings"]["proxy"]),
                status: text(&s["registration_status_name"]),
                last_response: text(&s["last_registration_response"]),
                updated_at: text(&s["registration_status_updated_at"]),
                node: s["node_id"].as_str().map(str::to_owned),
                id,
            });
        }
        let total_pages = list["meta"]["total_pages"].as_u64().unwrap_or(1);
        if items.is_empty() || u64::from(page) >= total_pages {
            return Ok(lines);
        }
        page += 1;
    }
}

/// The aligned table, header first.
pub fn render(lines: &[Line]) -> String {
    let header = Line {
        id: "ID".into(),
        name: "NAME".into(),
        transport: "TRANSPORT".into(),
        proxy: "PROXY".into(),
        status: "STATUS".into(),
        last_response: "LAST RESPONSE".into(),
        updated_at: "UPDATED AT".into(),
        node: Some("NODE".into()),
    };
    // Cluster mode (some connection has a holder): a NODE column.
    let clustered = lines.iter().any(|l| l.node.is_some());
    let rows: Vec<Vec<&str>> = std::iter::once(&header)
        .chain(lines)
        .map(|l| {
            let mut r = vec![
                l.id.as_str(),
                l.name.as_str(),
                l.transport.as_str(),
                l.proxy.as_str(),
                l.status.as_str(),
                l.last_response.as_str(),
                l.updated_at.as_str(),
            ];
            if clustered {
                r.push(l.node.as_deref().unwrap_or("-"));
            }
            r
        })
        .collect();
    let mut width = [0usize; 8];
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{cell:<w$}  ", w = width[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://localhost/").unwrap(), "localhost:80");
        assert!(authority("https://x:1").is_err());
        assert!(authority("http://x:1/v2").is_err());
    }

    #[test]
    fn table_is_aligned() {
        let l = |id: &str, status: &str| Line {
            id: id.into(),
            name: "Office PBX".into(),
            transport: "UDP".into(),
            proxy: "sip:pbx.example.com".into(),
            status: status.into(),
            last_response: "200 OK".into(),
            updated_at: "2026-11-23T12:00:00.000Z".into(),
            node: None,
        };
        let t = render(&[l("office-pbx", "Success"), l("b", "Failed")]);
        assert!(!t.contains("NODE"), "no NODE column on a single node");
        let mut held = l("c", "Success");
        held.node = Some("edge-1".into());
        let c = render(&[held, l("d", "Not Registered")]);
        let rows: Vec<&str> = c.lines().collect();
        assert!(rows[0].ends_with("NODE"), "{c}");
        assert!(rows[1].ends_with("edge-1") && rows[2].ends_with("-"), "{c}");
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 3);
        let col = |r: &str| {
            r.find("STATUS")
                .or_else(|| r.find("Success"))
                .or_else(|| r.find("Failed"))
        };
        assert_eq!(col(rows[0]), col(rows[1]));
        assert_eq!(col(rows[1]), col(rows[2]));
        assert!(rows[0].starts_with("ID"));
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
    }
}
