//! LKTL/1, the federation sync protocol's codecs (tlog.md §7.2–§7.5): the
//! identification line, the human-readable `ERR` line, frames and every
//! message, with the limits of the spec. Decoders take hostile bytes:
//! every length is checked against what remains before anything is
//! allocated, trailing bytes are refused, nothing panics.

use crate::merkle::{Hash, MAX_CONSISTENCY_PROOF};
use crate::wire::{DecodeError, Reader, Writer};

/// Frame magic, "LKTL".
pub const MAGIC: [u8; 4] = *b"LKTL";
/// Frame header length.
pub const HEADER: usize = 14;
/// Smallest `max_frame` a peer may advertise.
pub const MIN_MAX_FRAME: u32 = 65_536;
/// Default `max_frame`.
pub const DEFAULT_MAX_FRAME: u32 = 4 << 20;
/// Longest identification line, LF included.
pub const MAX_IDENT: usize = 255;
/// Longest `ERR` line, LF included.
pub const MAX_ERR_LINE: usize = 2048;
/// Largest note in a frame.
pub const MAX_NOTE: usize = 65_536;
/// Largest evidence in a frame.
pub const MAX_EVIDENCE: usize = 262_144;
/// Most logs in a Hello.
pub const MAX_HELLO_LOGS: usize = 1024;
/// Most entries asked for in one GetData.
pub const MAX_GET_DATA: u32 = 1024;
/// Longest Reject reason.
pub const MAX_REASON: usize = 1024;

/// A peer's identification line: `LKTL/1 <software>/<version> <node> logs=<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// `<software>/<version>`.
    pub software: String,
    /// The node's name.
    pub node: String,
    /// How many logs it serves.
    pub logs: u64,
}

/// Why an identification line is not LKTL/1's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Not `LKTL/1 ` (another protocol, or another major version).
    #[error("not an LKTL/1 peer")]
    NotLktl,
    /// No LF within 255 bytes.
    #[error("identification line too long")]
    TooLong,
    /// Not printable ASCII, or fields missing.
    #[error("malformed identification line")]
    Malformed,
}

impl Ident {
    /// The line, LF included (fields are cut to fit 255 bytes).
    pub fn to_line(&self) -> Vec<u8> {
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(100)
                .collect()
        };
        format!(
            "LKTL/1 {} {} logs={}\n",
            clean(&self.software),
            clean(&self.node),
            self.logs
        )
        .into_bytes()
    }

    /// Parses the first line of `bytes`: `Ok(None)` if no LF yet (and fewer
    /// than 255 bytes); the line's length is returned with it.
    pub fn parse(bytes: &[u8]) -> Result<Option<(Ident, usize)>, IdentError> {
        let prefix = b"LKTL/1 ";
        let seen = bytes.len().min(prefix.len());
        if bytes[..seen] != prefix[..seen] {
            return Err(IdentError::NotLktl);
        }
        let Some(end) = bytes.iter().take(MAX_IDENT).position(|b| *b == b'\n') else {
            return if bytes.len() >= MAX_IDENT {
                Err(IdentError::TooLong)
            } else {
                Ok(None)
            };
        };
        let line = &bytes[..end];
        if !line.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(IdentError::Malformed);
        }
        let text = std::str::from_utf8(&line[prefix.len()..]).map_err(|_| IdentError::Malformed)?;
        let mut words = text.split(' ');
        let (Some(software), Some(node), Some(logs), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(IdentError::Malformed);
        };
        let logs = logs
            .strip_prefix("logs=")
            .and_then(crate::checkpoint::parse_decimal)
            .ok_or(IdentError::Malformed)?;
        if software.is_empty() || node.is_empty() {
            return Err(IdentError::Malformed);
        }
        Ok(Some((
            Ident {
                software: software.to_string(),
                node: node.to_string(),
                logs,
            },
            end + 1,
        )))
    }
}

/// The line a server writes to something that is not an LKTL/1 peer
/// (`nc`, a browser): what this port is and the logs it holds, with their
/// latest verified checkpoints, within 2,048 bytes.
pub fn err_line(logs: &[(String, u64, Hash)]) -> Vec<u8> {
    let mut line = String::from(
        "ERR not an LKTL/1 peer; this port speaks the Lightkeeper tlog sync protocol; logs:",
    );
    let mut shown = 0;
    for (i, (origin, size, root)) in logs.iter().enumerate() {
        let sep = if i == 0 { " " } else { "; " };
        let item = format!(
            "{sep}{origin} size={size} root={}",
            crate::note::b64encode(root)
        );
        let rest = logs.len() - i - 1;
        let more = if rest > 0 {
            format!("; (+{rest} more)").len()
        } else {
            0
        };
        if line.len() + item.len() + more + 1 > MAX_ERR_LINE {
            break;
        }
        line.push_str(&item);
        shown += 1;
    }
    if logs.is_empty() {
        line.push_str(" none");
    } else if shown < logs.len() {
        line.push_str(&format!("; (+{} more)", logs.len() - shown));
    }
    line.push('\n');
    line.into_bytes()
}

/// One log in a Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloLog {
    /// Exact origin (`false`) or origin prefix (`true`).
    pub prefix: bool,
    /// The origin or prefix.
    pub origin: String,
    /// bit0 sequencer, bit1 mirror, bit2 witness.
    pub roles: u8,
    /// Latest verified size (0 for prefixes).
    pub size: u64,
}

/// The Headers fork part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// The locator size whose root differs.
    pub size: u64,
    /// The responder's root there.
    pub root: Hash,
    /// Proof from it to the responder's latest.
    pub proof: Vec<Hash>,
}

/// Every LKTL/1 message (tlog.md §7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x01.
    Hello {
        /// Protocol version (1).
        version: u16,
        /// Self-connection detection.
        nonce: u64,
        /// Largest frame it takes.
        max_frame: u32,
        /// Requests it serves at once.
        max_inflight: u16,
        /// Its name.
        node_name: String,
        /// What it follows or serves.
        logs: Vec<HelloLog>,
    },
    /// 0x02.
    Inv {
        /// `H(origin)`.
        log_id: Hash,
        /// A signed checkpoint.
        note: Vec<u8>,
        /// The size the proof starts at.
        old_size: u64,
        /// old_size → the note's size.
        proof: Vec<Hash>,
    },
    /// 0x03: a locator, largest first.
    GetHeaders {
        /// The log.
        log_id: Hash,
        /// (size, root) pairs.
        locator: Vec<(u64, Hash)>,
    },
    /// 0x04.
    Headers {
        /// The log.
        log_id: Hash,
        /// Largest common size with the locator.
        base_size: u64,
        /// The responder's latest note.
        note: Vec<u8>,
        /// base_size → its size.
        proof: Vec<Hash>,
        /// Set when the locator's first entry disagrees.
        fork: Option<Fork>,
    },
    /// 0x05.
    GetData {
        /// The log.
        log_id: Hash,
        /// First index.
        start: u64,
        /// How many (1..=1024).
        count: u32,
        /// The checkpoint size to prove against.
        tree_size: u64,
    },
    /// 0x06.
    Data {
        /// The log.
        log_id: Hash,
        /// First index.
        start: u64,
        /// The entries.
        entries: Vec<Vec<u8>>,
        /// The checkpoint size they are proven against.
        tree_size: u64,
        /// start + count → tree_size.
        proof: Vec<Hash>,
    },
    /// 0x07.
    NotFound {
        /// The log.
        log_id: Hash,
        /// 1 unknown log, 2 range beyond size, 3 tree_size unknown.
        what: u8,
        /// What the responder has.
        have_size: u64,
    },
    /// 0x08.
    Reject {
        /// The code (§7.5).
        code: u8,
        /// When to retry, ms.
        retry_after_ms: u32,
        /// Human-readable.
        reason: String,
    },
    /// 0x09.
    Ping(u64),
    /// 0x0A.
    Pong(u64),
    /// 0x0B.
    Evidence(Vec<u8>),
    /// A type this version does not know (answered with Reject 2).
    Unknown(u8),
}

/// A message with its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 0 for unsolicited messages.
    pub id: u32,
    /// The message.
    pub message: Message,
}

/// Why a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Wrong magic: not a frame (close).
    #[error("bad frame magic")]
    Magic,
    /// Non-zero flags (close).
    #[error("non-zero frame flags")]
    Flags,
    /// Longer than this side's `max_frame` (close).
    #[error("frame of {0} bytes over the limit")]
    TooLarge(u32),
    /// A payload that does not decode (Reject 1, close).
    #[error("malformed {what} payload: {error}")]
    Payload {
        /// The message type.
        what: &'static str,
        /// Why.
        error: DecodeError,
    },
    /// A value outside what the spec allows (Reject 1, close).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl Message {
    /// The message's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.kind().1
    }

    fn kind(&self) -> (u8, &'static str) {
        match self {
            Message::Hello { .. } => (0x01, "Hello"),
            Message::Inv { .. } => (0x02, "Inv"),
            Message::GetHeaders { .. } => (0x03, "GetHeaders"),
            Message::Headers { .. } => (0x04, "Headers"),
            Message::GetData { .. } => (0x05, "GetData"),
            Message::Data { .. } => (0x06, "Data"),
            Message::NotFound { .. } => (0x07, "NotFound"),
            Message::Reject { .. } => (0x08, "Reject"),
            Message::Ping(_) => (0x09, "Ping"),
            Message::Pong(_) => (0x0a, "Pong"),
            Message::Evidence(_) => (0x0b, "Evidence"),
            Message::Unknown(t) => (*t, "Unknown"),
        }
    }

    fn payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Hello {
                version,
                nonce,
                max_frame,
                max_inflight,
                node_name,
                logs,
            } => {
                w.u16(*version);
                w.u64(*nonce);
                w.u32(*max_frame);
                w.u16(*max_inflight);
                w.str8(node_name);
                w.u16(logs.len() as u16);
                for log in logs {
                    w.u8(u8::from(log.prefix));
                    w.str8(&log.origin);
                    w.u8(log.roles);
                    w.u64(log.size);
                }
            }
            Message::Inv {
                log_id,
                note,
                old_size,
                proof,
            } => {
                w.hash(log_id);
                w.blob32(note);
                w.u64(*old_size);
                w.proof(proof);
            }
            Message::GetHeaders { log_id, locator } => {
                w.hash(log_id);
                w.u8(locator.len() as u8);
                for (size, root) in locator {
                    w.u64(*size);
                    w.hash(root);
                }
            }
            Message::Headers {
                log_id,
                base_size,
                note,
                proof,
                fork,
            } => {
                w.hash(log_id);
                w.u8(u8::from(fork.is_some()));
                w.u64(*base_size);
                w.blob32(note);
                w.proof(proof);
                if let Some(fork) = fork {
                    w.u64(fork.size);
                    w.hash(&fork.root);
                    w.proof(&fork.proof);
                }
            }
            Message::GetData {
                log_id,
                start,
                count,
                tree_size,
            } => {
                w.hash(log_id);
                w.u64(*start);
                w.u32(*count);
                w.u64(*tree_size);
            }
            Message::Data {
                log_id,
                start,
                entries,
                tree_size,
                proof,
            } => {
                w.hash(log_id);
                w.u64(*start);
                w.u32(entries.len() as u32);
                for e in entries {
                    w.u16(e.len() as u16);
                    w.bytes(e);
                }
                w.u64(*tree_size);
                w.proof(proof);
            }
            Message::NotFound {
                log_id,
                what,
                have_size,
            } => {
                w.hash(log_id);
                w.u8(*what);
                w.u64(*have_size);
            }
            Message::Reject {
                code,
                retry_after_ms,
                reason,
            } => {
                w.u8(*code);
                w.u32(*retry_after_ms);
                w.str16(reason);
            }
            Message::Ping(n) | Message::Pong(n) => w.u64(*n),
            Message::Evidence(blob) => w.blob32(blob),
            Message::Unknown(_) => {}
        }
        w.into_inner()
    }

    fn decode(ty: u8, payload: &[u8]) -> Result<Message, FrameError> {
        let mut r = Reader::new(payload);
        let what = match ty {
            0x01 => "Hello",
            0x02 => "Inv",
            0x03 => "GetHeaders",
            0x04 => "Headers",
            0x05 => "GetData",
            0x06 => "Data",
            0x07 => "NotFound",
            0x08 => "Reject",
            0x09 => "Ping",
            0x0a => "Pong",
            0x0b => "Evidence",
            other => return Ok(Message::Unknown(other)),
        };
        let p = |error| FrameError::Payload { what, error };
        let proof = |r: &mut Reader| r.proof(MAX_CONSISTENCY_PROOF).map_err(p);
        let message = match ty {
            0x01 => {
                let version = r.u16().map_err(p)?;
                let nonce = r.u64().map_err(p)?;
                let max_frame = r.u32().map_err(p)?;
                let max_inflight = r.u16().map_err(p)?;
                if max_frame < MIN_MAX_FRAME || max_inflight == 0 {
                    return Err(FrameError::Invalid("Hello limits"));
                }
                let node_name = r.str8().map_err(p)?;
                let n = usize::from(r.u16().map_err(p)?);
                // Each log takes at least 1 + 1 + 1 + 8 bytes.
                if n > MAX_HELLO_LOGS || n * 11 > r.remaining() {
                    return Err(FrameError::Invalid("Hello log count"));
                }
                let mut logs = Vec::with_capacity(n);
                for _ in 0..n {
                    let prefix = match r.u8().map_err(p)? {
                        0 => false,
                        1 => true,
                        _ => return Err(FrameError::Invalid("Hello match kind")),
                    };
                    let origin = r.str8().map_err(p)?;
                    let roles = r.u8().map_err(p)?;
                    if roles > 7 {
                        return Err(FrameError::Invalid("Hello roles"));
                    }
                    let size = r.u64().map_err(p)?;
                    logs.push(HelloLog {
                        prefix,
                        origin,
                        roles,
                        size,
                    });
                }
                Message::Hello {
                    version,
                    nonce,
                    max_frame,
                    max_inflight,
                    node_name,
                    logs,
                }
            }
            0x02 => Message::Inv {
                log_id: r.hash().map_err(p)?,
                note: r.blob32(MAX_NOTE).map_err(p)?,
                old_size: r.u64().map_err(p)?,
                proof: proof(&mut r)?,
            },
            0x03 => {
                let log_id = r.hash().map_err(p)?;
                let n = usize::from(r.u8().map_err(p)?);
                if !(1..=64).contains(&n) {
                    return Err(FrameError::Invalid("locator length"));
                }
                let mut locator = Vec::with_capacity(n);
                for _ in 0..n {
                    locator.push((r.u64().map_err(p)?, r.hash().map_err(p)?));
                }
                if locator.windows(2).any(|w| w[0].0 <= w[1].0) {
                    return Err(FrameError::Invalid("locator not strictly decreasing"));
                }
                Message::GetHeaders { log_id, locator }
            }
            0x04 => {
                let log_id = r.hash().map_err(p)?;
                let status = r.u8().map_err(p)?;
                let base_size = r.u64().map_err(p)?;
                let note = r.blob32(MAX_NOTE).map_err(p)?;
                let main = proof(&mut r)?;
                let fork = match status {
                    0 => None,
                    1 => Some(Fork {
                        size: r.u64().map_err(p)?,
                        root: r.hash().map_err(p)?,
                        proof: proof(&mut r)?,
                    }),
                    _ => return Err(FrameError::Invalid("Headers status")),
                };
                Message::Headers {
                    log_id,
                    base_size,
                    note,
                    proof: main,
                    fork,
                }
            }
            0x05 => {
                let log_id = r.hash().map_err(p)?;
                let start = r.u64().map_err(p)?;
                let count = r.u32().map_err(p)?;
                if !(1..=MAX_GET_DATA).contains(&count) {
                    return Err(FrameError::Invalid("GetData count"));
                }
                Message::GetData {
                    log_id,
                    start,
                    count,
                    tree_size: r.u64().map_err(p)?,
                }
            }
            0x06 => {
                let log_id = r.hash().map_err(p)?;
                let start = r.u64().map_err(p)?;
                let count = r.u32().map_err(p)? as usize;
                // Each entry takes at least its 2-byte length.
                if count == 0 || count > r.remaining() / 2 {
                    return Err(FrameError::Invalid("Data count"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = usize::from(r.u16().map_err(p)?);
                    entries.push(r.bytes(len).map_err(p)?.to_vec());
                }
                Message::Data {
                    log_id,
                    start,
                    entries,
                    tree_size: r.u64().map_err(p)?,
                    proof: proof(&mut r)?,
                }
            }
            0x07 => {
                let log_id = r.hash().map_err(p)?;
                let what = r.u8().map_err(p)?;
                if !(1..=3).contains(&what) {
                    return Err(FrameError::Invalid("NotFound kind"));
                }
                Message::NotFound {
                    log_id,
                    what,
                    have_size: r.u64().map_err(p)?,
                }
            }
            0x08 => Message::Reject {
                code: r.u8().map_err(p)?,
                retry_after_ms: r.u32().map_err(p)?,
                reason: r.str16(MAX_REASON).map_err(p)?,
            },
            0x09 => Message::Ping(r.u64().map_err(p)?),
            0x0a => Message::Pong(r.u64().map_err(p)?),
            _ => Message::Evidence(r.blob32(MAX_EVIDENCE).map_err(p)?),
        };
        r.end().map_err(p)?;
        Ok(message)
    }
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.message.payload();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.message.kind().0);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes the first frame of `buf` if it is all there: the frame and
    /// the bytes it used. `max_frame` bounds the payload this side accepts;
    /// the header is checked before the payload is awaited.
    pub fn decode(buf: &[u8], max_frame: u32) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() >= 4 && buf[..4] != MAGIC {
            return Err(FrameError::Magic);
        }
        if buf.len() < HEADER {
            return Ok(None);
        }
        if buf[5] != 0 {
            return Err(FrameError::Flags);
        }
        let id = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
        let len = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
        if len > max_frame {
            return Err(FrameError::TooLarge(len));
        }
        let total = HEADER + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let message = Message::decode(buf[4], &buf[HEADER..total])?;
        Ok(Some((Frame { id, message }, total)))
    }
}
