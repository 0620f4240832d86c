//! The part of [`Call`] that only a call toward a PBX uses
//! ([`super::super::outbound`]): the caller's view of the PBX's answers
//! and the authenticated resend of a challenged INVITE (RFC 3261 §22.2).

use crate::sip::Message;
use crate::sip::digest::Credentials;

use super::super::forward::branch;
use super::super::outbound::{AuthRefused, Side, answer_challenge, authenticated_resend};
use super::{Call, CallAction};

impl Call {
    /// A response of attempt `n` in the caller's terms (a call toward a
    /// PBX, [`Mapping::apply`]).
    pub(super) fn upstream_view(&self, n: usize, mut resp: Message) -> Message {
        if let Some(tp) = &self.params.toward_pbx {
            let mut m = tp.mapping.clone();
            m.cseq_offset = self.attempts[n].cseq_offset;
            m.apply(&mut resp, Side::Internal);
        }
        resp
    }

    /// Resends attempt `n`'s request with the answer to `challenge` (a 401
    /// or 407 it got), as a new attempt toward the same target.
    pub(super) fn authenticate(
        &mut self,
        n: usize,
        challenge: &Message,
        out: &mut Vec<CallAction>,
    ) -> Result<(), AuthRefused> {
        let (Some(tp), Some(sent)) = (&self.params.toward_pbx, self.attempts[n].request()) else {
            return Err(AuthRefused::NoChallenge);
        };
        let creds = Credentials {
            username: &tp.username,
            password: tp.password.expose(),
        };
        let cnonce = crate::sip::digest::new_cnonce();
        let auth = answer_challenge(challenge, sent, &creds, &mut self.answered, &cnonce)?;
        let t = self.attempts[n].target;
        let branch = branch(
            self.loop_hash,
            &format!("{:x}.{}", self.params.nonce, self.attempts.len()),
        );
        let via = self.targets[t].local.via_value(&branch);
        let request = authenticated_resend(sent, &auth, &via).ok_or(AuthRefused::NoChallenge)?;
        let token = self.attempts[n].token.clone();
        let offset = self.attempts[n].cseq_offset + 1;
        out.push(CallAction::CSeqOffset(offset));
        self.start_attempt(t, branch, token, request, offset, out);
        Ok(())
    }
}
