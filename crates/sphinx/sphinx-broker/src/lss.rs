//! The broker's LSS relay: it moves a signer's reads and writes to the
//! storage server and the server's MACs back, without being able to forge
//! either (it holds each signer's token, never its shared secret).
//!
//! A transport or server failure is retried with backoff until the
//! caller's deadline: it is *not* a conflict (the reference maps every
//! failure to a conflict and so makes the signer reboot, `W7`). A real
//! version conflict is reported as such.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lss_client::{Client, ConnectOptions, PutError, RpcError};
use lss_core::{ClientId, KeyValue, Token};
use sphinx_wire::lss::Muts;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why an LSS call gave up.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The server refused the write: other versions are stored.
    #[error("version conflict on {0} key(s)")]
    Conflict(usize),
    /// Failures until the deadline.
    #[error("LSS unavailable until the deadline: {0}")]
    Unavailable(String),
    /// Not retryable.
    #[error("LSS: {0}")]
    Failed(String),
}

/// Credentials a signer handed over (init step 1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The signer's LSS namespace.
    pub client_id: [u8; 33],
    /// Its bearer token.
    pub token: [u8; 32],
    /// Whether it asked for framed MACs.
    pub framed: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("client_id", &hex::encode(self.client_id))
            .field("token", &"<redacted>")
            .field("framed", &self.framed)
            .finish()
    }
}

/// The relay: one connection per signer account, reconnecting as needed.
#[derive(Clone)]
pub struct Relay {
    options: ConnectOptions,
    clients: Arc<Mutex<HashMap<Account, Client>>>,
}

impl std::hash::Hash for Account {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.client_id.hash(state);
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

impl Relay {
    /// A relay to the server at `options.url`.
    pub fn new(options: ConnectOptions) -> Relay {
        Relay {
            options,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The server's public key (Info) and whether it offers framed MACs,
    /// retried until `deadline`.
    pub async fn server_key(&self, deadline: Instant) -> Result<([u8; 33], bool), RelayError> {
        retry("info", deadline, || async {
            let mut grpc = lss_client::connect_channel(&self.options).await?;
            lss_client::info(&mut grpc)
                .await
                .map(|info| (info.server_id.serialize(), info.offers_framed_macs()))
                .map_err(|e| match e {
                    lss_client::ConnectError::Rpc(rpc) => Attempt::from(rpc),
                    other => Attempt::Stop(RelayError::Failed(other.to_string())),
                })
        })
        .await
    }

    async fn client(&self, account: Account) -> Result<Client, RpcError> {
        if let Some(client) = self.clients.lock().await.get(&account) {
            return Ok(client.clone());
        }
        let id = ClientId::parse(&account.client_id).map_err(|_| {
            RpcError::Status(tonic::Status::invalid_argument(
                "the signer's client id is not a public key",
            ))
        })?;
        let scheme = if account.framed {
            lss_core::MacScheme::Framed
        } else {
            lss_core::MacScheme::Unframed
        };
        let client = Client::connect(&self.options, id, Token(account.token))
            .await?
            .with_mac_scheme(scheme);
        self.clients.lock().await.insert(account, client.clone());
        Ok(client)
    }

    /// Everything the account stores, with the server's MAC over `nonce`.
    pub async fn get_all(
        &self,
        account: Account,
        nonce: [u8; 32],
        deadline: Instant,
    ) -> Result<(Muts, [u8; 32]), RelayError> {
        let (kvs, mac) = retry("get", deadline, || async {
            Ok(self.client(account).await?.get("", &nonce).await?)
        })
        .await?;
        let mac: [u8; 32] = mac
            .try_into()
            .map_err(|_| RelayError::Failed("the server's read MAC is not 32 bytes".into()))?;
        let muts = kvs
            .into_iter()
            .map(|kv| {
                let version = u64::try_from(kv.version).map_err(|_| {
                    RelayError::Failed(format!("negative version for {:?}", kv.key))
                })?;
                Ok((kv.key, (version, kv.value)))
            })
            .collect::<Result<Muts, RelayError>>()?;
        Ok((muts, mac))
    }

    /// Stores `muts` with the signer's MAC; returns the server's MAC.
    pub async fn put(
        &self,
        account: Account,
        muts: &Muts,
        client_mac: [u8; 32],
        deadline: Instant,
    ) -> Result<[u8; 32], RelayError> {
        let mut kvs = Vec::with_capacity(muts.len());
        for (key, (version, value)) in muts {
            let version = i64::try_from(*version)
                .map_err(|_| RelayError::Failed(format!("version of {key:?} out of range")))?;
            kvs.push(KeyValue::new(key.clone(), version, value.clone()));
        }
        let mac = retry("put", deadline, || async {
            match self
                .client(account)
                .await?
                .put(kvs.clone(), &client_mac)
                .await
            {
                Ok(mac) => Ok(mac),
                Err(PutError::Conflict(conflicts)) => {
                    Err(Attempt::Stop(RelayError::Conflict(conflicts.len())))
                }
                Err(PutError::Rpc(e)) => Err(e.into()),
                Err(e) => Err(Attempt::Stop(RelayError::Failed(e.to_string()))),
            }
        })
        .await?;
        mac.try_into()
            .map_err(|_| RelayError::Failed("the server's put MAC is not 32 bytes".into()))
    }
}

/// How one attempt failed.
enum Attempt {
    /// Worth another try (transport, `UNAVAILABLE`).
    Again(String),
    /// Final.
    Stop(RelayError),
}

impl From<RpcError> for Attempt {
    fn from(e: RpcError) -> Self {
        if e.is_retryable() {
            Attempt::Again(e.to_string())
        } else {
            Attempt::Stop(RelayError::Failed(e.to_string()))
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or the next backoff would
/// pass `deadline`.
async fn retry<T, F, Fut>(what: &str, deadline: Instant, mut call: F) -> Result<T, RelayError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(Attempt::Stop(e)) => return Err(e),
            Err(Attempt::Again(error)) => {
                if Instant::now() + backoff >= deadline {
                    return Err(RelayError::Unavailable(error));
                }
                tracing::warn!(what, %error, retry_in = ?backoff, "LSS call failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
