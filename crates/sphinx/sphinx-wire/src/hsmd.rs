//! Core Lightning's hsmd framing: `u32 BE length | u16 BE type | body`, where
//! the length counts the type and the body and lies in `2..=MAX_MESSAGE`.

use crate::WireError;

/// Largest framed message (type plus body), as VLS enforces.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// One hsmd message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type (`hsmd_wire.csv`; a reply is the request's type + 100).
    pub ty: u16,
    /// The serde_bolt body.
    pub body: Vec<u8>,
}

impl Frame {
    /// `type | body`: what the length prefix counts.
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.body.len());
        out.extend_from_slice(&self.ty.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The framed bytes, or an error if the body is too large to frame.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let len = 2 + self.body.len();
        if len > MAX_MESSAGE {
            return Err(WireError::Length {
                len,
                min: 2,
                max: MAX_MESSAGE,
            });
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.message());
        Ok(out)
    }

    /// Parses `type | body` (no length prefix).
    pub fn from_message(message: &[u8]) -> Result<Self, WireError> {
        if !(2..=MAX_MESSAGE).contains(&message.len()) {
            return Err(WireError::Length {
                len: message.len(),
                min: 2,
                max: MAX_MESSAGE,
            });
        }
        Ok(Frame {
            ty: u16::from_be_bytes([message[0], message[1]]),
            body: message[2..].to_vec(),
        })
    }
}

/// Takes one frame from the front of `buf`: `Ok(None)` if more bytes are
/// needed, else the frame and how many bytes it used. A length outside
/// `2..=MAX_MESSAGE` is an error at once (the stream cannot be trusted after
/// it), before any of the claimed bytes are awaited or allocated.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if !(2..=MAX_MESSAGE).contains(&len) {
        return Err(WireError::Length {
            len,
            min: 2,
            max: MAX_MESSAGE,
        });
    }
    let Some(message) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((Frame::from_message(message)?, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_memleak_request() {
        // Memleak (type 33) has an empty body.
        let frame = Frame {
            ty: 33,
            body: vec![],
        };
        assert_eq!(frame.encode().expect("encode"), [0, 0, 0, 2, 0, 33]);
        assert_eq!(
            decode(&[0, 0, 0, 2, 0, 33, 9]).expect("ok"),
            Some((frame, 6))
        );
    }

    #[test]
    fn lengths_out_of_range_are_refused_before_reading_them() {
        for len in [0u32, 1, MAX_MESSAGE as u32 + 1, u32::MAX] {
            let buf = len.to_be_bytes();
            assert!(
                matches!(decode(&buf), Err(WireError::Length { .. })),
                "{len}"
            );
        }
        let big = Frame {
            ty: 1,
            body: vec![0; MAX_MESSAGE - 1],
        };
        assert!(big.encode().is_err());
        let max = Frame {
            ty: 1,
            body: vec![0; MAX_MESSAGE - 2],
        };
        assert_eq!(
            decode(&max.encode().expect("max"))
                .expect("ok")
                .map(|(f, _)| f),
            Some(max)
        );
    }

    proptest! {
        #[test]
        fn round_trip_and_every_prefix_waits(ty: u16, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let frame = Frame { ty, body };
            let bytes = frame.encode().expect("encode");
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]).expect("prefix"), None);
            }
            prop_assert_eq!(decode(&bytes).expect("whole"), Some((frame, bytes.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
