//! The chain's read calls (keyserver.md §2.2: FetchLastHashChain,
//! FetchHashChain, FetchUID) over a log node and the `uid` table: one
//! implementation for the primary and for mirrors (§8), which serve the
//! same answers from their replica.

use ks_core::b64;
use ks_core::entry::{ENTRY_LEN, LEAF_LEN};
use ks_core::error::RpcError;
use ks_core::lcj::{object, Fields, Lcj as _, Value};
use ks_core::uid::UidMessageReply;
use tlog_node::LogNode;
use tlog_store::{LogStore, RedbLogStore, StoreError};

use crate::server::MAX_CHUNK;

pub(crate) fn unavailable(e: StoreError) -> RpcError {
    tracing::warn!(error = %e, "log store failed");
    RpcError::Unavailable
}

/// Bare entries `[start, end)` of the committed log.
pub(crate) async fn entries(
    node: &LogNode<RedbLogStore>,
    start: u64,
    end: u64,
) -> Result<Vec<Vec<u8>>, RpcError> {
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut at = start;
    while at < end {
        let leaves = node
            .store()
            .entries(node.log_id(), at, end)
            .await
            .map_err(unavailable)?;
        if leaves.is_empty() {
            return Err(RpcError::Unavailable);
        }
        for leaf in leaves {
            if leaf.len() != LEAF_LEN {
                return Err(RpcError::Internal);
            }
            out.push(leaf[5..5 + ENTRY_LEN].to_vec());
            at += 1;
        }
    }
    Ok(out)
}

/// FetchLastHashChain (§2.2): the newest entry with its inclusion proof
/// under the published checkpoint, and consistency from `known`.
pub(crate) async fn fetch_last(
    node: &LogNode<RedbLogStore>,
    known: u64,
) -> Result<Value, RpcError> {
    let published = node.published().borrow().clone();
    let published = published.ok_or(RpcError::Unavailable)?;
    let (size, _) = node.published_head().ok_or(RpcError::Unavailable)?;
    if known > size {
        return Err(RpcError::OutOfRange { size });
    }
    let entry = entries(node, size - 1, size).await?;
    let log = node.log_id();
    let store = node.store();
    let inclusion = store
        .inclusion_proof(log, size - 1, size)
        .await
        .map_err(unavailable)?;
    let mut members = vec![
        ("HCEntry", Value::String(b64::encode(&entry[0]))),
        ("HCPos", Value::Integer(size - 1)),
        (
            "Checkpoint",
            Value::String(String::from_utf8_lossy(&published.note).into_owned()),
        ),
        ("InclusionProof", hashes(&inclusion)),
    ];
    if known > 0 && known < size {
        let consistency = store
            .consistency_proof(log, known, size)
            .await
            .map_err(unavailable)?;
        members.push(("ConsistencyProof", hashes(&consistency)));
    }
    Ok(Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    ))
}

/// The entries a FetchHashChain for `[start, end]` answers with: from
/// `start`, at most [`MAX_CHUNK`], below the published size.
pub(crate) async fn range(
    node: &LogNode<RedbLogStore>,
    start: u64,
    end: u64,
) -> Result<Vec<Vec<u8>>, RpcError> {
    if end < start {
        return Err(RpcError::params("EndPosition", "is before StartPosition"));
    }
    let (size, _) = node.published_head().ok_or(RpcError::Unavailable)?;
    if start >= size {
        return Err(RpcError::OutOfRange { size });
    }
    let last = end.min(start + MAX_CHUNK - 1).min(size - 1);
    entries(node, start, last + 1).await
}

/// A FetchHashChain result.
pub(crate) fn chunk_value(start: u64, entries: &[Vec<u8>]) -> Value {
    object([
        (
            "HCEntries",
            Value::Array(
                entries
                    .iter()
                    .map(|e| Value::String(b64::encode(e)))
                    .collect(),
            ),
        ),
        ("HCFirstPos", Value::Integer(start)),
    ])
}

/// The stored reply for a UIDIndex (FetchUID), read on the blocking pool.
pub(crate) async fn uid_reply(
    reader: crate::store::Reader,
    index: &[u8; 32],
) -> Result<UidMessageReply, RpcError> {
    let index = *index;
    let raw = tokio::task::spawn_blocking(move || reader.uid(&index))
        .await
        .map_err(|_| RpcError::Internal)??
        .ok_or(RpcError::NotFound)?;
    UidMessageReply::from_lcj(&raw).map_err(|_| RpcError::Internal)
}

fn hashes(h: &[[u8; 32]]) -> Value {
    Value::Array(h.iter().map(|h| Value::String(b64::encode(h))).collect())
}

/// A parsed read call of the chain (§2.2), the same on the primary and on
/// mirrors.
#[derive(Debug)]
pub(crate) enum ReadCall {
    /// FetchLastHashChain from a known size (0: none).
    Last { known: u64 },
    /// FetchHashChain `[start, end]`.
    Chain { start: u64, end: u64 },
    /// FetchUID.
    Uid { index: [u8; 32] },
}

/// Whether `method` is one of the chain's read calls.
pub(crate) fn is_read(method: &str) -> bool {
    matches!(
        method,
        "KeyRepository.FetchLastHashChain"
            | "KeyHashchain.FetchLastHashChain"
            | "KeyRepository.FetchHashChain"
            | "KeyHashchain.FetchHashChain"
            | "KeyRepository.FetchUID"
    )
}

/// Parses the params of read call `method` ([`is_read`]).
pub(crate) fn read_call(method: &str, mut p: Fields) -> Result<ReadCall, RpcError> {
    let call = if method.ends_with(".FetchLastHashChain") {
        ReadCall::Last {
            known: optional_integer(&mut p, "KnownSize")?.unwrap_or(0),
        }
    } else if method.ends_with(".FetchHashChain") {
        let start = p.integer("StartPosition")?;
        let end = optional_integer(&mut p, "EndPosition")?;
        ReadCall::Chain {
            start,
            end: end.unwrap_or(start),
        }
    } else {
        let index = p.string("UIDIndex")?;
        ReadCall::Uid {
            index: b64::exact::<32>(&index)
                .ok_or_else(|| RpcError::params("UIDIndex", "is not b64(32)"))?,
        }
    };
    p.finish()?;
    Ok(call)
}

/// An optional integer member.
pub(crate) fn optional_integer(p: &mut Fields, name: &str) -> Result<Option<u64>, RpcError> {
    match p.take(name) {
        Err(_) => Ok(None),
        Ok(Value::Integer(n)) => Ok(Some(n)),
        Ok(_) => Err(RpcError::params(name, "expected an integer")),
    }
}
