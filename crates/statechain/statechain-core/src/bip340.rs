//! BIP340 signing and verification on 32-byte messages (auth signatures,
//! transfer statements, co-signed transactions all use these two).

use secp256k1::{schnorr, Keypair, Message, XOnlyPublicKey, SECP256K1};

use crate::scalar::Scalar;

/// Signs `m` with `key` (`aux`: fresh randomness, or zero for vectors).
pub fn sign(key: &Scalar, m: &[u8; 32], aux: &[u8; 32]) -> [u8; 64] {
    let mut kp = Keypair::from_secret_key(SECP256K1, key.secret_key());
    let sig = SECP256K1
        .sign_schnorr_with_aux_rand(&Message::from_digest(*m), &kp, aux)
        .serialize();
    kp.non_secure_erase();
    sig
}

/// Verifies a 64-byte signature on `m` under `key`.
pub fn verify(key: &XOnlyPublicKey, m: &[u8; 32], sig: &[u8; 64]) -> bool {
    let Ok(sig) = schnorr::Signature::from_slice(sig) else {
        return false;
    };
    SECP256K1
        .verify_schnorr(&sig, &Message::from_digest(*m), key)
        .is_ok()
}

/// The x-only key of a secret key.
pub fn xonly_of(key: &Scalar) -> XOnlyPublicKey {
    key.public().x_only_public_key().0
}
