//! The binary field encodings of tlog.md §7.4, shared by LKTL/1 frames,
//! evidence and view state: big-endian integers, 32-byte hashes, `str8`,
//! `str16`, `blob32`, `proof`. The reader checks every length against what
//! remains before it allocates, and never panics.

use crate::merkle::Hash;

/// Why bytes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends inside a field.
    #[error("truncated")]
    Truncated,
    /// A length or count above its limit.
    #[error("a length or count is over its limit")]
    TooLong,
    /// Text that is not UTF-8.
    #[error("text is not UTF-8")]
    Utf8,
    /// Bytes after the last field.
    #[error("trailing bytes")]
    Trailing,
}

/// Reads fields from a byte slice.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut out = [0u8; 8];
        out.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_be_bytes(out))
    }

    /// 32 bytes.
    pub fn hash(&mut self) -> Result<Hash, DecodeError> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.bytes(32)?);
        Ok(out)
    }

    /// `u8 length ‖ UTF-8`.
    pub fn str8(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u8()?);
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    /// `u16 length ‖ UTF-8`, at most `max` bytes.
    pub fn str16(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError::TooLong);
        }
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    /// `u32 length ‖ bytes`, at most `max` bytes.
    pub fn blob32(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong);
        }
        Ok(self.bytes(n)?.to_vec())
    }

    /// `u8 n ‖ n hashes`, at most `max` hashes.
    pub fn proof(&mut self, max: usize) -> Result<Vec<Hash>, DecodeError> {
        let n = usize::from(self.u8()?);
        if n > max {
            return Err(DecodeError::TooLong);
        }
        if self.0.len() < n * 32 {
            return Err(DecodeError::Truncated);
        }
        (0..n).map(|_| self.hash()).collect()
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }

    /// Fails unless everything was read.
    pub fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

/// Writes fields.
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// A big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    /// A big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    /// A big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    /// 32 bytes.
    pub fn hash(&mut self, h: &Hash) {
        self.bytes(h);
    }
    /// `u8 length ‖ UTF-8` (longer text is cut at 255 bytes: callers keep
    /// names within it).
    pub fn str8(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(255)];
        self.u8(b.len() as u8);
        self.bytes(b);
    }
    /// `u16 length ‖ UTF-8`.
    pub fn str16(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(65_535)];
        self.u16(b.len() as u16);
        self.bytes(b);
    }
    /// `u32 length ‖ bytes`.
    pub fn blob32(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.bytes(b);
    }
    /// `u8 n ‖ n hashes` (at most 255; callers keep proofs within 64).
    pub fn proof(&mut self, p: &[Hash]) {
        let p = &p[..p.len().min(255)];
        self.u8(p.len() as u8);
        for h in p {
            self.hash(h);
        }
    }
    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}
