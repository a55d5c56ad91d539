//! An export file is untrusted input to `lssd import`: the reader must
//! reject anything malformed with an error, never panic or over-allocate,
//! and accept only what the writer would produce.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lss_transfer::format::{Reader, Writer};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else {
        return;
    };
    let mut entries = Vec::new();
    loop {
        match reader.next_entry() {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    // Accepted: writing the entries back must give the same bytes.
    let mut writer = Writer::new(Vec::new()).expect("header");
    for entry in &entries {
        writer.write(entry).expect("accepted entries are writable");
    }
    let (bytes, _, _) = writer.finish().expect("finish");
    assert_eq!(bytes, data, "an accepted file must be canonical");
});
