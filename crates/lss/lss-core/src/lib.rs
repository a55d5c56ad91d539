//! The Lightning Storage Server protocol's rules, with no I/O.
//!
//! Everything a server, a client, a proxy or a signer must agree on lives here
//! exactly once: identities and the ECDH auth token ([`identity`]), the one MAC
//! primitive ([`mac`]), what makes a put acceptable and when it conflicts
//! ([`put`]), and the client-side value protection of `PrivClient` ([`value`]).
//!
//! This crate deliberately does no networking, file access, clocks or
//! randomness of its own: callers pass keys, nonces and the versions their store
//! reports, and get decisions back. That keeps it deterministic, easy to test
//! against the vectors of the protocol spec, and shareable by every binary.

pub use secp256k1;

pub mod identity;
pub mod kv;
pub mod mac;
pub mod put;
pub mod value;

pub use identity::{AuthError, ClientId, KeyFileError, ServerKey, SharedSecret, Token};
pub use kv::KeyValue;
pub use mac::{
    framed_hmac, shared_hmac, Mac, MacScheme, MacWriter, FRAMED_MAC_EXTENSION, PUT_CLIENT_NONCE,
    PUT_SERVER_NONCE, REGISTRATION_TOKEN_HEADER,
};
pub use put::{
    accepts, namespace_after, Limit, LimitExceeded, Limits, PutOutcome, PutRejected, SortedKvs,
    ValidPut,
};
