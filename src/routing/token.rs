//! Dialog tokens: what lets an in-dialog request through uacd, with no
//! table and across restarts.
//!
//! A proxy that record-routes is asked to relay whatever a dialog's ends
//! put in their Route sets (RFC 3261 §16.12); on a public address that is
//! an open relay unless the proxy can tell a genuine route set from a
//! forged or copied one. Each end gets its own token in our Record-Route
//! entries: the destination side in the INVITE we forward, the PBX in the
//! 1xx/2xx we relay back (a proxy may rewrite its own Record-Route values in
//! responses, §16.7 item 4). A token binds, under the daemon's key:
//! - the Call-ID;
//! - the end it was given to and the address that end sends from (the
//!   PBX's INVITE source; the destination target the INVITE went to);
//! - the next hop that the *other* end advertised for that end's requests
//!   (§12.1.1, §12.1.2: the Record-Route entry nearest to us, else the
//!   Contact), as host, port, transport and scheme;
//! - an epoch (hours since the Unix epoch), so a token ages out after
//!   [`MAX_AGE_HOURS`];
//! - for the destination's token, the way back to the PBX ([`Back`]): the
//!   transport and source address its INVITE came from. A PBX behind NAT
//!   advertises a private Contact; its in-dialog requests are then sent
//!   where its INVITE came from (the flow for TCP/TLS, the address and port
//!   for UDP), as a registered phone's are, and that survives a restart
//!   because the token carries it.
//!
//! An in-dialog request is relayed only when a token in our Route entries
//! verifies for its Call-ID and its source ([`verify`]), and only to the hop
//! that token names or to a target the other end moved to with a target
//! refresh we relayed (§12.2; the dialog table remembers those). Copying a
//! token therefore gets a third party nothing: from another address it does
//! not verify, and from the right one it reaches only the dialog's other end.
//!
//! Pure: the key, the epoch and the addresses are inputs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::config::Transport;
use crate::sip::{Host, Scheme, Uri};

/// The Record-Route URI parameter carrying the token.
pub const TOKEN_PARAM: &str = "uacd";

/// How long a token is honoured after it was issued. Dialogs rarely last a
/// day; the bound keeps a token seen once from being replayed by its own end
/// forever. Session timers (RFC 4028) do not renew the route set, so this is
/// also the longest call whose in-dialog requests still get through.
pub const MAX_AGE_HOURS: u32 = 7 * 24;

/// Tokens dated up to this far in the future are accepted (clocks of nodes
/// sharing a key).
const SKEW_HOURS: u32 = 1;

/// The end of a dialog a token was given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// The customer's PBX.
    Pbx,
    /// `destination_uri`'s side.
    Destination,
}

impl End {
    fn letter(self) -> char {
        match self {
            End::Pbx => 'p',
            End::Destination => 'd',
        }
    }

    fn from_letter(c: &str) -> Option<End> {
        match c {
            "p" => Some(End::Pbx),
            "d" => Some(End::Destination),
            _ => None,
        }
    }

    /// The other end.
    pub fn other(self) -> End {
        match self {
            End::Pbx => End::Destination,
            End::Destination => End::Pbx,
        }
    }
}

/// A next hop as a URI names it: what RFC 3263 resolution starts from
/// (scheme, host, port, transport, `maddr`), normalised so that the same
/// hop written differently compares equal (domain case and root dot,
/// parameter case).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HopId(String);

impl HopId {
    pub fn of(uri: &Uri) -> HopId {
        let mut s = String::with_capacity(64);
        s.push_str(match uri.scheme {
            Scheme::Sips => "sips",
            _ => "sip",
        });
        s.push(':');
        push_host(&mut s, &uri.host);
        match uri.port {
            Some(p) => {
                let _ = write!(s, ":{p}");
            }
            None => s.push_str(":-"),
        }
        for name in ["transport", "maddr"] {
            s.push(';');
            if let Some(v) = uri.params.value(name) {
                s.push_str(&v.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        HopId(s)
    }

    /// A hop nothing matches: a token for an end whose peer advertised no
    /// usable target verifies, but reaches only refreshed targets.
    pub fn none() -> HopId {
        HopId(String::new())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn push_host(s: &mut String, host: &Host) {
    match host.ip() {
        Some(IpAddr::V6(v6)) => {
            let _ = write!(s, "[{v6}]");
        }
        Some(ip) => {
            let _ = write!(s, "{ip}");
        }
        None => match host {
            Host::Domain(d) => s.push_str(&d.trim_end_matches('.').to_ascii_lowercase()),
            other => {
                let _ = write!(s, "{other}");
            }
        },
    }
}

/// Where requests toward the PBX go instead of its hop's address: the
/// transport and source of its INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Back {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Back {
    /// `<t><ip hex><port hex>` (URI-parameter safe, no `.`).
    fn encode(self) -> String {
        let t = match self.transport {
            Transport::Udp => 'u',
            Transport::Tcp => 't',
            Transport::Tls => 's',
        };
        let ip = match self.addr.ip().to_canonical() {
            IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
            IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
        };
        format!("{t}{ip}{:04x}", self.addr.port())
    }

    fn decode(s: &str) -> Option<Back> {
        let transport = match s.get(..1)? {
            "u" => Transport::Udp,
            "t" => Transport::Tcp,
            "s" => Transport::Tls,
            _ => return None,
        };
        let hex = s.get(1..)?;
        let (ip, port) = hex.split_at_checked(hex.len().checked_sub(4)?)?;
        let ip = match ip.len() {
            8 => IpAddr::from(std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?)),
            32 => IpAddr::from(std::net::Ipv6Addr::from(u128::from_str_radix(ip, 16).ok()?)),
            _ => return None,
        };
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(Back {
            transport,
            addr: SocketAddr::new(ip, port),
        })
    }
}

/// One token's content.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    pub call_id: &'a str,
    /// The end that holds the token.
    pub holder: End,
    /// Where the holder sends from.
    pub from: IpAddr,
    /// The next hop the holder's requests may go to.
    pub to: &'a HopId,
    /// Where requests to that hop are sent instead (see [`Back`]).
    pub back: Option<Back>,
}

/// The epoch of a Unix time in seconds.
pub fn epoch_of(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / 3600).unwrap_or(u32::MAX)
}

/// The current epoch.
pub fn now_epoch() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    epoch_of(secs)
}

/// A source address as compared: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn holder_mac(key: &[u8; 16], epoch: u32, holder: End, call_id: &str, from: IpAddr) -> String {
    let from = canonical(from).to_string();
    let letter = [holder.letter() as u8];
    super::tag(
        key,
        &[
            b"rr2\0",
            &epoch.to_be_bytes(),
            &letter,
            call_id.as_bytes(),
            b"\0",
            from.as_bytes(),
        ],
    )
}

fn hop_mac(key: &[u8; 16], holder_mac: &str, hop: &HopId, back: &str) -> String {
    super::tag(
        key,
        &[
            b"rh\0",
            holder_mac.as_bytes(),
            b"\0",
            hop.as_bytes(),
            b"\0",
            back.as_bytes(),
        ],
    )
}

/// The token for `grant`, issued at `epoch`:
/// `<epoch>.<end>.<mac>.<mac>[.<back>]`.
pub fn issue(key: &[u8; 16], epoch: u32, grant: &Grant<'_>) -> String {
    let m1 = holder_mac(key, epoch, grant.holder, grant.call_id, grant.from);
    let back = grant.back.map(Back::encode).unwrap_or_default();
    let m2 = hop_mac(key, &m1, grant.to, &back);
    let mut t = format!("{epoch:x}.{}.{m1}.{m2}", grant.holder.letter());
    if !back.is_empty() {
        t.push('.');
        t.push_str(&back);
    }
    t
}

/// What a token says about one in-dialog request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Issued by us for this Call-ID to the end at this source; `hop_signed`:
    /// the request's next hop is the one the token names (otherwise it may
    /// go only to a target that end's peer moved to, §12.2). `back`: where a
    /// request to the signed hop is sent ([`Back`]).
    Valid {
        holder: End,
        hop_signed: bool,
        back: Option<Back>,
    },
    /// Forged, altered, for another dialog, from another source, or expired.
    Invalid,
}

/// Checks `token` for a request of `call_id` from `from` whose next hop is
/// `next`, at `now` (an epoch).
pub fn verify(
    key: &[u8; 16],
    token: &str,
    call_id: &str,
    from: IpAddr,
    next: &HopId,
    now: u32,
) -> Verdict {
    let mut parts = token.split('.');
    let (Some(epoch), Some(end), Some(m1), Some(m2), back_text, None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Verdict::Invalid;
    };
    let back = match back_text.map(Back::decode) {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => return Verdict::Invalid,
    };
    let (Ok(epoch), Some(holder)) = (u32::from_str_radix(epoch, 16), End::from_letter(end)) else {
        return Verdict::Invalid;
    };
    if epoch > now.saturating_add(SKEW_HOURS) || now.saturating_sub(epoch) > MAX_AGE_HOURS {
        return Verdict::Invalid;
    }
    let expected = holder_mac(key, epoch, holder, call_id, from);
    if !super::tags_match(m1, &expected) {
        return Verdict::Invalid;
    }
    let hop_signed = super::tags_match(m2, &hop_mac(key, &expected, next, back_text.unwrap_or("")));
    Verdict::Valid {
        holder,
        hop_signed,
        back: back.filter(|_| hop_signed),
    }
}

/// The token among `values` (the `uacd` parameters of our Route entries)
/// that verifies, if any.
pub fn verify_any<'a>(
    key: &[u8; 16],
    values: impl IntoIterator<Item = &'a str>,
    call_id: &str,
    from: IpAddr,
    next: &HopId,
    now: u32,
) -> Verdict {
    let mut best = Verdict::Invalid;
    for v in values {
        match verify(key, v, call_id, from, next, now) {
            Verdict::Invalid => {}
            found @ Verdict::Valid {
                hop_signed: true, ..
            } => return found,
            found => best = found,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = *b"0123456789abcdef";
    const PBX: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
    const DEST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5));
    const NOW: u32 = 500_000;

    fn hop(s: &str) -> HopId {
        HopId::of(&s.parse().unwrap())
    }

    fn pbx_token(call_id: &str, to: &str) -> String {
        let to = hop(to);
        let grant = Grant {
            call_id,
            holder: End::Pbx,
            from: PBX,
            to: &to,
            back: None,
        };
        issue(&KEY, NOW, &grant)
    }

    #[test]
    fn a_token_verifies_for_its_call_source_and_hop_only() {
        let t = pbx_token("c1", "sip:1006@203.0.113.5:5070;transport=tcp");
        let ok = Verdict::Valid {
            holder: End::Pbx,
            hop_signed: true,
            back: None,
        };
        let to = hop("sip:203.0.113.5:5070;transport=TCP");
        assert_eq!(
            verify(&KEY, &t, "c1", PBX, &to, NOW),
            ok,
            "user and case do not matter"
        );
        // Another Call-ID, another source, another key: nothing.
        assert_eq!(verify(&KEY, &t, "c2", PBX, &to, NOW), Verdict::Invalid);
        assert_eq!(verify(&KEY, &t, "c1", DEST, &to, NOW), Verdict::Invalid);
        assert_eq!(
            verify(b"fedcba9876543210", &t, "c1", PBX, &to, NOW),
            Verdict::Invalid
        );
        // The right end toward another host, port, transport or scheme: the
        // token is genuine but does not name that hop.
        let genuine_elsewhere = Verdict::Valid {
            holder: End::Pbx,
            hop_signed: false,
            back: None,
        };
        for other in [
            "sip:192.0.2.66:5070;transport=tcp",
            "sip:203.0.113.5:5071;transport=tcp",
            "sip:203.0.113.5:5070;transport=udp",
            "sip:203.0.113.5:5070",
            "sips:203.0.113.5:5070;transport=tcp",
            "sip:203.0.113.5:5070;transport=tcp;maddr=192.0.2.66",
        ] {
            assert_eq!(
                verify(&KEY, &t, "c1", PBX, &hop(other), NOW),
                genuine_elsewhere,
                "{other}"
            );
        }
    }

    #[test]
    fn altered_or_malformed_tokens_are_invalid() {
        let t = pbx_token("c1", "sip:203.0.113.5");
        let to = hop("sip:203.0.113.5");
        let d = t.replacen(".p.", ".d.", 1);
        assert_eq!(
            verify(&KEY, &d, "c1", PBX, &to, NOW),
            Verdict::Invalid,
            "end flipped"
        );
        let later = format!("{:x}{}", NOW + 1, &t[t.find('.').unwrap()..]);
        assert_eq!(
            verify(&KEY, &later, "c1", PBX, &to, NOW),
            Verdict::Invalid,
            "epoch moved"
        );
        for junk in [
            "",
            ".",
            "x.p.a.b",
            "7a120.p.",
            "7a120.q.00.00",
            &format!("{t}.x"),
        ] {
            assert_eq!(
                verify(&KEY, junk, "c1", PBX, &to, NOW),
                Verdict::Invalid,
                "{junk:?}"
            );
        }
    }

    #[test]
    fn tokens_age_out() {
        let t = pbx_token("c1", "sip:203.0.113.5");
        let to = hop("sip:203.0.113.5");
        let valid = |now| matches!(verify(&KEY, &t, "c1", PBX, &to, now), Verdict::Valid { .. });
        assert!(valid(NOW + MAX_AGE_HOURS));
        assert!(!valid(NOW + MAX_AGE_HOURS + 1));
        assert!(valid(NOW - SKEW_HOURS), "a node whose clock is behind");
        assert!(!valid(NOW - SKEW_HOURS - 1));
    }

    #[test]
    fn mapped_ipv6_sources_are_their_ipv4_address() {
        let t = pbx_token("c1", "sip:203.0.113.5");
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert!(matches!(
            verify(&KEY, &t, "c1", mapped, &hop("sip:203.0.113.5"), NOW),
            Verdict::Valid { .. }
        ));
    }

    #[test]
    fn verify_any_prefers_a_token_that_names_the_hop() {
        let a = pbx_token("c1", "sip:203.0.113.5");
        let b = pbx_token("c1", "sip:203.0.113.9");
        let next = hop("sip:203.0.113.9");
        assert_eq!(
            verify_any(
                &KEY,
                ["junk", a.as_str(), b.as_str()],
                "c1",
                PBX,
                &next,
                NOW
            ),
            Verdict::Valid {
                holder: End::Pbx,
                hop_signed: true,
                back: None,
            }
        );
        assert_eq!(
            verify_any(&KEY, ["junk"], "c1", PBX, &next, NOW),
            Verdict::Invalid
        );
    }

    #[test]
    fn the_way_back_is_carried_signed_and_only_for_the_signed_hop() {
        let to = hop("sip:200@10.0.0.9:5060");
        for addr in ["198.51.100.7:40123", "[2001:db8::7]:5061"] {
            for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
                let back = Back {
                    transport,
                    addr: addr.parse().unwrap(),
                };
                let grant = Grant {
                    call_id: "c1",
                    holder: End::Destination,
                    from: PBX,
                    to: &to,
                    back: Some(back),
                };
                let t = issue(&KEY, NOW, &grant);
                assert_eq!(
                    verify(&KEY, &t, "c1", PBX, &to, NOW),
                    Verdict::Valid {
                        holder: End::Destination,
                        hop_signed: true,
                        back: Some(back)
                    },
                    "{t}"
                );
                // Toward another hop the way back does not apply.
                assert_eq!(
                    verify(&KEY, &t, "c1", PBX, &hop("sip:10.0.0.10"), NOW),
                    Verdict::Valid {
                        holder: End::Destination,
                        hop_signed: false,
                        back: None
                    }
                );
                // A way back swapped for another is not ours.
                let other = Back {
                    transport,
                    addr: "192.0.2.66:5060".parse().unwrap(),
                };
                let (head, _) = t.rsplit_once('.').unwrap();
                let forged = format!("{head}.{}", other.encode());
                assert!(matches!(
                    verify(&KEY, &forged, "c1", PBX, &to, NOW),
                    Verdict::Valid {
                        hop_signed: false,
                        back: None,
                        ..
                    }
                ));
                assert_eq!(
                    verify(&KEY, &format!("{head}.x12"), "c1", PBX, &to, NOW),
                    Verdict::Invalid
                );
            }
        }
    }

    #[test]
    fn hop_ids_normalise_spelling_not_meaning() {
        assert_eq!(hop("sip:PBX.Example.:5060"), hop("sip:pbx.example:5060"));
        assert_eq!(hop("sip:[::1]:5060"), hop("sip:[0:0::1]:5060"));
        assert_ne!(hop("sip:pbx.example"), hop("sip:pbx.example:5060"));
        assert_ne!(HopId::none(), hop("sip:pbx.example"));
    }
}
