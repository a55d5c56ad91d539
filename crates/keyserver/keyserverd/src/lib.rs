//! `keyserverd`: the keyserver of keyserver.md as a library (so tests and
//! benchmarks run it in process) and a daemon (`main.rs`).
//!
//! - [`store`]: the `ks_*` tables in the log's redb file and the
//!   sequencer thread (§4.2–4.5, §4.7): group commit, replies after the
//!   durable commit.
//! - [`server`]: the methods of §2.2; stateless checks (§4.1) before
//!   sequencing.
//! - [`rpc`]: JSON-RPC 2.0 on `POST /` (§2.1).
//! - [`limits`]: rate limits per client address and per SigKeyHash (§4.6).
//! - [`tokens`]: payment tokens (§5): issuer key files, issuance.
//! - [`admin`]: the admin listener (token issuance, stats).
//! - [`chain`]: the chain's read calls, shared by the primary and mirrors.
//! - [`daemon`]: data directory, keys, genesis and the listeners.
//! - [`mirror`]: `keyserverd mirror` (§8): the log over LKTL/1 with every
//!   leaf and UID checked, the read calls served from the replica.
//!
//! The rules themselves are `ks-core`'s; this crate moves bytes and time.

pub mod admin;
pub mod chain;
pub mod daemon;
pub mod limits;
pub mod mirror;
pub mod rpc;
pub mod server;
pub mod store;
pub mod tokens;
