//! The wire formats of the sphinx-key remote-signer architecture, with no I/O.
//!
//! Everything a broker and a signer must agree on byte for byte, so that a
//! sphinx-key device can talk to Lightkeeper's broker and the reverse:
//! - [`capabilities`]: which hsmd requests a CLN client may send;
//! - [`hsmd`]: Core Lightning's hsmd framing (`u32 BE length | u16 BE type | body`);
//! - [`serial`]: the serial request/response headers that carry hsmd messages
//!   over MQTT (sequence number, client peer id and dbid);
//! - [`topics`]: the MQTT topic names `{cid}/{suffix}`;
//! - [`lss`]: the LSS relay messages between broker and signer, in the exact
//!   hand-made msgpack shapes of the reference, quirks included;
//! - [`login`]: the signer's MQTT login token, bound to its client id,
//!   checked with a freshness window and accepted once;
//! - [`control`]: signed control messages with a nonce window;
//! - [`signed`]: the node-key signatures both use, in a domain of our own
//!   that no hsmd request can sign in, or sphinx-key's where configured.
//!
//! Decoders take untrusted bytes: every malformed input is an error, never a
//! panic, and no length read from the input is trusted for an allocation
//! beyond what the input holds. References: `../shared/docs/sphinx-protocol.md`
//! and the notes' §1.2, §2.1, §2.4, §3.2.

pub mod capabilities;
pub mod control;
pub mod hsmd;
pub mod login;
pub mod lss;
pub mod serial;
pub mod signed;
pub mod topics;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends before the message does.
    #[error("truncated: needed {needed} more bytes")]
    Truncated {
        /// How many more bytes the message claims.
        needed: usize,
    },
    /// A length is outside what the protocol allows.
    #[error("length {len} outside {min}..={max}")]
    Length {
        /// The length found.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A fixed marker is wrong.
    #[error("bad magic {found:#06x}, expected {expected:#06x}")]
    Magic {
        /// Found.
        found: u16,
        /// Expected.
        expected: u16,
    },
    /// Bytes follow a complete message.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// The structure is not the expected one.
    #[error("malformed: {0}")]
    Malformed(String),
}
