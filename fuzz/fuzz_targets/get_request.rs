//! A Get as the server receives it, optionally with a valid client's auth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightkeeper_fuzz::{block_on, harness, valid_client};
use lss_proto::lightning_storage_server::LightningStorage;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let Ok(mut request) = lss_proto::GetRequest::decode(bytes) else {
        return;
    };
    if mode & 1 == 1 {
        request.auth = Some(valid_client().0);
    }
    let _ = block_on(harness().get(tonic::Request::new(request)));
});
