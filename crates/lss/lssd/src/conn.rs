//! What one peer can hold: connections, time and queued replies.
//!
//! lssd serves clients it does not know (any keypair is a client), so every
//! resource a connection can hold is bounded here, at the edge, before and
//! around the gRPC handlers:
//!
//! - **Connections.** At most `max_connections` in total and
//!   `max_connections_per_address` from one source address (IPv6 by /64).
//!   A connection over either is closed as soon as it is accepted, before any
//!   byte is read: a TCP peer cannot be sent a gRPC status, and answering it
//!   would cost what the limit protects.
//! - **Time.** A request must be answered within `request_timeout` (its body
//!   arriving included: a client trickling a body one byte a second gets
//!   `DEADLINE_EXCEEDED`); its reply must then be *read* by the client before
//!   `reply_timeout` from the request's start, or the connection is closed,
//!   which is the only way to free a reply that a stalled reader leaves queued
//!   (HTTP/2 flow control stops the server from sending it, and nothing else
//!   ever polls it again). A connection with no request open for
//!   `idle_timeout` is closed.
//! - **Queued replies.** A handler hands what its reply holds (the client's
//!   in-flight slot, its share of the reply-bytes budget) to the response as
//!   a [`Hold`]; [`WatchLayer`] keeps it until the client has read the reply's
//!   last byte or the stream is gone, so a reply waiting for a slow reader
//!   still counts against that client.
//!
//! The watchdog lives in the connection's I/O ([`Watched`]): hyper polls a
//! connection's socket from one task, reads and writes alike, so a timer
//! polled there wakes that task whether it is waiting to read or stuck
//! writing to a peer that does not read; once it fires, reads end and writes
//! fail, and hyper drops the connection with every stream and reply on it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The connection-level settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections in total.
    pub max_connections: usize,
    /// Most open connections from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// A request not answered by then gets `DEADLINE_EXCEEDED`.
    pub request_timeout: Duration,
    /// A reply not read by the client this long after its request started
    /// closes the connection.
    pub reply_timeout: Duration,
    /// A connection with no request open this long is closed.
    pub idle_timeout: Duration,
    /// Most bytes of a request body read before its sender is known (see
    /// `preauth`).
    pub max_unauthenticated_bytes: usize,
}

impl Default for ConnLimits {
    /// Sized for a provider serving a few thousand signers, each holding one
    /// connection with one request at a time: room for every signer and its
    /// reconnects, a NAT'ed office of signers from one address, a full 1 GiB
    /// namespace read over a slow link, and signers that put every few
    /// minutes (they reconnect at once when an idle connection is closed).
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            max_connections_per_address: 100,
            request_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(600),
            max_unauthenticated_bytes: 64 * 1024,
        }
    }
}

/// Counts open connections, in total and per source address.
#[derive(Clone)]
pub struct Admission {
    limits: ConnLimits,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `max_connections` are open.
    #[error("max_connections ({0}) reached")]
    Total(usize),
    /// `max_connections_per_address` are open from this source.
    #[error("max_connections_per_address ({0}) reached for this source")]
    PerAddress(usize),
}

/// One admitted connection's place in the counts; freed when dropped.
pub struct Ticket {
    key: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    /// Counts against `limits`.
    pub fn new(limits: ConnLimits) -> Self {
        Admission {
            limits,
            counts: Arc::default(),
        }
    }

    /// A ticket for a connection from `peer`, or why it must be closed.
    pub fn admit(&self, peer: IpAddr) -> Result<Ticket, Refused> {
        let key = rate_limit::source_key(peer);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.limits.max_connections {
            return Err(Refused::Total(self.limits.max_connections));
        }
        let from = counts.per_address.get(&key).copied().unwrap_or(0);
        if from >= self.limits.max_connections_per_address {
            return Err(Refused::PerAddress(self.limits.max_connections_per_address));
        }
        counts.total += 1;
        counts.per_address.insert(key, from + 1);
        crate::metrics::connections(counts.total);
        Ok(Ticket {
            key,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Wraps an accepted socket: admitted and watched, or closed (dropped)
    /// with the reason logged.
    pub fn accept(&self, stream: TcpStream) -> Option<Watched> {
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => {
                tracing::debug!(error = %e, "accepted socket has no peer address; closing");
                return None;
            }
        };
        match self.admit(peer.ip()) {
            Ok(ticket) => Some(Watched::new(stream, peer, ticket, self.limits)),
            Err(refused) => {
                tracing::warn!(%peer, "connection refused: {refused}");
                crate::metrics::connection_refused(match refused {
                    Refused::Total(_) => "max_connections",
                    Refused::PerAddress(_) => "max_connections_per_address",
                });
                None
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        crate::metrics::connections(counts.total);
        if let Some(n) = counts.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.key);
            }
        }
    }
}

/// What the watchdog knows of a connection's requests.
#[derive(Debug)]
pub struct ConnState {
    limits: ConnLimits,
    inner: Mutex<Requests>,
}

#[derive(Debug)]
struct Requests {
    /// Open requests by id: when each must have been read.
    open: BTreeMap<u64, Instant>,
    next_id: u64,
    /// When the last request closed (or the connection opened).
    idle_since: Instant,
}

/// What the watchdog decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Look again at this instant.
    Until(Instant),
    /// Close: no request for `idle_timeout`.
    Idle,
    /// Close: a reply was not read by its deadline.
    ReplyTimeout,
}

impl ConnState {
    fn new(limits: ConnLimits, now: Instant) -> Self {
        ConnState {
            limits,
            inner: Mutex::new(Requests {
                open: BTreeMap::new(),
                next_id: 0,
                idle_since: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request starting at `now`; it is open until the guard
    /// goes, and must be done by `now + reply_timeout` unless `unbounded`.
    fn open(self: &Arc<Self>, now: Instant, unbounded: bool) -> OpenRequest {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let deadline = if unbounded {
            now + UNBOUNDED
        } else {
            now + self.limits.reply_timeout
        };
        inner.open.insert(id, deadline);
        OpenRequest {
            id,
            state: self.clone(),
        }
    }

    fn verdict(&self, now: Instant) -> Verdict {
        let inner = self.lock();
        match inner.open.values().min() {
            Some(&deadline) if now >= deadline => Verdict::ReplyTimeout,
            Some(&deadline) => Verdict::Until(deadline),
            None if now >= inner.idle_since + self.limits.idle_timeout => Verdict::Idle,
            None => Verdict::Until(inner.idle_since + self.limits.idle_timeout),
        }
    }
}

/// Far enough to never come, near enough not to overflow an `Instant`.
const UNBOUNDED: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Health watches stream for as long as the watcher wants (that is their
/// point): no reply deadline, and they keep their connection from idling.
const LONG_LIVED: &[&str] = &["/grpc.health.v1.Health/Watch"];

/// An open request on a connection; closes it when dropped.
struct OpenRequest {
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        inner.open.remove(&self.id);
        if inner.open.is_empty() {
            inner.idle_since = Instant::now();
        }
    }
}

/// An admitted connection: the socket, its place in the counts, and the
/// watchdog that closes it when idle or holding an unread reply too long.
pub struct Watched {
    io: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    timer: Pin<Box<Sleep>>,
    closed: Option<Verdict>,
    _ticket: Ticket,
}

impl Watched {
    fn new(io: TcpStream, peer: SocketAddr, ticket: Ticket, limits: ConnLimits) -> Self {
        let now = Instant::now();
        Watched {
            io,
            peer,
            state: Arc::new(ConnState::new(limits, now)),
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            closed: None,
            _ticket: ticket,
        }
    }

    /// Whether the watchdog has closed the connection; otherwise arms the
    /// timer for the next look (registering this task's waker with it).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closed.is_some() {
            return true;
        }
        loop {
            match self.state.verdict(Instant::now()) {
                Verdict::Until(at) => {
                    if self.timer.deadline() != at {
                        self.timer.as_mut().reset(at);
                    }
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return false;
                    }
                }
                verdict => {
                    match verdict {
                        Verdict::Idle => {
                            tracing::debug!(peer = %self.peer, "closing an idle connection")
                        }
                        _ => tracing::warn!(
                            peer = %self.peer,
                            "closing a connection whose reply was not read within reply_timeout"
                        ),
                    }
                    self.closed = Some(verdict);
                    return true;
                }
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "closed by the connection watchdog")
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Ok(())); // End of stream.
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What requests see of their connection (tonic puts it in the request's
/// extensions, inside `TlsConnectInfo` with TLS).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The addresses, as tonic gives them for plain TCP.
    pub tcp: TcpConnectInfo,
    state: Arc<ConnState>,
}

impl Connected for Watched {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.io.connect_info(),
            state: self.state.clone(),
        }
    }
}

/// Whatever a reply keeps reserved until the client has read it (an
/// in-flight slot, reply bytes). A handler inserts it into its response's
/// extensions; [`WatchLayer`] moves it into the reply body.
#[derive(Clone)]
pub struct Hold(#[allow(dead_code)] Arc<dyn std::any::Any + Send + Sync>);

impl Hold {
    /// Holds `what` until the reply carrying it is read or dropped.
    pub fn new(what: impl std::any::Any + Send + Sync) -> Self {
        Hold(Arc::new(what))
    }
}

/// The tower layer that times requests out and keeps each request open on
/// its connection (with its [`Hold`]) until its reply is read.
#[derive(Clone, Copy, Debug)]
pub struct WatchLayer {
    request_timeout: Duration,
}

impl WatchLayer {
    /// Answers `DEADLINE_EXCEEDED` to requests not answered by `request_timeout`.
    pub fn new(request_timeout: Duration) -> Self {
        WatchLayer { request_timeout }
    }
}

impl<S> tower::Layer<S> for WatchLayer {
    type Service = WatchService<S>;

    fn layer(&self, inner: S) -> WatchService<S> {
        WatchService {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

/// See [`WatchLayer`].
#[derive(Clone, Debug)]
pub struct WatchService<S> {
    inner: S,
    request_timeout: Duration,
}

fn connection_of<B>(request: &http::Request<B>) -> Option<Arc<ConnState>> {
    let extensions = request.extensions();
    extensions
        .get::<ConnInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(|tls| tls.get_ref())
        })
        .map(|info| info.state.clone())
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for WatchService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let unbounded = LONG_LIVED.contains(&request.uri().path());
        let mut observed = Observed::start(request.uri().path());
        let open = connection_of(&request).map(|state| state.open(Instant::now(), unbounded));
        let timeout = self.request_timeout;
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = match tokio::time::timeout(timeout, call).await {
                Ok(response) => response?,
                Err(_) => {
                    tracing::debug!(?timeout, "request timed out");
                    observed.answered(tonic::Code::DeadlineExceeded);
                    return Ok(tonic::Status::deadline_exceeded(format!(
                        "request_timeout ({} s) exceeded",
                        timeout.as_secs_f64()
                    ))
                    .into_http());
                }
            };
            // A trailers-only reply (every error) carries its status here.
            if let Some(code) = grpc_status(response.headers()) {
                observed.answered(code);
            }
            let hold = response.extensions_mut().remove::<Hold>();
            Ok(response.map(|body| {
                tonic::body::Body::new(HeldBody {
                    inner: body,
                    piece: None,
                    held: Some((open, hold)),
                    observed,
                })
            }))
        })
    }
}

/// Largest piece of a reply handed to the HTTP/2 layer at once.
///
/// hyper takes the next piece of a body only once the stream has send
/// capacity, i.e. once the client has acknowledged (read) what was sent
/// before; a whole encoded reply handed over in one piece would be buffered
/// by h2 at once and the body would end at once, releasing the reply's
/// [`Hold`] long before the client reads anything. In pieces, the body ends
/// when all but about one window and one piece has been read.
pub const REPLY_PIECE_BYTES: usize = 64 * 1024;

/// A reply body that keeps its request open (and its [`Hold`]) until its
/// end has been read out or it is dropped, handing its data over in pieces
/// of at most [`REPLY_PIECE_BYTES`].
struct HeldBody {
    inner: tonic::body::Body,
    /// The rest of a data frame larger than one piece.
    piece: Option<Bytes>,
    held: Option<(Option<OpenRequest>, Option<Hold>)>,
    observed: Observed,
}

/// A request as the metrics see it: counted in flight from its arrival
/// until its reply is read or dropped, and answered once, with the status
/// from the reply's headers (trailers-only) or trailers; a reply dropped
/// before its status was sent counts as `CANCELLED`.
struct Observed {
    method: &'static str,
    started: Instant,
    answered: bool,
}

impl Observed {
    fn start(path: &str) -> Self {
        crate::metrics::in_flight(1.0);
        Observed {
            method: crate::metrics::method_of(path),
            started: Instant::now(),
            answered: false,
        }
    }

    fn answered(&mut self, code: tonic::Code) {
        if !self.answered {
            self.answered = true;
            crate::metrics::answered(self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.answered(tonic::Code::Cancelled);
        crate::metrics::in_flight(-1.0);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.parse().ok()?))
}

impl HeldBody {
    /// The next piece of `data`, keeping the rest.
    fn piece_of(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > REPLY_PIECE_BYTES {
            let first = data.split_to(REPLY_PIECE_BYTES);
            self.piece = Some(data);
            first
        } else {
            data
        }
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        if let Some(rest) = self.piece.take() {
            let piece = self.piece_of(rest);
            return Poll::Ready(Some(Ok(http_body::Frame::data(piece))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let piece = self.piece_of(data);
                    Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
                }
                Err(frame) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                        self.observed.answered(code);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            Poll::Ready(None) => {
                self.held = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.piece.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.piece.as_ref().map_or(0, |p| p.len() as u64);
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 3,
            max_connections_per_address: 2,
            request_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_unauthenticated_bytes: 1024,
        }
    }

    #[test]
    fn admits_within_both_limits_and_frees_on_drop() {
        let admission = Admission::new(limits());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = admission.admit(a).expect("first");
        let _a2 = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some(Refused::PerAddress(2)));
        let _b1 = admission.admit(b).expect("another address");
        assert_eq!(admission.admit(b).err(), Some(Refused::Total(3)));
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _a3 = admission.admit(a).expect("a freed place is reusable");
    }

    #[test]
    fn the_watchdog_closes_idle_connections_and_unread_replies_only() {
        let t0 = Instant::now();
        let state = Arc::new(ConnState::new(limits(), t0));
        assert_eq!(
            state.verdict(t0),
            Verdict::Until(t0 + Duration::from_secs(60))
        );
        assert_eq!(state.verdict(t0 + Duration::from_secs(60)), Verdict::Idle);
        // An open request defers idleness to its own deadline.
        let first = state.open(t0 + Duration::from_secs(5), false);
        let _second = state.open(t0 + Duration::from_secs(8), false);
        assert_eq!(
            state.verdict(t0 + Duration::from_secs(60)),
            Verdict::ReplyTimeout
        );
        assert_eq!(
            state.verdict(t0 + Duration::from_secs(6)),
            Verdict::Until(t0 + Duration::from_secs(15))
        );
        // Once the first is read, the second's deadline counts.
        drop(first);
        assert_eq!(
            state.verdict(t0 + Duration::from_secs(6)),
            Verdict::Until(t0 + Duration::from_secs(18))
        );
        // A health watch is never cut off, nor is its connection idle.
        drop(_second);
        let _watch = state.open(t0, true);
        assert!(matches!(
            state.verdict(t0 + Duration::from_secs(86_400)),
            Verdict::Until(_)
        ));
    }
}
