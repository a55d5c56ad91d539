//! Clients of the Lightning Storage Server protocol.
//!
//! - [`Client`] is unprivileged: it holds a client id and token and passes MACs
//!   through untouched. It is what an untrusted proxy or broker uses on behalf
//!   of a signer that keeps the shared secret to itself.
//! - [`PrivClient`] holds the client's secret key: it pins the server key,
//!   computes the client MAC, checks every server MAC, and protects values
//!   (HMAC + ChaCha20) byte-compatibly with the reference `PrivClient`, so
//!   either can read what the other wrote.
//!
//! Either can verify the server's signed per-namespace log
//! ([`Client::verifying`]): every reply then proves it extends the last
//! checkpoint the client saw, and a read proves it is the prefix's whole,
//! current content; a server that contradicts itself yields
//! [`RpcError::Violation`] with evidence anyone can check.
//!
//! All protocol rules come from `lss-core` and `lss-verify`; this crate
//! only moves messages.

use std::time::Duration;

pub mod quorum;

use lss_core::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lss_core::value::{self, ValueError};
use lss_core::{
    shared_hmac, ClientId, KeyValue, Mac, MacScheme, SharedSecret, Token, FRAMED_MAC_EXTENSION,
    PUT_CLIENT_NONCE, PUT_SERVER_NONCE,
};
/// The generated wire types, for callers that need raw requests.
pub use lss_proto as proto;
use lss_proto::lightkeeper::lightkeeper_storage_client::LightkeeperStorageClient;
use lss_proto::lightning_storage_client::LightningStorageClient;
use lss_verify::{Expect, Rejected, StateLeaf, Trusted};
use std::path::PathBuf;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The state leaves of stored kvs (what the verifiable log commits to).
fn leaves(kvs: &[KeyValue]) -> Vec<StateLeaf> {
    kvs.iter()
        .map(|kv| StateLeaf::of(&kv.key, kv.version, &kv.value))
        .collect()
}

/// Largest reply the client decodes by default: well above the 4 MiB that
/// stock tonic clients stop at, so large signer states can be restored.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 256 * 1_024 * 1_024;

/// How to reach a server.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// TLS settings. `None` with an `https` URL trusts the public web PKI
    /// roots (Mozilla's, compiled in).
    pub tls: Option<TlsOptions>,
    /// Largest reply message to decode, and the largest total a streamed
    /// read may return.
    pub max_reply_bytes: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// A registration token from the server's operator, sent with every
    /// put and get (a server admitting listed clients only registers the
    /// client with it once; other servers ignore it).
    pub registration_token: Option<String>,
}

impl ConnectOptions {
    /// Plain defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            tls: None,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            timeout: Duration::from_secs(30),
            registration_token: None,
        }
    }
}

/// TLS material (PEM). `Debug` leaves the client key out.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// CA certificate(s) to trust for the server; `None` trusts the public web
    /// PKI roots instead.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for mutual TLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify in the server's certificate, if not the URL's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field(
                "identity_pem",
                &self
                    .identity_pem
                    .as_ref()
                    .map(|_| "<certificate, key redacted>"),
            )
            .field("domain", &self.domain)
            .finish()
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("timeout", &self.timeout)
            .field(
                "registration_token",
                &self.registration_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A transport or server failure of one call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Could not connect, or the URL or TLS settings are invalid.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server answered with an error status.
    #[error("server: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A streamed reply grew past the client's `max_reply_bytes`.
    #[error("reply larger than max_reply_bytes ({0} bytes)")]
    ReplyTooLarge(usize),
    /// Verifying: the reply cannot be trusted (no or wrong attestation, not
    /// acknowledging our checkpoint…), though nothing is provable.
    #[error("unverified reply: {0}")]
    Unverified(String),
    /// Verifying: the server contradicted its own signed statements. The
    /// evidence proves it to anyone ([`lss_verify::Evidence::verify`],
    /// `lss-cli verify-evidence`).
    #[error("the server lied: {}", .0.claim)]
    Violation(Box<lss_verify::Evidence>),
    /// Verifying: the trusted-state file cannot be read or written.
    #[error("trusted state file: {0}")]
    TrustedState(String),
}

impl RpcError {
    /// Whether retrying later may succeed (`UNAVAILABLE`, transport errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Transport(_) => true,
            // A connection that broke mid-call (a proxy or load balancer
            // that lost its upstream, a reset) reaches us as UNKNOWN with
            // the transport error as its source, or as CANCELLED (hyper's
            // "operation was canceled" for a request the dying connection
            // never sent; we never cancel a call we still wait for): as
            // retryable as a refused connection. Versioned puts make a
            // retry safe (a put that landed comes back as a conflict).
            RpcError::Status(s) => match s.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled => true,
                tonic::Code::Unknown => broken_transport(s),
                _ => false,
            },
            RpcError::ReplyTooLarge(_)
            | RpcError::Unverified(_)
            | RpcError::Violation(_)
            | RpcError::TrustedState(_) => false,
        }
    }
}

/// Whether `status` carries a transport failure in its source chain.
fn broken_transport(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Transport or server failure.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// `InfoReply.server_id` is not a public key.
    #[error("server sent an invalid server id")]
    InvalidServerId,
    /// The server's key is not the pinned one: another server, or an attack.
    #[error("server key mismatch: pinned {pinned}, server has {actual}")]
    ServerKeyMismatch {
        /// The key the client pinned.
        pinned: PublicKey,
        /// The key the server presented.
        actual: PublicKey,
    },
}

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// Nothing was written: these keys have other versions on the server
    /// (version `-1` and an empty value for a missing key). [`PrivClient`]
    /// reports values decrypted.
    #[error("version conflict on {} key(s)", .0.len())]
    Conflict(Vec<KeyValue>),
    /// The server acknowledged with a MAC that does not prove the write.
    #[error("server put MAC does not verify")]
    ServerMacMismatch,
    /// A conflicting value did not decrypt (wrong secret or tampering).
    #[error("conflict value of {key:?}: {source}")]
    Value {
        /// The key.
        key: String,
        /// What failed.
        source: ValueError,
    },
    /// Transport or server failure; nothing is known to be written.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// Why a get failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The reply's MAC does not match our nonce and the data: tampered, replayed or wrong server.
    #[error("server get MAC does not verify")]
    ServerMacMismatch,
    /// A value did not decrypt and verify.
    #[error("value of {key:?}: {source}")]
    Value {
        /// The key.
        key: String,
        /// What failed.
        source: ValueError,
    },
    /// Transport or server failure.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// What [`Client::info`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's identity key.
    pub server_id: PublicKey,
    /// The protocol version string the server reports.
    pub version: String,
    /// Lightkeeper extensions it offers (e.g. [`FRAMED_MAC_EXTENSION`]);
    /// empty for the reference server.
    pub extensions: Vec<String>,
}

impl ServerInfo {
    /// Whether the server makes framed MACs when asked.
    pub fn offers_framed_macs(&self) -> bool {
        self.extensions.iter().any(|e| e == FRAMED_MAC_EXTENSION)
    }
}

/// An unprivileged connection: client id and token, no secret.
#[derive(Debug, Clone)]
pub struct Client {
    grpc: LightningStorageClient<Channel>,
    extensions: LightkeeperStorageClient<Channel>,
    /// Whether the server serves `GetStream`: unknown until the first read.
    streams: Option<bool>,
    max_reply_bytes: usize,
    client_id: Vec<u8>,
    token: Token,
    mac_scheme: MacScheme,
    registration_token: Option<tonic::metadata::AsciiMetadataValue>,
    verifier: Option<Verifier>,
    /// With the client's secret key (a [`PrivClient`]), a verifying client
    /// signs each put, and its log entry carries the signature.
    put_signer: Option<PutSigner>,
}

/// The client's secret key, for signing puts; never shown.
#[derive(Clone, Copy)]
struct PutSigner(SecretKey);

impl std::fmt::Debug for PutSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PutSigner(<redacted>)")
    }
}

/// A verifying client's state: the pinned server id and the last checkpoint
/// it verified, optionally kept in a file.
#[derive(Debug, Clone)]
struct Verifier {
    server_id: [u8; 33],
    trusted: Option<Trusted>,
    file: Option<PathBuf>,
}

/// Opens a connection for the `lss.LightningStorage` stub (it reconnects by
/// itself after a failure).
pub async fn connect_channel(
    options: &ConnectOptions,
) -> Result<LightningStorageClient<Channel>, RpcError> {
    Ok(lss_stub(connect(options).await?, options))
}

fn lss_stub(channel: Channel, options: &ConnectOptions) -> LightningStorageClient<Channel> {
    LightningStorageClient::new(channel)
        .max_decoding_message_size(options.max_reply_bytes)
        .max_encoding_message_size(usize::MAX)
}

async fn connect(options: &ConnectOptions) -> Result<Channel, RpcError> {
    let mut endpoint = Endpoint::from_shared(options.url.clone())?
        .timeout(options.timeout)
        .tcp_nodelay(true);
    let default_tls = TlsOptions::default();
    let tls = match &options.tls {
        Some(tls) => Some(tls),
        None if options.url.starts_with("https:") => Some(&default_tls),
        None => None,
    };
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &tls.identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            config = config.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint.connect().await?)
}

/// Asks a server for its identity (no auth needed).
pub async fn info(grpc: &mut LightningStorageClient<Channel>) -> Result<ServerInfo, ConnectError> {
    let reply = grpc
        .info(lss_proto::InfoRequest {})
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let server_id =
        PublicKey::from_slice(&reply.server_id).map_err(|_| ConnectError::InvalidServerId)?;
    Ok(ServerInfo {
        server_id,
        version: reply.version,
        extensions: reply.extensions,
    })
}

impl Client {
    /// Connects as `client_id` with `token`.
    pub async fn connect(
        options: &ConnectOptions,
        client_id: ClientId,
        token: Token,
    ) -> Result<Self, RpcError> {
        Ok(Client::over(
            connect(options).await?,
            options,
            client_id,
            token,
        ))
    }

    fn over(channel: Channel, options: &ConnectOptions, client_id: ClientId, token: Token) -> Self {
        Client {
            grpc: lss_stub(channel.clone(), options),
            extensions: LightkeeperStorageClient::new(channel)
                .max_decoding_message_size(options.max_reply_bytes),
            streams: None,
            max_reply_bytes: options.max_reply_bytes,
            client_id: client_id.as_bytes().to_vec(),
            token,
            mac_scheme: MacScheme::Unframed,
            registration_token: options
                .registration_token
                .as_deref()
                .and_then(|t| tonic::metadata::MetadataValue::try_from(t).ok()),
            verifier: None,
            put_signer: None,
        }
    }

    /// Verifies every put and get against the server's signed log
    /// (docs/protocol.md "Verifiable log"), starting from `trusted` (the
    /// last checkpoint verified before, or `None` for a client with no
    /// memory). Reads then carry the proof (`GetStream`'s last chunk, or
    /// `Get`'s reply on a server without a verifying `GetStream`).
    pub fn verifying(mut self, server_id: [u8; 33], trusted: Option<Trusted>) -> Self {
        self.verifier = Some(Verifier {
            server_id,
            trusted,
            file: None,
        });
        self
    }

    /// As [`Client::verifying`], keeping the trusted checkpoint in `file`
    /// (read now if it exists, replaced durably after every verified reply).
    pub async fn verifying_with_file(
        mut self,
        server_id: [u8; 33],
        file: PathBuf,
    ) -> Result<Self, RpcError> {
        let path = file.clone();
        let stored = tokio::task::spawn_blocking(move || durable_file::read(&path))
            .await
            .map_err(|e| RpcError::TrustedState(e.to_string()))?
            .map_err(|e| RpcError::TrustedState(e.to_string()))?;
        let trusted = stored
            .map(|bytes| Trusted::decode(&bytes, &server_id))
            .transpose()
            .map_err(|e| RpcError::TrustedState(format!("{}: {e}", file.display())))?;
        self.verifier = Some(Verifier {
            server_id,
            trusted,
            file: Some(file),
        });
        Ok(self)
    }

    /// The last checkpoint verified, when verifying.
    pub fn trusted(&self) -> Option<&Trusted> {
        self.verifier.as_ref().and_then(|v| v.trusted.as_ref())
    }

    fn verify_request(&self) -> Option<lss_proto::Verify> {
        let v = self.verifier.as_ref()?;
        Some(match &v.trusted {
            None => lss_proto::Verify::default(),
            Some(t) => {
                let seen = t.seen();
                lss_proto::Verify {
                    seen_size: seen.size,
                    seen_note: seen.note.to_vec(),
                    client_sig: Vec::new(),
                }
            }
        })
    }

    /// Checks an attestation; keeps the new checkpoint or turns a
    /// contradiction into evidence.
    async fn accept(
        &mut self,
        attestation: Option<lss_proto::Attestation>,
        expect: Expect<'_>,
    ) -> Result<(), RpcError> {
        let Some(verifier) = self.verifier.as_mut() else {
            return Ok(());
        };
        let Some(a) = attestation else {
            return Err(RpcError::Unverified(
                "the server sent no attestation (verifiable log off, or not Lightkeeper)".into(),
            ));
        };
        let client: [u8; 33] = self
            .client_id
            .as_slice()
            .try_into()
            .map_err(|_| RpcError::Unverified("client id is not 33 bytes".into()))?;
        let checked = lss_verify::check(
            &verifier.server_id,
            &client,
            verifier.trusted.as_ref(),
            &a.checkpoint,
            &a.bundle,
            expect,
        );
        match checked {
            Ok(trusted) => {
                if let Some(file) = verifier.file.clone() {
                    let bytes = trusted.encode();
                    tokio::task::spawn_blocking(move || {
                        durable_file::replace(&file, &bytes, 0o600)
                    })
                    .await
                    .map_err(|e| RpcError::TrustedState(e.to_string()))?
                    .map_err(|e| RpcError::TrustedState(e.to_string()))?;
                }
                verifier.trusted = Some(trusted);
                Ok(())
            }
            Err(Rejected::Unverifiable(why)) => Err(RpcError::Unverified(why)),
            Err(Rejected::Violation(violation)) => {
                let answer = match expect {
                    Expect::Read { answer, .. } => Some(answer),
                    Expect::Put { .. } => None,
                };
                let evidence = lss_verify::Evidence::new(
                    &verifier.server_id,
                    &violation,
                    verifier.trusted.as_ref(),
                    &a.checkpoint,
                    &a.bundle,
                    answer,
                );
                tracing::error!(%violation, "LSS server contradicted its signed log");
                Err(RpcError::Violation(Box::new(evidence)))
            }
        }
    }

    /// `message` as a request, with the registration token if there is one.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.registration_token {
            request
                .metadata_mut()
                .insert(lss_core::REGISTRATION_TOKEN_HEADER, token.clone());
        }
        request
    }

    /// Asks the server for `scheme` MACs on every put and get (the caller,
    /// who holds the secret, makes and checks them in that scheme).
    pub fn with_mac_scheme(mut self, scheme: MacScheme) -> Self {
        self.mac_scheme = scheme;
        self
    }

    /// The server's identity.
    pub async fn info(&mut self) -> Result<ServerInfo, ConnectError> {
        info(&mut self.grpc).await
    }

    /// Echo.
    pub async fn ping(&mut self, message: &str) -> Result<String, RpcError> {
        let reply = self
            .grpc
            .ping(lss_proto::PingRequest {
                message: message.to_owned(),
            })
            .await?;
        Ok(reply.into_inner().message)
    }

    /// Puts `kvs` (which must be sorted by key) with a MAC the caller made.
    /// Returns the server's MAC, unchecked: the caller holds the secret.
    pub async fn put(
        &mut self,
        kvs: Vec<KeyValue>,
        client_mac: &[u8],
    ) -> Result<Vec<u8>, PutError> {
        let written: Vec<StateLeaf> = match self.verifier {
            Some(_) => leaves(&kvs),
            None => Vec::new(),
        };
        let mut verify = self.verify_request();
        let client_sig = match (&mut verify, self.put_signer) {
            (Some(v), Some(PutSigner(secret))) if !written.is_empty() => {
                let sig = lss_verify::entry::sign_put(&secret, &written);
                v.client_sig = sig.to_vec();
                Some(sig)
            }
            _ => None,
        };
        let (hmac, attestation) = self.put_raw(kvs, client_mac, verify).await?;
        if !written.is_empty() {
            let expect = Expect::Put {
                written: &written,
                client_sig: client_sig.as_ref(),
            };
            self.accept(attestation, expect).await?;
        }
        Ok(hmac)
    }

    /// Puts as [`Client::put`] with the verifiable-log request `verify` made
    /// by someone else (a relay for a client that verifies by itself):
    /// returns the server's MAC and attestation, both unchecked.
    pub async fn put_attested(
        &mut self,
        kvs: Vec<KeyValue>,
        client_mac: &[u8],
        verify: lss_proto::Verify,
    ) -> Result<(Vec<u8>, Option<lss_proto::Attestation>), PutError> {
        self.put_raw(kvs, client_mac, Some(verify)).await
    }

    async fn put_raw(
        &mut self,
        kvs: Vec<KeyValue>,
        client_mac: &[u8],
        verify: Option<lss_proto::Verify>,
    ) -> Result<(Vec<u8>, Option<lss_proto::Attestation>), PutError> {
        let request = lss_proto::PutRequest {
            auth: Some(self.auth()),
            kvs: kvs.into_iter().map(Into::into).collect(),
            hmac: client_mac.to_vec(),
            framed_mac: self.mac_scheme == MacScheme::Framed,
            verify,
        };
        let reply = self
            .grpc
            .put(self.request(request))
            .await
            .map_err(RpcError::from)?
            .into_inner();
        if reply.success {
            Ok((reply.hmac, reply.attestation))
        } else {
            Err(PutError::Conflict(
                reply.conflicts.into_iter().map(Into::into).collect(),
            ))
        }
    }

    /// Reads `prefix` with `Get` and the verifiable-log request `verify`
    /// made by someone else (a relay): the kvs, the server's MAC and its
    /// attestation, all unchecked.
    pub async fn get_attested(
        &mut self,
        prefix: &str,
        nonce: &[u8],
        verify: lss_proto::Verify,
    ) -> Result<(Vec<KeyValue>, Vec<u8>, Option<lss_proto::Attestation>), RpcError> {
        let request = lss_proto::GetRequest {
            auth: Some(self.auth()),
            key_prefix: prefix.to_owned(),
            nonce: nonce.to_vec(),
            framed_mac: self.mac_scheme == MacScheme::Framed,
            verify: Some(verify),
        };
        let reply = self.grpc.get(self.request(request)).await?.into_inner();
        Ok((
            reply.kvs.into_iter().map(Into::into).collect(),
            reply.hmac,
            reply.attestation,
        ))
    }

    /// Reads a prefix with the caller's nonce; returns the kvs and the server's
    /// MAC, unchecked.
    ///
    /// Uses Lightkeeper's `GetStream` where the server has it, so a result of
    /// any size (up to `max_reply_bytes` in total) can be read; other servers
    /// (the reference) get the plain `Get`, remembered after the first try.
    /// Either way the MAC is the one `Get` defines.
    pub async fn get(
        &mut self,
        prefix: &str,
        nonce: &[u8],
    ) -> Result<(Vec<KeyValue>, Vec<u8>), RpcError> {
        let request = lss_proto::GetRequest {
            auth: Some(self.auth()),
            key_prefix: prefix.to_owned(),
            nonce: nonce.to_vec(),
            framed_mac: self.mac_scheme == MacScheme::Framed,
            verify: self.verify_request(),
        };
        let mut read = None;
        if self.streams != Some(false) {
            match self.get_stream(request.clone()).await {
                Err(RpcError::Status(s)) if s.code() == tonic::Code::Unimplemented => {
                    // No GetStream, or (an older lssd) none with `verify`.
                    tracing::debug!("no usable GetStream on this server; using Get");
                    self.streams = Some(false);
                }
                result => {
                    self.streams = Some(true);
                    read = Some(result?);
                }
            }
        }
        let (kvs, hmac, attestation) = match read {
            Some(read) => read,
            None => {
                let reply = self.grpc.get(self.request(request)).await?.into_inner();
                let kvs = reply.kvs.into_iter().map(Into::into).collect();
                (kvs, reply.hmac, reply.attestation)
            }
        };
        if self.verifier.is_some() {
            let answer = leaves(&kvs);
            let expect = Expect::Read {
                prefix,
                nonce,
                answer: &answer,
            };
            self.accept(attestation, expect).await?;
        }
        Ok((kvs, hmac))
    }

    /// A `GetStream`: the kvs, the last chunk's MAC and attestation.
    #[allow(clippy::type_complexity)]
    async fn get_stream(
        &mut self,
        request: lss_proto::GetRequest,
    ) -> Result<(Vec<KeyValue>, Vec<u8>, Option<lss_proto::Attestation>), RpcError> {
        let mut stream = self
            .extensions
            .get_stream(self.request(request))
            .await?
            .into_inner();
        let mut kvs = Vec::new();
        let mut hmac = Vec::new();
        let mut attestation = None;
        let mut total = 0usize;
        while let Some(chunk) = stream.message().await? {
            total = total.saturating_add(
                chunk
                    .kvs
                    .iter()
                    .map(|kv| kv.key.len() + kv.value.len())
                    .sum::<usize>(),
            );
            if total > self.max_reply_bytes {
                return Err(RpcError::ReplyTooLarge(self.max_reply_bytes));
            }
            kvs.extend(chunk.kvs.into_iter().map(KeyValue::from));
            // Only the last chunk's MAC and attestation count; an earlier
            // one cannot verify.
            hmac = chunk.hmac;
            attestation = chunk.attestation;
        }
        Ok((kvs, hmac, attestation))
    }

    fn auth(&self) -> lss_proto::Auth {
        lss_proto::Auth {
            client_id: self.client_id.clone(),
            token: self.token.0.to_vec(),
        }
    }
}

/// A privileged connection: checks every MAC and protects values.
pub struct PrivClient {
    client: Client,
    shared: SharedSecret,
    value_secret: [u8; 32],
    server_id: PublicKey,
}

impl PrivClient {
    /// Connects with the client's secret key. The server's key is read with
    /// Info and must equal `pinned` when given (pin it after the first use).
    /// Values are protected with `value_secret` (lss-cli and the reference
    /// use `SHA-256(secret key)`, see [`lss_core::value::secret_for_key`]).
    pub async fn connect(
        options: &ConnectOptions,
        secret: &SecretKey,
        pinned: Option<PublicKey>,
        value_secret: [u8; 32],
    ) -> Result<Self, ConnectError> {
        let channel = connect(options).await?;
        let server_id = info(&mut lss_stub(channel.clone(), options))
            .await?
            .server_id;
        if let Some(pinned) = pinned {
            if pinned != server_id {
                return Err(ConnectError::ServerKeyMismatch {
                    pinned,
                    actual: server_id,
                });
            }
        }
        let shared = SharedSecret::derive(&server_id, secret);
        let client_id = ClientId::from(secret.public_key(&Secp256k1::signing_only()));
        let mut client = Client::over(channel, options, client_id, shared.token());
        client.put_signer = Some(PutSigner(*secret));
        Ok(PrivClient {
            client,
            shared,
            value_secret,
            server_id,
        })
    }

    /// The server key this client talks to (pin it).
    pub fn server_id(&self) -> PublicKey {
        self.server_id
    }

    /// Verifies every reply against the server's signed log, from
    /// `trusted` ([`Client::verifying`]), with the pinned server key.
    pub fn verifying(mut self, trusted: Option<Trusted>) -> Self {
        let server_id = self.server_id().serialize();
        self.client = self.client.verifying(server_id, trusted);
        self
    }

    /// As [`PrivClient::verifying`], keeping the checkpoint in `file`.
    pub async fn verifying_with_file(mut self, file: PathBuf) -> Result<Self, RpcError> {
        let server_id = self.server_id().serialize();
        self.client = self.client.verifying_with_file(server_id, file).await?;
        Ok(self)
    }

    /// The unprivileged client underneath.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Writes plaintext `kvs` atomically: sorts them, protects the values,
    /// and verifies the server's MAC, so `Ok` proves the server committed
    /// exactly this write.
    pub async fn put(&mut self, mut kvs: Vec<KeyValue>) -> Result<(), PutError> {
        kvs.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        for kv in &mut kvs {
            kv.value = value::protect(&self.value_secret, &kv.key, kv.version, &kv.value);
        }
        let client_mac = shared_hmac(&self.shared, PUT_CLIENT_NONCE, &kvs);
        let expected: Mac = shared_hmac(&self.shared, PUT_SERVER_NONCE, &kvs);
        match self.client.put(kvs, client_mac.as_bytes()).await {
            Ok(server_mac) if expected.verify(&server_mac) => Ok(()),
            Ok(_) => Err(PutError::ServerMacMismatch),
            Err(PutError::Conflict(conflicts)) => Err(PutError::Conflict(
                conflicts
                    .into_iter()
                    .map(|kv| self.open_conflict(kv))
                    .collect::<Result<_, _>>()?,
            )),
            Err(e) => Err(e),
        }
    }

    /// Reads and decrypts every key under `prefix`. `nonce` should be fresh
    /// random bytes (32 is customary); it binds the reply to this request.
    pub async fn get(&mut self, prefix: &str, nonce: &[u8]) -> Result<Vec<KeyValue>, GetError> {
        let (kvs, server_mac) = self.client.get(prefix, nonce).await?;
        if !shared_hmac(&self.shared, nonce, &kvs).verify(&server_mac) {
            return Err(GetError::ServerMacMismatch);
        }
        kvs.into_iter()
            .map(|mut kv| {
                match value::unprotect(&self.value_secret, &kv.key, kv.version, &kv.value) {
                    Ok(plain) => {
                        kv.value = plain;
                        Ok(kv)
                    }
                    Err(source) => Err(GetError::Value {
                        key: kv.key,
                        source,
                    }),
                }
            })
            .collect()
    }

    /// A conflict's value is protected, except for a missing key (`-1`, empty):
    /// the reference `PrivClient` fails on that case; we report it as missing.
    fn open_conflict(&self, mut kv: KeyValue) -> Result<KeyValue, PutError> {
        if kv.version >= 0 {
            kv.value = value::unprotect(&self.value_secret, &kv.key, kv.version, &kv.value)
                .map_err(|source| PutError::Value {
                    key: kv.key.clone(),
                    source,
                })?;
        }
        Ok(kv)
    }
}
