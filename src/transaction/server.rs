//! Requests addressed to the daemon itself (RFC 3261 §8.2): OPTIONS gets
//! 200 (§11.2), malformed requests 400, in-dialog requests we hold no
//! dialog for 481 (§12.2.2), known methods we do not serve 405 with Allow
//! (§8.2.1), unknown methods 501 (§8.2.1). Never silence, except for ACK.

use bytes::Bytes;

use crate::sip::{Message, Method, response_to};
use crate::transport::{Inbound, Transports};

/// Methods the daemon answers itself.
pub const ALLOW: &str = "OPTIONS";

/// The final response to a request the daemon does not route.
pub struct Decision {
    pub code: u16,
    pub reason: &'static str,
    /// Why a 400 was sent, for the Warning header.
    pub warning: Option<String>,
}

/// Chooses the final response to a request the daemon does not route;
/// None for ACK, which is never answered.
pub fn decide(msg: &Message) -> Option<Decision> {
    let method = msg.method()?;
    if *method == Method::Ack {
        return None;
    }
    if let Err(e) = msg.validate_request() {
        return Some(Decision {
            code: 400,
            reason: "Bad Request",
            warning: Some(e.warning_text()),
        });
    }
    let in_dialog = msg.to_header().map(|t| t.tag().is_some()).unwrap_or(false);
    let (code, reason) = match method {
        Method::Options => (200, "OK"),
        Method::Cancel => (481, "Call/Transaction Does Not Exist"),
        _ if in_dialog => (481, "Call/Transaction Does Not Exist"),
        Method::Other(_) => (501, "Not Implemented"),
        _ => (405, "Method Not Allowed"),
    };
    Some(Decision {
        code,
        reason,
        warning: None,
    })
}

pub(super) fn answer(t: &Transports, user_agent: &str, inbound: Inbound) {
    let Some(d) = decide(&inbound.msg) else {
        return;
    };
    let to_tag = format!("{:016x}", rand::random::<u64>());
    let mut resp =
        response_to(&inbound.msg, d.code, d.reason, Some(&to_tag)).header("Server", user_agent);
    if let Some(w) = &d.warning {
        resp = resp.header("Warning", format!("399 uacd \"{w}\""));
    }
    if d.code == 200 || d.code == 405 {
        resp = resp
            .header("Allow", ALLOW)
            .header("Accept", "application/sdp");
    }
    t.reply(&inbound, Bytes::from(resp.build()));
}
