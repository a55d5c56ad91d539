//! The `lss.LightningStorage` handlers, and Lightkeeper's `GetStream`
//! extension (`lightkeeper.LightkeeperStorage`) over the same store and key.
//!
//! Each handler checks in the order of lss-protocol.md §4 (the reference's
//! order, so clients see the same status for the same mistake): decode (by
//! tonic, within `max_request_bytes`), `auth` present, key order and size
//! limits, client id and token, client MAC, then the store.

use lss_core::{
    ClientId, Limits, MacScheme, PutOutcome, ServerKey, SharedSecret, SortedKvs, ValidPut,
    FRAMED_MAC_EXTENSION, PUT_CLIENT_NONCE, PUT_SERVER_NONCE,
};
use std::pin::Pin;
use std::sync::Arc;

use lss_proto::lightkeeper::lightkeeper_storage_server::{
    LightkeeperStorage, LightkeeperStorageServer,
};
use lss_proto::lightkeeper::GetChunk;
use lss_proto::lightning_storage_server::{LightningStorage, LightningStorageServer};
use lss_proto::{
    GetReply, GetRequest, InfoReply, InfoRequest, PingReply, PingRequest, PutReply, PutRequest,
};
use lss_store::Store;
use lss_verify::ledger::{is_reserved, RESERVED_PREFIX};
use tonic::{Request, Response, Status};
use tracing::{debug, Instrument};

use crate::access::{Access, TOKEN_HEADER};
use crate::auth::Authenticator;
use crate::conn::Hold;
use crate::disk::DiskReserve;
use crate::inflight::{Inflight, ReplyBudget};
use crate::ledger::{Ledgers, Logged};
use crate::status;

/// `InfoReply.version`: the reference's value, which clients may compare.
pub const PROTOCOL_VERSION: &str = "0.1";

/// Target encoded size of one `GetStream` chunk. Far below every client's
/// decode limit (tonic's default is 4 MiB); a single larger entry still goes
/// alone in its own chunk.
pub const STREAM_CHUNK_BYTES: usize = 1024 * 1024;

/// The gRPC service over a store.
pub struct LssService<S> {
    store: S,
    auth: Arc<Authenticator>,
    access: Arc<Access>,
    disk: Option<Arc<DiskReserve>>,
    inflight: Inflight,
    replies: ReplyBudget,
    limits: Limits,
    ledgers: Option<Arc<Ledgers>>,
}

/// A read's result with its MAC, and what it keeps reserved until the client
/// has read the reply.
struct Read {
    kvs: Vec<lss_core::KeyValue>,
    hmac: Vec<u8>,
    attestation: Option<lss_proto::Attestation>,
    hold: Hold,
}

impl<S: Store> LssService<S> {
    /// A service answering with `key`'s identity to any client, enforcing `limits`.
    pub fn new(store: S, key: ServerKey, limits: Limits) -> Self {
        let auth = Authenticator::new(key, crate::auth::DEFAULT_CACHE_ENTRIES);
        Self::with_access(store, Arc::new(auth), Arc::new(Access::open()), limits)
    }

    /// A service authenticating with `auth` the clients `access` admits.
    pub fn with_access(
        store: S,
        auth: Arc<Authenticator>,
        access: Arc<Access>,
        limits: Limits,
    ) -> Self {
        LssService {
            store,
            auth,
            access,
            disk: None,
            inflight: Inflight::new(limits.max_inflight_per_client),
            replies: ReplyBudget::new(limits.max_reply_bytes_per_client, limits.max_reply_bytes),
            limits,
            ledgers: None,
        }
    }

    /// Keeps each namespace's verifiable log (`lss-verify`) and answers the
    /// `verify` extension; without it, puts are not logged and `verify` is
    /// ignored.
    pub fn with_verifiable_log(mut self, on: bool) -> Self {
        self.ledgers = on.then(|| Arc::new(Ledgers::new(self.auth.key().clone())));
        self
    }

    /// Refuses puts that would create a namespace while `disk` is below its reserve.
    pub fn with_disk_reserve(mut self, disk: Option<Arc<DiskReserve>>) -> Self {
        self.disk = disk;
        self
    }

    /// The tonic server of `lss.LightningStorage` alone (what the reference
    /// serves), with its decode limit set to `max_request_bytes`.
    pub fn into_server(self) -> LightningStorageServer<Self> {
        let max = self.limits.max_request_bytes;
        LightningStorageServer::new(self).max_decoding_message_size(max)
    }

    /// Both services over one shared handler: `lss.LightningStorage` and
    /// `lightkeeper.LightkeeperStorage`.
    pub fn into_servers(self) -> (LightningStorageServer<Self>, LightkeeperStorageServer<Self>) {
        let max = self.limits.max_request_bytes;
        let shared = Arc::new(self);
        (
            LightningStorageServer::from_arc(shared.clone()).max_decoding_message_size(max),
            LightkeeperStorageServer::from_arc(shared)
                .max_decoding_message_size(max)
                .max_encoding_message_size(usize::MAX),
        )
    }

    /// Authenticates a Get and reads its result with the MAC over it.
    async fn read(&self, request: Request<GetRequest>, op: &'static str) -> Result<Read, Status> {
        let token = registration_token(&request);
        let GetRequest {
            auth,
            key_prefix,
            nonce,
            framed_mac,
            verify,
        } = request.into_inner();
        let scheme = mac_scheme(framed_mac);
        let verify = match (&self.ledgers, verify) {
            (Some(ledgers), Some(v)) => Some((ledgers.clone(), crate::ledger::seen(&v)?)),
            _ => None,
        };
        let (client, shared, slot) = self.admit(auth, token).await?;
        let span = tracing::debug_span!("get", op, client = %client.short(), prefix_len = key_prefix.len());
        async move {
            // Reserve the namespace's size (a bound of any read of it)
            // before reading, so a read that cannot be queued is refused
            // without first costing its size in memory; then the real size.
            let bound = self.store.usage(client).await.map_err(status::store)?;
            let mut reserved = self
                .replies
                .reserve(client, bound)
                .map_err(|e| status::limit_exceeded(&e))?;
            let (kvs, attestation) = match verify {
                Some((ledgers, seen)) => {
                    let (kvs, attested) = ledgers
                        .get(&self.store, client, key_prefix, nonce.clone(), seen)
                        .await?;
                    (kvs, Some(attested.into()))
                }
                None => {
                    let mut kvs = self
                        .store
                        .get(client, key_prefix)
                        .await
                        .map_err(status::store)?;
                    kvs.retain(|kv| !is_reserved(&kv.key));
                    (kvs, None)
                }
            };
            let bytes = payload(&kvs);
            reserved
                .resize(bytes as u64)
                .map_err(|e| status::limit_exceeded(&e))?;
            let (kvs, hmac) = off_executor(bytes, move || {
                let hmac = scheme.mac(&shared, &nonce, &kvs).as_bytes().to_vec();
                (kvs, hmac)
            })
            .await?;
            debug!(keys = kvs.len(), bytes, "read");
            Ok(Read {
                kvs,
                hmac,
                attestation,
                hold: Hold::new((slot, reserved)),
            })
        }
        .instrument(span)
        .await
    }

    /// Authenticates, applies the access policy (registering with `token`
    /// if the client brings one) and takes an in-flight slot: what every
    /// Put and Get does first.
    async fn admit(
        &self,
        auth: Option<lss_proto::Auth>,
        token: Option<String>,
    ) -> Result<(ClientId, SharedSecret, crate::inflight::Slot), Status> {
        let (client, shared) = self.authenticate(auth)?;
        self.access
            .admit(client, token.as_deref())
            .await
            .map_err(status::access)?;
        let slot = self
            .inflight
            .enter(client)
            .map_err(|e| status::limit_exceeded(&e))?;
        Ok((client, shared, slot))
    }

    fn authenticate(
        &self,
        auth: Option<lss_proto::Auth>,
    ) -> Result<(ClientId, SharedSecret), Status> {
        let auth = auth.ok_or_else(status::missing_auth)?;
        self.auth
            .authenticate(&auth.client_id, &auth.token)
            .map_err(status::auth)
    }
}

/// The registration token a request carries, if any.
fn registration_token<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The MAC a request asked for (the `framed_mac` extension field).
fn mac_scheme(framed: bool) -> MacScheme {
    if framed {
        MacScheme::Framed
    } else {
        MacScheme::Unframed
    }
}

#[tonic::async_trait]
impl<S: Store> LightningStorage for LssService<S> {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {
            message: request.into_inner().message,
        }))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoReply>, Status> {
        Ok(Response::new(InfoReply {
            version: PROTOCOL_VERSION.to_owned(),
            server_id: self.auth.key().server_id().to_vec(),
            extensions: vec![FRAMED_MAC_EXTENSION.to_owned()],
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutReply>, Status> {
        let token = registration_token(&request);
        let PutRequest {
            auth,
            kvs,
            hmac,
            framed_mac,
            verify,
        } = request.into_inner();
        let scheme = mac_scheme(framed_mac);
        let auth = auth.ok_or_else(status::missing_auth)?;
        let kvs = SortedKvs::new(kvs.into_iter().map(Into::into).collect(), &self.limits)
            .map_err(status::rejected)?;
        if kvs.as_slice().iter().any(|kv| is_reserved(&kv.key)) {
            return Err(status::reserved_key());
        }
        let verify = verify
            .map(|v| crate::ledger::PutVerify::parse(&v))
            .transpose()?;
        let (client, shared, slot) = self.admit(Some(auth), token).await?;
        let span =
            tracing::debug_span!("put", client = %client.short(), keys = kvs.as_slice().len());
        async move {
            // The server MAC is computed now, sent only once the store
            // reports a durable commit.
            let (kvs, client_ok, server_mac) = off_executor(payload(kvs.as_slice()), move || {
                let client_ok = scheme
                    .mac(&shared, PUT_CLIENT_NONCE, kvs.as_slice())
                    .verify(&hmac);
                let server_mac = scheme.mac(&shared, PUT_SERVER_NONCE, kvs.as_slice());
                (kvs, client_ok, server_mac)
            })
            .await?;
            if !client_ok {
                return Err(status::bad_client_mac());
            }
            if let Some(below) = self.disk.as_ref().and_then(|d| d.below()) {
                // Only a client that stores nothing yet is refused.
                if self.store.usage(client).await.map_err(status::store)? == 0 {
                    return Err(status::disk_reserve(below));
                }
            }
            let outcome = if kvs.as_slice().is_empty() {
                Logged::Committed(None) // A heartbeat: nothing to store or log.
            } else if let Some(ledgers) = &self.ledgers {
                ledgers.put(&self.store, client, kvs, verify).await?
            } else {
                match self
                    .store
                    .put(ValidPut::new(client, kvs))
                    .await
                    .map_err(status::store)?
                {
                    PutOutcome::Committed => Logged::Committed(None),
                    PutOutcome::Conflict(c) => Logged::Conflict(c),
                }
            };
            let reply = match outcome {
                Logged::Committed(receipt) => {
                    debug!("committed");
                    PutReply {
                        success: true,
                        hmac: server_mac.as_bytes().to_vec(),
                        conflicts: vec![],
                        attestation: receipt.map(Into::into),
                    }
                }
                Logged::Conflict(conflicts) => {
                    debug!(conflicts = conflicts.len(), "conflict");
                    PutReply {
                        success: false,
                        hmac: vec![],
                        conflicts: conflicts.into_iter().map(Into::into).collect(),
                        attestation: None,
                    }
                }
            };
            Ok(held(reply, Hold::new(slot)))
        }
        .instrument(span)
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let Read {
            kvs,
            hmac,
            attestation,
            hold,
        } = self.read(request, "get").await?;
        let reply = GetReply {
            kvs: kvs.into_iter().map(Into::into).collect(),
            hmac,
            attestation,
        };
        Ok(held(reply, hold))
    }
}

/// A response that keeps `hold` until the client has read it.
fn held<T>(message: T, hold: Hold) -> Response<T> {
    let mut response = Response::new(message);
    response.extensions_mut().insert(hold);
    response
}

/// Payloads up to this size are MAC'd on the async worker; larger ones on the
/// blocking pool, so hashing megabytes (about 0.5 ms per MiB) never stalls
/// the requests sharing that worker, Pings included.
const INLINE_MAC_BYTES: usize = 64 * 1024;

/// Key and value bytes of `kvs`: what a MAC over them hashes.
fn payload(kvs: &[lss_core::KeyValue]) -> usize {
    kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum()
}

/// Runs `work` (MACs over `bytes` of payload) inline when small, else on the
/// blocking pool.
async fn off_executor<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    if bytes <= INLINE_MAC_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("MAC task failed: {e}")))
}

/// The stream `GetStream` answers with.
pub type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<GetChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> LightkeeperStorage for LssService<S> {
    type GetStreamStream = ChunkStream;

    /// Reads from one snapshot a page at a time as the client takes the
    /// chunks (a bounded channel between the reader task and the reply), so
    /// a stream holds a few chunks of memory whatever the result's size, and
    /// a reader that stalls stops the reading.
    async fn get_stream(
        &self,
        request: Request<GetRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let token = registration_token(&request);
        let GetRequest {
            auth,
            key_prefix,
            nonce,
            framed_mac,
            verify,
        } = request.into_inner();
        let verify = match (&self.ledgers, verify) {
            (Some(ledgers), Some(v)) => Some((ledgers.clone(), crate::ledger::seen(&v)?)),
            _ => None,
        };
        let scheme = mac_scheme(framed_mac);
        let (client, shared, slot) = self.admit(auth, token).await?;
        // The reader task's page, the one in the channel, the one being
        // sent, and one being read: each at most a chunk or one entry.
        let chunk_bound =
            STREAM_CHUNK_BYTES.max(self.limits.max_key_bytes + self.limits.max_value_bytes);
        let reserved = self
            .replies
            .reserve(client, 4 * chunk_bound as u64)
            .map_err(|e| status::limit_exceeded(&e))?;
        let span = tracing::debug_span!("get_stream", client = %client.short(), prefix_len = key_prefix.len());
        let may_hold_reserved = key_prefix_may_hold_reserved(&key_prefix);
        // Verifying: the snapshot is opened and its answer signed under the
        // namespace's log lock, so the two agree; the attestation goes out
        // with the last chunk.
        let (mut pages, attestation) = match verify {
            Some((ledgers, seen)) => {
                let (pages, pending) = ledgers
                    .stream(&self.store, client, key_prefix, nonce.clone(), seen)
                    .instrument(span.clone())
                    .await?;
                let signer = Signing {
                    pending,
                    ledgers: ledgers.clone(),
                    digest: lss_verify::ledger::AnswerDigest::default(),
                };
                (pages, Some(signer))
            }
            None => (
                self.store
                    .pages(client, key_prefix)
                    .instrument(span.clone())
                    .await
                    .map_err(status::store)?,
                None,
            ),
        };
        // The log's own keys are never shown, nor counted.
        let hidden = if may_hold_reserved {
            self.store
                .get(client, RESERVED_PREFIX.to_owned())
                .await
                .map_err(status::store)?
                .len() as u64
        } else {
            0
        };
        let count = match scheme {
            MacScheme::Framed => pages
                .count()
                .await
                .map_err(status::store)?
                .saturating_sub(hidden),
            MacScheme::Unframed => 0,
        };
        let mac = scheme.start(&shared, &nonce, count);
        let (chunks, reply) = tokio::sync::mpsc::channel(1);
        tokio::spawn(stream_pages(pages, mac, attestation, chunks).instrument(span));
        let stream: ChunkStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(reply));
        Ok(held(stream, Hold::new((slot, reserved))))
    }
}

/// The next page without the log's keys; empty only at the end.
async fn next_page(
    pages: &mut dyn lss_store::Pages,
) -> Result<Vec<lss_core::KeyValue>, lss_store::StoreError> {
    loop {
        let mut page = pages.next_page(STREAM_CHUNK_BYTES).await?;
        if page.is_empty() {
            return Ok(page);
        }
        page.retain(|kv| !is_reserved(&kv.key));
        if !page.is_empty() {
            return Ok(page);
        }
    }
}

/// Whether a read of `prefix` can meet the log's keys.
fn key_prefix_may_hold_reserved(prefix: &str) -> bool {
    RESERVED_PREFIX.starts_with(prefix) || prefix.starts_with(RESERVED_PREFIX)
}

/// Sends `pages` as chunks of about [`STREAM_CHUNK_BYTES`], each with at
/// least one entry, the MAC on the last (one empty chunk for an empty
/// result); stops when the reply is dropped.
/// A verified stream's checkpoint, signed once every entry sent is hashed.
struct Signing {
    pending: lss_verify::ledger::PendingAttestation,
    ledgers: Arc<Ledgers>,
    digest: lss_verify::ledger::AnswerDigest,
}

async fn stream_pages(
    mut pages: Box<dyn lss_store::Pages>,
    mut mac: lss_core::MacWriter,
    mut signing: Option<Signing>,
    chunks: tokio::sync::mpsc::Sender<Result<GetChunk, Status>>,
) {
    let mut sent = 0usize;
    let mut current = match next_page(&mut *pages).await {
        Ok(page) => page,
        Err(e) => {
            let _ = chunks.send(Err(status::store(e))).await;
            return;
        }
    };
    loop {
        let hashed = off_executor(payload(&current), move || {
            for kv in &current {
                mac.update(kv);
                if let Some(s) = signing.as_mut() {
                    s.digest.update(kv);
                }
            }
            (current, mac, signing)
        })
        .await;
        let page;
        (page, mac, signing) = match hashed {
            Ok(done) => done,
            Err(status) => {
                let _ = chunks.send(Err(status)).await;
                return;
            }
        };
        // One page ahead, to know which chunk is the last.
        let next = match next_page(&mut *pages).await {
            Ok(next) => next,
            Err(e) => {
                let _ = chunks.send(Err(status::store(e))).await;
                return;
            }
        };
        let last = next.is_empty();
        sent += page.len();
        let chunk = GetChunk {
            kvs: page.into_iter().map(Into::into).collect(),
            hmac: if last {
                mac.clone().finish().as_bytes().to_vec()
            } else {
                Vec::new()
            },
            attestation: match signing.take() {
                Some(s) if last => Some(
                    s.ledgers
                        .sign(s.pending.finish(Some(s.digest)))
                        .await
                        .into(),
                ),
                other => {
                    signing = other;
                    None
                }
            },
        };
        if chunks.send(Ok(chunk)).await.is_err() {
            debug!(sent, "reader went away");
            return;
        }
        if last {
            debug!(keys = sent, "streamed");
            return;
        }
        current = next;
    }
}
