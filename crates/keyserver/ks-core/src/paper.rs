//! Escrow keys on paper (keyserver.md §6.4): 64 hex digits in groups of
//! four and a 4-hex-digit SHA-256 checksum, so a copying mistake is caught
//! before the key is used.

use sha2::{Digest, Sha256};

/// The paper form of a 32-byte secret.
pub fn encode(secret: &[u8; 32]) -> String {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let groups: Vec<&str> = (0..16).map(|i| &hex[i * 4..i * 4 + 4]).collect();
    let sum = Sha256::digest(secret);
    format!("{} / {:02x}{:02x}", groups.join(" "), sum[0], sum[1])
}

/// Why a paper key does not read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaperError {
    /// Not 64 hex digits, a '/', and 4 hex digits.
    #[error("a paper key is 64 hex digits, '/', and a 4-digit checksum")]
    Shape,
    /// The checksum does not match: a digit was copied wrong.
    #[error("the checksum does not match: check the digits")]
    Checksum,
}

/// Reads a paper key back (spaces and case ignored).
pub fn decode(text: &str) -> Result<[u8; 32], PaperError> {
    let (key, sum) = text.split_once('/').ok_or(PaperError::Shape)?;
    let digits: String = key.chars().filter(|c| !c.is_whitespace()).collect();
    let sum: String = sum.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != 64 || sum.len() != 4 {
        return Err(PaperError::Shape);
    }
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16).map_err(|_| PaperError::Shape)?;
    }
    if encode(&secret).rsplit('/').next().map(str::trim) != Some(sum.to_ascii_lowercase().as_str())
    {
        return Err(PaperError::Checksum);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_typo() {
        let s = [0xab; 32];
        let p = encode(&s);
        assert_eq!(decode(&p), Ok(s));
        assert_eq!(decode(&p.to_uppercase()), Ok(s));
        let typo = p.replacen("abab", "abac", 1);
        assert_eq!(decode(&typo), Err(PaperError::Checksum));
        assert_eq!(decode("abc"), Err(PaperError::Shape));
    }
}
