//! Which hsmd requests a Core Lightning client may send, by the capability
//! bits lightningd gave it in `ClientHsmFd`, as CLN's own hsmd decides
//! (`hsmd_check_client_capabilities`, `hsmd/permissions.h`).
//!
//! A subdaemon serves one peer or channel and is reachable from the network;
//! if one is compromised through its peer it must not be able to ask for
//! more than its job needs (a `channeld` signing a withdrawal, a
//! `connectd` asking for a node-key `SignMessage`). lightningd's own
//! connection (fd 3) is not restricted here: it can create a client with
//! any capabilities anyway.

/// ECDH with the node key (connectd, onion messages).
pub const ECDH: u64 = 1;
/// Gossip signatures.
pub const SIGN_GOSSIP: u64 = 2;
/// Signatures spending our on-chain outputs (onchaind).
pub const SIGN_ONCHAIN_TX: u64 = 4;
/// Per-commitment points and secrets.
pub const COMMITMENT_POINT: u64 = 8;
/// Signatures of the peer's commitment and HTLC transactions.
pub const SIGN_REMOTE_TX: u64 = 16;
/// Mutual close signatures.
pub const SIGN_CLOSING_TX: u64 = 32;
/// Liquidity-ad signatures.
pub const SIGN_WILL_FUND_OFFER: u64 = 64;
/// Splice signatures.
pub const SIGN_SPLICE_TX: u64 = 128;
/// Outpoint checks and locks.
pub const LOCK_OUTPOINT: u64 = 256;
/// Everything lightningd itself asks for.
pub const MASTER: u64 = 1024;

/// The capability that message type `ty` needs, or `None` for a type no
/// client may send (an unknown type, or a reply).
pub fn required(ty: u16) -> Option<u64> {
    Some(match ty {
        1 => ECDH,
        2 | 3 | 6 => SIGN_GOSSIP,
        // SignLocalHtlcTx (16) was onchaind's before the SignAny* forms.
        12..=14 | 16 => SIGN_ONCHAIN_TX,
        18 | 22 | 31 => COMMITMENT_POINT,
        19 | 20 | 35 | 36 | 40 => SIGN_REMOTE_TX,
        21 => SIGN_CLOSING_TX,
        26 => SIGN_WILL_FUND_OFFER,
        29 => SIGN_SPLICE_TX,
        32 | 37 => LOCK_OUTPOINT,
        // Init, dev preinit, new/forget channel, client fd, withdrawal,
        // invoice, commitment, basepoints, memleak, SignMessage, output
        // script, bolt12, derive secret, check pubkey, preapprovals, the
        // SignAny* family, anchor spends, HTLC mingle.
        4
        | 5
        | 7..=11
        | 23..=25
        | 27
        | 28
        | 30
        | 33
        | 34
        | 38
        | 39
        | 41
        | 90
        | 99
        | 142
        | 143
        | 144
        | 146
        | 147
        | 149 => MASTER,
        _ => return None,
    })
}

/// Whether a client holding `capabilities` may send message type `ty`.
pub fn permitted(ty: u16, capabilities: u64) -> bool {
    required(ty).is_some_and(|needed| capabilities & needed != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_only_what_its_bits_allow() {
        // channeld: commitment points and remote signatures, nothing else.
        let channeld = COMMITMENT_POINT | SIGN_REMOTE_TX | SIGN_CLOSING_TX;
        assert!(permitted(18, channeld), "GetPerCommitmentPoint");
        assert!(permitted(19, channeld), "SignRemoteCommitmentTx");
        for master_only in [7u16, 8, 23, 30, 38, 39, 9, 11] {
            assert!(!permitted(master_only, channeld), "{master_only}");
            assert!(permitted(master_only, MASTER), "{master_only}");
        }
        assert!(!permitted(1, channeld), "ECDH needs its bit");
        assert!(permitted(1, ECDH));
        // Capabilities 0: nothing at all.
        for ty in 0..=u16::MAX {
            assert!(!permitted(ty, 0), "{ty}");
        }
        // Replies and unknown types: never.
        for ty in [101u16, 111, 3000, 4242, 1000] {
            assert_eq!(required(ty), None, "{ty}");
        }
    }
}
