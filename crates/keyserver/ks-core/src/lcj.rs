//! Lightkeeper canonical JSON (keyserver.md §3.1).
//!
//! Everything the keyserver signs or hashes is LCJ, so one byte string has
//! one meaning in every language: only objects, arrays, printable-ASCII
//! strings that never need escaping, non-negative integers up to 2^53−1 and
//! booleans; keys sorted by bytes; no whitespace. A verifier decodes
//! strictly into the typed model and re-encodes, so a signature is always
//! checked over bytes this module produced.
//!
//! The same parser reads the JSON-RPC parameters, which may carry
//! whitespace ([`parse_relaxed`]): it rejects what LCJ rejects (null,
//! floats, escapes, duplicate members), so a value that parses has exactly
//! one LCJ encoding. JSON is small enough that a hand-written parser of
//! ~150 lines is cheaper to audit than bending serde_json (which keeps the
//! last of duplicate members and accepts floats) into these rules.

use std::collections::BTreeMap;

/// The largest integer LCJ carries (JavaScript's safe integers).
pub const MAX_INTEGER: u64 = (1 << 53) - 1;

/// Nesting deeper than this is refused (no schema goes past 4).
const MAX_DEPTH: usize = 16;

/// An LCJ value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Members in key order (the map keeps them sorted and unique).
    Object(BTreeMap<String, Value>),
    /// Elements in order.
    Array(Vec<Value>),
    /// Printable ASCII without `"` and `\`.
    String(String),
    /// 0 ..= [`MAX_INTEGER`].
    Integer(u64),
    /// `true` or `false`.
    Bool(bool),
}

/// Why bytes are not (relaxed) LCJ, or a value does not fit its schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct LcjError {
    /// The member the problem is in, as a dotted path ("" for the top).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl LcjError {
    /// A problem at `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        LcjError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, seen from the enclosing member `outer`.
    pub fn within(mut self, outer: &str) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

/// Whether `c` may appear in an LCJ string.
pub fn is_string_byte(c: u8) -> bool {
    (0x20..=0x7e).contains(&c) && c != b'"' && c != b'\\'
}

/// The LCJ bytes of `v`.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(v, &mut out);
    out
}

fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(members) => {
            out.push(b'{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(k.as_bytes());
                out.extend_from_slice(b"\":");
                encode_into(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_into(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
    }
}

/// Parses canonical LCJ: the bytes must be exactly the encoding of the
/// value they hold (hashed plaintexts, §3.1).
pub fn parse_canonical(bytes: &[u8]) -> Result<Value, LcjError> {
    let v = parse_relaxed(bytes)?;
    if encode(&v) != bytes {
        return Err(LcjError::new(
            "",
            "not canonical (member order, whitespace or integer form)",
        ));
    }
    Ok(v)
}

/// Parses JSON restricted to LCJ's types, allowing whitespace between
/// tokens and members in any order (JSON-RPC parameters). Member names may
/// be mixed-case here (the envelope's PascalCase); schemas reject names
/// they do not know.
pub fn parse_relaxed(bytes: &[u8]) -> Result<Value, LcjError> {
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != bytes.len() {
        return Err(p.err("trailing bytes after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> LcjError {
        LcjError::new("", format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, LcjError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.b.get(self.i) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'0'..=b'9') => self.integer(),
            Some(b't') if self.b[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            Some(b'n') => Err(self.err("null is not allowed")),
            Some(b'-') => Err(self.err("negative numbers are not allowed")),
            Some(_) => Err(self.err("unexpected byte")),
            None => Err(self.err("unexpected end")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, LcjError> {
        self.i += 1;
        let mut members = BTreeMap::new();
        self.ws();
        if self.eat(b'}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a member name"));
            }
            let key = self.string()?;
            if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return Err(LcjError::new(key, "member names are [A-Za-z0-9]+"));
            }
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let v = self.value(depth + 1).map_err(|e| e.within(&key))?;
            if members.insert(key.clone(), v).is_some() {
                return Err(LcjError::new(key, "duplicate member"));
            }
            self.ws();
            if self.eat(b'}') {
                return Ok(Value::Object(members));
            }
            if !self.eat(b',') {
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, LcjError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.err("expected ',' or ']'"));
            }
        }
    }

    fn string(&mut self) -> Result<String, LcjError> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.b.get(self.i) {
                Some(b'"') => break,
                Some(b'\\') => return Err(self.err("escapes are not allowed")),
                Some(&c) if is_string_byte(c) => self.i += 1,
                Some(_) => return Err(self.err("strings are printable ASCII")),
                None => return Err(self.err("unterminated string")),
            }
        }
        // Printable ASCII only, so this is valid UTF-8.
        let s = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
        self.i += 1;
        Ok(s)
    }

    fn integer(&mut self) -> Result<Value, LcjError> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        if let Some(b'.' | b'e' | b'E') = self.b.get(self.i) {
            return Err(self.err("only integers are allowed"));
        }
        let digits = &self.b[start..self.i];
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.err("leading zero"));
        }
        if digits.len() > 16 {
            return Err(self.err("integer above 2^53-1"));
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if n > MAX_INTEGER {
            return Err(self.err("integer above 2^53-1"));
        }
        Ok(Value::Integer(n))
    }
}

/// A typed structure with a one-to-one LCJ form.
pub trait Lcj: Sized {
    /// The value form.
    fn to_value(&self) -> Value;
    /// Decodes strictly: every member present with its type, nothing else.
    fn from_value(v: Value) -> Result<Self, LcjError>;

    /// The canonical bytes.
    fn to_lcj(&self) -> Vec<u8> {
        encode(&self.to_value())
    }

    /// Decodes bytes that must be canonical LCJ.
    fn from_lcj(bytes: &[u8]) -> Result<Self, LcjError> {
        Self::from_value(parse_canonical(bytes)?)
    }
}

/// Builds an object value from `(name, value)` pairs.
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// A string value.
pub fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

/// An array of strings.
pub fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| string(s)).collect())
}

/// Takes the members of an object one by one; [`Fields::finish`] refuses
/// any left over.
pub struct Fields {
    members: BTreeMap<String, Value>,
}

impl Fields {
    /// The members of `v`, which must be an object.
    pub fn of(v: Value) -> Result<Self, LcjError> {
        match v {
            Value::Object(members) => Ok(Fields { members }),
            _ => Err(LcjError::new("", "expected an object")),
        }
    }

    /// Takes member `name`, which must be present.
    pub fn take(&mut self, name: &str) -> Result<Value, LcjError> {
        self.members
            .remove(name)
            .ok_or_else(|| LcjError::new(name, "missing member"))
    }

    /// Takes a string member.
    pub fn string(&mut self, name: &str) -> Result<String, LcjError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            _ => Err(LcjError::new(name, "expected a string")),
        }
    }

    /// Takes an integer member.
    pub fn integer(&mut self, name: &str) -> Result<u64, LcjError> {
        match self.take(name)? {
            Value::Integer(n) => Ok(n),
            _ => Err(LcjError::new(name, "expected an integer")),
        }
    }

    /// Takes a boolean member.
    pub fn bool(&mut self, name: &str) -> Result<bool, LcjError> {
        match self.take(name)? {
            Value::Bool(b) => Ok(b),
            _ => Err(LcjError::new(name, "expected a boolean")),
        }
    }

    /// Takes a member holding a typed sub-structure.
    pub fn nested<T: Lcj>(&mut self, name: &str) -> Result<T, LcjError> {
        T::from_value(self.take(name)?).map_err(|e| e.within(name))
    }

    /// Takes an array of typed sub-structures.
    pub fn list<T: Lcj>(&mut self, name: &str) -> Result<Vec<T>, LcjError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| T::from_value(v).map_err(|e| e.within(&format!("{name}[{i}]"))))
                .collect(),
            _ => Err(LcjError::new(name, "expected an array")),
        }
    }

    /// Takes an array of strings.
    pub fn strings(&mut self, name: &str) -> Result<Vec<String>, LcjError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(LcjError::new(name, "expected an array of strings")),
                })
                .collect(),
            _ => Err(LcjError::new(name, "expected an array")),
        }
    }

    /// Refuses members nobody took.
    pub fn finish(self) -> Result<(), LcjError> {
        match self.members.into_keys().next() {
            None => Ok(()),
            Some(k) => Err(LcjError::new(k, "unknown member")),
        }
    }
}

/// A member type of an LCJ record: how it is written and taken.
pub trait Member: Sized {
    /// The value form.
    fn to_member(&self) -> Value;
    /// Takes member `name` from `f`.
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError>;
}

impl Member for String {
    fn to_member(&self) -> Value {
        string(self)
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.string(name)
    }
}

impl Member for u64 {
    fn to_member(&self) -> Value {
        Value::Integer(*self)
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.integer(name)
    }
}

impl Member for bool {
    fn to_member(&self) -> Value {
        Value::Bool(*self)
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.bool(name)
    }
}

impl Member for Vec<String> {
    fn to_member(&self) -> Value {
        strings(self)
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.strings(name)
    }
}

impl Member for Vec<u64> {
    fn to_member(&self) -> Value {
        Value::Array(self.iter().map(|n| Value::Integer(*n)).collect())
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        match f.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Integer(n) => Ok(n),
                    _ => Err(LcjError::new(name, "expected an array of integers")),
                })
                .collect(),
            _ => Err(LcjError::new(name, "expected an array")),
        }
    }
}

impl<T: Lcj> Member for T {
    fn to_member(&self) -> Value {
        self.to_value()
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.nested(name)
    }
}

impl<T: Lcj> Member for Vec<T> {
    fn to_member(&self) -> Value {
        Value::Array(self.iter().map(Lcj::to_value).collect())
    }
    fn take_member(f: &mut Fields, name: &str) -> Result<Self, LcjError> {
        f.list(name)
    }
}

/// Declares a record type whose LCJ form is an object with the given
/// member names, decoded strictly (every member present, nothing else).
#[macro_export]
macro_rules! lcj_record {
    ($(#[$m:meta])* pub struct $name:ident {
        $($(#[$fm:meta])* $field:ident: $ty:ty = $key:literal,)*
    }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $crate::lcj::Lcj for $name {
            fn to_value(&self) -> $crate::lcj::Value {
                let mut members = ::std::collections::BTreeMap::new();
                $(members.insert($key.to_string(), $crate::lcj::Member::to_member(&self.$field));)*
                $crate::lcj::Value::Object(members)
            }
            fn from_value(v: $crate::lcj::Value) -> Result<Self, $crate::lcj::LcjError> {
                let mut f = $crate::lcj::Fields::of(v)?;
                let r = $name {
                    $($field: <$ty as $crate::lcj::Member>::take_member(&mut f, $key)?,)*
                };
                f.finish()?;
                Ok(r)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trip_and_refusals() {
        let v = parse_canonical(br#"{"A":[1,"x",true],"B":{"C":0}}"#).expect("lcj");
        assert_eq!(encode(&v), br#"{"A":[1,"x",true],"B":{"C":0}}"#);
        for bad in [
            &br#"{"B":1,"A":2}"#[..],
            br#"{"A": 1}"#,
            br#"{"A":1,"A":1}"#,
            br#"{"A":null}"#,
            br#"{"A":1.0}"#,
            br#"{"A":1e3}"#,
            br#"{"A":-1}"#,
            br#"{"A":01}"#,
            br#"{"A":"\u0041"}"#,
            br#"{"A":"<\n>"}"#,
            "{\"A\":\"é\"}".as_bytes(),
            br#"{"A":9007199254740992}"#,
            br#"{"A":1}x"#,
            br#"{"A":"#,
            b"",
        ] {
            assert!(
                parse_canonical(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_canonical(br#"{"A":9007199254740991}"#).expect("max"),
            object([("A", Value::Integer(MAX_INTEGER))])
        );
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_relaxed(deep.as_bytes()).is_err());
    }

    #[test]
    fn relaxed_accepts_whitespace_and_any_order() {
        let v = parse_relaxed(b" {\n \"B\" : 1 ,\t\"A\" : [ ] } ").expect("relaxed");
        assert_eq!(encode(&v), br#"{"A":[],"B":1}"#);
    }
}
