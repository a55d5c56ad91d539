//! The broker of the sphinx-key architecture: Core Lightning starts it as
//! its `hsmd`; it relays each hsmd request over authenticated MQTT to a
//! remote signer running VLS, and the reply back.
//!
//! ```text
//! lightningd ─fd 3─┐          ┌─ Link (embedded mqtt-server, or Mosquitto)
//! subdaemons ─fds──┴─ cln ────┴─ Scheduler ── signers ({cid}/vls, …)
//! ```
//! - [`cln`]: hsmd framing on fd 3 and the client sockets; `ClientHsmFd`
//!   (fd passing in [`fdio`]), `HsmdInit` held until a signer answers.
//! - [`core`]: the rules, sans I/O: every signer's and request's state,
//!   FIFO with one request in flight, replies matched by (signer,
//!   sequence), the LSS dance, deadlines; events in (with `now`), actions out.
//! - [`scheduler`]: the tokio driver that feeds [`core`] and performs its
//!   actions.
//! - [`link`]: MQTT, embedded with per-topic authorisation or external;
//!   login by node key with a freshness window, owner pinned ([`owner`]).
//! - [`lss`]: the relay to the LSS server.
//! - [`api`]: the authenticated HTTP control API.
//! - [`config`]: flags, environment and a TOML file.
//!
//! Protocol: `../shared/docs/sphinx-protocol.md`; the reference's weaknesses
//! avoided here are named `W…`/`S…` after the notes' §6.

pub mod api;
pub mod cln;
pub mod config;
pub mod core;
pub mod fdio;
pub mod link;
pub mod lss;
pub mod metrics;
pub mod owner;
pub mod scheduler;
