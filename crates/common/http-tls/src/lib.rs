//! TLS for the daemons that serve HTTP with axum and their clients: on the
//! server side (feature `server`) the same three settings as `lssd`
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`), loaded from PEM into a
//! rustls server configuration, and an accept loop that hands each
//! connection, once its handshake is done, to hyper with the router; on
//! the client side (feature `client`, for the blocking `ureq` clients of
//! the wallets and CLIs) the CA to trust and the client certificate to
//! present.
//!
//! Why an accept loop here rather than a crate: `axum::serve` takes plain
//! TCP only, and the crates that wrap it for TLS pull a second rustls crypto
//! provider or an older hyper; this is ~100 lines on `tokio-rustls` and
//! `hyper-util`, which the workspace already builds. Handshakes run in their
//! own tasks with a deadline, so a client that connects and says nothing
//! holds one socket for [`HANDSHAKE_TIMEOUT`] and never delays others.

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "client")]
pub use client::{ClientTls, ClientTlsError};
#[cfg(feature = "server")]
pub use server::{check_plaintext, serve, TlsError, TlsFiles, HANDSHAKE_TIMEOUT};
