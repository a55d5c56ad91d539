//! Scalars mod n and point helpers (§2.1), on `secp256k1` 0.29.
//!
//! [`Scalar`] is always in `[1, n−1]`: every protocol scalar must be (§3.1),
//! and `secp256k1`'s `SecretKey` enforces it, so an operation whose result
//! would be zero returns [`Degenerate`] and the caller restarts with fresh
//! randomness (or rejects the input). Secret scalars (shares, nonces, `x1`,
//! `t1`, `t2`, blinding factors) use the same type: its `Debug` is redacted
//! and its bytes are erased on drop (§2.6; `SecretKey` has no `Zeroize`, so
//! this is `non_secure_erase`, which the compiler may not see through every
//! copy).

use secp256k1::{PublicKey, SecretKey, XOnlyPublicKey, SECP256K1};

/// The group order n, big-endian.
pub const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// A result would have been zero (or a point at infinity): negligible with
/// honest randomness; restart with fresh values, or reject the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("degenerate value (zero scalar or point at infinity)")]
pub struct Degenerate;

/// Bytes that are not a scalar in `[1, n−1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a scalar in [1, n-1]")]
pub struct InvalidScalar;

/// `±1`: the sign of `g_P`, `g_Q`, `σ` (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sign {
    /// Even Y.
    Plus,
    /// Odd Y.
    Minus,
}

impl Sign {
    /// `+1` if `p` has even Y, else `−1`.
    pub fn of(p: &PublicKey) -> Sign {
        if p.serialize()[0] == 0x02 {
            Sign::Plus
        } else {
            Sign::Minus
        }
    }

    /// `true` for `−1`.
    pub fn is_minus(self) -> bool {
        self == Sign::Minus
    }
}

impl std::ops::Mul for Sign {
    type Output = Sign;
    fn mul(self, other: Sign) -> Sign {
        if self == other {
            Sign::Plus
        } else {
            Sign::Minus
        }
    }
}

/// A scalar in `[1, n−1]` whose bytes are erased on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Scalar(SecretKey);

impl std::fmt::Debug for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scalar(<redacted>)")
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl Scalar {
    /// Parses 32 big-endian bytes; `0` and values `≥ n` are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Scalar, InvalidScalar> {
        SecretKey::from_slice(bytes)
            .map(Scalar)
            .map_err(|_| InvalidScalar)
    }

    /// Parses a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Scalar, InvalidScalar> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| InvalidScalar)?;
        Scalar::from_bytes(&arr)
    }

    /// `int(h) mod n` for a hash output (§2.1): a value `≥ n` is reduced by
    /// one subtraction of n (2^256 < 2n, so one suffices); zero is
    /// [`Degenerate`].
    pub fn reduce(h: &[u8; 32]) -> Result<Scalar, Degenerate> {
        let reduced = if *h >= ORDER { sub_order(h) } else { *h };
        Scalar::from_bytes(&reduced).map_err(|_| Degenerate)
    }

    /// The scalar `1`.
    pub fn one() -> Scalar {
        let mut b = [0u8; 32];
        b[31] = 1;
        Scalar::from_bytes(&b).expect("1 is a scalar")
    }

    /// Big-endian bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.secret_bytes()
    }

    /// `self·G`.
    pub fn public(&self) -> PublicKey {
        PublicKey::from_secret_key(SECP256K1, &self.0)
    }

    /// The underlying key, for BIP340 signing with it.
    pub fn secret_key(&self) -> &SecretKey {
        &self.0
    }

    /// Wraps a `secp256k1` secret key.
    pub fn from_secret_key(sk: SecretKey) -> Scalar {
        Scalar(sk)
    }

    /// `self + other`.
    pub fn add(&self, other: &Scalar) -> Result<Scalar, Degenerate> {
        self.0
            .add_tweak(&secp256k1::Scalar::from(other.0))
            .map(Scalar)
            .map_err(|_| Degenerate)
    }

    /// `self − other`.
    pub fn sub(&self, other: &Scalar) -> Result<Scalar, Degenerate> {
        self.add(&other.neg())
    }

    /// `self · other` (never zero: n is prime and both are non-zero).
    pub fn mul(&self, other: &Scalar) -> Scalar {
        Scalar(
            self.0
                .mul_tweak(&secp256k1::Scalar::from(other.0))
                .expect("product of non-zero scalars mod a prime is non-zero"),
        )
    }

    /// `−self`.
    pub fn neg(&self) -> Scalar {
        Scalar(self.0.negate())
    }

    /// `sign·self`.
    pub fn signed(&self, sign: Sign) -> Scalar {
        match sign {
            Sign::Plus => self.clone(),
            Sign::Minus => self.neg(),
        }
    }

    /// `self⁻¹`, by Fermat (`self^(n−2)`); only used off the hot path (the
    /// nonce-reuse demonstration and tests).
    pub fn invert(&self) -> Scalar {
        let mut exp = ORDER;
        // n − 2: the low byte of n is 0x41, so no borrow.
        exp[31] -= 2;
        let mut acc = Scalar::one();
        for byte in exp {
            for bit in (0..8).rev() {
                acc = acc.mul(&acc);
                if (byte >> bit) & 1 == 1 {
                    acc = acc.mul(self);
                }
            }
        }
        acc
    }
}

/// `h − n` for `h ≥ n` (256-bit big-endian subtraction).
fn sub_order(h: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = h[i] as i16 - ORDER[i] as i16 - borrow;
        if d < 0 {
            d += 256;
            borrow = 1;
        } else {
            borrow = 0;
        }
        out[i] = d as u8;
    }
    out
}

/// `ser33(P)`.
pub fn ser33(p: &PublicKey) -> [u8; 33] {
    p.serialize()
}

/// `x(P)`, the 32-byte x coordinate.
pub fn xbytes(p: &PublicKey) -> [u8; 32] {
    p.x_only_public_key().0.serialize()
}

/// Parses a compressed point.
pub fn point(bytes: &[u8]) -> Option<PublicKey> {
    if bytes.len() != 33 {
        return None;
    }
    PublicKey::from_slice(bytes).ok()
}

/// Parses an x-only key (BIP340 `lift_x` must succeed).
pub fn xonly(bytes: &[u8]) -> Option<XOnlyPublicKey> {
    if bytes.len() != 32 {
        return None;
    }
    XOnlyPublicKey::from_slice(bytes).ok()
}

/// `a + b`; infinity is [`Degenerate`].
pub fn add_points(a: &PublicKey, b: &PublicKey) -> Result<PublicKey, Degenerate> {
    a.combine(b).map_err(|_| Degenerate)
}

/// `a − b`; infinity is [`Degenerate`].
pub fn sub_points(a: &PublicKey, b: &PublicKey) -> Result<PublicKey, Degenerate> {
    a.combine(&b.negate(SECP256K1)).map_err(|_| Degenerate)
}

/// `k·P`.
pub fn mul_point(p: &PublicKey, k: &Scalar) -> PublicKey {
    p.mul_tweak(SECP256K1, &secp256k1::Scalar::from(k.0))
        .expect("non-zero multiple of a point of prime order is not infinity")
}

/// `sign·P`.
pub fn signed_point(p: &PublicKey, sign: Sign) -> PublicKey {
    match sign {
        Sign::Plus => *p,
        Sign::Minus => p.negate(SECP256K1),
    }
}

/// The full point with even Y whose x coordinate is `x` (BIP340 `lift_x`).
pub fn lift_x(x: &XOnlyPublicKey) -> PublicKey {
    PublicKey::from_x_only_public_key(*x, secp256k1::Parity::Even)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_subtracts_n_once_and_refuses_zero() {
        assert_eq!(Scalar::reduce(&ORDER), Err(Degenerate));
        let mut n_plus_5 = ORDER;
        n_plus_5[31] += 5;
        assert_eq!(Scalar::reduce(&n_plus_5).unwrap().to_bytes()[31], 5);
        let max = [0xffu8; 32];
        let r = Scalar::reduce(&max).unwrap().to_bytes();
        // 2^256 − 1 − n = 0x14551231950b75fc4402da1732fc9bebe
        assert_eq!(
            hex::encode(r),
            "000000000000000000000000000000014551231950b75fc4402da1732fc9bebe"
        );
    }

    #[test]
    fn invert_is_an_inverse() {
        let a = Scalar::from_bytes(&[0x37; 32]).unwrap();
        assert_eq!(a.mul(&a.invert()), Scalar::one());
    }

    #[test]
    fn debug_is_redacted() {
        let a = Scalar::from_bytes(&[0x37; 32]).unwrap();
        assert!(!format!("{a:?}").contains("37"));
    }
}
