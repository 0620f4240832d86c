//! The DNS queries uacd makes (NAPTR, SRV, A-then-AAAA), behind a trait so
//! the resolution logic can be tested with a fake; the real one is
//! hickory-resolver with its own TTL cache.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
pub use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::time::Instant;

use super::rfc3263::NaptrRecord;
use super::srv::SrvRecord;
use crate::config::DnsConfig;

/// Records of one answer and how long they may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub records: Vec<T>,
    pub valid_until: Instant,
}

/// Why a query gave no records. Only [`LookupError::NoRecords`] says that
/// the records do not exist; every other kind leaves it unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// NXDOMAIN or no record of that type: an answer, not an outage.
    #[error("no records")]
    NoRecords,
    /// The server answered with an error code: REFUSED (dnsmasq with local
    /// records and no upstream, for a type it holds nothing of), SERVFAIL,
    /// NOTIMP, FORMERR...
    #[error("server answered {0} (rcode {code})", code = u16::from(*.0))]
    Rcode(ResponseCode),
    /// No answer within the resolver's timeout and attempts.
    #[error("timed out")]
    Timeout,
    /// Anything else: no nameserver reachable, malformed answer, I/O.
    #[error("{0}")]
    Failed(String),
}

pub type LookupFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<Answer<T>, LookupError>> + Send + 'a>>;

pub trait Lookup: Send + Sync + 'static {
    /// `name` is fully qualified, without the trailing dot.
    fn naptr<'a>(&'a self, name: &'a str) -> LookupFuture<'a, NaptrRecord>;
    fn srv<'a>(&'a self, name: &'a str) -> LookupFuture<'a, SrvRecord>;
    /// A and AAAA records (asked at once), IPv4 first unless
    /// `dns.prefer_ipv6`: a dual-stack host gives targets of both families.
    fn ip<'a>(&'a self, name: &'a str) -> LookupFuture<'a, IpAddr>;
}

/// hickory-resolver on tokio: the configured nameservers, else the system's.
pub struct Hickory {
    resolver: TokioResolver,
}

/// Per-query timeout and retries (hickory's `attempts` counts the retries
/// after the first try): a dead nameserver costs 4 s per query (A and AAAA
/// are asked in parallel). A resolution that falls through NAPTR and SRV to
/// A/AAAA (RFC 3263 §4) makes its queries one after another.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_RETRIES: usize = 1;

impl Hickory {
    pub fn new(config: &DnsConfig) -> Result<Hickory, LookupError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_RETRIES;
        // Both families in parallel (hickory 0.26 defaults to AAAA first);
        // one failing while the other answers is the other's answer.
        opts.ip_strategy = if config.prefer_ipv6 {
            LookupIpStrategy::Ipv6AndIpv4
        } else {
            LookupIpStrategy::Ipv4AndIpv6
        };
        let resolver = if config.nameservers.is_empty() {
            Resolver::builder_tokio()
                .map_err(|e| LookupError::Failed(format!("system resolver configuration: {e}")))?
                .with_options(opts)
                .build()
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|sa| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = sa.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = sa.port();
                    NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(opts)
            .build()
        }
        .map_err(|e| LookupError::Failed(format!("resolver: {e}")))?;
        Ok(Hickory { resolver })
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn classify(e: NetError) -> LookupError {
    match e {
        e if e.is_no_records_found() => LookupError::NoRecords,
        NetError::Dns(DnsError::ResponseCode(code)) => LookupError::Rcode(code),
        NetError::Timeout => LookupError::Timeout,
        e => LookupError::Failed(e.to_string()),
    }
}

fn until(valid_until: std::time::Instant) -> Instant {
    Instant::now() + valid_until.saturating_duration_since(std::time::Instant::now())
}

/// Lossy text of a NAPTR character-string (flags, services).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn name_text(name: &impl ToString) -> String {
    name.to_string().trim_end_matches('.').to_ascii_lowercase()
}

impl Lookup for Hickory {
    fn naptr<'a>(&'a self, name: &'a str) -> LookupFuture<'a, NaptrRecord> {
        Box::pin(async move {
            let lookup = self
                .resolver
                .lookup(fqdn(name), RecordType::NAPTR)
                .await
                .map_err(classify)?;
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NAPTR(n) => Some(NaptrRecord {
                        order: n.order,
                        preference: n.preference,
                        flags: text(&n.flags),
                        services: text(&n.services),
                        replacement: name_text(&n.replacement),
                    }),
                    _ => None,
                })
                .collect();
            Ok(Answer {
                records,
                valid_until: until(lookup.valid_until()),
            })
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> LookupFuture<'a, SrvRecord> {
        Box::pin(async move {
            let lookup = self
                .resolver
                .srv_lookup(fqdn(name))
                .await
                .map_err(classify)?;
            let records = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(SrvRecord {
                        priority: s.priority,
                        weight: s.weight,
                        port: s.port,
                        target: {
                            let t = name_text(&s.target);
                            if t.is_empty() { ".".into() } else { t }
                        },
                    }),
                    _ => None,
                })
                .collect();
            Ok(Answer {
                records,
                valid_until: until(lookup.valid_until()),
            })
        })
    }

    fn ip<'a>(&'a self, name: &'a str) -> LookupFuture<'a, IpAddr> {
        Box::pin(async move {
            let lookup = self
                .resolver
                .lookup_ip(fqdn(name))
                .await
                .map_err(classify)?;
            let records: Vec<IpAddr> = lookup.iter().collect();
            let lookup: hickory_resolver::lookup::Lookup = lookup.into();
            Ok(Answer {
                records,
                valid_until: until(lookup.valid_until()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;

    #[test]
    fn only_nxdomain_and_nodata_are_no_records() {
        for code in [ResponseCode::NXDomain, ResponseCode::NoError] {
            let e = NetError::from(NoRecords::new(Query::default(), code));
            assert_eq!(classify(e), LookupError::NoRecords, "{code}");
        }
        for code in [
            ResponseCode::Refused,
            ResponseCode::ServFail,
            ResponseCode::NotImp,
            ResponseCode::FormErr,
            ResponseCode::Unknown(3841),
        ] {
            let e = NetError::Dns(DnsError::ResponseCode(code));
            assert_eq!(classify(e), LookupError::Rcode(code), "{code}");
        }
        assert_eq!(classify(NetError::Timeout), LookupError::Timeout);
        assert_eq!(
            classify(NetError::NoConnections),
            LookupError::Failed("no connections available".into())
        );
        assert_eq!(
            LookupError::Rcode(ResponseCode::Refused).to_string(),
            "server answered Query Refused (rcode 5)"
        );
    }
}
