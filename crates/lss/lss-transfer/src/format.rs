//! The portable export format, version 1 (documented in `docs/export-format.md`).
//!
//! ```text
//! header   "LIGHTKEEPER-LSS\n" (16 bytes)  format version (u32 BE) = 1
//! record   0x01  client (33 bytes, compressed public key)
//!          key length (u32 BE)  key (UTF-8)
//!          version (i64 BE, >= 0)
//!          value length (u32 BE)  value
//! trailer  0x00  record count (u64 BE)  SHA-256 of every byte before the 0x00
//! ```
//!
//! Records are strictly increasing in (client bytes, key bytes), which makes
//! duplicates impossible and lets a reader check order as it streams. The
//! trailer's count and checksum detect truncation and corruption; a reader
//! reports success only after the trailer matched and nothing follows it.
//! Lengths are read incrementally, so a hostile length cannot make the reader
//! allocate more than the file actually holds.

use std::io::{Read, Write};

use lss_core::{ClientId, KeyValue};
use lss_store::Entry;
use sha2::{Digest, Sha256};

/// The file's first bytes.
pub const MAGIC: &[u8; 16] = b"LIGHTKEEPER-LSS\n";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
const RECORD: u8 = 1;
const TRAILER: u8 = 0;

/// What is wrong with an export file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not an export file.
    #[error("not a Lightkeeper export file (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("export format {0} is not supported (this build reads format {VERSION})")]
    UnsupportedVersion(u32),
    /// The file ends early.
    #[error("the file is truncated at byte {0}")]
    Truncated(u64),
    /// A record is malformed.
    #[error("record {record} at byte {offset}: {what}")]
    Corrupt {
        /// 0-based record number.
        record: u64,
        /// Where it starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The trailer's count differs from the records read.
    #[error("the trailer counts {expected} records, the file holds {found}")]
    CountMismatch {
        /// The trailer's count.
        expected: u64,
        /// Records read.
        found: u64,
    },
    /// The checksum does not match: the file was changed or damaged.
    #[error("checksum mismatch: the file is damaged or was modified")]
    ChecksumMismatch,
    /// Bytes follow the trailer.
    #[error("unexpected data after the trailer")]
    TrailingData,
}

/// Writes an export file.
pub struct Writer<W: Write> {
    out: W,
    hash: Sha256,
    count: u64,
    last: Option<(ClientId, String)>,
}

impl<W: Write> Writer<W> {
    /// Writes the header.
    pub fn new(mut out: W) -> Result<Self, FormatError> {
        let mut hash = Sha256::new();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&VERSION.to_be_bytes());
        out.write_all(&header)?;
        hash.update(&header);
        Ok(Writer {
            out,
            hash,
            count: 0,
            last: None,
        })
    }

    /// Appends a record. Entries must come in strictly increasing (client,
    /// key) order, as [`lss_store::Bulk::scan`] yields them.
    pub fn write(&mut self, entry: &Entry) -> Result<(), FormatError> {
        let order = (entry.client.as_bytes(), entry.kv.key.as_bytes());
        if let Some((client, key)) = &self.last {
            if order <= (client.as_bytes(), key.as_bytes()) {
                return Err(FormatError::Corrupt {
                    record: self.count,
                    offset: 0,
                    what: "entries out of order".into(),
                });
            }
        }
        let corrupt = |what: &str| FormatError::Corrupt {
            record: self.count,
            offset: 0,
            what: what.into(),
        };
        let key_len = u32::try_from(entry.kv.key.len()).map_err(|_| corrupt("key too long"))?;
        let value_len =
            u32::try_from(entry.kv.value.len()).map_err(|_| corrupt("value too long"))?;
        if entry.kv.version < 0 {
            return Err(corrupt("negative version"));
        }
        let mut record = Vec::with_capacity(1 + 33 + 4 + entry.kv.key.len() + 8 + 4);
        record.push(RECORD);
        record.extend_from_slice(entry.client.as_bytes());
        record.extend_from_slice(&key_len.to_be_bytes());
        record.extend_from_slice(entry.kv.key.as_bytes());
        record.extend_from_slice(&entry.kv.version.to_be_bytes());
        record.extend_from_slice(&value_len.to_be_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(&entry.kv.value)?;
        self.hash.update(&record);
        self.hash.update(&entry.kv.value);
        self.count += 1;
        self.last = Some((entry.client, entry.kv.key.clone()));
        Ok(())
    }

    /// Writes the trailer; returns the output, the record count and the checksum.
    pub fn finish(mut self) -> Result<(W, u64, [u8; 32]), FormatError> {
        let digest: [u8; 32] = self.hash.finalize().into();
        self.out.write_all(&[TRAILER])?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((self.out, self.count, digest))
    }
}

/// Reads and checks an export file, record by record.
pub struct Reader<R: Read> {
    input: R,
    hash: Sha256,
    offset: u64,
    count: u64,
    last: Option<(ClientId, String)>,
    done: Option<[u8; 32]>,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, FormatError> {
        let mut header = [0u8; 20];
        read_exact(&mut input, &mut header, 0)?;
        if &header[..16] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let mut hash = Sha256::new();
        hash.update(header);
        Ok(Reader {
            input,
            hash,
            offset: 20,
            count: 0,
            last: None,
            done: None,
        })
    }

    /// The next record, or `None` after a trailer that matched. Any error
    /// means the file must not be trusted.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, FormatError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let start = self.offset;
        let mut tag = [0u8; 1];
        // The checksum covers everything before the trailer's tag, so the tag
        // is hashed only once it is known to start a record.
        read_exact(&mut self.input, &mut tag, self.offset)?;
        self.offset += 1;
        if tag[0] == RECORD {
            self.hash.update(tag);
        }
        match tag[0] {
            TRAILER => {
                let digest: [u8; 32] = self.hash.clone().finalize().into();
                let mut count = [0u8; 8];
                read_exact(&mut self.input, &mut count, self.offset)?;
                let mut claimed = [0u8; 32];
                read_exact(&mut self.input, &mut claimed, self.offset + 8)?;
                let expected = u64::from_be_bytes(count);
                if expected != self.count {
                    return Err(FormatError::CountMismatch {
                        expected,
                        found: self.count,
                    });
                }
                if claimed != digest {
                    return Err(FormatError::ChecksumMismatch);
                }
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra)? != 0 {
                    return Err(FormatError::TrailingData);
                }
                self.done = Some(digest);
                Ok(None)
            }
            RECORD => {
                let entry = self.record(start)?;
                self.count += 1;
                Ok(Some(entry))
            }
            other => Err(self.corrupt(start, format!("unknown record tag {other:#04x}"))),
        }
    }

    /// Records read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The checksum, once the trailer has matched.
    pub fn checksum(&self) -> Option<[u8; 32]> {
        self.done
    }

    fn record(&mut self, start: u64) -> Result<Entry, FormatError> {
        let mut client = [0u8; 33];
        self.read(&mut client)?;
        let client = ClientId::parse(&client)
            .map_err(|_| self.corrupt(start, "client id is not a public key".into()))?;
        let key = self.read_len_prefixed()?;
        let key =
            String::from_utf8(key).map_err(|_| self.corrupt(start, "key is not UTF-8".into()))?;
        let mut version = [0u8; 8];
        self.read(&mut version)?;
        let version = i64::from_be_bytes(version);
        if version < 0 {
            return Err(self.corrupt(start, format!("negative version {version}")));
        }
        let value = self.read_len_prefixed()?;
        if let Some((last_client, last_key)) = &self.last {
            if (client.as_bytes(), key.as_bytes()) <= (last_client.as_bytes(), last_key.as_bytes())
            {
                return Err(self.corrupt(start, "records out of order or duplicated".into()));
            }
        }
        self.last = Some((client, key.clone()));
        Ok(Entry {
            client,
            kv: KeyValue {
                key,
                version,
                value,
            },
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), FormatError> {
        read_exact(&mut self.input, buf, self.offset)?;
        self.hash.update(&*buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// A u32 length and that many bytes, read without trusting the length
    /// for an allocation.
    fn read_len_prefixed(&mut self) -> Result<Vec<u8>, FormatError> {
        let mut len = [0u8; 4];
        self.read(&mut len)?;
        let len = u64::from(u32::from_be_bytes(len));
        let mut out = Vec::new();
        let got = (&mut self.input).take(len).read_to_end(&mut out)? as u64;
        if got != len {
            return Err(FormatError::Truncated(self.offset + got));
        }
        self.hash.update(&out);
        self.offset += len;
        Ok(out)
    }

    fn corrupt(&self, offset: u64, what: String) -> FormatError {
        FormatError::Corrupt {
            record: self.count,
            offset,
            what,
        }
    }
}

fn read_exact<R: Read>(input: &mut R, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FormatError::Truncated(offset),
        _ => FormatError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lss_store::conformance::client;

    fn entries() -> Vec<Entry> {
        let mut out: Vec<Entry> = [1u8, 2, 3]
            .iter()
            .flat_map(|&n| {
                ["", "a", "channel/é"].map(|k| Entry {
                    client: client(n),
                    kv: KeyValue::new(k, n as i64, vec![n; n as usize * 10]),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (a.client.as_bytes(), a.kv.key.as_bytes())
                .cmp(&(b.client.as_bytes(), b.kv.key.as_bytes()))
        });
        out
    }

    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut writer = Writer::new(Vec::new()).expect("header");
        for e in entries {
            writer.write(e).expect("write");
        }
        writer.finish().expect("finish").0
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Entry>, FormatError> {
        let mut reader = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(e) = reader.next_entry()? {
            out.push(e);
        }
        assert!(reader.checksum().is_some());
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let entries = entries();
        assert_eq!(decode(&encode(&entries)).expect("decode"), entries);
        assert_eq!(decode(&encode(&[])).expect("empty"), vec![]);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let bytes = encode(&entries());
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode(&damaged).is_err(), "flip at {i} accepted");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(decode(&extra), Err(FormatError::TrailingData)));
    }

    #[test]
    fn hostile_lengths_do_not_allocate_and_are_reported() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_be_bytes());
        bytes.push(RECORD);
        bytes.extend_from_slice(client(1).as_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(b"short");
        assert!(matches!(decode(&bytes), Err(FormatError::Truncated(_))));
    }

    #[test]
    fn wrong_magic_version_order_and_writer_misuse() {
        assert!(matches!(
            decode(b"NOT AN EXPORT FILE AT ALL"),
            Err(FormatError::BadMagic)
        ));
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            decode(&v2),
            Err(FormatError::UnsupportedVersion(2))
        ));
        let mut entries = entries();
        let mut writer = Writer::new(Vec::new()).expect("header");
        writer.write(&entries[1]).expect("write");
        assert!(writer.write(&entries[0]).is_err(), "out of order");
        entries[0].kv.version = -1;
        let mut writer = Writer::new(Vec::new()).expect("header");
        assert!(writer.write(&entries[0]).is_err(), "negative version");
    }
}
