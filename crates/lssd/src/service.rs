//! The `lss.LightningStorage` handlers.
//!
//! Each handler checks in the order of lss-protocol.md §4 (the reference's
//! order, so clients see the same status for the same mistake): decode (by
//! tonic, within `max_request_bytes`), `auth` present, key order and size
//! limits, client id and token, client MAC, then the store.

use lss_core::{
    shared_hmac, ClientId, Limits, PutOutcome, ServerKey, SharedSecret, SortedKvs, ValidPut,
    PUT_CLIENT_NONCE, PUT_SERVER_NONCE,
};
use lss_proto::lightning_storage_server::{LightningStorage, LightningStorageServer};
use lss_proto::{
    GetReply, GetRequest, InfoReply, InfoRequest, PingReply, PingRequest, PutReply, PutRequest,
};
use lss_store::Store;
use tonic::{Request, Response, Status};
use tracing::{debug, Instrument};

use crate::status;

/// `InfoReply.version`: the reference's value, which clients may compare.
pub const PROTOCOL_VERSION: &str = "0.1";

/// The gRPC service over a store.
pub struct LssService<S> {
    store: S,
    key: ServerKey,
    limits: Limits,
}

impl<S: Store> LssService<S> {
    /// A service answering with `key`'s identity, enforcing `limits`.
    pub fn new(store: S, key: ServerKey, limits: Limits) -> Self {
        LssService { store, key, limits }
    }

    /// The tonic server, with its decode limit set to `max_request_bytes`.
    pub fn into_server(self) -> LightningStorageServer<Self> {
        let max = self.limits.max_request_bytes;
        LightningStorageServer::new(self).max_decoding_message_size(max)
    }

    fn authenticate(
        &self,
        auth: Option<lss_proto::Auth>,
    ) -> Result<(ClientId, SharedSecret), Status> {
        let auth = auth.ok_or_else(status::missing_auth)?;
        self.key
            .authenticate(&auth.client_id, &auth.token)
            .map_err(status::auth)
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
            server_id: self.key.server_id().to_vec(),
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutReply>, Status> {
        let PutRequest { auth, kvs, hmac } = request.into_inner();
        let auth = auth.ok_or_else(status::missing_auth)?;
        let kvs = SortedKvs::new(kvs.into_iter().map(Into::into).collect(), &self.limits)
            .map_err(status::rejected)?;
        let (client, shared) = self.authenticate(Some(auth))?;
        let span =
            tracing::debug_span!("put", client = %client.short(), keys = kvs.as_slice().len());
        async move {
            if !shared_hmac(&shared, PUT_CLIENT_NONCE, kvs.as_slice()).verify(&hmac) {
                return Err(status::bad_client_mac());
            }
            // Computed now, sent only once the store reports a durable commit.
            let server_mac = shared_hmac(&shared, PUT_SERVER_NONCE, kvs.as_slice());
            let put = ValidPut::new(client, kvs);
            let outcome = if put.kvs().is_empty() {
                PutOutcome::Committed // A heartbeat: nothing to store.
            } else {
                self.store.put(put).await.map_err(status::store)?
            };
            let reply = match outcome {
                PutOutcome::Committed => {
                    debug!("committed");
                    PutReply {
                        success: true,
                        hmac: server_mac.as_bytes().to_vec(),
                        conflicts: vec![],
                    }
                }
                PutOutcome::Conflict(conflicts) => {
                    debug!(conflicts = conflicts.len(), "conflict");
                    PutReply {
                        success: false,
                        hmac: vec![],
                        conflicts: conflicts.into_iter().map(Into::into).collect(),
                    }
                }
            };
            Ok(Response::new(reply))
        }
        .instrument(span)
        .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let GetRequest {
            auth,
            key_prefix,
            nonce,
        } = request.into_inner();
        let (client, shared) = self.authenticate(auth)?;
        let span =
            tracing::debug_span!("get", client = %client.short(), prefix_len = key_prefix.len());
        async move {
            let kvs = self
                .store
                .get(client, key_prefix)
                .await
                .map_err(status::store)?;
            let hmac = shared_hmac(&shared, &nonce, &kvs).as_bytes().to_vec();
            debug!(keys = kvs.len(), "read");
            Ok(Response::new(GetReply {
                kvs: kvs.into_iter().map(Into::into).collect(),
                hmac,
            }))
        }
        .instrument(span)
        .await
    }
}
