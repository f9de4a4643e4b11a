//! JSON, read and written by hand: every stored format, request body and
//! answer goes through [`Reader`] and [`Writer`].
//!
//! serde's derived code is generic over the (de)serializer and carries a
//! visitor per type (and, for each struct, a second reader for arrays): in
//! the wasm it was the largest part of the JSON code, with serde_json's
//! float formatting pulled in by its error texts. Here each type is one
//! plain function per direction. The documents are those serde_json wrote
//! and read: field order, skipped fields, escapes and numbers are the same
//! byte for byte (the tests compare the two).

mod read;
mod write;

pub use read::{as_str, from_slice, items, once, required, Bad, FromJson, FromKey, Read, Reader};
pub use write::{to_string, to_vec, ToJson, Writer};

/// A JSON number as serde_json keeps one: an integer while it fits, a
/// float otherwise.
#[derive(Clone, Copy, PartialEq)]
pub enum Number {
    Int(u64),
    /// Below zero (`-0` is a float).
    Negative(i64),
    /// Finite.
    Float(f64),
}

/// As written in JSON (without the float formatting of `{:?}`, which the
/// wasm would carry for this alone).
impl std::fmt::Debug for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&to_string(self))
    }
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Negative(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

/// A JSON value kept exactly as it was written (checked when read), passed
/// on byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw(Box<str>);

impl Raw {
    /// Text already checked to be one JSON value.
    fn checked(json: &str) -> Self {
        Self(json.into())
    }

    /// `json` if it is one JSON value (whitespace around it is dropped).
    pub fn parse(json: &str) -> Option<Self> {
        from_slice(json.as_bytes()).ok()
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}
