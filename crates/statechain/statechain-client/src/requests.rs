//! The signed request bodies of §3.3, built in one place for the wallet,
//! the load generator and the SE's tests. `aux` is the BIP340 signing
//! randomness (fresh in the wallet; fixed where a test wants identical
//! bodies).

use serde_json::{json, Value};
use statechain_core::auth::{self, Op};
use statechain_core::bip340;
use statechain_core::scalar::{ser33, Scalar};
use statechain_core::se;
use statechain_core::{LeafHash, SeId, StatechainId};

/// `{"key": A, "sig": BIP340(a, digest)}`.
pub fn auth_json(a: &Scalar, digest: &[u8; 32], aux: &[u8; 32]) -> Value {
    json!({"key": hex::encode(bip340::xonly_of(a).serialize()), "sig": hex::encode(bip340::sign(a, digest, aux))})
}

/// `deposit/init` with token `token_id`, authorised by the new auth key `a`.
pub fn deposit(se_id: &SeId, token_id: &[u8; 16], a: &Scalar, aux: &[u8; 32]) -> Value {
    let d = se::deposit_digest(se_id, &bip340::xonly_of(a), token_id);
    json!({"token_id": hex::encode(token_id), "auth": auth_json(a, &d, aux)})
}

/// `sign/first` with commitment `com`.
pub fn sign_first(
    se_id: &SeId,
    id: &StatechainId,
    head: &LeafHash,
    com: &[u8; 32],
    a: &Scalar,
    aux: &[u8; 32],
) -> Value {
    let d = auth::digest(se_id, Op::SignFirst, id, head, &[com]);
    json!({"statechain_id": hex::encode(id), "head": hex::encode(head), "commitment": hex::encode(com), "auth": auth_json(a, &d, aux)})
}

/// `sign/second` for nonce `r_s`, commitment `com`, challenge `c`.
#[allow(clippy::too_many_arguments)]
pub fn sign_second(
    se_id: &SeId,
    id: &StatechainId,
    head: &LeafHash,
    r_s: &secp256k1::PublicKey,
    com: &[u8; 32],
    c: &Scalar,
    a: &Scalar,
    aux: &[u8; 32],
) -> Value {
    let d = auth::digest(
        se_id,
        Op::SignSecond,
        id,
        head,
        &[&ser33(r_s), com, &c.to_bytes()],
    );
    json!({"statechain_id": hex::encode(id), "head": hex::encode(head), "server_nonce": hex::encode(ser33(r_s)),
           "commitment": hex::encode(com), "challenge": hex::encode(c.to_bytes()), "auth": auth_json(a, &d, aux)})
}
