//! LKTL/1 codecs: Appendix A's golden frames, a round trip of every
//! message, the identification and ERR lines, and hostile frames.

use tlog_core::log_id;
use tlog_core::sync::{self, Fork, Frame, FrameError, HelloLog, Ident, IdentError, Message};

const MAX: u32 = sync::DEFAULT_MAX_FRAME;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("hex")
}

#[test]
fn golden_frames() {
    let ping = Frame {
        id: 0,
        message: Message::Ping(0x0102030405060708),
    };
    assert_eq!(
        ping.encode(),
        hex("4c4b544c 09 00 00000000 00000008 0102030405060708")
    );
    let id = log_id("log.example/lk-test");
    let get = Frame {
        id: 7,
        message: Message::GetData {
            log_id: id,
            start: 256,
            count: 256,
            tree_size: 70_000,
        },
    };
    let mut want = hex("4c4b544c 05 00 00000007 00000034");
    want.extend_from_slice(&id);
    want.extend_from_slice(&hex("0000000000000100 00000100 0000000000011170"));
    assert_eq!(get.encode(), want);
    for frame in [ping, get] {
        let bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes, MAX), Ok(Some((frame, bytes.len()))));
    }
}

#[test]
fn every_message_round_trips() {
    let id = log_id("log.example/lk-test");
    let h = |b: u8| [b; 32];
    let messages = vec![
        Message::Hello {
            version: 1,
            nonce: 42,
            max_frame: MAX,
            max_inflight: 8,
            node_name: "a".into(),
            logs: vec![
                HelloLog {
                    prefix: false,
                    origin: "log.example/lk-test".into(),
                    roles: 3,
                    size: 9,
                },
                HelloLog {
                    prefix: true,
                    origin: "fed.example/".into(),
                    roles: 4,
                    size: 0,
                },
            ],
        },
        Message::Inv {
            log_id: id,
            note: b"note".to_vec(),
            old_size: 3,
            proof: vec![h(1), h(2)],
        },
        Message::GetHeaders {
            log_id: id,
            locator: vec![(9, h(3)), (8, h(4)), (7, h(5))],
        },
        Message::Headers {
            log_id: id,
            base_size: 7,
            note: b"n".to_vec(),
            proof: vec![h(6)],
            fork: Some(Fork {
                size: 9,
                root: h(7),
                proof: vec![],
            }),
        },
        Message::Headers {
            log_id: id,
            base_size: 7,
            note: b"n".to_vec(),
            proof: vec![],
            fork: None,
        },
        Message::Data {
            log_id: id,
            start: 256,
            entries: vec![b"x".to_vec(), Vec::new(), vec![7; 300]],
            tree_size: 1000,
            proof: vec![h(8)],
        },
        Message::NotFound {
            log_id: id,
            what: 2,
            have_size: 5,
        },
        Message::Reject {
            code: 4,
            retry_after_ms: 500,
            reason: "slow down ✓".into(),
        },
        Message::Pong(7),
        Message::Evidence(vec![1, 2, 3]),
    ];
    for (i, message) in messages.into_iter().enumerate() {
        let frame = Frame {
            id: i as u32,
            message,
        };
        let bytes = frame.encode();
        assert_eq!(
            Frame::decode(&bytes, MAX),
            Ok(Some((frame.clone(), bytes.len())))
        );
        // Every prefix is "not yet", never an error or a wrong frame, once
        // the magic is there.
        for cut in 4..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..cut], MAX), Ok(None), "{i} cut {cut}");
        }
        // Trailing bytes inside the payload are refused.
        let mut longer = bytes.clone();
        longer.push(0);
        let len = u32::from_be_bytes([longer[10], longer[11], longer[12], longer[13]]) + 1;
        longer[10..14].copy_from_slice(&len.to_be_bytes());
        assert!(Frame::decode(&longer, MAX).is_err(), "{i} trailing byte");
    }
}

#[test]
fn hostile_frames_are_refused() {
    let ping = Frame {
        id: 0,
        message: Message::Ping(1),
    }
    .encode();
    let mut magic = ping.clone();
    magic[0] = b'X';
    assert_eq!(Frame::decode(&magic, MAX), Err(FrameError::Magic));
    let mut flags = ping.clone();
    flags[5] = 1;
    assert_eq!(Frame::decode(&flags, MAX), Err(FrameError::Flags));
    let mut huge = ping.clone();
    huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Frame::decode(&huge, MAX),
        Err(FrameError::TooLarge(_))
    ));
    // An unknown type decodes (to be answered with Reject 2), not an error.
    let mut unknown = ping.clone();
    unknown[4] = 0x0c;
    assert!(matches!(
        Frame::decode(&unknown, MAX),
        Ok(Some((
            Frame {
                message: Message::Unknown(0x0c),
                ..
            },
            _
        )))
    ));
    // Counts that promise more than the payload holds: refused before
    // anything is allocated.
    let id = log_id("x");
    let mut data = vec![];
    data.extend_from_slice(&id);
    data.extend_from_slice(&0u64.to_be_bytes());
    data.extend_from_slice(&u32::MAX.to_be_bytes());
    let frame = [
        &sync::MAGIC[..],
        &[0x06, 0],
        &[0; 4],
        &(data.len() as u32).to_be_bytes(),
        &data,
    ]
    .concat();
    assert!(matches!(
        Frame::decode(&frame, MAX),
        Err(FrameError::Invalid(_))
    ));
    for (ty, payload) in [
        (
            0x05u8,
            [
                &id[..],
                &0u64.to_be_bytes(),
                &0u32.to_be_bytes(),
                &0u64.to_be_bytes(),
            ]
            .concat(),
        ),
        (
            0x05,
            [
                &id[..],
                &0u64.to_be_bytes(),
                &1025u32.to_be_bytes(),
                &0u64.to_be_bytes(),
            ]
            .concat(),
        ),
        (0x03, [&id[..], &[0u8][..]].concat()),
        (
            0x03,
            [
                &id[..],
                &[2u8][..],
                &1u64.to_be_bytes(),
                &[0; 32],
                &2u64.to_be_bytes(),
                &[0; 32],
            ]
            .concat(),
        ),
        (0x07, [&id[..], &[9u8][..], &0u64.to_be_bytes()].concat()),
        (0x02, [&id[..], &u32::MAX.to_be_bytes()].concat()),
        (
            0x02,
            [
                &id[..],
                &0u32.to_be_bytes(),
                &0u64.to_be_bytes(),
                &[65u8][..],
            ]
            .concat(),
        ),
        (
            0x08,
            [&[1u8][..], &0u32.to_be_bytes(), &2000u16.to_be_bytes()].concat(),
        ),
        (
            0x01,
            [
                &1u16.to_be_bytes()[..],
                &0u64.to_be_bytes(),
                &1u32.to_be_bytes(),
                &1u16.to_be_bytes(),
                &[0u8],
                &0u16.to_be_bytes(),
            ]
            .concat(),
        ),
        (0x0b, (sync::MAX_EVIDENCE as u32 + 1).to_be_bytes().to_vec()),
        (0x09, vec![1, 2, 3]),
    ] {
        let frame = [
            &sync::MAGIC[..],
            &[ty, 0],
            &[0; 4],
            &(payload.len() as u32).to_be_bytes(),
            &payload,
        ]
        .concat();
        assert!(
            Frame::decode(&frame, MAX).is_err(),
            "type {ty:#x} {payload:?}"
        );
    }
}

#[test]
fn identification_and_err_lines() {
    let ident = Ident {
        software: "tlogd/0.1.0".into(),
        node: "a.example".into(),
        logs: 2,
    };
    let line = ident.to_line();
    assert_eq!(line, b"LKTL/1 tlogd/0.1.0 a.example logs=2\n");
    assert_eq!(Ident::parse(&line), Ok(Some((ident, line.len()))));
    assert_eq!(Ident::parse(b"LKTL/1 tlogd"), Ok(None));
    assert_eq!(Ident::parse(b"LKT"), Ok(None));
    assert_eq!(
        Ident::parse(b"GET / HTTP/1.1\r\n"),
        Err(IdentError::NotLktl)
    );
    assert_eq!(
        Ident::parse(b"LKTL/2 x y logs=0\n"),
        Err(IdentError::NotLktl)
    );
    assert_eq!(Ident::parse(b"\n"), Err(IdentError::NotLktl));
    let long = [b"LKTL/1 ".to_vec(), vec![b'a'; 300]].concat();
    assert_eq!(Ident::parse(&long), Err(IdentError::TooLong));
    assert_eq!(
        Ident::parse(b"LKTL/1 a b logs=01\n"),
        Err(IdentError::Malformed)
    );
    assert_eq!(
        Ident::parse(b"LKTL/1 a b\tc logs=1\n"),
        Err(IdentError::Malformed)
    );

    let logs: Vec<(String, u64, [u8; 32])> = (0..100)
        .map(|i| {
            (
                format!("log{i}.example/a/very/long/origin/name"),
                i,
                [i as u8; 32],
            )
        })
        .collect();
    let err = sync::err_line(&logs);
    assert!(err.len() <= sync::MAX_ERR_LINE);
    let text = String::from_utf8(err).expect("utf8");
    assert!(text.starts_with("ERR not an LKTL/1 peer; this port speaks the Lightkeeper tlog sync protocol; logs: log0.example"));
    assert!(text.trim_end().ends_with("more)"), "{text}");
    assert!(text.ends_with('\n'));
    let one = String::from_utf8(sync::err_line(&logs[..1])).expect("utf8");
    assert!(one.contains("size=0 root=AAAA"), "{one}");
}
