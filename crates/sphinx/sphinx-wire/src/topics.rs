//! MQTT topics: `{cid}/{suffix}`, cid = hex of the signer's 16-byte id.

use crate::WireError;

/// The topic suffixes of the protocol (notes §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suffix {
    /// Signer announces itself (empty payload); starts the LSS init.
    Hello,
    /// Reserved goodbye (never published by the reference).
    Bye,
    /// Broker → signer: a serial-wrapped hsmd request.
    Vls,
    /// Signer → broker: a serial-wrapped hsmd reply.
    VlsRes,
    /// Signer → broker: mutations to store (`Response::VlsMuts`).
    LssRes,
    /// Broker → signer: the store's acknowledgement (`Msg::Stored`).
    LssMsg,
    /// Broker → signer: a put conflicted.
    LssConflict,
    /// Signer → broker: the conflict is acknowledged.
    LssConflictRes,
    /// Init step 1 request (`Msg::Init`).
    Init1Msg,
    /// Init step 1 reply (`Response::Init`).
    Init1Res,
    /// Init step 2 request (`Msg::Created`).
    Init2Msg,
    /// Init step 2 reply (`Response::Created`).
    Init2Res,
    /// Init step 3 request (serial-wrapped HsmdInit).
    Init3Msg,
    /// Init step 3 reply (serial-wrapped init reply).
    Init3Res,
    /// Broker → signer: a signed control message.
    Control,
    /// Signer → broker: the control response.
    ControlRes,
    /// Signer → broker: an error report.
    Error,
    /// Reserved.
    Proxy,
    /// Reserved.
    ProxyRes,
}

const ALL: [(Suffix, &str); 19] = [
    (Suffix::Hello, "hello"),
    (Suffix::Bye, "bye"),
    (Suffix::Vls, "vls"),
    (Suffix::VlsRes, "vls-res"),
    (Suffix::LssRes, "lss-res"),
    (Suffix::LssMsg, "lss-msg"),
    (Suffix::LssConflict, "lss-conflict"),
    (Suffix::LssConflictRes, "lss-conflict-res"),
    (Suffix::Init1Msg, "init-1-msg"),
    (Suffix::Init1Res, "init-1-res"),
    (Suffix::Init2Msg, "init-2-msg"),
    (Suffix::Init2Res, "init-2-res"),
    (Suffix::Init3Msg, "init-3-msg"),
    (Suffix::Init3Res, "init-3-res"),
    (Suffix::Control, "control"),
    (Suffix::ControlRes, "control-res"),
    (Suffix::Error, "error"),
    (Suffix::Proxy, "proxy"),
    (Suffix::ProxyRes, "proxy-res"),
];

impl Suffix {
    /// The suffix text.
    pub fn as_str(self) -> &'static str {
        ALL.iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, text)| text)
    }

    /// Whether only the broker may publish it (everything a signer
    /// subscribes to): the basis of per-topic ACLs.
    pub fn broker_publishes(self) -> bool {
        matches!(
            self,
            Suffix::Vls
                | Suffix::LssMsg
                | Suffix::LssConflict
                | Suffix::Init1Msg
                | Suffix::Init2Msg
                | Suffix::Init3Msg
                | Suffix::Control
                | Suffix::Proxy
        )
    }
}

/// `{cid}/{suffix}`.
pub fn topic(cid: &str, suffix: Suffix) -> String {
    format!("{cid}/{}", suffix.as_str())
}

/// Splits a topic into cid and suffix: exactly two parts, a known suffix and
/// a cid of 32 lowercase hex characters.
pub fn parse(topic: &str) -> Result<(&str, Suffix), WireError> {
    let mut parts = topic.split('/');
    let (Some(cid), Some(suffix), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(WireError::Malformed(format!(
            "topic {topic:?} is not cid/suffix"
        )));
    };
    if cid.len() != 32 || !cid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(WireError::Malformed(format!(
            "topic {topic:?}: cid is not 16 bytes of lowercase hex"
        )));
    }
    let suffix = ALL
        .iter()
        .find(|(_, text)| *text == suffix)
        .map(|(s, _)| *s)
        .ok_or_else(|| WireError::Malformed(format!("topic {topic:?}: unknown suffix")))?;
    Ok((cid, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn every_suffix_round_trips_and_matches_the_reference_names() {
        for (suffix, text) in ALL {
            let t = topic(CID, suffix);
            assert_eq!(t, format!("{CID}/{text}"));
            assert_eq!(parse(&t).expect("parse"), (CID, suffix));
        }
        assert_eq!(
            topic(CID, Suffix::LssConflictRes),
            format!("{CID}/lss-conflict-res")
        );
    }

    #[test]
    fn malformed_topics_are_refused() {
        for bad in [
            "",
            "vls",
            &format!("{CID}/vls/extra"),
            &format!("{CID}/unknown"),
            "0123/vls",
            &format!("{}/vls", CID.to_uppercase()),
            "+/hello",
            &format!("{CID}/"),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
