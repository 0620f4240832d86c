//! SIP message layer: a wire-faithful lazy parser, typed header views, edits
//! and builders (RFC 3261 §7, §8.2.6, §18.3, §19, §20, §25), plus stream framing
//! (RFC 3261 §18.3, RFC 5626 §3.5.1). Pure: no I/O.
//!
//! # Allocations per parsed message
//! Parsing copies no header text: every field is a `Bytes` slice (a refcount
//! bump) of the received buffer. A parse allocates the header `Vec` (once, with
//! room for 16 fields), and for a request the Request-URI's strings (user,
//! host, each parameter) plus the method name only if it is not a known method.
//! Typed views (`top_via`, `contacts`, ...) allocate their results when called;
//! `header_values` allocates a `Vec` and owned strings only for folded values.

pub mod builder;
pub mod digest;
pub mod error;
pub mod framing;
pub mod header;
pub mod message;
pub mod params;
mod parse;
pub mod reason;
pub mod typed;
pub mod uri;

#[cfg(test)]
mod builder_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::fmt;

pub use builder::{RequestBuilder, ResponseBuilder, bad_request_response, response_to};
pub use error::ParseError;
pub use framing::{Frame, FrameScanner, next_frame};
pub use header::{HeaderField, HeaderName};
pub use message::{Message, StartLine};
pub use params::{Params, unquote};
pub use typed::{CSeq, NameAddr, Via};
pub use uri::{Host, Scheme, Uri};

/// Largest message accepted on any transport, in bytes.
pub const MAX_MESSAGE_SIZE: usize = 65536;
/// Largest number of header fields accepted in one message.
pub const MAX_HEADERS: usize = 256;

/// A request method (RFC 3261 §7.1; methods are case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// An extension method, relayed as is.
    Other(String),
}

const METHODS: &[(&str, Method)] = &[
    ("INVITE", Method::Invite),
    ("ACK", Method::Ack),
    ("BYE", Method::Bye),
    ("CANCEL", Method::Cancel),
    ("REGISTER", Method::Register),
    ("OPTIONS", Method::Options),
    ("INFO", Method::Info),
    ("UPDATE", Method::Update),
    ("PRACK", Method::Prack),
    ("SUBSCRIBE", Method::Subscribe),
    ("NOTIFY", Method::Notify),
    ("REFER", Method::Refer),
    ("MESSAGE", Method::Message),
    ("PUBLISH", Method::Publish),
];

impl Method {
    /// The method token as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(s) => s,
            known => METHODS
                .iter()
                .find(|(_, m)| m == known)
                .map_or("", |(s, _)| s),
        }
    }

    /// Maps a token to a method (case-sensitive, RFC 3261 §7.1).
    pub fn from_bytes(b: &[u8]) -> Method {
        METHODS.iter().find(|(s, _)| s.as_bytes() == b).map_or_else(
            || Method::Other(String::from_utf8_lossy(b).into_owned()),
            |(_, m)| m.clone(),
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
