//! Authentication before a request body is buffered.
//!
//! LSS carries its credentials inside the request message (`auth`, field 1
//! of `PutRequest` and `GetRequest`), so tonic would buffer a whole body, up
//! to `max_request_bytes`, before anyone could tell who sent it. This layer
//! reads a body's first bytes, finds `auth` there (every known client
//! encodes fields in number order, as protobuf encoders do), checks the
//! token and the access policy, and only then lets the rest of the body
//! through. Only requests larger than `max_unauthenticated_bytes` are judged
//! here: one from a stranger (bad token, or refused by the access policy) is
//! cut off after its first bytes, and so is one whose `auth` does not come
//! first. Smaller ones pass whole to the handler, which reads fields in any
//! order and checks in the reference's order (key order before auth).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use crate::access::{Access, TOKEN_HEADER};
use crate::auth::Authenticator;
use crate::status;

/// The methods whose requests start with `auth`.
const AUTHENTICATED: &[&str] = &[
    "/lss.LightningStorage/Put",
    "/lss.LightningStorage/Get",
    "/lightkeeper.LightkeeperStorage/GetStream",
];

/// The layer; see the module docs.
#[derive(Clone)]
pub struct PreauthLayer {
    check: Arc<Check>,
}

struct Check {
    auth: Arc<Authenticator>,
    access: Arc<Access>,
    max_unauthenticated: usize,
}

impl PreauthLayer {
    /// Checks with `auth` and `access`, reading at most `max_unauthenticated`
    /// bytes of a body before deciding.
    pub fn new(auth: Arc<Authenticator>, access: Arc<Access>, max_unauthenticated: usize) -> Self {
        PreauthLayer {
            check: Arc::new(Check {
                auth,
                access,
                max_unauthenticated,
            }),
        }
    }
}

impl<S> tower::Layer<S> for PreauthLayer {
    type Service = PreauthService<S>;

    fn layer(&self, inner: S) -> PreauthService<S> {
        PreauthService {
            inner,
            check: self.check.clone(),
        }
    }
}

/// See [`PreauthLayer`].
#[derive(Clone)]
pub struct PreauthService<S> {
    inner: S,
    check: Arc<Check>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for PreauthService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> S::Future {
        if !AUTHENTICATED.contains(&request.uri().path()) {
            return self.inner.call(request);
        }
        let registering = request.headers().contains_key(TOKEN_HEADER);
        let check = self.check.clone();
        self.inner
            .call(request.map(|body| gate(check, body, registering)))
    }
}

impl PreauthLayer {
    /// `body` as the handler sees it: held back until its sender is known,
    /// then passed on unchanged, or an error status (for the fuzz target).
    pub fn gate(&self, body: tonic::body::Body, registering: bool) -> tonic::body::Body {
        gate(self.check.clone(), body, registering)
    }
}

fn gate(check: Arc<Check>, body: tonic::body::Body, registering: bool) -> tonic::body::Body {
    tonic::body::Body::new(Gated {
        inner: body,
        buffered: BytesMut::new(),
        open: false,
        registering,
        check,
    })
}

/// A request body held back until its sender is known.
struct Gated {
    inner: tonic::body::Body,
    buffered: BytesMut,
    /// Decided: everything passes.
    open: bool,
    /// The request carries a registration token: an unknown client may
    /// still be admitted by the handler, once its token is checked there.
    registering: bool,
    check: Arc<Check>,
}

/// What the first bytes of a body say.
#[derive(Debug)]
enum Verdict {
    /// Not enough bytes yet.
    More,
    /// The sender is admitted (or the body is small enough to pass whole).
    Pass,
    /// Refused with this status.
    Refuse(tonic::Status),
}

impl Check {
    /// Judges a body's first bytes (`complete` once the body has ended).
    fn judge(&self, bytes: &[u8], complete: bool, registering: bool) -> Verdict {
        let whole_fits = |total: usize| total <= self.max_unauthenticated;
        let Some(header) = bytes.get(..5) else {
            return if complete {
                Verdict::Pass
            } else {
                Verdict::More
            };
        };
        let message_len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let total = 5usize.saturating_add(message_len);
        let mut message = &bytes[5..bytes.len().min(total)];
        let fallback = |why: &str| {
            if whole_fits(total) {
                if complete || bytes.len() >= total {
                    Verdict::Pass
                } else {
                    Verdict::More
                }
            } else {
                crate::metrics::limit_reached("max_unauthenticated_bytes");
                Verdict::Refuse(tonic::Status::invalid_argument(format!(
                    "a request over max_unauthenticated_bytes ({}) must start with its auth field: {why}",
                    self.max_unauthenticated
                )))
            }
        };
        if whole_fits(total) {
            // Small enough to read whole: the handler checks in the
            // reference's order (key order before auth).
            return fallback("");
        }
        if header[0] != 0 {
            return fallback("compressed");
        }
        // Field 1, length-delimited: the `auth` message.
        match message.first() {
            None => {
                return if complete {
                    Verdict::Pass
                } else {
                    Verdict::More
                }
            }
            Some(0x0a) => message.advance(1),
            Some(_) => return fallback("another field comes first"),
        }
        let Ok(auth_len) = prost::encoding::decode_varint(&mut message) else {
            return if message.len() >= 10 || complete {
                fallback("bad length")
            } else {
                Verdict::More
            };
        };
        let auth_len = usize::try_from(auth_len).unwrap_or(usize::MAX);
        if auth_len > 1_024 {
            return fallback("an oversized auth field");
        }
        if message.len() < auth_len {
            return if complete {
                Verdict::Pass
            } else if bytes.len() > self.max_unauthenticated {
                fallback("auth not within the limit")
            } else {
                Verdict::More
            };
        }
        let Ok(auth) = lss_proto::Auth::decode(&message[..auth_len]) else {
            return fallback("an undecodable auth field");
        };
        match self.auth.authenticate(&auth.client_id, &auth.token) {
            Err(e) => Verdict::Refuse(status::auth(e)),
            Ok((client, _)) if self.access.is_allowed(&client) || registering => Verdict::Pass,
            Ok(_) => Verdict::Refuse(status::access(crate::access::AccessError::NotAllowed)),
        }
    }
}

impl http_body::Body for Gated {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        if this.open {
            return Pin::new(&mut this.inner).poll_frame(cx);
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let complete = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.buffered.extend_from_slice(&data);
                        false
                    }
                    Err(trailers) => {
                        // Trailers end the body: decide on what came.
                        match this.check.judge(&this.buffered, true, this.registering) {
                            Verdict::Refuse(status) => return Poll::Ready(Some(Err(status))),
                            _ => {
                                this.open = true;
                                if this.buffered.is_empty() {
                                    return Poll::Ready(Some(Ok(trailers)));
                                }
                                // The trailers are dropped: gRPC requests have none.
                                let data = this.buffered.split().freeze();
                                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                            }
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => true,
            };
            match this.check.judge(&this.buffered, complete, this.registering) {
                Verdict::More if !complete => continue,
                Verdict::Refuse(status) => return Poll::Ready(Some(Err(status))),
                _ => {
                    this.open = true;
                    if this.buffered.is_empty() {
                        return Poll::Ready(None);
                    }
                    let data = this.buffered.split().freeze();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.open && self.buffered.is_empty() && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessMode;
    use lss_core::secp256k1::{Secp256k1, SecretKey};
    use lss_core::{ClientId, ServerKey};

    fn server() -> ServerKey {
        ServerKey::new(SecretKey::from_slice(&[0x22; 32]).expect("key"))
    }

    fn auth(byte: u8) -> lss_proto::Auth {
        let public = SecretKey::from_slice(&[byte; 32])
            .expect("key")
            .public_key(&Secp256k1::signing_only());
        let client = ClientId::from(public);
        lss_proto::Auth {
            client_id: public.serialize().to_vec(),
            token: server().shared_secret(&client).token().0.to_vec(),
        }
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn check(access: Access) -> Check {
        Check {
            auth: Arc::new(Authenticator::new(server(), 16)),
            access: Arc::new(access),
            max_unauthenticated: 1_000,
        }
    }

    #[test]
    fn a_large_body_passes_once_its_auth_is_checked_at_its_start() {
        let check = check(Access::open());
        let put = lss_proto::PutRequest {
            auth: Some(auth(1)),
            kvs: vec![lss_proto::KeyValue {
                key: "k".into(),
                version: 0,
                value: vec![0; 10_000],
            }],
            ..Default::default()
        };
        let bytes = framed(&put);
        // Every prefix too short to hold auth asks for more.
        for cut in 0..40 {
            assert!(
                matches!(check.judge(&bytes[..cut], false, false), Verdict::More),
                "{cut}"
            );
        }
        assert!(matches!(
            check.judge(&bytes[..200], false, false),
            Verdict::Pass
        ));
        // A wrong token is refused before the body is read.
        let mut forged = put.clone();
        forged.auth.as_mut().expect("auth").token[0] ^= 1;
        assert!(matches!(
            check.judge(&framed(&forged)[..200], false, false),
            Verdict::Refuse(s) if s.code() == tonic::Code::InvalidArgument
        ));
        // No auth at all in a large body: refused at the limit.
        let anonymous = lss_proto::PutRequest {
            auth: None,
            ..put.clone()
        };
        let anonymous = framed(&anonymous);
        assert!(matches!(
            check.judge(&anonymous[..200], false, false),
            Verdict::Refuse(s) if s.message().contains("max_unauthenticated_bytes")
        ));
        // A small body passes whole (the handler reads any field order).
        let small = framed(&lss_proto::GetRequest::default());
        assert!(matches!(check.judge(&small, true, false), Verdict::Pass));
        assert!(matches!(check.judge(&[], true, false), Verdict::Pass));
    }

    #[test]
    fn strangers_are_refused_under_an_allowlist_unless_registering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let access = Access::load(AccessMode::Allowlist, dir.path()).expect("load");
        let check = check(access);
        let get = framed(&lss_proto::GetRequest {
            auth: Some(auth(5)),
            key_prefix: "p".repeat(2_000),
            ..Default::default()
        });
        assert!(matches!(
            check.judge(&get, true, false),
            Verdict::Refuse(s) if s.code() == tonic::Code::PermissionDenied
        ));
        assert!(matches!(check.judge(&get, true, true), Verdict::Pass));
    }

    #[test]
    fn hostile_prefixes_never_panic() {
        let check = check(Access::open());
        let mut cases: Vec<Vec<u8>> = vec![
            vec![
                0, 0xff, 0xff, 0xff, 0xff, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff,
            ],
            vec![1, 0, 0, 0, 3, 0x0a, 1, 0],
            vec![0, 0, 0, 0, 2, 0x0a, 0x7f],
            vec![0, 0, 0, 0, 4, 0x0a, 2, 0xff, 0xff],
        ];
        for n in 0..=255u8 {
            cases.push(vec![0, 0, 0, 0, 3, 0x0a, n, n]);
        }
        for case in cases {
            for cut in 0..=case.len() {
                let _ = check.judge(&case[..cut], false, false);
                let _ = check.judge(&case[..cut], true, false);
            }
        }
    }
}
