//! A request body as lssd's pre-authentication gate reads it: arbitrary
//! bytes, cut into HTTP/2 data frames where the first byte says, some
//! starting with a valid client's auth field. The gate must never panic,
//! must read no more than its limit plus one frame before deciding, and
//! whatever it lets through must be exactly the bytes sent.
#![no_main]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use libfuzzer_sys::fuzz_target;
use lightkeeper_fuzz::{block_on, server_key, valid_client};
use lssd::access::Access;
use lssd::auth::Authenticator;
use lssd::preauth::PreauthLayer;
use prost::Message;

/// Frames handed over one by one.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

const LIMIT: usize = 256;

fn layer() -> &'static PreauthLayer {
    static LAYER: OnceLock<PreauthLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        PreauthLayer::new(
            Arc::new(Authenticator::new(server_key(), 16)),
            Arc::new(Access::open()),
            LIMIT,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = Vec::new();
    if mode & 1 == 1 {
        // A gRPC frame that starts with a valid auth field.
        let (auth, _) = valid_client();
        let mut message = vec![0x0a];
        prost::encoding::encode_varint(auth.encoded_len() as u64, &mut message);
        message.extend(auth.encode_to_vec());
        message.extend_from_slice(rest);
        bytes.push(0);
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend(message);
    } else {
        bytes.extend_from_slice(rest);
    }
    let step = usize::from(mode >> 1).max(1);
    let frames: VecDeque<Bytes> = bytes.chunks(step).map(Bytes::copy_from_slice).collect();
    let mut body = layer().gate(tonic::body::Body::new(Frames(frames)), mode & 0x80 != 0);
    let mut passed = Vec::new();
    let outcome = block_on(std::future::poll_fn(|cx| loop {
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    passed.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(status))) => return Poll::Ready(Err(status)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }));
    match outcome {
        Ok(()) => assert_eq!(passed, bytes, "passed bytes differ from those sent"),
        Err(_) => assert!(passed.is_empty(), "refused after passing bytes"),
    }
});
