//! Reading the reference `lssd`'s redb database (its file `<datadir>/redb`).
//!
//! One table `kv: &str → &[u8]`. The key is `hex(client_id)/key`; the value
//! is CBOR of `{ "version": i64, "value": [u8 as integers…] }` (serde's
//! encoding of a `Vec<u8>` as an array, not a byte string). The client id may
//! be compressed or uncompressed: the reference kept the two apart, we
//! normalise both to the compressed id, so a client that used both ends up
//! with one namespace (and a key present under both is reported, not merged).

use std::path::{Path, PathBuf};

use lss_core::{ClientId, KeyValue};
use lss_store::Entry;
use redb::{ReadableTable, TableDefinition};

/// The reference's table.
pub const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Why the reference database cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// redb cannot open or read it (is the reference lssd still running?).
    #[error("cannot read {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// An entry is not in the reference's format.
    #[error("{path}: entry {key:?}: {what}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The raw key.
        key: String,
        /// What is wrong.
        what: String,
    },
}

#[derive(serde::Deserialize)]
struct Value {
    version: i64,
    value: Vec<u8>,
}

/// Decodes one reference entry.
pub fn decode(raw_key: &str, raw_value: &[u8]) -> Result<Entry, String> {
    let (client, key) = raw_key
        .split_once('/')
        .ok_or("no '/' between client id and key")?;
    let client = hex::decode(client).map_err(|_| "the client id is not hex")?;
    let client = ClientId::parse(&client).map_err(|_| "the client id is not a public key")?;
    let value: Value = ciborium::from_reader(raw_value).map_err(|e| format!("value: {e}"))?;
    if value.version < 0 {
        return Err(format!("negative version {}", value.version));
    }
    Ok(Entry {
        client,
        kv: KeyValue::new(key, value.version, value.value),
    })
}

/// Calls `each` with every entry, in the file's order, until it returns false.
/// Blocking: run it on a thread of its own.
pub fn read(path: &Path, mut each: impl FnMut(Entry) -> bool) -> Result<(), ReferenceError> {
    let open = |reason: String| ReferenceError::Open {
        path: path.to_owned(),
        reason,
    };
    if !path.is_file() {
        return Err(open("no such file".into()));
    }
    let db = redb::Database::open(path).map_err(|e| open(e.to_string()))?;
    let txn = db.begin_read().map_err(|e| open(e.to_string()))?;
    let table = match txn.open_table(TABLE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(open(e.to_string())),
    };
    for item in table.iter().map_err(|e| open(e.to_string()))? {
        let (key, value) = item.map_err(|e| open(e.to_string()))?;
        let entry = decode(key.value(), value.value()).map_err(|what| ReferenceError::Entry {
            path: path.to_owned(),
            key: key.value().to_owned(),
            what,
        })?;
        if !each(entry) {
            break;
        }
    }
    Ok(())
}
