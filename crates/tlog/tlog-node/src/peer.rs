//! The LKTL/1 sync port (tlog.md §7), serving side: the identification
//! line at once; for anything that is not an LKTL/1 peer (`nc`, a browser)
//! one human-readable `ERR` line naming the logs and their checkpoints;
//! for a peer, frames: Hello, Ping/Pong, and the read-only requests a
//! mirror makes (GetHeaders, GetData), answered from published state only.
//!
//! Not yet here: dialing peers, Inv, following and importing (mirrors),
//! bans and rate limits (tlog.md §7.7, §7.9).

use std::sync::Arc;
use std::time::Duration;

use tlog_core::merkle::{self, Hash};
use tlog_core::note::Note;
use tlog_core::sync::{self, Frame, HelloLog, Ident, IdentError, Message};
use tlog_store::LogStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::LogNode;

/// How long a peer has for its identification line and Hello.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// The frame size this side accepts.
pub const MAX_FRAME: u32 = sync::DEFAULT_MAX_FRAME;

/// Serves the sync port for `node` until the listener fails.
pub async fn serve<S: LogStore>(listener: TcpListener, node: Arc<LogNode<S>>, name: String) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, node, &name).await {
                tracing::debug!(%peer, error = %e, "sync connection closed");
            }
        });
    }
}

async fn connection<S: LogStore>(
    mut stream: TcpStream,
    node: Arc<LogNode<S>>,
    name: &str,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let ident = Ident {
        software: format!("tlogd/{}", env!("CARGO_PKG_VERSION")),
        node: name.to_string(),
        logs: 1,
    };
    stream.write_all(&ident.to_line()).await?;
    // The peer's line, within the handshake time.
    let mut buf = Vec::with_capacity(512);
    let line = tokio::time::timeout(HANDSHAKE, async {
        loop {
            match Ident::parse(&buf) {
                Ok(Some((_, used))) => return Ok(used),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            let mut chunk = [0u8; 256];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(IdentError::Malformed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let used = match line {
        Ok(Ok(used)) => used,
        // Not a peer, or too slow: say what this port is, and close.
        Ok(Err(_)) | Err(_) => {
            let logs = match published(&node) {
                Some((size, root)) => vec![(node.origin().to_string(), size, root)],
                None => Vec::new(),
            };
            stream.write_all(&sync::err_line(&logs)).await?;
            return stream.shutdown().await;
        }
    };
    buf.drain(..used);
    let (size, _) = published(&node).unwrap_or((0, merkle::EMPTY_ROOT));
    let hello = Message::Hello {
        version: 1,
        nonce: nonce(),
        max_frame: MAX_FRAME,
        max_inflight: 8,
        node_name: name.to_string(),
        logs: vec![HelloLog {
            prefix: false,
            origin: node.origin().to_string(),
            roles: 1,
            size,
        }],
    };
    send(&mut stream, 0, hello).await?;
    loop {
        let frame = loop {
            match Frame::decode(&buf, MAX_FRAME) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    break frame;
                }
                Ok(None) => {}
                Err(e) => {
                    let reject = Message::Reject {
                        code: 1,
                        retry_after_ms: 0,
                        reason: e.to_string(),
                    };
                    let _ = send(&mut stream, 0, reject).await;
                    return stream.shutdown().await;
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let answer = respond(&node, frame.message).await;
        if let Some(answer) = answer {
            send(&mut stream, frame.id, answer).await?;
        }
    }
}

async fn send(stream: &mut TcpStream, id: u32, message: Message) -> std::io::Result<()> {
    stream.write_all(&Frame { id, message }.encode()).await
}

fn nonce() -> u64 {
    // Self-connection detection only: the time suffices.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn published<S: LogStore>(node: &LogNode<S>) -> Option<(u64, Hash)> {
    let published = node.published().borrow().clone()?;
    let note = Note::parse(&published.note).ok()?;
    let checkpoint = tlog_core::Checkpoint::parse(note.text()).ok()?;
    Some((checkpoint.size, checkpoint.root))
}

fn reject(code: u8, reason: &str) -> Option<Message> {
    Some(Message::Reject {
        code,
        retry_after_ms: 0,
        reason: reason.to_string(),
    })
}

async fn respond<S: LogStore>(node: &LogNode<S>, message: Message) -> Option<Message> {
    let store = node.store();
    let log = node.log_id();
    match message {
        Message::Hello { .. } | Message::Pong(_) => None,
        Message::Ping(n) => Some(Message::Pong(n)),
        Message::GetData {
            log_id,
            start,
            count,
            tree_size,
        } => {
            if log_id != log {
                return Some(Message::NotFound {
                    log_id,
                    what: 1,
                    have_size: 0,
                });
            }
            let (size, _) = published(node)?;
            if tree_size > size || start >= tree_size {
                return Some(Message::NotFound {
                    log_id,
                    what: if tree_size > size { 3 } else { 2 },
                    have_size: size,
                });
            }
            let end = (start + u64::from(count)).min(tree_size);
            let entries = store.entries(log, start, end).await.ok()?;
            let got = entries.len() as u64;
            let proof = store
                .consistency_proof(log, start + got, tree_size)
                .await
                .ok()?;
            Some(Message::Data {
                log_id,
                start,
                entries,
                tree_size,
                proof,
            })
        }
        Message::GetHeaders { log_id, locator } => {
            if log_id != log {
                return Some(Message::NotFound {
                    log_id,
                    what: 1,
                    have_size: 0,
                });
            }
            let published = node.published().borrow().clone()?;
            let (size, _) = self::published(node)?;
            // The first locator size ≤ ours whose root we share.
            let mut base = 0;
            let mut fork = None;
            for (i, (s, r)) in locator.iter().enumerate() {
                if *s > size {
                    continue;
                }
                let ours = root_at(node, *s).await?;
                if ours == *r {
                    base = *s;
                    break;
                }
                if i == 0 {
                    fork = Some(*s);
                }
            }
            let proof = store.consistency_proof(log, base, size).await.ok()?;
            let fork = match fork {
                Some(s) => Some(sync::Fork {
                    size: s,
                    root: root_at(node, s).await?,
                    proof: store.consistency_proof(log, s, size).await.ok()?,
                }),
                None => None,
            };
            Some(Message::Headers {
                log_id,
                base_size: base,
                note: published.note,
                proof,
                fork,
            })
        }
        Message::Inv { .. } | Message::Evidence(_) => {
            reject(2, "this node does not follow other logs yet")
        }
        Message::Unknown(_) => reject(2, "unknown message type"),
        Message::Headers { .. }
        | Message::Data { .. }
        | Message::NotFound { .. }
        | Message::Reject { .. } => None,
    }
}

/// The root of the log at `size` (≤ the published size), from the store.
async fn root_at<S: LogStore>(node: &LogNode<S>, size: u64) -> Option<Hash> {
    if size == 0 {
        return Some(merkle::EMPTY_ROOT);
    }
    // The inclusion path of the last leaf and the leaf give the root.
    let store = node.store();
    let log = node.log_id();
    let entry = store.entries(log, size - 1, size).await.ok()?.pop()?;
    let path = store.inclusion_proof(log, size - 1, size).await.ok()?;
    let mut root = merkle::leaf_hash(&entry);
    // The last leaf's path folds from the left at every level.
    for p in &path {
        root = merkle::node_hash(p, &root);
    }
    Some(root)
}
