//! KeyInits (one-time and fallback prekeys), their SessionAnchor, the
//! server's receipts and the replay-safe Flush (keyserver.md §3.6,
//! §4.3–4.5, §6.5). The checks are shared: the server runs them when a
//! KeyInit is published, Bob runs them again when one is served, so a
//! server that substitutes, replays or re-encrypts a KeyInit is caught.

use aes::cipher::{KeyIvInit, StreamCipher};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256, Sha512};

use crate::b64;
use crate::error::RpcError;
use crate::lcj::Lcj;
use crate::lcj_record;
use crate::rules::CLOCK_SKEW;
use crate::sig::{self, Ctx};
use crate::uid::{Function, KeyEntry};

/// The longest a KeyInit may live.
pub const MAX_KEYINIT_LIFETIME: u64 = 90 * 24 * 3600;
/// Stored KeyInits per SIGKEY.
pub const MAX_KEYINITS: usize = 256;
/// KeyInits per AddKeyInit call.
pub const MAX_KEYINITS_PER_CALL: usize = 64;
/// Flush requests are accepted this far from the server's clock.
pub const FLUSH_WINDOW: u64 = 300;
/// Flush nonces are remembered this long (> 2 × the window).
pub const FLUSH_NONCE_TTL: u64 = 600;
/// The METHOD a FlushRequest names.
pub const FLUSH_METHOD: &str = "KeyInitRepository.FlushKeyInit";

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

lcj_record! {
    /// What a KeyInit's owner signs.
    pub struct KeyInitContents {
        /// A last-resort KeyInit, served when no one-time one is left.
        fallback: bool = "FALLBACK",
        /// Strictly increasing per SIGKEY.
        msg_count: u64 = "MSGCOUNT",
        /// Unix seconds.
        not_after: u64 = "NOTAFTER",
        /// Unix seconds.
        not_before: u64 = "NOTBEFORE",
        /// The owner's REPOURIS[0].
        repo_uri: String = "REPOURI",
        /// b64(IV3 ‖ AES-256-CTR(SHA-512(SIGKEY)[..32], IV3, LCJ(anchor))).
        session_anchor: String = "SESSIONANCHOR",
        /// b64(SHA-512(LCJ(anchor))).
        session_anchor_hash: String = "SESSIONANCHORHASH",
        /// b64(SHA-512(SHA-512(SIGKEY))).
        sig_key_hash: String = "SIGKEYHASH",
        /// "1.0".
        version: String = "VERSION",
    }
}

lcj_record! {
    /// A signed KeyInit.
    pub struct KeyInit {
        /// The contents.
        contents: KeyInitContents = "CONTENTS",
        /// By the owner's current SIGKEY over `keyinit-contents`.
        signature: String = "SIGNATURE",
    }
}

lcj_record! {
    /// Where and with which forward-secret key to start a session.
    pub struct SessionAnchor {
        /// Non-empty, ≤ 255.
        mix_address: String = "MIXADDRESS",
        /// Non-empty b64, ≤ 4096.
        nym_address: String = "NYMADDRESS",
        /// Exactly one ECDHE25519 key.
        pf_keys: Vec<KeyEntry> = "PFKEYS",
    }
}

lcj_record! {
    /// The server's receipt for an accepted KeyInit.
    pub struct KeyInitReceipt {
        /// b64(SHA-256(LCJ(KeyInit))).
        key_init_hash: String = "KEYINITHASH",
        /// The server's origin.
        origin: String = "ORIGIN",
        /// The owner's SigKeyHash.
        sig_key_hash: String = "SIGKEYHASH",
        /// When accepted.
        timestamp: u64 = "TIMESTAMP",
    }
}

lcj_record! {
    /// A DispersalReceipt with the server's signature, as a client keeps
    /// it (evidence, §6.6).
    pub struct SignedDispersal {
        /// The receipt.
        receipt: DispersalReceipt = "RECEIPT",
        /// Its signature (ctx `keyinit-dispersal`).
        signature: String = "SIGNATURE",
    }
}

lcj_record! {
    /// The server's receipt for a served KeyInit.
    pub struct DispersalReceipt {
        /// b64(SHA-256(LCJ(KeyInit))).
        key_init_hash: String = "KEYINITHASH",
        /// True: the server deleted this one-time KeyInit when serving it.
        one_time: bool = "ONETIME",
        /// The server's origin.
        origin: String = "ORIGIN",
        /// The owner's SigKeyHash.
        sig_key_hash: String = "SIGKEYHASH",
        /// When served.
        timestamp: u64 = "TIMESTAMP",
    }
}

lcj_record! {
    /// A request to delete all of a SIGKEY's KeyInits.
    pub struct FlushRequest {
        /// [`FLUSH_METHOD`].
        method: String = "METHOD",
        /// b64(16), random.
        nonce: String = "NONCE",
        /// The server's origin.
        origin: String = "ORIGIN",
        /// The owner's SigKeyHash.
        sig_key_hash: String = "SIGKEYHASH",
        /// Within [`FLUSH_WINDOW`] of the server's clock.
        timestamp: u64 = "TIMESTAMP",
    }
}

lcj_record! {
    /// The server's receipt for a Flush.
    pub struct FlushReceipt {
        /// How many KeyInits were deleted.
        flushed: u64 = "FLUSHED",
        /// The request's nonce.
        nonce: String = "NONCE",
        /// The server's origin.
        origin: String = "ORIGIN",
        /// The owner's SigKeyHash.
        sig_key_hash: String = "SIGKEYHASH",
        /// When flushed.
        timestamp: u64 = "TIMESTAMP",
    }
}

lcj_record! {
    /// The server's signed answer to LookupUID: every position of an
    /// identity below TREESIZE, so an omission is provable.
    pub struct LookupReply {
        /// Positions, ascending.
        hc_positions: Vec<u64> = "HCPOSITIONS",
        /// The mapped identity.
        identity: String = "IDENTITY",
        /// The server's origin.
        origin: String = "ORIGIN",
        /// The chain size the answer covers.
        tree_size: u64 = "TREESIZE",
    }
}

/// SigKeyHash = b64(SHA-512(SHA-512(SIGKEY))).
pub fn sig_key_hash(sig_key: &[u8; 32]) -> String {
    b64::encode(&Sha512::digest(Sha512::digest(sig_key)))
}

/// The key that hides a SessionAnchor: SHA-512(SIGKEY)[..32].
fn anchor_key(sig_key: &[u8; 32]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&Sha512::digest(sig_key)[..32]);
    k
}

/// Encrypts an anchor under the owner's SIGKEY with IV3: the
/// `(SESSIONANCHOR, SESSIONANCHORHASH)` pair.
pub fn seal_anchor(anchor: &SessionAnchor, sig_key: &[u8; 32], iv3: &[u8; 16]) -> (String, String) {
    let plain = anchor.to_lcj();
    let hash = b64::encode(&Sha512::digest(&plain));
    let mut body = plain;
    Aes256Ctr::new(&anchor_key(sig_key).into(), iv3.into()).apply_keystream(&mut body);
    let mut out = iv3.to_vec();
    out.extend_from_slice(&body);
    (b64::encode(&out), hash)
}

impl KeyInit {
    /// KEYINITHASH = b64(SHA-256(LCJ(KeyInit))).
    pub fn hash(&self) -> String {
        b64::encode(&Sha256::digest(self.to_lcj()))
    }
}

/// Which time rule a KeyInit is checked under.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// Publication (§4.3): now < NOTAFTER ≤ min(now + 90 days, UID NOTAFTER).
    Publish {
        /// The owner's UID NOTAFTER.
        uid_not_after: u64,
    },
    /// Receipt by a peer (§6.5): NOTBEFORE ≤ now < NOTAFTER ≤ now + 90
    /// days + CLOCK_SKEW.
    Fetch,
}

/// A KeyInit that passed [`check_keyinit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedKeyInit {
    /// The decrypted anchor.
    pub anchor: SessionAnchor,
    /// Its forward-secret X25519 key.
    pub pf_key: [u8; 32],
}

/// Every check on one KeyInit of the owner with SIGKEY `sig_key`: version,
/// SigKeyHash, repository, signature, times and the anchor.
pub fn check_keyinit(
    ki: &KeyInit,
    sig_key: &VerifyingKey,
    repo_uris: &[String],
    window: Window,
    now: u64,
) -> Result<CheckedKeyInit, RpcError> {
    let bad = |field: &str, problem: &str| RpcError::params(field, problem);
    let c = &ki.contents;
    if c.version != "1.0" {
        return Err(bad("CONTENTS.VERSION", "must be \"1.0\""));
    }
    let pk = sig_key.to_bytes();
    if c.sig_key_hash != sig_key_hash(&pk) {
        return Err(bad(
            "CONTENTS.SIGKEYHASH",
            "is not the SigKeyHash of SigPubKey",
        ));
    }
    if !repo_uris.contains(&c.repo_uri) {
        return Err(bad(
            "CONTENTS.REPOURI",
            "is not a repository of this server",
        ));
    }
    if !sig::verify(sig_key, Ctx::KeyinitContents, c, &ki.signature) {
        return Err(RpcError::BadSignature {
            field: "SIGNATURE".into(),
        });
    }
    if c.not_before >= c.not_after {
        return Err(RpcError::TimeWindow(
            "NOTBEFORE must precede NOTAFTER".into(),
        ));
    }
    let fits = match window {
        Window::Publish { uid_not_after } => {
            now < c.not_after && c.not_after <= (now + MAX_KEYINIT_LIFETIME).min(uid_not_after)
        }
        Window::Fetch => {
            c.not_before <= now
                && now < c.not_after
                && c.not_after <= now + MAX_KEYINIT_LIFETIME + CLOCK_SKEW
        }
    };
    if !fits {
        return Err(RpcError::TimeWindow(
            "KeyInit outside its time window".into(),
        ));
    }
    let raw = b64::decode(&c.session_anchor)
        .filter(|r| r.len() > 16)
        .ok_or_else(|| bad("CONTENTS.SESSIONANCHOR", "is not base64 of IV3 and a body"))?;
    let mut plain = raw[16..].to_vec();
    let iv3: [u8; 16] = raw[..16].try_into().map_err(|_| RpcError::Internal)?;
    Aes256Ctr::new(&anchor_key(&pk).into(), &iv3.into()).apply_keystream(&mut plain);
    if b64::encode(&Sha512::digest(&plain)) != c.session_anchor_hash {
        return Err(bad(
            "CONTENTS.SESSIONANCHORHASH",
            "does not match the decrypted anchor",
        ));
    }
    let anchor = SessionAnchor::from_lcj(&plain).map_err(|e| {
        bad(
            "CONTENTS.SESSIONANCHOR",
            &format!("not a canonical anchor: {e}"),
        )
    })?;
    if anchor.mix_address.is_empty() || anchor.mix_address.len() > 255 {
        return Err(bad("SESSIONANCHOR.MIXADDRESS", "must be 1..=255 bytes"));
    }
    if anchor.nym_address.is_empty()
        || anchor.nym_address.len() > 4096
        || b64::decode(&anchor.nym_address).is_none()
    {
        return Err(bad(
            "SESSIONANCHOR.NYMADDRESS",
            "must be non-empty base64, ≤ 4096",
        ));
    }
    let pf_key = match anchor.pf_keys.as_slice() {
        [k] => k.check(Function::Ecdhe25519, "SESSIONANCHOR.PFKEYS")?,
        _ => return Err(bad("SESSIONANCHOR.PFKEYS", "exactly one ECDHE25519 key")),
    };
    Ok(CheckedKeyInit { anchor, pf_key })
}

/// A stored KeyInit as dispersal sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// FALLBACK.
    pub fallback: bool,
    /// NOTBEFORE.
    pub not_before: u64,
    /// NOTAFTER.
    pub not_after: u64,
    /// MSGCOUNT.
    pub msg_count: u64,
}

/// What FetchKeyInit does (§4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispersal {
    /// Index into the candidates of the KeyInit to serve.
    pub serve: usize,
    /// Whether to delete it in the reply's transaction.
    pub delete: bool,
    /// ONETIME in the receipt.
    pub one_time: bool,
}

/// Chooses the KeyInit to serve among `stored` at `now` (§4.4). `draws`
/// are two uniform random numbers from the server's CSPRNG (the pick and
/// the deletion coin), passed in so tests can replay any choice. `None`
/// means nothing is eligible (-32020).
pub fn disperse(stored: &[Stored], now: u64, draws: [u64; 2]) -> Option<Dispersal> {
    let eligible = |s: &&Stored| s.not_before <= now && now < s.not_after;
    let one_time = stored
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.fallback && eligible(s))
        .min_by_key(|(_, s)| (s.not_after, s.msg_count));
    if let Some((i, _)) = one_time {
        return Some(Dispersal {
            serve: i,
            delete: true,
            one_time: true,
        });
    }
    let fallbacks: Vec<(usize, u64)> = stored
        .iter()
        .enumerate()
        .filter(|(_, s)| s.fallback && eligible(s))
        .map(|(i, s)| (i, s.not_after - now))
        .collect();
    if fallbacks.is_empty() {
        return None;
    }
    // Pick with probability ∝ 1/n_i, in fixed point: weight_i = 2^48 / n_i
    // (n_i ≤ 90 days < 2^23 s keeps ≥ 25 bits of resolution, and the sum
    // of ≤ 256 weights times a 64-bit draw stays below 2^128).
    let weights: Vec<u128> = fallbacks
        .iter()
        .map(|(_, n)| (1u128 << 48) / u128::from(*n).max(1))
        .collect();
    let total: u128 = weights.iter().sum();
    let mut point = u128::from(draws[0]).saturating_mul(total) >> 64;
    let mut chosen = fallbacks.len() - 1;
    for (k, w) in weights.iter().enumerate() {
        if point < *w {
            chosen = k;
            break;
        }
        point -= w;
    }
    let (serve, n_c) = fallbacks[chosen];
    // Mute's biased coin: delete with probability 1 − n_c/m, never the last.
    let m = fallbacks.iter().map(|(_, n)| *n).max().unwrap_or(n_c);
    let delete =
        fallbacks.len() > 1 && ((u128::from(draws[1]) * u128::from(m)) >> 64) >= u128::from(n_c);
    Some(Dispersal {
        serve,
        delete,
        one_time: false,
    })
}

/// §4.5's stateless Flush checks: method, origin, SigKeyHash, nonce form,
/// time window and signature. The nonce's uniqueness is the store's.
pub fn check_flush(
    req: &FlushRequest,
    signature: &str,
    sig_key: &VerifyingKey,
    origin: &str,
    now: u64,
) -> Result<(), RpcError> {
    if req.method != FLUSH_METHOD {
        return Err(RpcError::params("Flush.METHOD", "names another method"));
    }
    if req.origin != origin {
        return Err(RpcError::params("Flush.ORIGIN", "names another server"));
    }
    if req.sig_key_hash != sig_key_hash(&sig_key.to_bytes()) {
        return Err(RpcError::params("Flush.SIGKEYHASH", "is not SigPubKey's"));
    }
    if b64::exact::<16>(&req.nonce).is_none() {
        return Err(RpcError::params("Flush.NONCE", "is not b64(16)"));
    }
    if req.timestamp.abs_diff(now) > FLUSH_WINDOW {
        return Err(RpcError::TimeWindow(
            "Flush TIMESTAMP outside ±300 s".into(),
        ));
    }
    if !sig::verify(sig_key, Ctx::FlushRequest, req, signature) {
        return Err(RpcError::BadSignature {
            field: "Signature".into(),
        });
    }
    Ok(())
}
