//! A Put as the server receives it: arbitrary bytes decoded as `PutRequest`
//! and handled by the real `LssService` (order and size checks, auth, MAC,
//! store). The first byte decides whether to swap in a valid client's auth
//! and a correct MAC, so inputs also reach the version rules and the store.
//! Every outcome must be a reply or a status, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightkeeper_fuzz::{block_on, client_mac, harness, valid_client};
use lss_proto::lightning_storage_server::LightningStorage;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let Ok(mut request) = lss_proto::PutRequest::decode(bytes) else {
        return;
    };
    let (auth, shared) = valid_client();
    if mode & 1 == 1 {
        request.auth = Some(auth);
    }
    if mode & 2 == 2 {
        request.hmac = client_mac(&shared, &request.kvs);
    }
    let _ = block_on(harness().put(tonic::Request::new(request)));
});
