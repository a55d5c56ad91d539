//! The Core Lightning side: hsmd wire messages on fd 3 (lightningd) and on
//! the client sockets it asks for with `ClientHsmFd`.
//!
//! Every connection is its own task and is sequential, as CLN uses it (one
//! request, then its reply). What the broker answers itself: `HsmdInit`
//! (after a signer answered it), `ClientHsmFd` (a socketpair, one end passed
//! back with SCM_RIGHTS), `Memleak`, and a repeat of a preapproval granted
//! within the last minute. Everything else goes to the
//! [`Scheduler`]. A client (not lightningd itself) may send only what its
//! `ClientHsmFd` capabilities allow, as with CLN's own hsmd
//! ([`sphinx_wire::capabilities`]). A request that fails closes its connection, and the error
//! is logged: CLN sees its hsmd connection end, as with a real hsmd that
//! fails, instead of waiting forever (`W2`). On fd 3 that ends the broker.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sphinx_wire::{capabilities, hsmd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vls_protocol::msgs::{self, DeBolt, Message, SerBolt};

use crate::scheduler::{RequestError, Scheduler};

/// Why a CLN connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ClnError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// CLN sent bytes that are not an hsmd message.
    #[error("bad hsmd frame: {0}")]
    Frame(#[from] sphinx_wire::WireError),
    /// A message not acceptable here.
    #[error("{0}")]
    Protocol(String),
    /// The request could not be answered.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
struct Client {
    peer_id: [u8; 33],
    dbid: u64,
    master: bool,
    /// What lightningd allowed it (`ClientHsmFd`); unused for the master.
    capabilities: u64,
}

/// Serves lightningd on `fd` (fd 3) until it closes it: `Ok` on a clean end
/// of stream, `Err` when something went wrong (the broker should exit
/// non-zero).
pub async fn serve_master(fd: OwnedFd, scheduler: Scheduler) -> Result<(), ClnError> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    let stream = UnixStream::from_std(std)?;
    let client = Client {
        peer_id: [0; 33],
        dbid: 0,
        master: true,
        capabilities: capabilities::MASTER,
    };
    serve(stream, client, scheduler).await
}

/// How long an approval answers a byte-identical repeat.
const APPROVAL_TTL: Duration = Duration::from_secs(60);
/// Approvals remembered per connection.
const APPROVALS: usize = 6;

/// CLN asks for the same preapproval again before each payment attempt; a
/// byte-identical `PreapproveInvoice`/`PreapproveKeysend` that the signer
/// approved within the last minute is answered here, without a round trip
/// to the signer (as the reference does). Refusals are never cached.
#[derive(Default)]
struct Approvals(VecDeque<(Vec<u8>, Vec<u8>, Instant)>);

impl Approvals {
    fn get(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        self.0.retain(|(_, _, at)| at.elapsed() < APPROVAL_TTL);
        self.0
            .iter()
            .find(|(r, _, _)| r.as_slice() == request)
            .map(|(_, reply, _)| reply.clone())
    }

    fn remember(&mut self, request: Vec<u8>, reply: &[u8]) {
        let approved = match msgs::from_vec(reply.to_vec()) {
            Ok(Message::PreapproveInvoiceReply(r)) => r.result,
            Ok(Message::PreapproveKeysendReply(r)) => r.result,
            _ => false,
        };
        if approved {
            if self.0.len() == APPROVALS {
                self.0.pop_front();
            }
            self.0.push_back((request, reply.to_vec(), Instant::now()));
        }
    }
}

async fn serve(
    mut stream: UnixStream,
    client: Client,
    scheduler: Scheduler,
) -> Result<(), ClnError> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut approvals = Approvals::default();
    while let Some(frame) = next_frame(&mut stream, &mut buf).await? {
        let message = frame.message();
        if !client.master && !capabilities::permitted(frame.ty, client.capabilities) {
            // As CLN's hsmd: a subdaemon asking beyond its capabilities is
            // compromised or broken; its connection ends here, before any
            // signer sees the request.
            return Err(ClnError::Protocol(format!(
                "client dbid {} (capabilities {:#x}) may not send {} (type {}); refused",
                client.dbid,
                client.capabilities,
                msgs::message_name_from_vec(&message),
                frame.ty
            )));
        }
        let reply = match frame.ty {
            msgs::HsmdInit::TYPE | msgs::ClientHsmFd::TYPE if !client.master => {
                return Err(ClnError::Protocol(format!(
                    "message type {} is for lightningd's connection only",
                    frame.ty
                )));
            }
            msgs::HsmdInit::TYPE => {
                check_parses(&message)?;
                tracing::info!("HsmdInit from lightningd; held until a signer answers it");
                match unless_closed(&mut stream, &mut buf, scheduler.init(message)).await? {
                    Some(reply) => reply?,
                    None => return Ok(()),
                }
            }
            msgs::ClientHsmFd::TYPE => {
                let Message::ClientHsmFd(m) = check_parses(&message)? else {
                    return Err(ClnError::Protocol("ClientHsmFd does not parse".into()));
                };
                write(&mut stream, &msgs::ClientHsmFdReply {}.as_vec()).await?;
                let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
                send_fd(&stream, theirs.as_fd()).await?;
                drop(theirs);
                ours.set_nonblocking(true)?;
                let ours = UnixStream::from_std(ours)?;
                let new = Client {
                    peer_id: m.peer_id.0,
                    dbid: m.dbid,
                    master: false,
                    capabilities: m.capabilities,
                };
                tracing::debug!(
                    dbid = m.dbid,
                    capabilities = m.capabilities,
                    "new CLN client"
                );
                tokio::spawn(serve_client(ours, new, scheduler.clone()));
                continue;
            }
            msgs::Memleak::TYPE => msgs::MemleakReply { result: false }.as_vec(),
            msgs::PreapproveInvoice::TYPE | msgs::PreapproveKeysend::TYPE => {
                match approvals.get(&message) {
                    Some(reply) => {
                        tracing::debug!(
                            "repeated preapproval answered from the last minute's approval"
                        );
                        reply
                    }
                    None => {
                        let asked = scheduler.request(client.peer_id, client.dbid, message.clone());
                        let Some(reply) = unless_closed(&mut stream, &mut buf, asked).await? else {
                            return Ok(());
                        };
                        let reply = reply?;
                        approvals.remember(message, &reply);
                        reply
                    }
                }
            }
            _ => {
                let asked = scheduler.request(client.peer_id, client.dbid, message);
                match unless_closed(&mut stream, &mut buf, asked).await? {
                    Some(reply) => reply?,
                    None => return Ok(()),
                }
            }
        };
        write(&mut stream, &reply).await?;
    }
    Ok(())
}

/// A client connection: the same loop, on its own task, with its errors
/// logged (they end only that connection).
fn serve_client(
    stream: UnixStream,
    client: Client,
    scheduler: Scheduler,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Err(e) = serve(stream, client, scheduler).await {
            tracing::error!(dbid = client.dbid, peer = %hex::encode(client.peer_id), error = %e,
                "CLN client connection closed on an error");
        }
    })
}

/// Waits for `answer` while watching the connection: `None` if the peer
/// closed it first (lightningd gone: the broker must not outlive it, even
/// while a signer is awaited). Bytes that arrive meanwhile are kept for the
/// next frame.
async fn unless_closed<T>(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
    answer: impl std::future::Future<Output = T>,
) -> Result<Option<T>, ClnError> {
    tokio::pin!(answer);
    loop {
        tokio::select! {
            value = &mut answer => return Ok(Some(value)),
            read = stream.read_buf(buf) => {
                if read? == 0 {
                    tracing::info!("the CLN side closed its connection while a reply was awaited");
                    return Ok(None);
                }
                if buf.len() > 2 * hsmd::MAX_MESSAGE {
                    return Err(ClnError::Protocol("too much sent before a reply".into()));
                }
            }
        }
    }
}

/// The next whole frame, or `None` at a clean end of stream.
async fn next_frame(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
) -> Result<Option<hsmd::Frame>, ClnError> {
    loop {
        if let Some((frame, used)) = hsmd::decode(buf)? {
            buf.advance(used);
            return Ok(Some(frame));
        }
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(ClnError::Protocol("connection closed mid-message".into()));
        }
    }
}

fn check_parses(message: &[u8]) -> Result<Message, ClnError> {
    msgs::from_vec(message.to_vec())
        .map_err(|e| ClnError::Protocol(format!("undecodable message: {e:?}")))
}

async fn write(stream: &mut UnixStream, message: &[u8]) -> Result<(), ClnError> {
    let frame = hsmd::Frame::from_message(message)?.encode()?;
    stream.write_all(&frame).await?;
    Ok(())
}

async fn send_fd(stream: &UnixStream, fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    loop {
        stream.writable().await?;
        match stream.try_io(tokio::io::Interest::WRITABLE, || {
            crate::fdio::send_fd(stream.as_fd(), fd)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}
