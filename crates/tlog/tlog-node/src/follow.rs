//! Following a log over LKTL/1 (tlog.md §7.6–§7.7), for a mirror: ask a
//! peer for its latest checkpoint with a locator, accept it only if the
//! origin's key signed it and a consistency proof extends what is stored,
//! then fetch the new entries in chunks, each checked against that
//! checkpoint before it is stored, and store the checkpoint last (the store
//! checks its root against the imported tree). Nothing unverified is ever
//! stored or served.
//!
//! One peer at a time, one chunk in flight: enough for a mirror; parallel
//! fetches over several peers, Inv, bans and evidence exchange are not
//! built yet.

use std::sync::Arc;
use std::time::Duration;

use tlog_core::merkle::{self, leaf_hash, verify_consistency};
use tlog_core::note::VerifierKey;
use tlog_core::sync::{self, Frame, HelloLog, Ident, Message};
use tlog_core::Policy;
use tlog_store::{LogStore, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::LogNode;

/// Why a round of following stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The peer is unreachable or closed the connection.
    #[error("peer: {0}")]
    Io(#[from] std::io::Error),
    /// The peer speaks something else.
    #[error("peer protocol: {0}")]
    Protocol(String),
    /// The peer's answers do not verify: nothing of them was stored.
    #[error("the peer's data does not verify: {0}")]
    Unverified(String),
    /// The peer's log forked from the stored one (equivocation, or a peer
    /// lying about it): following stops.
    #[error("the peer's tree is not an extension of the stored one")]
    Fork,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Follows the log of `key` from `peer` into `node` (a mirror) until the
/// node is dropped: a round every `interval`, errors logged and retried.
pub async fn follow<S: LogStore>(
    node: Arc<LogNode<S>>,
    key: VerifierKey,
    peer: String,
    interval: Duration,
) {
    let node = Arc::downgrade(&node);
    loop {
        let Some(strong) = node.upgrade() else { break };
        match round(&strong, &key, &peer).await {
            Ok(size) => tracing::debug!(%peer, size, "mirror up to date"),
            Err(FollowError::Fork) => {
                tracing::error!(%peer, origin = %strong.origin(), "the peer's tree forks from ours: not followed");
            }
            Err(e) => tracing::warn!(%peer, error = %e, "follow round failed; retrying"),
        }
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
}

impl Conn {
    async fn open(peer: &str, origin: &str) -> Result<Conn, FollowError> {
        let connect = TcpStream::connect(peer);
        let stream = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| FollowError::Protocol("connect timed out".into()))??;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        let ident = Ident {
            software: format!("tlogd/{}", env!("CARGO_PKG_VERSION")),
            node: "mirror".into(),
            logs: 1,
        };
        conn.stream.write_all(&ident.to_line()).await?;
        loop {
            match Ident::parse(&conn.buf) {
                Ok(Some((_, used))) => {
                    conn.buf.drain(..used);
                    break;
                }
                Ok(None) => conn.fill().await?,
                Err(e) => return Err(FollowError::Protocol(e.to_string())),
            }
        }
        let hello = Message::Hello {
            version: 1,
            nonce: 1,
            max_frame: sync::DEFAULT_MAX_FRAME,
            max_inflight: 1,
            node_name: "mirror".into(),
            logs: vec![HelloLog {
                prefix: false,
                origin: origin.to_string(),
                roles: 2,
                size: 0,
            }],
        };
        conn.send(0, hello).await?;
        // Their Hello comes first.
        match conn.next().await?.message {
            Message::Hello { .. } => Ok(conn),
            other => Err(FollowError::Protocol(format!(
                "expected Hello, got {other:?}"
            ))),
        }
    }

    async fn fill(&mut self) -> Result<(), FollowError> {
        let mut chunk = vec![0u8; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk))
            .await
            .map_err(|_| FollowError::Protocol("no answer in 30 s".into()))??;
        if read == 0 {
            return Err(FollowError::Protocol("connection closed".into()));
        }
        self.buf.extend_from_slice(&chunk[..read]);
        Ok(())
    }

    async fn send(&mut self, id: u32, message: Message) -> Result<(), FollowError> {
        self.stream
            .write_all(&Frame { id, message }.encode())
            .await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Frame, FollowError> {
        loop {
            match Frame::decode(&self.buf, sync::DEFAULT_MAX_FRAME) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => self.fill().await?,
                Err(e) => return Err(FollowError::Protocol(e.to_string())),
            }
        }
    }

    /// Sends a request and waits for its answer (unsolicited frames skipped).
    async fn request(&mut self, message: Message) -> Result<Message, FollowError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.send(id, message).await?;
        loop {
            let frame = self.next().await?;
            if frame.id == id {
                return Ok(frame.message);
            }
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One round: returns the size now stored.
pub async fn round<S: LogStore>(
    node: &LogNode<S>,
    key: &VerifierKey,
    peer: &str,
) -> Result<u64, FollowError> {
    let store = node.store();
    let log = node.log_id();
    let state = store.state(log).await?;
    let mut conn = Conn::open(peer, node.origin()).await?;
    let locator = vec![(state.size, state.root)];
    let answer = conn
        .request(Message::GetHeaders {
            log_id: log,
            locator,
        })
        .await?;
    let (base, note, proof, fork) = match answer {
        Message::Headers {
            base_size,
            note,
            proof,
            fork,
            ..
        } => (base_size, note, proof, fork),
        Message::NotFound { .. } => {
            return Err(FollowError::Protocol(
                "the peer does not serve this log".into(),
            ))
        }
        other => {
            return Err(FollowError::Protocol(format!(
                "expected Headers, got {other:?}"
            )))
        }
    };
    if fork.is_some() || base != state.size {
        return Err(FollowError::Fork);
    }
    let verified = Policy::single(key.clone())
        .verify(&note, now())
        .map_err(|e| FollowError::Unverified(e.to_string()))?;
    let target = verified.checkpoint;
    if target.origin != node.origin() || target.size > merkle::MAX_SIZE {
        return Err(FollowError::Unverified("another log's checkpoint".into()));
    }
    if target.size < state.size {
        return Ok(state.size);
    }
    verify_consistency(state.size, target.size, &state.root, &target.root, &proof)
        .map_err(|_| FollowError::Fork)?;
    let mut working = state.range.clone();
    let mut next = state.size;
    while next < target.size {
        let count = (1024 - next % 256).min(target.size - next) as u32;
        let answer = conn
            .request(Message::GetData {
                log_id: log,
                start: next,
                count,
                tree_size: target.size,
            })
            .await?;
        let Message::Data {
            log_id,
            start,
            entries,
            tree_size,
            proof,
        } = answer
        else {
            return Err(FollowError::Protocol(format!(
                "expected Data, got {answer:?}"
            )));
        };
        if log_id != log
            || start != next
            || tree_size != target.size
            || entries.is_empty()
            || entries.len() > count as usize
        {
            return Err(FollowError::Unverified(
                "Data for something not asked".into(),
            ));
        }
        let mut chunk_range = working.clone();
        for e in &entries {
            chunk_range.push(leaf_hash(e));
        }
        verify_consistency(
            chunk_range.size(),
            target.size,
            &chunk_range.root(),
            &target.root,
            &proof,
        )
        .map_err(|e| FollowError::Unverified(format!("chunk at {start}: {e}")))?;
        let appended = store.append(log, entries).await?;
        if appended.first().map(|a| a.index) != Some(next) {
            return Err(FollowError::Store(StoreError::Corrupt(
                "the mirror's store appended elsewhere than the verified index".into(),
            )));
        }
        next = chunk_range.size();
        working = chunk_range;
    }
    store
        .put_checkpoint(log, target.size, target.root, verified.note.to_bytes())
        .await?;
    node.publish_stored().await?;
    Ok(target.size)
}
