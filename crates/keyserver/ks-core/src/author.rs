//! Building and signing a user's own messages (keyserver.md §6.4): the
//! client uses these to register, update, publish KeyInits and flush; the
//! test suites use them to play users and attackers. Keys and random bytes
//! are parameters, as everywhere in this crate.

use ed25519_dalek::SigningKey;

use crate::b64;
use crate::entry::Entry;
use crate::identity;
use crate::keyinit::{
    seal_anchor, sig_key_hash, FlushRequest, KeyInit, KeyInitContents, SessionAnchor, FLUSH_METHOD,
};
use crate::rules::ROLLOVER;
use crate::sig::{sign, Ctx};
use crate::uid::{Function, KeyEntry, Preferences, UidContent, UidMessage, SUITE, VERSION};

/// The keys behind one UID.
pub struct UidKeys<'a> {
    /// SIGKEY.
    pub sig_key: &'a SigningKey,
    /// SIGESCROW, if any.
    pub escrow: Option<&'a SigningKey>,
    /// The X25519 static public key.
    pub static_key: [u8; 32],
}

/// The UIDCONTENT of a fresh UID for `identity` (mapped) valid from
/// `now − 60` for a year less a day, as `ks-cli register` makes it.
pub fn content(
    identity: &str,
    keys: &UidKeys<'_>,
    msg_count: u64,
    last_entry: Option<&Entry>,
    forward_sec: &str,
    now: u64,
) -> UidContent {
    UidContent {
        identity: identity.to_string(),
        last_entry: last_entry.map(|e| b64::encode(&e.0)).unwrap_or_default(),
        msg_count,
        not_after: now + ROLLOVER - 24 * 3600,
        not_before: now.saturating_sub(60),
        preferences: Preferences {
            cipher_suites: vec![SUITE.to_string()],
            forward_sec: forward_sec.to_string(),
        },
        pubkeys: vec![KeyEntry::new(Function::Ecdhe25519, &keys.static_key)],
        repo_uris: vec![identity::domain(identity).to_string()],
        sig_escrow: keys
            .escrow
            .map(|k| KeyEntry::new(Function::Ed25519, k.verifying_key().as_bytes()))
            .unwrap_or_default(),
        sig_key: KeyEntry::new(Function::Ed25519, keys.sig_key.verifying_key().as_bytes()),
        version: VERSION.to_string(),
        ..UidContent::default()
    }
}

/// Signs a creation: SELFSIGNATURE, and ESCROWSIGNATURE by the new escrow
/// key as proof of possession.
pub fn sign_create(content: UidContent, keys: &UidKeys<'_>) -> UidMessage {
    UidMessage {
        self_signature: sign(keys.sig_key, Ctx::UidContent, &content),
        escrow_signature: keys
            .escrow
            .map(|k| sign(k, Ctx::UidContent, &content))
            .unwrap_or_default(),
        content,
        ..UidMessage::default()
    }
}

/// How an update is authorised.
pub enum Authority<'a> {
    /// By the previous SIGKEY (USERSIGNATURE).
    User(&'a SigningKey),
    /// By the previous SIGESCROW (ESCROWSIGNATURE), when SIGKEY is lost.
    Escrow(&'a SigningKey),
}

/// Signs an update by the new SIGKEY and the given authority.
pub fn sign_update(content: UidContent, new_sig_key: &SigningKey, by: Authority<'_>) -> UidMessage {
    let mut m = UidMessage {
        self_signature: sign(new_sig_key, Ctx::UidContent, &content),
        ..UidMessage::default()
    };
    match by {
        Authority::User(k) => m.user_signature = sign(k, Ctx::UidContent, &content),
        Authority::Escrow(k) => m.escrow_signature = sign(k, Ctx::UidContent, &content),
    }
    m.content = content;
    m
}

/// A signed KeyInit for the owner of `sig_key`.
#[allow(clippy::too_many_arguments)]
pub fn key_init(
    sig_key: &SigningKey,
    repo_uri: &str,
    anchor: &SessionAnchor,
    iv3: &[u8; 16],
    msg_count: u64,
    fallback: bool,
    not_before: u64,
    not_after: u64,
) -> KeyInit {
    let pk = sig_key.verifying_key().to_bytes();
    let (session_anchor, session_anchor_hash) = seal_anchor(anchor, &pk, iv3);
    let contents = KeyInitContents {
        fallback,
        msg_count,
        not_after,
        not_before,
        repo_uri: repo_uri.to_string(),
        session_anchor,
        session_anchor_hash,
        sig_key_hash: sig_key_hash(&pk),
        version: "1.0".to_string(),
    };
    KeyInit {
        signature: sign(sig_key, Ctx::KeyinitContents, &contents),
        contents,
    }
}

/// A session anchor with one forward-secret key.
pub fn anchor(pf_key: &[u8; 32], mix_address: &str, nym_address: &str) -> SessionAnchor {
    SessionAnchor {
        mix_address: mix_address.to_string(),
        nym_address: nym_address.to_string(),
        pf_keys: vec![KeyEntry::new(Function::Ecdhe25519, pf_key)],
    }
}

/// A signed FlushRequest: (request, signature).
pub fn flush(
    sig_key: &SigningKey,
    origin: &str,
    nonce: &[u8; 16],
    now: u64,
) -> (FlushRequest, String) {
    let req = FlushRequest {
        method: FLUSH_METHOD.to_string(),
        nonce: b64::encode(nonce),
        origin: origin.to_string(),
        sig_key_hash: sig_key_hash(sig_key.verifying_key().as_bytes()),
        timestamp: now,
    };
    let s = sign(sig_key, Ctx::FlushRequest, &req);
    (req, s)
}
