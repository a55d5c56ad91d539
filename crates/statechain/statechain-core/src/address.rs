//! Statechain addresses (§2.8): `bech32m(hrp, 0x00 ‖ ser33(O) ‖ A)`, the
//! owner share key a sender's last backup pays and the auth key the
//! transfer is encrypted and authorised to. `lks` on Bitcoin, `tlks` on test
//! networks and regtest.

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::scalar::{point, ser33, xonly};

/// The address version byte.
pub const ADDRESS_VERSION: u8 = 0x00;

/// Why a string is not a statechain address for this network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not bech32m, or a bad checksum.
    #[error("not a bech32m string: {0}")]
    Encoding(String),
    /// Another network's prefix.
    #[error("address prefix {got} (expected {expected})")]
    Network {
        /// The prefix this network uses.
        expected: &'static str,
        /// The prefix found.
        got: String,
    },
    /// Wrong length, version or keys.
    #[error("malformed statechain address payload")]
    Payload,
}

/// Mainnet or a test network (the prefix is all that differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// `lks`.
    Bitcoin,
    /// `tlks`: signet, testnet4, regtest.
    Test,
}

impl Net {
    /// The human-readable prefix.
    pub fn hrp(self) -> &'static str {
        match self {
            Net::Bitcoin => "lks",
            Net::Test => "tlks",
        }
    }
}

/// A receiver's published address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// `O`, the owner share key.
    pub owner: PublicKey,
    /// `A`, the auth key.
    pub auth: XOnlyPublicKey,
}

impl Address {
    /// The bech32m string.
    pub fn encode(&self, net: Net) -> String {
        let mut data = Vec::with_capacity(66);
        data.push(ADDRESS_VERSION);
        data.extend_from_slice(&ser33(&self.owner));
        data.extend_from_slice(&self.auth.serialize());
        let hrp = Hrp::parse(net.hrp()).expect("constant prefix is valid");
        bech32::encode::<Bech32m>(hrp, &data).expect("66 bytes fit bech32m's limit")
    }

    /// Parses an address for `net`.
    pub fn decode(s: &str, net: Net) -> Result<Address, AddressError> {
        let checked = CheckedHrpstring::new::<Bech32m>(s)
            .map_err(|e| AddressError::Encoding(e.to_string()))?;
        let hrp = checked.hrp().to_lowercase();
        if hrp != net.hrp() {
            return Err(AddressError::Network {
                expected: net.hrp(),
                got: hrp,
            });
        }
        let data: Vec<u8> = checked.byte_iter().collect();
        if data.len() != 66 || data[0] != ADDRESS_VERSION {
            return Err(AddressError::Payload);
        }
        Ok(Address {
            owner: point(&data[1..34]).ok_or(AddressError::Payload)?,
            auth: xonly(&data[34..66]).ok_or(AddressError::Payload)?,
        })
    }
}
