//! The identity mapping of keyserver.md §3.3, frozen for v1: it decides
//! which names are the same identity, so changing it would change every
//! HashID in every chain.
//!
//! Look-alikes that the mapping folds (`0`/`o`, `1`/`l`, `j`/`i`) are one
//! identity, so nobody can register `a1ice` beside `alice`; anything
//! outside ASCII is refused rather than folded, because Unicode confusables
//! have no small frozen table.

/// Why a name is not an identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Not exactly one `@`.
    #[error("an identity has exactly one '@'")]
    At,
    /// The localpart breaks the shape rules.
    #[error("the localpart {0}")]
    Localpart(&'static str),
    /// The domain is not LDH labels.
    #[error("the domain {0}")]
    Domain(&'static str),
    /// The whole identity is over 254 bytes.
    #[error("the identity is longer than 254 bytes")]
    TooLong,
}

/// Maps user input to the identity it names (§3.3). `map(map(s)) = map(s)`,
/// and the server accepts only names with `map(s) = s`.
pub fn map(input: &str) -> Result<String, MapError> {
    let mut parts = input.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        _ => return Err(MapError::At),
    };
    let local = local.trim_matches(' ').to_ascii_lowercase();
    if local.len() < 3 {
        return Err(MapError::Localpart("is shorter than 3 characters"));
    }
    if local.starts_with(['-', '.']) || local.ends_with(['-', '.']) {
        return Err(MapError::Localpart("starts or ends with '-' or '.'"));
    }
    if ["--", "-.", ".-", ".."].iter().any(|p| local.contains(p)) {
        return Err(MapError::Localpart("has '--', '-.', '.-' or '..'"));
    }
    let local: String = local
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' => 'l',
            'j' => 'i',
            c => c,
        })
        .collect();
    if !local
        .bytes()
        .all(|c| matches!(c, b'a'..=b'z' | b'2'..=b'9' | b'.' | b'-'))
    {
        return Err(MapError::Localpart("has characters outside [a-z0-9.-]"));
    }
    if local.len() > 64 {
        return Err(MapError::Localpart("is longer than 64 characters"));
    }
    let domain = domain.to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return Err(MapError::Domain("is empty or longer than 253 characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(MapError::Domain("has an empty label or one over 63"));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(MapError::Domain("has characters outside [a-z0-9-]"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(MapError::Domain("has a label starting or ending with '-'"));
        }
    }
    let identity = format!("{local}@{domain}");
    if identity.len() > 254 {
        return Err(MapError::TooLong);
    }
    Ok(identity)
}

/// The domain of a mapped identity.
pub fn domain(identity: &str) -> &str {
    identity.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The localpart of a mapped identity.
pub fn localpart(identity: &str) -> &str {
    identity.split_once('@').map_or(identity, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_and_refuses() {
        assert_eq!(
            map(" Alice @Example.ORG").as_deref(),
            Ok("alice@example.org")
        );
        assert_eq!(map("a1ice@example.org").as_deref(), Ok("alice@example.org"));
        assert_eq!(map("j0hn@x1.org").as_deref(), Ok("iohn@x1.org"));
        for bad in [
            "alice",
            "a@b@c",
            "al@x.org",
            ".alice@x.org",
            "alice-@x.org",
            "al--ice@x.org",
            "al.-ice@x.org",
            "al..ice@x.org",
            "al_ice@x.org",
            "alicé@x.org",
            "alice@-x.org",
            "alice@x..org",
            "alice@",
            "alice@x_y.org",
        ] {
            assert!(map(bad).is_err(), "{bad}");
        }
        assert!(map(&format!("{}@x.org", "a".repeat(65))).is_err());
        assert!(map(&format!("{}@x.org", "a".repeat(64))).is_ok());
    }
}
