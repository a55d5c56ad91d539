//! The signer's MQTT login (notes §2.3): username = hex of the node's
//! compressed public key; password = URL-safe base64 (padded) of
//! `timestamp (u32 BE) ‖ signature (65 bytes)`, the signature a recoverable
//! ECDSA signature by the node key over
//! `SHA-256(SHA-256("Lightning Signed Message:" ‖ timestamp))`, its first byte
//! `31 + recovery id`.
//!
//! The reference broker only recovers the key; [`check`] also requires the
//! timestamp to be within a window of the caller's clock (a captured password
//! is useless after it), and the username to be the recovered key. The clock
//! is a parameter: no I/O here.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use secp256k1::{PublicKey, SecretKey};

use crate::signed;

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The password is not a token.
    #[error("malformed login token: {0}")]
    Malformed(&'static str),
    /// The username is not a compressed public key in hex.
    #[error("username is not a node public key")]
    Username,
    /// The token was signed by another key than the username's.
    #[error("token not signed by the username's key")]
    WrongKey,
    /// The token is older than the window allows.
    #[error("login token expired ({age} s old, window {window} s)")]
    Expired {
        /// Seconds since it was made.
        age: u64,
        /// The window.
        window: u64,
    },
    /// The token claims to be made in the future beyond the window.
    #[error("login token is from the future ({ahead} s ahead, window {window} s)")]
    Future {
        /// Seconds ahead of the clock.
        ahead: u64,
        /// The window.
        window: u64,
    },
}

/// A password for `timestamp` (Unix seconds), signed by the node key.
pub fn password(secret: &SecretKey, timestamp: u32) -> String {
    let mut token = Vec::with_capacity(4 + signed::LEN);
    token.extend_from_slice(&timestamp.to_be_bytes());
    token.extend_from_slice(&signed::sign(&timestamp.to_be_bytes(), secret));
    URL_SAFE.encode(token)
}

/// The timestamp and signer of a password, without checking freshness.
pub fn recover(password: &str) -> Result<(u32, PublicKey), LoginError> {
    let bytes = URL_SAFE
        .decode(password)
        .map_err(|_| LoginError::Malformed("not URL-safe base64"))?;
    let token: [u8; 69] = bytes
        .try_into()
        .map_err(|_| LoginError::Malformed("not 69 bytes"))?;
    let timestamp = u32::from_be_bytes([token[0], token[1], token[2], token[3]]);
    let mut signature = [0u8; signed::LEN];
    signature.copy_from_slice(&token[4..]);
    let key = signed::recover(&timestamp.to_be_bytes(), &signature)
        .ok_or(LoginError::Malformed("not a signature by any key"))?;
    Ok((timestamp, key))
}

/// Checks a login at time `now` (Unix seconds): the token must be signed by
/// the username's key and made within `window` seconds of `now` (either way,
/// for clock skew). Returns the node key.
pub fn check(
    username: &str,
    password: &str,
    now: u64,
    window: u64,
) -> Result<PublicKey, LoginError> {
    let claimed = hex_key(username).ok_or(LoginError::Username)?;
    let (timestamp, key) = recover(password)?;
    if key != claimed {
        return Err(LoginError::WrongKey);
    }
    let timestamp = u64::from(timestamp);
    if timestamp + window < now {
        return Err(LoginError::Expired {
            age: now - timestamp,
            window,
        });
    }
    if timestamp > now + window {
        return Err(LoginError::Future {
            ahead: timestamp - now,
            window,
        });
    }
    Ok(key)
}

fn hex_key(text: &str) -> Option<PublicKey> {
    if text.len() != 66 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..66)
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    PublicKey::from_slice(&bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> (SecretKey, String) {
        let secret = SecretKey::from_slice(&[byte; 32]).expect("key");
        let public = secret.public_key(&secp256k1::Secp256k1::signing_only());
        (secret, hex::encode(public.serialize()))
    }

    #[test]
    fn fresh_tokens_pass_and_stale_forged_or_mangled_ones_do_not() {
        let (secret, user) = key(0xcd);
        let now = 1_800_000_000u64;
        let pw = password(&secret, now as u32);
        assert_eq!(
            hex::encode(check(&user, &pw, now, 60).expect("fresh").serialize()),
            user
        );
        assert!(
            check(&user, &pw, now + 60, 60).is_ok(),
            "edge of the window"
        );
        assert_eq!(
            check(&user, &pw, now + 61, 60),
            Err(LoginError::Expired {
                age: 61,
                window: 60
            })
        );
        assert!(matches!(
            check(&user, &pw, now - 61, 60),
            Err(LoginError::Future { .. })
        ));
        let (_, other) = key(0x11);
        assert_eq!(check(&other, &pw, now, 60), Err(LoginError::WrongKey));
        assert_eq!(check("not hex", &pw, now, 60), Err(LoginError::Username));
        assert_eq!(check(&user[..64], &pw, now, 60), Err(LoginError::Username));
        for bad in ["", "!!!", &pw[..pw.len() - 4], &URL_SAFE.encode([0u8; 69])] {
            assert!(
                matches!(check(&user, bad, now, 60), Err(LoginError::Malformed(_))),
                "{bad:?}"
            );
        }
        // A token made for another timestamp does not verify for this one.
        let mut bytes = URL_SAFE.decode(&pw).expect("b64");
        bytes[3] ^= 1;
        assert!(check(&user, &URL_SAFE.encode(bytes), now, 60).is_err());
    }
}
