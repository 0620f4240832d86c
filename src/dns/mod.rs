//! DNS for SIP (RFC 3263) with RFC 2782 target ordering, shared by
//! registration and routing: one resolver and one answer cache for the whole
//! daemon, TTLs honoured, the last good answer kept for a grace period when
//! DNS is unreachable, and a greylist of targets that recently failed.
//!
//! `resolve` returns every target in the order to try them; callers walk the
//! list on failure and report each outcome (`failed` / `answered`).

pub mod cache;
pub mod greylist;
pub mod lookup;
pub mod rfc3263;
pub mod srv;

use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{DnsConfig, Transport};
use cache::Lru;
use greylist::Greylist;
use lookup::{Answer, Lookup, LookupError};
pub use rfc3263::{Plan, Query};
use srv::SrvRecord;

/// Where to send: one address with its transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The name a TLS certificate must match: the URI's host (RFC 5922).
    pub server_name: Arc<str>,
}

impl Target {
    fn key(&self) -> greylist::Key {
        (self.addr, self.transport)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.transport.via_token())
    }
}

/// Why a target is greylisted: the failures that mean "try the next
/// target" without a response from it (RFC 3263 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response before the transaction timed out (Timer B or F).
    Timeout,
    /// No provisional response to an INVITE within `timeout_1xx_sec`.
    NoProvisional,
    /// Connect, send or TLS failure, or ICMP unreachable.
    TransportError,
}

impl Failure {
    /// A bounded label for logs.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::NoProvisional => "no provisional response",
            Failure::TransportError => "transport error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{host}: no SIP server found (no NAPTR, SRV or A/AAAA record)")]
    NotFound { host: String },
    #[error("{host}: SIP service not available (SRV target \".\", RFC 2782)")]
    NotAvailable { host: String },
    #[error("{host}: DNS lookup failed: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("DNS resolver could not be set up: {0}")]
    Setup(String),
}

/// How long the last good answer is used when DNS cannot be reached.
pub const STALE_GRACE: Duration = Duration::from_secs(3600);
/// Bounds on how long an answer is cached (TTL 0 would mean a query per
/// request; a huge TTL would never notice a change).
const MIN_VALIDITY: Duration = Duration::from_secs(1);
const MAX_VALIDITY: Duration = Duration::from_secs(86_400);
const SHARDS: usize = 16;

/// One resolved service (an SRV owner name, or the host itself when there
/// is no SRV): its records with the addresses of each target.
#[derive(Debug, Clone)]
struct Service {
    transport: Transport,
    records: Vec<SrvRecord>,
    addrs: Vec<Vec<IpAddr>>,
}

type Fetched = Result<(Vec<Service>, Instant), Error>;

#[derive(Debug, Default)]
struct Slot {
    entry: Option<Entry>,
    /// A re-resolution still running after we stopped waiting for it.
    pending: Option<tokio::task::JoinHandle<Fetched>>,
    /// The last failure with no good answer to fall back on, repeated to
    /// callers until [`NEGATIVE_TTL`] passes (RFC 2308 §7.1 caps "server
    /// failure" caching at 5 min; a flood of requests for a name that does
    /// not resolve must not become a flood of queries).
    negative: Option<(Error, Instant)>,
}

/// How long a failed resolution is answered from the cache.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    services: Arc<[Service]>,
    valid_until: Instant,
    /// We are serving this answer past its TTL (logged once).
    stale: bool,
}

/// How long a caller waits for a re-resolution when an expired answer is
/// at hand (RFC 8767 §5 suggests 1.8 s): a dead nameserver must not delay
/// every refresh by the resolver's full timeout.
pub const STALE_ANSWER_WAIT: Duration = Duration::from_millis(1800);

/// The cache bound when none is configured (`limits.dns_cache_entries`'s default).
const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// Shards for a cache of `entries` names: as many as [`SHARDS`] but no more
/// than `entries`, each holding `entries / shards`, so the total never
/// exceeds `entries`.
fn cache_shards<V: Clone>(entries: usize) -> Vec<Mutex<Lru<Query, V>>> {
    let shards = SHARDS.min(entries).max(1);
    let per = (entries / shards).max(1);
    (0..shards).map(|_| Mutex::new(Lru::new(per))).collect()
}

pub struct Dns {
    fetcher: Fetcher,
    /// At most `limits.dns_cache_entries` names in all, LRU per shard.
    cache: Vec<Mutex<Lru<Query, Arc<tokio::sync::Mutex<Slot>>>>>,
    grey: Vec<Mutex<Greylist>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Dns {
    /// The daemon's resolver: `dns.nameservers`, else the system's.
    /// `allowed`: transports we can use, most preferred first (NAPTR/SRV
    /// choices are limited to them).
    pub fn new(config: &DnsConfig, allowed: Vec<Transport>) -> Result<Dns, Error> {
        let hickory = lookup::Hickory::new(config).map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Dns::with_lookup(
            Arc::new(hickory),
            Duration::from_secs(config.greylist_sec),
            allowed,
        ))
    }

    pub fn with_lookup(
        lookup: Arc<dyn Lookup>,
        greylist: Duration,
        allowed: Vec<Transport>,
    ) -> Dns {
        Dns {
            fetcher: Fetcher {
                lookup,
                allowed: allowed.into(),
            },
            cache: cache_shards(DEFAULT_CACHE_ENTRIES),
            grey: (0..SHARDS)
                .map(|_| Mutex::new(Greylist::new(greylist)))
                .collect(),
            hasher: Default::default(),
        }
    }

    /// Bounds the answer cache to `entries` names (`limits.dns_cache_entries`;
    /// what is cached so far is dropped).
    pub fn with_cache_entries(mut self, entries: usize) -> Dns {
        self.cache = cache_shards(entries);
        self
    }

    /// The addresses a cached answer for `q` holds, without querying:
    /// empty when nothing is cached or a resolution holds the entry.
    pub fn cached_addrs(&self, q: &Query) -> Vec<IpAddr> {
        if let Plan::Numeric(addr, _) = rfc3263::plan(q, &self.fetcher.allowed) {
            return vec![addr.ip()];
        }
        let slot = self.cache[self.cache_shard(q)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(q);
        let Some(slot) = slot else {
            return Vec::new();
        };
        let Ok(slot) = slot.try_lock() else {
            return Vec::new();
        };
        slot.entry
            .as_ref()
            .map(|e| {
                e.services
                    .iter()
                    .flat_map(|s| s.addrs.iter().flatten().copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names in the answer cache.
    pub fn cached_names(&self) -> usize {
        self.cache
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    fn cache_shard(&self, q: &Query) -> usize {
        (self.hasher.hash_one(q) as usize) % self.cache.len()
    }

    fn shard(&self, key: &impl Hash) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Every target for `q`, in the order to try them: RFC 3263 services in
    /// order, SRV records per RFC 2782 (a fresh weighted draw each call),
    /// the addresses of each SRV target in DNS order; targets greylisted
    /// after a recent failure go last.
    pub async fn resolve(&self, q: &Query) -> Result<Vec<Target>, Error> {
        let server_name: Arc<str> = q.server_name().into();
        if let Plan::Numeric(addr, transport) = rfc3263::plan(q, &self.fetcher.allowed) {
            return Ok(vec![Target {
                addr,
                transport,
                server_name,
            }]);
        }
        let services = self.services(q).await?;
        let mut targets = Vec::new();
        for service in services.iter() {
            let order = {
                let mut rng = rand::rng();
                srv::order(&service.records, |n| {
                    rand::Rng::random_range(&mut rng, 0..=n)
                })
            };
            for i in order {
                for ip in &service.addrs[i] {
                    let t = Target {
                        addr: SocketAddr::new(*ip, service.records[i].port),
                        transport: service.transport,
                        server_name: server_name.clone(),
                    };
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
        }
        if targets.is_empty() {
            return Err(Error::NotFound {
                host: q.host.clone(),
            });
        }
        let now = Instant::now();
        greylist::demote(&mut targets, |t| self.is_grey(t, now));
        Ok(targets)
    }

    pub fn is_grey(&self, t: &Target, now: Instant) -> bool {
        self.grey[self.shard(&t.key())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_grey(t.key(), now)
    }

    /// `t` timed out or failed at the transport: try it last for a while.
    pub fn failed(&self, t: &Target, why: Failure) {
        let newly = self.grey[self.shard(&t.key())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fail(t.key(), Instant::now());
        if newly {
            tracing::warn!(target_addr = %t, reason = why.label(), "target greylisted");
        }
    }

    /// `t` answered (any SIP response): healthy.
    pub fn answered(&self, t: &Target) {
        let was = self.grey[self.shard(&t.key())]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .succeed(t.key(), Instant::now());
        if was {
            tracing::info!(target_addr = %t, "target answers again");
        }
    }

    /// The cached services for `q`, re-resolved when their TTL ran out. One
    /// query at a time per name: concurrent callers wait for its answer.
    /// With an expired answer at hand, a slow re-resolution is waited for at
    /// most [`STALE_ANSWER_WAIT`]; it goes on in the background and its
    /// answer is used once it comes.
    async fn services(&self, q: &Query) -> Result<Arc<[Service]>, Error> {
        let slot = {
            let mut shard = self.cache[self.cache_shard(q)]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            shard.get_or_insert_with(q, Default::default)
        };
        let mut slot = slot.lock().await;
        let now = Instant::now();
        if let Some(e) = slot.entry.as_ref().filter(|e| e.valid_until > now) {
            return Ok(e.services.clone());
        }
        if let Some((e, until)) = &slot.negative
            && *until > now
        {
            return Err(e.clone());
        }
        let usable_stale = slot
            .entry
            .as_ref()
            .is_some_and(|e| now < e.valid_until + STALE_GRACE);
        // A re-resolution already running: do not wait for it again.
        let wait = match &slot.pending {
            Some(t) if !t.is_finished() => Duration::ZERO,
            _ => STALE_ANSWER_WAIT,
        };
        let mut task = match slot.pending.take() {
            Some(t) => t,
            None => {
                let fetcher = self.fetcher.clone();
                let q = q.clone();
                tokio::spawn(async move { fetcher.fetch(&q).await })
            }
        };
        let fetched = if usable_stale {
            match tokio::time::timeout(wait, &mut task).await {
                Ok(joined) => joined_result(q, joined),
                Err(_) => {
                    slot.pending = Some(task);
                    Err(Error::Unreachable {
                        host: q.host.clone(),
                        reason: format!("no answer within {} ms", STALE_ANSWER_WAIT.as_millis()),
                    })
                }
            }
        } else {
            joined_result(q, task.await)
        };
        match fetched {
            Ok((services, valid_until)) => {
                if slot.entry.as_ref().is_some_and(|e| e.stale) {
                    tracing::info!(host = %q.host, "DNS answers again");
                }
                let now = Instant::now();
                let valid_until = valid_until.clamp(now + MIN_VALIDITY, now + MAX_VALIDITY);
                let services: Arc<[Service]> = services.into();
                slot.negative = None;
                slot.entry = Some(Entry {
                    services: services.clone(),
                    valid_until,
                    stale: false,
                });
                Ok(services)
            }
            Err(Error::Unreachable { host, reason }) => match slot.entry.as_mut() {
                Some(e) if usable_stale => {
                    if !e.stale {
                        tracing::warn!(
                            host = %host,
                            error = %reason,
                            grace_sec = STALE_GRACE.as_secs(),
                            "DNS unreachable; using the last good answer"
                        );
                        e.stale = true;
                    }
                    Ok(e.services.clone())
                }
                _ => {
                    let e = Error::Unreachable { host, reason };
                    slot.negative = Some((e.clone(), Instant::now() + NEGATIVE_TTL));
                    Err(e)
                }
            },
            Err(e) => {
                // An authoritative "no such service" replaces the old answer.
                slot.entry = None;
                slot.negative = Some((e.clone(), Instant::now() + NEGATIVE_TTL));
                Err(e)
            }
        }
    }
}

fn joined_result(q: &Query, joined: Result<Fetched, tokio::task::JoinError>) -> Fetched {
    joined.unwrap_or_else(|e| {
        Err(Error::Unreachable {
            host: q.host.clone(),
            reason: format!("resolution task failed: {e}"),
        })
    })
}

/// The queries of one resolution, owned so that it can outlive a caller
/// that stopped waiting.
#[derive(Clone)]
struct Fetcher {
    lookup: Arc<dyn Lookup>,
    allowed: Arc<[Transport]>,
}

impl Fetcher {
    async fn fetch(&self, q: &Query) -> Fetched {
        let mut valid_until = Instant::now() + MAX_VALIDITY;
        let mut skipped = Skipped::default();
        let services = match rfc3263::plan(q, &self.allowed) {
            Plan::Numeric(..) => unreachable!("numeric targets are not cached"),
            Plan::Address {
                host,
                port,
                transport,
            } => vec![
                self.address_service(&host, port, transport, &mut valid_until)
                    .await?,
            ],
            Plan::Srv { host, transport } => {
                let name = rfc3263::srv_name(&host, transport);
                match self
                    .srv_service(&name, transport, &mut valid_until, &mut skipped)
                    .await?
                {
                    Some(s) => vec![s],
                    None => vec![
                        self.address_service(
                            &host,
                            transport.default_port(),
                            transport,
                            &mut valid_until,
                        )
                        .await
                        .map_err(|e| skipped.or(e))?,
                    ],
                }
            }
            Plan::Naptr { host, allowed } => {
                let mut out = Vec::new();
                let mut asked = Vec::new();
                match self.lookup.naptr(&host).await {
                    Ok(ans) => {
                        valid_until = valid_until.min(ans.valid_until);
                        for (transport, name) in rfc3263::naptr_services(&ans.records, &allowed) {
                            self.add_srv(
                                &name,
                                transport,
                                &mut out,
                                &mut asked,
                                &mut skipped,
                                &mut valid_until,
                            )
                            .await;
                        }
                    }
                    Err(LookupError::NoRecords) => {}
                    Err(e) => {
                        tracing::debug!(host = %host, error = %e, "NAPTR lookup failed; going on with SRV");
                        skipped.note(Error::Unreachable {
                            host: host.clone(),
                            reason: format!("NAPTR: {e}"),
                        });
                    }
                }
                if out.is_empty() {
                    // §4.1: no usable NAPTR: SRV for each transport we support.
                    for &t in &allowed {
                        let name = rfc3263::srv_name(&host, t);
                        self.add_srv(
                            &name,
                            t,
                            &mut out,
                            &mut asked,
                            &mut skipped,
                            &mut valid_until,
                        )
                        .await;
                    }
                }
                if out.is_empty() {
                    let t = rfc3263::fallback_transport(&allowed);
                    out.push(
                        self.address_service(&host, t.default_port(), t, &mut valid_until)
                            .await
                            .map_err(|e| skipped.or(e))?,
                    );
                }
                out
            }
        };
        Ok((services, valid_until))
    }

    /// One SRV service of a NAPTR resolution, added to `out` when it
    /// resolves; otherwise noted and skipped, and the next one is tried
    /// (§4.1). `asked`: SRV names already queried, each asked once.
    async fn add_srv(
        &self,
        name: &str,
        transport: Transport,
        out: &mut Vec<Service>,
        asked: &mut Vec<String>,
        skipped: &mut Skipped,
        valid_until: &mut Instant,
    ) {
        if asked.iter().any(|a| a == name) {
            return;
        }
        asked.push(name.to_owned());
        match self
            .srv_service(name, transport, valid_until, skipped)
            .await
        {
            Ok(Some(s)) => out.push(s),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "SRV service skipped");
                skipped.note(e);
            }
        }
    }

    /// The SRV records at `name` with the addresses of their targets; None
    /// when there is no SRV record, or when the SRV query itself failed (the
    /// failure goes to `skipped`): either way §4.2 goes on with A/AAAA.
    /// Records whose targets do not resolve are an error, not a fallback:
    /// the service exists.
    async fn srv_service(
        &self,
        name: &str,
        transport: Transport,
        valid_until: &mut Instant,
        skipped: &mut Skipped,
    ) -> Result<Option<Service>, Error> {
        let ans: Answer<SrvRecord> = match self.lookup.srv(name).await {
            Ok(a) => a,
            Err(LookupError::NoRecords) => return Ok(None),
            Err(e) => {
                tracing::debug!(srv = name, error = %e, "SRV lookup failed; going on without it");
                skipped.note(Error::Unreachable {
                    host: name.to_owned(),
                    reason: e.to_string(),
                });
                return Ok(None);
            }
        };
        if ans.records.is_empty() {
            return Ok(None);
        }
        if srv::not_available(&ans.records) {
            return Err(Error::NotAvailable {
                host: name.to_owned(),
            });
        }
        *valid_until = (*valid_until).min(ans.valid_until);
        let mut records = Vec::new();
        let mut addrs = Vec::new();
        let mut last_failure = None;
        for rec in ans.records.into_iter().filter(|r| r.target != ".") {
            match self.lookup.ip(&rec.target).await {
                Ok(a) if !a.records.is_empty() => {
                    *valid_until = (*valid_until).min(a.valid_until);
                    addrs.push(a.records);
                    records.push(rec);
                }
                Ok(_) | Err(LookupError::NoRecords) => {
                    tracing::warn!(srv = name, target_host = %rec.target, "SRV target has no address; skipped");
                }
                Err(e) => {
                    tracing::warn!(srv = name, target_host = %rec.target, error = %e, "SRV target lookup failed; skipped");
                    last_failure = Some(e);
                }
            }
        }
        if records.is_empty() {
            // A lookup that failed (rather than found nothing) is a DNS
            // outage: the last good answer may still be served.
            if let Some(e) = last_failure {
                return Err(Error::Unreachable {
                    host: name.to_owned(),
                    reason: e.to_string(),
                });
            }
            return Err(Error::NotFound {
                host: name.to_owned(),
            });
        }
        Ok(Some(Service {
            transport,
            records,
            addrs,
        }))
    }

    async fn address_service(
        &self,
        host: &str,
        port: u16,
        transport: Transport,
        valid_until: &mut Instant,
    ) -> Result<Service, Error> {
        match self.lookup.ip(host).await {
            Ok(a) if !a.records.is_empty() => {
                *valid_until = (*valid_until).min(a.valid_until);
                Ok(Service {
                    transport,
                    records: vec![SrvRecord {
                        priority: 0,
                        weight: 0,
                        port,
                        target: host.to_owned(),
                    }],
                    addrs: vec![a.records],
                })
            }
            Ok(_) | Err(LookupError::NoRecords) => Err(Error::NotFound {
                host: host.to_owned(),
            }),
            Err(e) => Err(Error::Unreachable {
                host: host.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

/// What a resolution went past on its way to the addresses. NAPTR is
/// optional (RFC 3263 §4.1) and a missing SRV falls back to A/AAAA (§4.2);
/// a lookup that fails at either step (REFUSED, SERVFAIL, timeout) is
/// skipped as if it had found nothing, since resolvers refuse or drop the
/// types they hold no data for. It is reported only when nothing resolves.
#[derive(Debug, Default)]
struct Skipped(Option<Error>);

impl Skipped {
    /// Keeps the more telling of `e` and what was kept: a failed lookup
    /// over "not available" over "not found" (a failure means the records
    /// may exist, so the last good answer stays usable), and at the same
    /// rank the later step, nearer the addresses.
    fn note(&mut self, e: Error) {
        if self.0.as_ref().is_none_or(|kept| rank(&e) >= rank(kept)) {
            self.0 = Some(e);
        }
    }

    /// The error of a resolution whose last step failed with `last`.
    fn or(self, last: Error) -> Error {
        match self.0 {
            Some(kept) if rank(&kept) > rank(&last) => kept,
            _ => last,
        }
    }
}

fn rank(e: &Error) -> u8 {
    match e {
        Error::NotFound { .. } => 0,
        Error::NotAvailable { .. } => 1,
        Error::Unreachable { .. } | Error::Setup(_) => 2,
    }
}

#[cfg(test)]
mod tests;
