//! Checkpoint bodies (tlog-checkpoint v1.0.0, tlog.md §3.1–§3.2) and
//! Lightkeeper's origin rule.

use crate::merkle::{Hash, EMPTY_ROOT};
use crate::note::{b64decode, b64encode};

/// Largest checkpoint body.
pub const MAX_BODY: usize = 4 * 1024;
/// Longest origin.
pub const MAX_ORIGIN: usize = 255;
/// Most extension lines a Lightkeeper log adds.
pub const MAX_EXTENSIONS: usize = 8;

/// Why a checkpoint body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text does not have the checkpoint shape.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

/// A tree head: origin, size, root, extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Its size.
    pub size: u64,
    /// `MTH` at that size.
    pub root: Hash,
    /// Extension lines (none from Lightkeeper logs).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Parses a note text (every line ending in LF).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let malformed = CheckpointError::Malformed;
        if text.len() > MAX_BODY {
            return Err(malformed("over 4 KiB"));
        }
        let body = text
            .strip_suffix('\n')
            .ok_or(malformed("does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        let size = lines.next().ok_or(malformed("no size line"))?;
        let root = lines.next().ok_or(malformed("no root line"))?;
        if origin.is_empty() || origin.len() > MAX_ORIGIN {
            return Err(malformed("origin empty or longer than 255 bytes"));
        }
        if origin.chars().any(|c| c < ' ') {
            return Err(malformed("control character in the origin"));
        }
        let size = parse_decimal(size).ok_or(malformed("size is not canonical decimal"))?;
        let root: Hash = b64decode(root)
            .and_then(|b| b.try_into().ok())
            .ok_or(malformed("root is not 32 bytes of canonical base64"))?;
        if size == 0 && root != EMPTY_ROOT {
            return Err(malformed("an empty tree has another root than H(\"\")"));
        }
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// The note text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            b64encode(&self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Canonical decimal: digits, no leading zero but `0` itself, ≤ u64.
pub fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// Whether `origin` is one Lightkeeper creates: `<dns-name>/<path>` of
/// lowercase letters, digits, `.`, `-` and `/`, 1..=255 bytes, no trailing
/// `/` (tlog.md §3.2). Followers accept any origin [`Checkpoint::parse`]
/// accepts.
pub fn is_lightkeeper_origin(origin: &str) -> bool {
    !origin.is_empty()
        && origin.len() <= MAX_ORIGIN
        && !origin.ends_with('/')
        && !origin.starts_with('/')
        && !origin.contains("//")
        && origin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"./-".contains(&b))
}

/// `H(origin)`: the log's id.
pub fn log_id(origin: &str) -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest(origin.as_bytes()).into()
}
