//! Serial headers: how hsmd messages travel between broker and signer.
//!
//! Request (broker → signer, topic `vls`, and `init-3-msg`):
//! `0xAA55 | seq u16 | peer_id [33] | dbid u64 | u32 len | type u16 | body`.
//! Response (signer → broker, `vls-res`, `init-3-res`):
//! `0x5AA5 | seq u16 | u32 len | type u16 | body`. All big-endian. The root
//! connection has peer_id all zeros and dbid 0.

use crate::hsmd::{Frame, MAX_MESSAGE};
use crate::WireError;

/// Request magic.
pub const REQUEST_MAGIC: u16 = 0xAA55;
/// Response magic.
pub const RESPONSE_MAGIC: u16 = 0x5AA5;

/// A request for the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The broker's sequence number; the response carries it back.
    pub seq: u16,
    /// The CLN client's peer (zeros for the root connection).
    pub peer_id: [u8; 33],
    /// The CLN client's channel database id (0 for the root connection).
    pub dbid: u64,
    /// The hsmd message.
    pub frame: Frame,
}

/// A signer's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's sequence number.
    pub seq: u16,
    /// The hsmd reply.
    pub frame: Frame,
}

impl Request {
    /// The bytes published on `vls`.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let framed = self.frame.encode()?;
        let mut out = Vec::with_capacity(45 + framed.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.peer_id);
        out.extend_from_slice(&self.dbid.to_be_bytes());
        out.extend_from_slice(&framed);
        Ok(out)
    }

    /// Parses a whole payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let header = bytes
            .first_chunk::<45>()
            .ok_or_else(|| WireError::Truncated {
                needed: 45 - bytes.len(),
            })?;
        magic(header, REQUEST_MAGIC)?;
        let seq = u16::from_be_bytes([header[2], header[3]]);
        let mut peer_id = [0u8; 33];
        peer_id.copy_from_slice(&header[4..37]);
        let mut dbid = [0u8; 8];
        dbid.copy_from_slice(&header[37..45]);
        Ok(Request {
            seq,
            peer_id,
            dbid: u64::from_be_bytes(dbid),
            frame: whole_frame(&bytes[45..])?,
        })
    }
}

impl Response {
    /// The bytes published on `vls-res`.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let framed = self.frame.encode()?;
        let mut out = Vec::with_capacity(4 + framed.len());
        out.extend_from_slice(&RESPONSE_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&framed);
        Ok(out)
    }

    /// Parses a whole payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let header = bytes
            .first_chunk::<4>()
            .ok_or_else(|| WireError::Truncated {
                needed: 4 - bytes.len(),
            })?;
        magic(header, RESPONSE_MAGIC)?;
        Ok(Response {
            seq: u16::from_be_bytes([header[2], header[3]]),
            frame: whole_frame(&bytes[4..])?,
        })
    }
}

fn magic(header: &[u8], expected: u16) -> Result<(), WireError> {
    let found = u16::from_be_bytes([header[0], header[1]]);
    if found != expected {
        return Err(WireError::Magic { found, expected });
    }
    Ok(())
}

/// Exactly one frame, nothing after it.
fn whole_frame(bytes: &[u8]) -> Result<Frame, WireError> {
    match crate::hsmd::decode(bytes)? {
        Some((frame, used)) if used == bytes.len() => Ok(frame),
        Some((_, used)) => Err(WireError::Trailing(bytes.len() - used)),
        None => {
            let claimed = bytes.first_chunk::<4>().map_or(4, |p| {
                4 + (u32::from_be_bytes(*p) as usize).min(MAX_MESSAGE)
            });
            Err(WireError::Truncated {
                needed: claimed.saturating_sub(bytes.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_request_and_response() {
        // Seq 7, a channel client (peer 0x02 0x11…, dbid 5), Memleak.
        let mut peer_id = [0x11u8; 33];
        peer_id[0] = 0x02;
        let request = Request {
            seq: 7,
            peer_id,
            dbid: 5,
            frame: Frame {
                ty: 33,
                body: vec![],
            },
        };
        let expected = format!(
            "aa550007{}{}{}",
            "02".to_owned() + &"11".repeat(32),
            "0000000000000005",
            "000000020021"
        );
        assert_eq!(hex::encode(request.encode().expect("encode")), expected);
        assert_eq!(
            Request::decode(&hex::decode(&expected).expect("hex")).expect("decode"),
            request
        );
        assert_eq!(request.encode().expect("encode").len(), 45 + 6);

        // MemleakReply (133) with body [0] (false).
        let response = Response {
            seq: 7,
            frame: Frame {
                ty: 133,
                body: vec![0],
            },
        };
        assert_eq!(
            hex::encode(response.encode().expect("encode")),
            "5aa5000700000003008500"
        );
        assert_eq!(
            Response::decode(&response.encode().expect("encode")).expect("decode"),
            response
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let good = Response {
            seq: 1,
            frame: Frame {
                ty: 100,
                body: vec![1, 2],
            },
        }
        .encode()
        .expect("encode");
        for cut in 0..good.len() {
            assert!(Response::decode(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Response::decode(&trailing), Err(WireError::Trailing(1)));
        let mut wrong = good.clone();
        wrong[0] = 0xAA;
        assert!(matches!(
            Response::decode(&wrong),
            Err(WireError::Magic { .. })
        ));
        // A request is not a response and the reverse.
        let request = Request {
            seq: 1,
            peer_id: [0; 33],
            dbid: 0,
            frame: Frame {
                ty: 33,
                body: vec![],
            },
        }
        .encode()
        .expect("encode");
        assert!(Response::decode(&request).is_err());
        assert!(Request::decode(&good).is_err());
        // A claimed 4 GiB frame is refused without waiting for it.
        let mut huge = request[..45].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Request::decode(&huge),
            Err(WireError::Length { .. })
        ));
    }
}
