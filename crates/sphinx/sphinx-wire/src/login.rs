//! The signer's MQTT login: username = hex of the node's compressed public
//! key, password = a token signed by the node key. Two token forms:
//!
//! - **Bound** (Lightkeeper's, the default): URL-safe base64 (padded) of
//!   `0x01 ‖ timestamp in ms (u64 BE) ‖ signature (65 bytes)`, the signature
//!   in the [`LOGIN_TAG`](signed::LOGIN_TAG) domain over
//!   `len(client id) (u8) ‖ client id ‖ timestamp`. It is valid only for
//!   the MQTT client id it names, so a captured token cannot log in another
//!   client, and no hsmd request can make one ([`signed`]).
//! - **Compat** (sphinx-key's, notes §2.3): base64 of
//!   `timestamp in s (u32 BE) ‖ signature`, a Lightning Signed Message over
//!   the 4 timestamp bytes. It names no client, and hsmd's `SignMessage`
//!   signs the same digest (our signer refuses 4-byte messages, a device's
//!   may not), so it is accepted only where [`Rules::compat`] says so.
//!
//! Every token must be within a window of the caller's clock, and a broker
//! accepts each at most once ([`ReplayGuard`]). The clock is a parameter:
//! no I/O here.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use secp256k1::{PublicKey, SecretKey};

use crate::signed::{self, Domain};

const BOUND_VERSION: u8 = 1;
const BOUND_LEN: usize = 1 + 8 + signed::LEN;
const COMPAT_LEN: usize = 4 + signed::LEN;

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The password is not a token.
    #[error("malformed login token: {0}")]
    Malformed(&'static str),
    /// The username is not a compressed public key in hex.
    #[error("username is not a node public key")]
    Username,
    /// The token was signed by another key than the username's, or for
    /// another client id.
    #[error("token not signed by the username's key for this client id")]
    WrongKey,
    /// A sphinx-key token where only bound tokens are accepted.
    #[error("sphinx-key (unbound) login tokens are not accepted; enable sphinx-key compatibility to allow them")]
    CompatRefused,
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
    /// The token was used before.
    #[error("login token already used (replayed)")]
    Replayed,
}

/// Which form a token had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Bound to its client id.
    Bound,
    /// sphinx-key's form.
    Compat,
}

/// What a broker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How old (or how far ahead) a token may be, in seconds.
    pub window_secs: u64,
    /// Whether sphinx-key's unbound tokens are accepted.
    pub compat: bool,
}

/// An accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The node key that signed it.
    pub key: PublicKey,
    /// When it was made, ms since the epoch.
    pub timestamp_ms: u64,
    /// Its form.
    pub scheme: Scheme,
    /// Its signature: what [`ReplayGuard`] remembers.
    pub id: [u8; signed::LEN],
}

fn bound_bytes(client_id: &str, timestamp_ms: u64) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id = &id[..id.len().min(255)];
    let mut bytes = Vec::with_capacity(1 + id.len() + 8);
    bytes.push(id.len() as u8);
    bytes.extend_from_slice(id);
    bytes.extend_from_slice(&timestamp_ms.to_be_bytes());
    bytes
}

/// A bound password for `client_id` at `timestamp_ms`, signed by the node key.
pub fn password(secret: &SecretKey, client_id: &str, timestamp_ms: u64) -> String {
    let mut token = Vec::with_capacity(BOUND_LEN);
    token.push(BOUND_VERSION);
    token.extend_from_slice(&timestamp_ms.to_be_bytes());
    token.extend_from_slice(&signed::sign(
        Domain::Tagged(signed::LOGIN_TAG),
        &bound_bytes(client_id, timestamp_ms),
        secret,
    ));
    URL_SAFE.encode(token)
}

/// A sphinx-key password for `timestamp` (Unix seconds).
pub fn compat_password(secret: &SecretKey, timestamp: u32) -> String {
    let mut token = Vec::with_capacity(COMPAT_LEN);
    token.extend_from_slice(&timestamp.to_be_bytes());
    token.extend_from_slice(&signed::sign(
        Domain::LightningMessage,
        &timestamp.to_be_bytes(),
        secret,
    ));
    URL_SAFE.encode(token)
}

/// The token's signer, time and form, for `client_id`, without checking
/// freshness or whether its form is allowed.
pub fn recover(password: &str, client_id: &str) -> Result<Login, LoginError> {
    let bytes = URL_SAFE
        .decode(password)
        .map_err(|_| LoginError::Malformed("not URL-safe base64"))?;
    let mut id = [0u8; signed::LEN];
    let (key, timestamp_ms, scheme) = match bytes.len() {
        BOUND_LEN if bytes[0] == BOUND_VERSION => {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&bytes[1..9]);
            let timestamp_ms = u64::from_be_bytes(ts);
            id.copy_from_slice(&bytes[9..]);
            let key = signed::recover(
                Domain::Tagged(signed::LOGIN_TAG),
                &bound_bytes(client_id, timestamp_ms),
                &id,
            )
            .ok_or(LoginError::Malformed("not a signature by any key"))?;
            (key, timestamp_ms, Scheme::Bound)
        }
        COMPAT_LEN => {
            let ts = [bytes[0], bytes[1], bytes[2], bytes[3]];
            id.copy_from_slice(&bytes[4..]);
            let key = signed::recover(Domain::LightningMessage, &ts, &id)
                .ok_or(LoginError::Malformed("not a signature by any key"))?;
            (
                key,
                u64::from(u32::from_be_bytes(ts)) * 1000,
                Scheme::Compat,
            )
        }
        _ => return Err(LoginError::Malformed("not a login token")),
    };
    Ok(Login {
        key,
        timestamp_ms,
        scheme,
        id,
    })
}

/// Checks a login at `now_ms` (ms since the epoch): the token must be made
/// for `client_id`, signed by the username's key, within the window (either
/// way, for clock skew), and of an accepted form. Replay is the caller's
/// [`ReplayGuard`].
pub fn check(
    username: &str,
    password: &str,
    client_id: &str,
    now_ms: u64,
    rules: Rules,
) -> Result<Login, LoginError> {
    let claimed = hex_key(username).ok_or(LoginError::Username)?;
    let login = recover(password, client_id)?;
    if login.key != claimed {
        return Err(LoginError::WrongKey);
    }
    check_token(login, now_ms, rules)
}

/// Freshness and form of a recovered token (for a `hello` payload, where
/// there is no username).
pub fn check_token(login: Login, now_ms: u64, rules: Rules) -> Result<Login, LoginError> {
    if login.scheme == Scheme::Compat && !rules.compat {
        return Err(LoginError::CompatRefused);
    }
    let window_ms = rules.window_secs.saturating_mul(1000);
    if login.timestamp_ms.saturating_add(window_ms) < now_ms {
        return Err(LoginError::Expired {
            age: (now_ms - login.timestamp_ms) / 1000,
            window: rules.window_secs,
        });
    }
    if login.timestamp_ms > now_ms.saturating_add(window_ms) {
        return Err(LoginError::Future {
            ahead: (login.timestamp_ms - now_ms) / 1000,
            window: rules.window_secs,
        });
    }
    Ok(login)
}

/// The tokens a broker has accepted within the window, so that each is
/// accepted once. Only valid tokens reach it (they need the node key), so it
/// holds at most what the owner's signers made within one window; a bound
/// keeps even a misbehaving owner from growing it without end.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// Token id → when it may be forgotten (ms).
    seen: HashMap<[u8; signed::LEN], u64>,
}

/// Most tokens remembered at once; beyond it, new logins are refused until
/// old ones expire.
pub const MAX_REMEMBERED: usize = 65_536;

impl ReplayGuard {
    /// Accepts `login` if its token was not seen before. `window_secs` must
    /// be the window it was checked with: a token is remembered until it
    /// could no longer pass the freshness check.
    pub fn admit(
        &mut self,
        login: &Login,
        now_ms: u64,
        window_secs: u64,
    ) -> Result<(), LoginError> {
        self.seen.retain(|_, forget_at| *forget_at > now_ms);
        if self.seen.contains_key(&login.id) {
            return Err(LoginError::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(LoginError::Malformed("too many logins within the window"));
        }
        let forget_at = login
            .timestamp_ms
            .saturating_add(window_secs.saturating_mul(1000))
            .saturating_add(1);
        self.seen.insert(login.id, forget_at);
        Ok(())
    }
}

/// The largest MQTT packet a signer takes when its `hello` does not say
/// (sphinx-key devices): the reference's 1 MiB.
pub const DEFAULT_MAX_PACKET: usize = 1024 * 1024;

/// A `hello` payload: the login token, then (Lightkeeper signers) a space
/// and the largest MQTT packet the signer accepts, in bytes, so the broker
/// never sends it one it must refuse (a state too large for it is then a
/// clear error instead of an endless reconnect).
pub fn hello_payload(token: &str, max_packet: usize) -> Vec<u8> {
    format!("{token} {max_packet}").into_bytes()
}

/// The token and packet limit of a `hello` payload (the limit defaults to
/// [`DEFAULT_MAX_PACKET`] when absent).
pub fn parse_hello(payload: &[u8]) -> Result<(&str, usize), LoginError> {
    let text =
        std::str::from_utf8(payload).map_err(|_| LoginError::Malformed("hello is not text"))?;
    match text.split_once(' ') {
        None => Ok((text, DEFAULT_MAX_PACKET)),
        Some((token, limit)) => {
            let limit = limit
                .trim()
                .parse::<usize>()
                .map_err(|_| LoginError::Malformed("hello packet limit is not a number"))?;
            Ok((token, limit))
        }
    }
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

    const RULES: Rules = Rules {
        window_secs: 60,
        compat: false,
    };
    const CID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn fresh_bound_tokens_pass_and_stale_forged_or_mangled_ones_do_not() {
        let (secret, user) = key(0xcd);
        let now = 1_800_000_000_000u64;
        let pw = password(&secret, CID, now);
        let login = check(&user, &pw, CID, now, RULES).expect("fresh");
        assert_eq!(hex::encode(login.key.serialize()), user);
        assert_eq!(login.scheme, Scheme::Bound);
        assert!(check(&user, &pw, CID, now + 60_000, RULES).is_ok(), "edge");
        assert_eq!(
            check(&user, &pw, CID, now + 61_000, RULES),
            Err(LoginError::Expired {
                age: 61,
                window: 60
            })
        );
        assert!(matches!(
            check(&user, &pw, CID, now - 61_000, RULES),
            Err(LoginError::Future { .. })
        ));
        let (_, other) = key(0x11);
        assert_eq!(
            check(&other, &pw, CID, now, RULES),
            Err(LoginError::WrongKey)
        );
        assert_eq!(
            check("not hex", &pw, CID, now, RULES),
            Err(LoginError::Username)
        );
        for bad in ["", "!!!", &pw[..pw.len() - 4], &URL_SAFE.encode([1u8; 74])] {
            assert!(
                matches!(
                    check(&user, bad, CID, now, RULES),
                    Err(LoginError::Malformed(_) | LoginError::WrongKey)
                ),
                "{bad:?}"
            );
        }
        // Another timestamp in the token: not this signature.
        let mut bytes = URL_SAFE.decode(&pw).expect("b64");
        bytes[8] ^= 1;
        assert!(check(&user, &URL_SAFE.encode(bytes), CID, now, RULES).is_err());
    }

    #[test]
    fn a_bound_token_is_useless_under_another_client_id() {
        let (secret, user) = key(0xcd);
        let now = 1_800_000_000_000u64;
        let pw = password(&secret, CID, now);
        let other_cid = "fedcba9876543210fedcba9876543210";
        assert!(matches!(
            check(&user, &pw, other_cid, now, RULES),
            Err(LoginError::WrongKey | LoginError::Malformed(_))
        ));
    }

    #[test]
    fn compat_tokens_only_when_allowed() {
        let (secret, user) = key(0xcd);
        let now = 1_800_000_000u64;
        let pw = compat_password(&secret, now as u32);
        assert_eq!(
            check(&user, &pw, CID, now * 1000, RULES),
            Err(LoginError::CompatRefused)
        );
        let compat = Rules {
            compat: true,
            ..RULES
        };
        let login = check(&user, &pw, CID, now * 1000, compat).expect("compat");
        assert_eq!(login.scheme, Scheme::Compat);
        // Unbound: any client id passes, which is why it is opt-in.
        assert!(check(&user, &pw, "another", now * 1000, compat).is_ok());
    }

    #[test]
    fn hello_carries_the_packet_limit() {
        assert_eq!(
            parse_hello(&hello_payload("tok", 8 << 20)),
            Ok(("tok", 8 << 20))
        );
        assert_eq!(parse_hello(b"tok"), Ok(("tok", DEFAULT_MAX_PACKET)));
        assert!(parse_hello(b"tok x").is_err());
        assert!(parse_hello(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn each_token_is_accepted_once_within_its_window() {
        let (secret, user) = key(0xcd);
        let now = 1_800_000_000_000u64;
        let mut guard = ReplayGuard::default();
        let login = check(&user, &password(&secret, CID, now), CID, now, RULES).expect("ok");
        guard.admit(&login, now, 60).expect("first use");
        assert_eq!(guard.admit(&login, now + 1, 60), Err(LoginError::Replayed));
        let next = check(&user, &password(&secret, CID, now + 1), CID, now + 1, RULES).expect("ok");
        guard.admit(&next, now + 1, 60).expect("a fresh token");
        // Once the window has passed the token is forgotten, and the
        // freshness check refuses it instead.
        guard.admit(&login, now + 60_001, 60).expect("forgotten");
        assert!(guard.seen.len() <= 2);
    }
}
