//! RFC 3263 §4 "Client usage", pure: which lookups a SIP URI calls for
//! (numeric IP, explicit port, NAPTR, SRV, A/AAAA) and how NAPTR records
//! map to transports and SRV names.

use std::net::{IpAddr, SocketAddr};

use crate::config::{ProxyUri, Transport};

/// The parts of a SIP URI that decide resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    /// Domain, or an IP literal (IPv6 with or without brackets).
    pub host: String,
    pub port: Option<u16>,
    /// From `;transport=`, or fixed by the caller (a connection's transport).
    pub transport: Option<Transport>,
    /// `sips:` scheme: TLS only (RFC 3263 §4.1).
    pub sips: bool,
}

impl Query {
    /// A URI whose transport is decided by the URI alone.
    pub fn from_uri(uri: &ProxyUri) -> Query {
        Query {
            host: uri.host.clone(),
            port: uri.port,
            transport: uri.transport,
            sips: uri.tls,
        }
    }

    /// The URI with the transport already chosen by the caller (a
    /// connection's configured transport); `transport=` and `sips:` in the
    /// URI still win.
    pub fn with_transport(uri: &ProxyUri, configured: Transport) -> Query {
        Query {
            transport: Some(uri.transport_or(configured)),
            ..Query::from_uri(uri)
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// The name the TLS certificate must match: the URI's host (RFC 5922
    /// §4), never a name learnt from SRV.
    pub fn server_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// What to look up, per RFC 3263 §4.1 (transport) and §4.2 (port and IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A numeric IP: no DNS at all.
    Numeric(SocketAddr, Transport),
    /// An explicit port: A/AAAA of the host only, no SRV (§4.2).
    Address {
        host: String,
        port: u16,
        transport: Transport,
    },
    /// The transport is known: SRV for it, else A/AAAA on its default port.
    Srv { host: String, transport: Transport },
    /// Nothing known: NAPTR, then SRV per allowed transport, then A/AAAA.
    Naptr {
        host: String,
        allowed: Vec<Transport>,
    },
}

/// Decides the lookups for `q`. `allowed` are the transports this client
/// can use, most preferred first; it is never empty in practice (UDP).
pub fn plan(q: &Query, allowed: &[Transport]) -> Plan {
    let transport = Transport::named_by(q.sips, q.transport);
    // §4.1: a numeric IP or an explicit port without transport= means UDP
    // for sip: (and TLS over TCP for sips:, which `named_by` already says).
    let implied = || transport.unwrap_or(Transport::Udp);
    if let Some(ip) = q.ip() {
        let t = implied();
        return Plan::Numeric(SocketAddr::new(ip, q.port.unwrap_or(t.default_port())), t);
    }
    let host = q.host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(port) = q.port {
        return Plan::Address {
            host,
            port,
            transport: implied(),
        };
    }
    match transport {
        Some(t) => Plan::Srv { host, transport: t },
        None => Plan::Naptr {
            host,
            allowed: allowed.to_vec(),
        },
    }
}

/// The SRV owner name for a transport (RFC 3263 §4.1, RFC 2782).
pub fn srv_name(host: &str, transport: Transport) -> String {
    let service = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
    };
    format!("{service}.{host}")
}

/// The transport used when no NAPTR and no SRV record exists: UDP for
/// `sip:` (§4.1), or the first allowed one when UDP is not.
pub fn fallback_transport(allowed: &[Transport]) -> Transport {
    if allowed.is_empty() || allowed.contains(&Transport::Udp) {
        Transport::Udp
    } else {
        allowed[0]
    }
}

/// One NAPTR record as the selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
}

/// The NAPTR records usable for SIP, in processing order (order, then
/// preference: RFC 3403 §4.1), as `(transport, SRV name)`: only terminal
/// `s` records with a SIP service (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`) whose
/// transport is allowed (RFC 3263 §4.1).
pub fn naptr_services(records: &[NaptrRecord], allowed: &[Transport]) -> Vec<(Transport, String)> {
    let mut usable: Vec<&NaptrRecord> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter(|r| !r.replacement.is_empty() && r.replacement != ".")
        .collect();
    usable.sort_by_key(|r| (r.order, r.preference));
    usable
        .into_iter()
        .filter_map(|r| {
            let t = match r.services.to_ascii_uppercase().as_str() {
                "SIP+D2U" => Transport::Udp,
                "SIP+D2T" => Transport::Tcp,
                "SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            allowed
                .contains(&t)
                .then(|| (t, r.replacement.trim_end_matches('.').to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transport::*;

    fn q(host: &str, port: Option<u16>, transport: Option<Transport>, sips: bool) -> Query {
        Query {
            host: host.into(),
            port,
            transport,
            sips,
        }
    }

    const ALL: [Transport; 3] = [Udp, Tcp, Tls];

    #[test]
    fn numeric_ip_uses_it_with_default_port_per_transport() {
        assert_eq!(
            plan(&q("192.0.2.1", None, None, false), &ALL),
            Plan::Numeric("192.0.2.1:5060".parse().unwrap(), Udp)
        );
        assert_eq!(
            plan(&q("192.0.2.1", None, None, true), &ALL),
            Plan::Numeric("192.0.2.1:5061".parse().unwrap(), Tls)
        );
        assert_eq!(
            plan(&q("192.0.2.1", Some(5070), Some(Tcp), false), &ALL),
            Plan::Numeric("192.0.2.1:5070".parse().unwrap(), Tcp)
        );
        assert_eq!(
            plan(&q("[2001:db8::1]", None, Some(Tls), false), &ALL),
            Plan::Numeric("[2001:db8::1]:5061".parse().unwrap(), Tls)
        );
        assert_eq!(
            plan(&q("2001:db8::1", Some(7000), None, false), &ALL),
            Plan::Numeric("[2001:db8::1]:7000".parse().unwrap(), Udp)
        );
    }

    #[test]
    fn explicit_port_means_address_records_only() {
        assert_eq!(
            plan(&q("PBX.example.com.", Some(5080), None, false), &ALL),
            Plan::Address {
                host: "pbx.example.com".into(),
                port: 5080,
                transport: Udp
            }
        );
        assert_eq!(
            plan(&q("pbx.example.com", Some(5081), None, true), &ALL),
            Plan::Address {
                host: "pbx.example.com".into(),
                port: 5081,
                transport: Tls
            }
        );
        assert_eq!(
            plan(&q("pbx.example.com", Some(5080), Some(Tcp), false), &ALL),
            Plan::Address {
                host: "pbx.example.com".into(),
                port: 5080,
                transport: Tcp
            }
        );
    }

    #[test]
    fn known_transport_goes_to_srv() {
        assert_eq!(
            plan(&q("pbx.example.com", None, Some(Tcp), false), &ALL),
            Plan::Srv {
                host: "pbx.example.com".into(),
                transport: Tcp
            }
        );
        // sips: wins over transport=tcp (TLS over TCP).
        assert_eq!(
            plan(&q("pbx.example.com", None, Some(Tcp), true), &ALL),
            Plan::Srv {
                host: "pbx.example.com".into(),
                transport: Tls
            }
        );
        assert_eq!(
            plan(&q("pbx.example.com", None, None, true), &ALL),
            Plan::Srv {
                host: "pbx.example.com".into(),
                transport: Tls
            }
        );
    }

    #[test]
    fn nothing_known_goes_to_naptr() {
        assert_eq!(
            plan(&q("example.com", None, None, false), &[Udp, Tcp]),
            Plan::Naptr {
                host: "example.com".into(),
                allowed: vec![Udp, Tcp]
            }
        );
    }

    #[test]
    fn with_transport_lets_the_uri_win() {
        let uri = |tls, transport| ProxyUri {
            tls,
            host: "pbx.example.com".into(),
            port: None,
            transport,
        };
        assert_eq!(
            Query::with_transport(&uri(false, None), Tcp).transport,
            Some(Tcp)
        );
        assert_eq!(
            Query::with_transport(&uri(false, Some(Udp)), Tcp).transport,
            Some(Udp)
        );
        assert_eq!(
            Query::with_transport(&uri(true, None), Udp).transport,
            Some(Tls)
        );
    }

    #[test]
    fn srv_names() {
        assert_eq!(srv_name("example.com", Udp), "_sip._udp.example.com");
        assert_eq!(srv_name("example.com", Tcp), "_sip._tcp.example.com");
        assert_eq!(srv_name("example.com", Tls), "_sips._tcp.example.com");
    }

    fn n(order: u16, pref: u16, flags: &str, services: &str, repl: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference: pref,
            flags: flags.into(),
            services: services.into(),
            replacement: repl.into(),
        }
    }

    #[test]
    fn naptr_ordered_filtered_and_mapped() {
        let recs = vec![
            n(50, 50, "s", "SIP+D2U", "_sip._udp.example.com."),
            n(10, 60, "S", "SIPS+D2T", "_sips._tcp.example.com."),
            n(10, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
            n(5, 5, "u", "SIP+D2U", "_bad.example.com."),
            n(5, 5, "s", "E2U+sip", "_enum.example.com."),
            n(6, 5, "s", "SIP+D2S", "_sctp.example.com."),
            n(7, 5, "s", "SIP+D2U", "."),
        ];
        assert_eq!(
            naptr_services(&recs, &ALL),
            vec![
                (Tcp, "_sip._tcp.example.com".to_string()),
                (Tls, "_sips._tcp.example.com".to_string()),
                (Udp, "_sip._udp.example.com".to_string()),
            ]
        );
        assert_eq!(
            naptr_services(&recs, &[Udp]),
            vec![(Udp, "_sip._udp.example.com".to_string())]
        );
        assert!(naptr_services(&[], &ALL).is_empty());
    }

    #[test]
    fn fallback_is_udp_unless_not_allowed() {
        assert_eq!(fallback_transport(&ALL), Udp);
        assert_eq!(fallback_transport(&[Tcp, Tls]), Tcp);
        assert_eq!(fallback_transport(&[]), Udp);
    }
}
