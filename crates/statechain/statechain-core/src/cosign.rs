//! Blinded two-party Schnorr co-signing (§2.2–§2.4).
//!
//! The coin's key is `P = O + S` (plain addition, so the key update of §2.5
//! can move shares additively), tweaked as BIP86 into `Q`. The owner blinds
//! the SE's nonce with its own nonce and `b·P`, and commits to `(R_o, b, m)`
//! before the SE reveals `R_s`, so every challenge the SE answers is a fixed
//! function of its nonce (the ROS/Wagner defence of §2.4). The SE sees only
//! `(com, R_s, c)`; the receiver later audits every session from the logged
//! values and the opening the sender hands over ([`audit`]).
//!
//! Both sides of the protocol live here so that the SE, wallets and tests
//! run the same arithmetic.

use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::bip340::verify as verify_bip340;
use crate::rules::Session;

use crate::hash::{tagged_hash, TAG_CHALLENGE, TAG_COMMIT, TAG_NONCE, TAG_TAPTWEAK};
use crate::scalar::{add_points, mul_point, ser33, signed_point, xbytes, Degenerate, Scalar, Sign};

/// Why a co-signing step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignError {
    /// The BIP341 tweak hash was `≥ n`: the depositor must draw a new `o_1`.
    #[error("the TapTweak hash is not a scalar; draw a new owner share")]
    TweakOverflow,
    /// A zero scalar or an infinite point: cancel and restart with fresh values.
    #[error("degenerate session values; cancel and restart with fresh randomness")]
    Degenerate,
    /// The SE's partial signature does not satisfy `s_s·G = R_s + c·S`.
    #[error("the SE's partial signature is invalid")]
    BadPartial,
    /// The combined signature failed BIP340 verification (a bug or a bad share).
    #[error("the combined signature does not verify")]
    BadSignature,
}

impl From<Degenerate> for CosignError {
    fn from(_: Degenerate) -> Self {
        CosignError::Degenerate
    }
}

/// The coin's aggregate key and its BIP86 tweak (§2.2).
#[derive(Debug, Clone)]
pub struct CoinKey {
    /// `P = O + S`.
    pub p: PublicKey,
    /// `g_P`.
    pub g_p: Sign,
    /// The full tweaked point `Q = g_P·P + t·G`.
    pub q: PublicKey,
    /// `g_Q`.
    pub g_q: Sign,
    /// The tweak `t = int(TaggedHash("TapTweak", x(P)))` (public).
    t: Scalar,
}

impl CoinKey {
    /// The key for `P`.
    pub fn new(p: PublicKey) -> Result<CoinKey, CosignError> {
        let th = tagged_hash(TAG_TAPTWEAK, &[&xbytes(&p)]);
        // BIP341 fails (rather than reduces) when the tweak is not a scalar.
        let t = Scalar::from_bytes(&th).map_err(|_| CosignError::TweakOverflow)?;
        let g_p = Sign::of(&p);
        let q = add_points(&signed_point(&p, g_p), &t.public())?;
        Ok(CoinKey {
            p,
            g_p,
            g_q: Sign::of(&q),
            q,
            t,
        })
    }

    /// `P = S + O` from the two shares' public keys.
    pub fn from_shares(server: &PublicKey, owner: &PublicKey) -> Result<CoinKey, CosignError> {
        CoinKey::new(add_points(server, owner)?)
    }

    /// `x(Q)`, the output key.
    pub fn output_key(&self) -> XOnlyPublicKey {
        self.q.x_only_public_key().0
    }

    /// The P2TR output script `0x51 0x20 ‖ x(Q)`.
    pub fn script_pubkey(&self) -> bitcoin::ScriptBuf {
        let mut s = vec![0x51, 0x20];
        s.extend_from_slice(&xbytes(&self.q));
        bitcoin::ScriptBuf::from_bytes(s)
    }

    /// The tweak scalar `t`.
    pub fn tweak(&self) -> &Scalar {
        &self.t
    }
}

/// The owner's commitment `TaggedHash(commit, ser33(R_o) ‖ b ‖ m)`.
pub fn commitment(r_o: &PublicKey, b: &Scalar, m: &[u8; 32]) -> [u8; 32] {
    tagged_hash(TAG_COMMIT, &[&ser33(r_o), &b.to_bytes(), m])
}

/// The BIP340 challenge `e = int(TaggedHash(challenge, x(R*) ‖ x(Q) ‖ m))`.
fn challenge_scalar(r_star: &PublicKey, q: &PublicKey, m: &[u8; 32]) -> Result<Scalar, Degenerate> {
    Scalar::reduce(&tagged_hash(
        TAG_CHALLENGE,
        &[&xbytes(r_star), &xbytes(q), m],
    ))
}

/// What the owner derives from the SE's nonce (§2.3 step 3).
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `R* = R_s + R_o + b·P`.
    pub r_star: PublicKey,
    /// `σ = g(R*)`.
    pub sigma: Sign,
    /// The BIP340 challenge `e`.
    pub e: Scalar,
    /// `c = b + σ·g_P·g_Q·e`, sent to the SE.
    pub c: Scalar,
}

/// `R*`, `σ`, `e` and `c` for a session (shared by the owner and the audit).
pub fn derive_challenge(
    key: &CoinKey,
    r_s: &PublicKey,
    r_o: &PublicKey,
    b: &Scalar,
    m: &[u8; 32],
) -> Result<Challenge, Degenerate> {
    let r_star =
        PublicKey::combine_keys(&[r_s, r_o, &mul_point(&key.p, b)]).map_err(|_| Degenerate)?;
    let sigma = Sign::of(&r_star);
    let e = challenge_scalar(&r_star, &key.q, m)?;
    let c = b.add(&e.signed(sigma * key.g_p * key.g_q))?;
    Ok(Challenge {
        r_star,
        sigma,
        e,
        c,
    })
}

/// The owner's side of one session: its secret nonce, blinding factor and
/// message. Persist it (sealed) before sending the commitment (§7.2).
#[derive(Clone)]
pub struct OwnerSession {
    r_o: Scalar,
    b: Scalar,
    m: [u8; 32],
}

impl std::fmt::Debug for OwnerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerSession")
            .field("m", &hex::encode(self.m))
            .finish_non_exhaustive()
    }
}

impl OwnerSession {
    /// A session from fresh random `r_o`, `b` (drawn by the caller) for `m`.
    pub fn new(r_o: Scalar, b: Scalar, m: [u8; 32]) -> OwnerSession {
        OwnerSession { r_o, b, m }
    }

    /// `R_o = r_o·G`.
    pub fn nonce_point(&self) -> PublicKey {
        self.r_o.public()
    }

    /// The blinding factor `b` (part of the opening handed to receivers).
    pub fn blinding(&self) -> &Scalar {
        &self.b
    }

    /// The secret nonce, for sealing in the wallet store.
    pub fn secret_nonce(&self) -> &Scalar {
        &self.r_o
    }

    /// The message being signed.
    pub fn message(&self) -> &[u8; 32] {
        &self.m
    }

    /// The commitment sent with `sign/first`.
    pub fn commitment(&self) -> [u8; 32] {
        commitment(&self.nonce_point(), &self.b, &self.m)
    }

    /// Step 3: the challenge for the SE's nonce `R_s`.
    pub fn challenge(&self, key: &CoinKey, r_s: &PublicKey) -> Result<Challenge, CosignError> {
        Ok(derive_challenge(
            key,
            r_s,
            &self.nonce_point(),
            &self.b,
            &self.m,
        )?)
    }

    /// Step 5: checks the SE's partial signature against its current share
    /// key `S`, completes and verifies the BIP340 signature `x(R*) ‖ s`.
    pub fn finish(
        &self,
        key: &CoinKey,
        owner_share: &Scalar,
        server_share: &PublicKey,
        r_s: &PublicKey,
        ch: &Challenge,
        s_s: &Scalar,
    ) -> Result<[u8; 64], CosignError> {
        if !partial_is_valid(server_share, r_s, &ch.c, s_s) {
            return Err(CosignError::BadPartial);
        }
        // s_o = r_o + c·o + σ·g_Q·e·t
        let tweak_term = ch.e.mul(key.tweak()).signed(ch.sigma * key.g_q);
        let s_o = self.r_o.add(&ch.c.mul(owner_share))?.add(&tweak_term)?;
        let s = s_s.add(&s_o)?.signed(ch.sigma);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&xbytes(&ch.r_star));
        sig[32..].copy_from_slice(&s.to_bytes());
        if !verify_bip340(&key.output_key(), &self.m, &sig) {
            return Err(CosignError::BadSignature);
        }
        Ok(sig)
    }
}

/// `s_s·G = R_s + c·S`.
pub fn partial_is_valid(
    server_share: &PublicKey,
    r_s: &PublicKey,
    c: &Scalar,
    s_s: &Scalar,
) -> bool {
    match add_points(r_s, &mul_point(server_share, c)) {
        Ok(expected) => expected == s_s.public(),
        Err(_) => false,
    }
}

/// The SE's hedged nonce (§2.4 rule 2):
/// `int(TaggedHash(nonce, s ‖ rand32 ‖ statechain_id ‖ head ‖ com))`.
/// `rand32` MUST be fresh randomness for every call.
pub fn server_nonce(
    share: &Scalar,
    rand32: &[u8; 32],
    statechain_id: &[u8; 16],
    head: &[u8; 32],
    com: &[u8; 32],
) -> Result<Scalar, Degenerate> {
    let mut k = share.to_bytes();
    let h = tagged_hash(TAG_NONCE, &[&k, rand32, statechain_id, head, com]);
    zeroize::Zeroize::zeroize(&mut k);
    Scalar::reduce(&h)
}

/// The SE's partial signature `s_s = r_s + c·s` (§2.3 step 4).
pub fn server_partial(r_s: &Scalar, share: &Scalar, c: &Scalar) -> Result<Scalar, Degenerate> {
    r_s.add(&c.mul(share))
}

/// Why a session audit failed (§2.3 "Audit", §4.5 step 7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The opening does not match the logged commitment.
    #[error("the opening does not match the logged commitment")]
    Commitment,
    /// The recomputed challenge differs from the logged one.
    #[error("the logged challenge is not the one this opening and message give")]
    Challenge,
    /// `x(R*)` differs from the signature's first half.
    #[error("the signature's nonce is not the session's R*")]
    Nonce,
    /// Degenerate values.
    #[error("degenerate session values")]
    Degenerate,
}

/// A session's opening `(R_o, b)`, handed to receivers with the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// `R_o`.
    pub owner_nonce: PublicKey,
    /// `b`.
    pub blinding: Scalar,
}

/// The receiver's audit of one logged session: the opening `(R_o, b)` and
/// the message `m` (recomputed from the backup) must reproduce the logged
/// commitment and challenge, and `R*` must be the signature's nonce.
pub fn audit(
    key: &CoinKey,
    logged: &Session,
    opening: &Opening,
    m: &[u8; 32],
    sig: &[u8; 64],
) -> Result<(), AuditError> {
    let Opening {
        owner_nonce: r_o,
        blinding: b,
    } = opening;
    if commitment(r_o, b, m) != logged.commitment {
        return Err(AuditError::Commitment);
    }
    let r_s = logged.nonce_point().ok_or(AuditError::Degenerate)?;
    let ch = derive_challenge(key, &r_s, r_o, b, m).map_err(|_| AuditError::Degenerate)?;
    if ch.c != logged.challenge {
        return Err(AuditError::Challenge);
    }
    if xbytes(&ch.r_star) != sig[..32] {
        return Err(AuditError::Nonce);
    }
    Ok(())
}

/// Recovers a share from two partial signatures under one nonce with
/// different challenges: `s = (s_s − s_s')·(c − c')⁻¹` (§2.4 rule 6). This
/// is why the SE never answers a second challenge for a nonce; it exists to
/// demonstrate that in tests.
pub fn recover_share_from_nonce_reuse(
    s_s1: &Scalar,
    c1: &Scalar,
    s_s2: &Scalar,
    c2: &Scalar,
) -> Result<Scalar, Degenerate> {
    Ok(s_s1.sub(s_s2)?.mul(&c1.sub(c2)?.invert()))
}
