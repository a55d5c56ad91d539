//! The additive key update on transfer (§2.5).
//!
//! The SE hands the sender a fresh `x1`; the sender passes `t1 = o1 + x1` to
//! the receiver inside the encrypted transfer message; the receiver returns
//! `t2 = t1 − o2` and `S2 = P − O2`; the SE sets `s2 = s1 + t2 − x1`. The
//! invariant `s2 + o2 = s1 + o1` keeps `P` (and so the coin's output) fixed
//! while the old owner's share stops working with the new SE share. The SE
//! learns `o1 − o2` only.

use secp256k1::PublicKey;

use crate::scalar::{add_points, sub_points, Degenerate, Scalar};

/// The SE's update did not match the receiver's claimed `S2` (`key_mismatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the new server share does not match the claimed key")]
pub struct KeyMismatch;

/// Sender: `t1 = o1 + x1`.
pub fn sender_t1(o1: &Scalar, x1: &Scalar) -> Result<Scalar, Degenerate> {
    o1.add(x1)
}

/// Receiver: `t1·G = O1 + X1` (§4.5 step 6).
pub fn t1_is_valid(t1: &Scalar, o1: &PublicKey, x1_pub: &PublicKey) -> bool {
    add_points(o1, x1_pub).is_ok_and(|sum| sum == t1.public())
}

/// Receiver: `(t2, S2) = (t1 − o2, P − O2)`.
pub fn receiver_update(
    t1: &Scalar,
    o2: &Scalar,
    p: &PublicKey,
) -> Result<(Scalar, PublicKey), Degenerate> {
    let t2 = t1.sub(o2)?;
    let s2 = sub_points(p, &o2.public())?;
    Ok((t2, s2))
}

/// SE: `s2 = s1 + t2 − x1`, which must be non-zero and equal `S2`'s secret.
pub fn server_update(
    s1: &Scalar,
    t2: &Scalar,
    x1: &Scalar,
    claimed: &PublicKey,
) -> Result<Scalar, KeyMismatch> {
    let s2 = s1
        .add(t2)
        .and_then(|v| v.sub(x1))
        .map_err(|_| KeyMismatch)?;
    if s2.public() != *claimed {
        return Err(KeyMismatch);
    }
    Ok(s2)
}
