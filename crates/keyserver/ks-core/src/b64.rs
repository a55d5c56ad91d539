//! Base64 as keyserver.md's conventions fix it: RFC 4648 §4 with padding;
//! whitespace, the URL-safe alphabet and non-zero pad bits are refused, and
//! a `b64(n)` field is exactly n bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Encodes `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes strictly; `None` for anything but canonical standard base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let bytes = STANDARD.decode(s).ok()?;
    // The engine refuses non-zero pad bits; this also pins the padding.
    (STANDARD.encode(&bytes) == s).then_some(bytes)
}

/// Decodes a `b64(N)` field.
pub fn exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    decode(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode("AAE="), Some(vec![0, 1]));
        assert_eq!(decode("AAF="), None, "non-zero pad bits");
        assert_eq!(decode("AA E="), None);
        assert_eq!(decode("AAE"), None);
        assert_eq!(decode("-_8="), None, "url-safe alphabet");
        assert_eq!(exact::<2>("AAE="), Some([0, 1]));
        assert_eq!(exact::<3>("AAE="), None);
    }
}
