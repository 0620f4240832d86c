//! Calls toward a PBX: an internal application's INVITE for
//! `sip:<extension>@<user_name>.<sip.domain>` reaches the connection's PBX
//! as a call from the registered endpoint. uacd stays a record-routing
//! proxy (RFC 3261 §16) that answers the PBX's digest challenges itself,
//! the way Kamailio's `uac_auth()` does with its dialog module: the
//! internal side and the PBX each see a dialog of their own, which
//! differ in three places only:
//! - the caller's identity: the internal From toward the internal side,
//!   `sip:<from_user>@<proxy domain>` toward the PBX;
//! - the callee's: the internal To, `sip:<extension>@<proxy domain>`;
//! - the CSeq of the caller's requests: each challenge answered resends the
//!   request with the next CSeq (§22.2), so the PBX's numbers run ahead of
//!   the caller's by the number of challenges answered so far;
//! - the caller's Contact (§12.1.1, the remote target): toward the PBX it
//!   is our registered Contact, as a desk phone's INVITE carries its own,
//!   so the PBX never learns an internal address; the PBX's requests to it
//!   are sent on to the caller's real Contact ([`Mapping::caller_target`]).
//!
//! Dialog identifiers (Call-ID, tags) and bodies pass unchanged: §12
//! matches dialogs by Call-ID and tags, so both views stay consistent.
//!
//! Pure: which connection a host names, the two views ([`Mapping`]), and
//! the answer to a challenge ([`answer_challenge`]).

use crate::sip::digest::{self, Credentials, NonceCounts};
use crate::sip::{HeaderName, Message, NameAddr, Uri};

/// The connection `user_name` a Request-URI host names under
/// `sip.domain`: `<user_name>.<domain>`, compared without case.
pub fn connection_user<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let cut = host.len().checked_sub(domain.len() + 1)?;
    let (user, rest) = host.split_at(cut);
    (rest.as_bytes()[0] == b'.'
        && rest[1..].eq_ignore_ascii_case(domain)
        && !user.is_empty()
        && !user.contains('.'))
    .then_some(user)
}

/// Toward which side a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The application that placed the call.
    Internal,
    /// The customer's PBX.
    Pbx,
}

/// One identity of the dialog (a From or To without its tag) as each side
/// sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    internal: String,
    pbx: String,
}

impl Identity {
    fn on(&self, side: Side) -> &str {
        match side {
            Side::Internal => &self.internal,
            Side::Pbx => &self.pbx,
        }
    }
}

/// The two views of one call toward a PBX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The caller's From tag: a From or To with this tag is the caller's
    /// identity, any other the callee's; a message whose From carries it
    /// belongs to a request of the caller (its CSeq is shifted).
    caller_tag: String,
    caller: Identity,
    callee: Identity,
    /// Added to the CSeq of the caller's requests toward the PBX.
    pub cseq_offset: u32,
    /// Our Contact URI as the PBX sees it (the registration's).
    our_contact: String,
    /// The caller's Contact URI: where the PBX's requests to
    /// `our_contact` go. Moved by the caller's target refreshes.
    caller_contact: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the INVITE's From has no tag")]
    NoFromTag,
    #[error(transparent)]
    Parse(#[from] crate::sip::ParseError),
}

/// `value` without its `tag` parameter.
fn untagged(mut na: NameAddr) -> String {
    na.params.remove("tag");
    na.to_string()
}

impl Mapping {
    /// The views of a call from `invite` (as the internal side sent it) to
    /// `extension` at the PBX of `domain` (host, and port when not the
    /// default), placed as `from_user` with our Contact `our_contact`. The
    /// caller's display name is kept.
    pub fn for_invite(
        invite: &Message,
        from_user: &str,
        extension: &str,
        domain: &str,
        our_contact: &str,
    ) -> Result<Mapping, MappingError> {
        let from = invite.from_header()?;
        let caller_tag = from.tag().ok_or(MappingError::NoFromTag)?.to_owned();
        let to = invite.to_header()?;
        let pbx_uri = |user: &str| -> Result<Uri, crate::sip::ParseError> {
            format!("sip:{user}@{domain}").parse()
        };
        let caller_pbx = NameAddr {
            display: from.display.clone(),
            ..NameAddr::new(pbx_uri(from_user)?)
        };
        Ok(Mapping {
            caller_tag,
            caller: Identity {
                internal: untagged(from),
                pbx: caller_pbx.to_string(),
            },
            callee: Identity {
                internal: untagged(to),
                pbx: NameAddr::new(pbx_uri(extension)?).to_string(),
            },
            cseq_offset: 0,
            our_contact: our_contact.to_owned(),
            caller_contact: first_contact(invite),
        })
    }

    /// Where a request of the PBX to our Contact goes: the caller's own.
    pub fn caller_target(&self) -> Option<&str> {
        self.caller_contact.as_deref()
    }

    /// The caller moved its target (a target refresh it sent, or its 2xx
    /// to the PBX's, §12.2): its new Contact, if `msg` carries one.
    pub fn follow_caller(&mut self, msg: &Message) {
        if let Some(c) = first_contact(msg) {
            self.caller_contact = Some(c);
        }
    }

    /// Whether `uri` is our Contact as given to the PBX (host and port;
    /// the PBX may drop parameters).
    pub fn is_our_contact(&self, uri: &Uri) -> bool {
        self.our_contact.parse::<Uri>().is_ok_and(|ours| {
            ours.host == uri.host && ours.port == uri.port && ours.user == uri.user
        })
    }

    /// Puts `msg` (a request or response of this dialog) in the view of
    /// `side`: From and To by their tags, and the CSeq of the caller's
    /// requests shifted by [`Mapping::cseq_offset`]. Toward the PBX, a
    /// request loses any credentials the internal side put in it (only
    /// uacd answers the PBX's challenges).
    pub fn apply(&self, msg: &mut Message, side: Side) {
        let mut callers = false;
        for name in [HeaderName::From, HeaderName::To] {
            msg.edit_fields(name, |v| {
                let na = NameAddr::parse(v, "From/To").ok()?;
                let tag = na.tag().map(str::to_owned);
                let caller = tag.as_deref() == Some(self.caller_tag.as_str());
                if caller && name == HeaderName::From {
                    callers = true;
                }
                let id = if caller { &self.caller } else { &self.callee };
                Some(match tag {
                    Some(t) => format!("{};tag={t}", id.on(side)),
                    None => id.on(side).to_owned(),
                })
            });
        }
        if callers && self.cseq_offset > 0 {
            msg.edit_fields(HeaderName::CSeq, |v| {
                let c = crate::sip::CSeq::parse(v).ok()?;
                let seq = match side {
                    Side::Pbx => c.seq.checked_add(self.cseq_offset)?,
                    Side::Internal => c.seq.checked_sub(self.cseq_offset)?,
                };
                Some(format!("{seq} {}", c.method))
            });
        }
        if side == Side::Pbx {
            // Everything toward the PBX comes from the caller's side: its
            // remote target is us (not a 3xx's list of alternatives).
            if msg.status().is_none_or(|c| c < 300) {
                let ours = format!("<{}>", self.our_contact);
                msg.edit_fields(HeaderName::Contact, |_| Some(ours.clone()));
            }
            if msg.is_request() {
                msg.remove_all(HeaderName::Authorization);
                msg.remove_all(HeaderName::ProxyAuthorization);
            }
            // RFC 3325 §9.1: the internal side's identity claims never reach
            // the PBX on their own, in any request or response; the initial
            // INVITE gets ours back when `assert_caller_identity` allows.
            msg.remove_named("P-Asserted-Identity");
            msg.remove_named("P-Preferred-Identity");
        }
    }
}

/// The URI of the first Contact of `msg`, if any.
fn first_contact(msg: &Message) -> Option<String> {
    msg.contacts()
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.uri.to_string())
}

/// Why a challenge was not answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefused {
    /// No usable Digest challenge in the 401/407.
    NoChallenge,
    /// A realm we answered already challenges again without `stale=true`:
    /// the credentials are wrong (answering again would loop).
    Rejected,
}

/// At most this many challenges are answered for one request and its
/// resends: one per realm for a proxy and a registrar (401 and 407), and one
/// `stale=true` renewal. A PBX that challenges beyond that (stale again, or
/// a new realm each time) gets no more resends.
pub const MAX_ANSWERS: usize = 3;

/// The challenges answered so far for one request and its resends.
#[derive(Clone, Debug, Default)]
pub struct Answered {
    realms: Vec<String>,
    counts: NonceCounts,
    answers: usize,
}

/// The `Authorization` / `Proxy-Authorization` headers answering the
/// challenges of `resp` (a 401 or 407, RFC 3261 §22.2, §22.3) to
/// `request` as sent, with `creds`; `cnonce` is fresh per call.
pub fn answer_challenge(
    resp: &Message,
    request: &Message,
    creds: &Credentials<'_>,
    answered: &mut Answered,
    cnonce: &str,
) -> Result<Vec<(&'static str, String)>, AuthRefused> {
    let (challenge_header, answer_header) = match resp.status() {
        Some(401) => (HeaderName::WwwAuthenticate, "Authorization"),
        Some(407) => (HeaderName::ProxyAuthenticate, "Proxy-Authorization"),
        _ => return Err(AuthRefused::NoChallenge),
    };
    let parsed: Vec<_> = resp
        .header_values(challenge_header)
        .into_iter()
        .filter_map(|v| digest::parse_challenge(&v).ok())
        .collect();
    let chosen = digest::select(&parsed);
    if chosen.is_empty() {
        return Err(AuthRefused::NoChallenge);
    }
    if answered.answers >= MAX_ANSWERS
        || chosen
            .iter()
            .any(|ch| !ch.stale && answered.realms.contains(&ch.realm))
    {
        return Err(AuthRefused::Rejected);
    }
    let (Some(method), Some(uri)) = (request.method(), request.request_uri()) else {
        return Err(AuthRefused::NoChallenge);
    };
    let uri = uri.to_string();
    answered.answers += 1;
    let mut out = Vec::with_capacity(chosen.len());
    for ch in chosen {
        if !answered.realms.contains(&ch.realm) {
            answered.realms.push(ch.realm.clone());
        }
        let nc = answered.counts.next(&ch.realm, &ch.nonce);
        let value =
            digest::authorization(ch, creds, method.as_str(), &uri, request.body(), cnonce, nc);
        out.push((answer_header, value));
    }
    Ok(out)
}

/// `sent` resent with `auth` (RFC 3261 §22.2): the same request with the
/// next CSeq, our Via `via` on top instead of the old one (a new
/// transaction), and the credentials in place of any earlier ones.
pub fn authenticated_resend(
    sent: &Message,
    auth: &[(&'static str, String)],
    via: &str,
) -> Option<Message> {
    let mut out = sent.clone();
    let cseq = sent.cseq().ok()?;
    out.set_header(
        HeaderName::CSeq,
        &format!("{} {}", cseq.seq.checked_add(1)?, cseq.method),
    );
    out.remove_all(HeaderName::Authorization);
    out.remove_all(HeaderName::ProxyAuthorization);
    for (name, value) in auth {
        out.append_header(name, value);
    }
    out.remove_first_value(HeaderName::Via);
    out.prepend_header("Via", via);
    Some(out)
}

#[cfg(test)]
mod tests;
