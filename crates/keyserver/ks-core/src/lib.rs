//! `ks-core`: the keyserver's formats and rules with no I/O, no clock and
//! no randomness of its own (keyserver.md; style.md §2). The server,
//! the client, mirrors and the evidence checker all decide with this crate,
//! so they cannot disagree about what a valid entry, UID or KeyInit is.
//! Time (`now`) and the server's random draws (NONCE, IV, dispersal coins)
//! are parameters.

pub mod author;
pub mod b64;
pub mod capabilities;
pub mod entry;
pub mod error;
pub mod evidence;
pub mod identity;
pub mod keyinit;
pub mod lcj;
pub mod paper;
pub mod rules;
pub mod sig;
pub mod token;
pub mod uid;
pub mod verify;
