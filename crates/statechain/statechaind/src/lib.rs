//! `statechaind`: the statechain entity (statechain.md §1.2, §3, §5): blind
//! co-signing, key-update transfers, the transfer mailbox, tokens, and the
//! public statechain log (a tlog log with tiles and checkpoints, served on
//! the same listener and mirrored over LKTL/1 on the sync port).
//!
//! The protocol's rules are `statechain_core`'s; this crate is the driver:
//! strict HTTP parsing ([`api`]), storage rows and sealing ([`codec`],
//! [`seal`]), the single writer that commits entry, state and reply together
//! ([`store`]), the routes ([`server`]) and start-up ([`daemon`]); the
//! federation member role (mirror with the members' rules, read API) is
//! [`member`].

pub mod api;
pub mod codec;
pub mod daemon;
pub mod hooks;
pub mod member;
pub mod seal;
pub mod server;
pub mod store;
