//! The few primitives that handle secrets, in one place: constant-time
//! comparison (tokens, digest responses, our keyed tags), hex, and
//! HMAC-SHA256 (RFC 2104, the `hmac` crate) for the tags in our Record-Route
//! entries and stateless branches.

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `a == b`, taking the same time wherever they differ (a value
/// derived from a secret must not leak through how long a mismatch takes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

thread_local! {
    /// The last key used on this thread with its keyed state (the inner
    /// and outer pads already hashed, RFC 2104 §4): the daemon keys every
    /// tag with one secret, so each tag costs two compressions, not four.
    static KEYED: RefCell<Option<(Vec<u8>, Hmac<Sha256>)>> = const { RefCell::new(None) };
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = KEYED.with(|cell| {
        let mut cached = cell.borrow_mut();
        match &*cached {
            Some((k, mac)) if k.as_slice() == key => mac.clone(),
            _ => {
                let mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
                *cached = Some((key.to_vec(), mac.clone()));
                mac
            }
        }
    });
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_keyed_state_follows_the_key() {
        // The cached keyed state must not leak into a MAC under another key.
        let a = hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"]);
        let b = hmac_sha256(b"other", &[b"what do ya want for nothing?"]);
        let c = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(
            hex(&a),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
