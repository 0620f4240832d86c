//! Parse errors of the SIP message layer (RFC 3261 §7, §20, §25).
//!
//! Every variant names what is wrong so that callers can count it by kind and
//! answer `400 Bad Request` with a `Warning: 399` text (RFC 3261 §20.43).

use thiserror::Error;

/// Why a SIP message, header or URI could not be parsed or validated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer held no message at all (only whitespace / CRLF).
    #[error("empty message")]
    Empty,
    /// The message exceeds [`crate::sip::MAX_MESSAGE_SIZE`].
    #[error("message too large")]
    TooLarge,
    /// The message has more than [`crate::sip::MAX_HEADERS`] header fields.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The message ends before the header block or the body is complete.
    #[error("message truncated")]
    Truncated,
    /// The request or status line is malformed.
    #[error("malformed start line: {0}")]
    BadStartLine(&'static str),
    /// A header line has no colon or an invalid field name.
    #[error("malformed header line")]
    BadHeaderLine,
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but its value cannot be understood.
    #[error("bad {name} header: {reason}")]
    BadHeader {
        /// Canonical header name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A URI is malformed.
    #[error("bad URI: {0}")]
    BadUri(&'static str),
    /// Content-Length is not a number, is repeated with different values, or is
    /// larger than the bytes available.
    #[error("bad Content-Length")]
    BadContentLength,
    /// A datagram's Content-Length is larger than its body, or bytes other
    /// than padding follow the body (RFC 3261 §18.3).
    #[error("Content-Length does not match the datagram")]
    BodyMismatch,
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// A request-only check was run on a response.
    #[error("not a request")]
    NotARequest,
    /// The request line names a SIP version other than 2.0 (answered 505,
    /// RFC 3261 §8.2.2 / RFC 4475 `badvers`).
    #[error("unsupported SIP version")]
    BadVersion,
    /// A header that may appear once appears on more than one line
    /// (RFC 3261 §7.3: only comma-list headers may repeat; RFC 4475 `multi01`).
    #[error("repeated {0} header")]
    RepeatedHeader(&'static str),
}

impl ParseError {
    /// A short human reason, suitable for `Warning: 399 host "<text>"`.
    ///
    /// The text never contains `"` or `\`, so it can be quoted as is.
    pub fn warning_text(&self) -> String {
        match self {
            ParseError::Empty => "Empty message".to_owned(),
            ParseError::TooLarge => "Message too large".to_owned(),
            ParseError::TooManyHeaders => "Too many header fields".to_owned(),
            ParseError::Truncated => "Message truncated".to_owned(),
            ParseError::BadStartLine(r) => format!("Malformed request line ({r})"),
            ParseError::BadHeaderLine => "Malformed header line".to_owned(),
            ParseError::MissingHeader(h) => format!("Missing {h} header"),
            ParseError::BadHeader { name, reason } => format!("Malformed {name} header ({reason})"),
            ParseError::BadUri(r) => format!("Malformed URI ({r})"),
            ParseError::BadContentLength => "Bad Content-Length".to_owned(),
            ParseError::BodyMismatch => "Content-Length does not match the datagram".to_owned(),
            ParseError::CSeqMethodMismatch => {
                "CSeq method does not match request method".to_owned()
            }
            ParseError::NotARequest => "Not a request".to_owned(),
            ParseError::BadVersion => "Unsupported SIP version".to_owned(),
            ParseError::RepeatedHeader(h) => format!("Repeated {h} header"),
        }
    }

    /// A stable, low-cardinality label for metrics (never derived from `Display`).
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::TooLarge => "too_large",
            ParseError::TooManyHeaders => "too_many_headers",
            ParseError::Truncated => "truncated",
            ParseError::BadStartLine(_) => "bad_start_line",
            ParseError::BadHeaderLine => "bad_header_line",
            ParseError::MissingHeader(_) => "missing_header",
            ParseError::BadHeader { .. } => "bad_header",
            ParseError::BadUri(_) => "bad_uri",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::BodyMismatch => "body_mismatch",
            ParseError::CSeqMethodMismatch => "cseq_mismatch",
            ParseError::NotARequest => "not_a_request",
            ParseError::BadVersion => "bad_version",
            ParseError::RepeatedHeader(_) => "repeated_header",
        }
    }
}
