//! A host signer for the sphinx-key architecture.
//!
//! It holds the node's seed, runs the Validating Lightning Signer
//! (`vls-protocol-signer`) over a durable local store (redb), and answers the
//! broker's requests over MQTT. Shape:
//! - [`seed`]: the seed and signer id on disk;
//! - [`core`]: VLS behind the serial request format and the LSS relay
//!   messages, no network; holds each reply until LSS has acknowledged its
//!   changes, never leaves a transaction open, answers duplicates from a
//!   cache, turns bad input and VLS panics into errors;
//! - [`lss`]: credentials, MACs and the merge of LSS state, no I/O;
//! - [`quorum`]: several LSS providers behind the broker, each one's
//!   signed log verified, `W` receipts before a reply;
//! - [`run`]: the MQTT loop (login, subscriptions, reconnect without
//!   restarting) that feeds the core on its own thread.
//!
//! Protocol: `../shared/docs/sphinx-protocol.md`; the reference's weaknesses
//! this avoids are named `W…` after the notes' §6.

pub mod core;
pub mod lss;
pub mod quorum;
pub mod run;
pub mod seed;

pub use vls_protocol_signer::lightning_signer::bitcoin::Network;
