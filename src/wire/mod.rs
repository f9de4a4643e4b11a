//! The wire protocols, each a thin adapter on the room engine: parse the
//! body into a typed request, run it on the host, render the answer.

pub mod p2pcf;
pub mod peerjs;
pub mod relay;
pub mod y_webrtc;

use crate::engine::hints::Hint;
use crate::error::Error;
use crate::json::{Bad, Read, Reader, ToJson};

/// An answer: the JSON body and facts for logs and tests. Its status is
/// 200 unless it came from a room's object, which answers refusals itself.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// For a refusal from a room's object, its `Retry-After`.
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
    /// How many members the room holds after the request, the caller included.
    pub members: usize,
    /// When the caller should poll next (not for a leave).
    pub hint: Option<Hint>,
}

/// Reads a request body with `read`: text that is not JSON is "Bad JSON";
/// JSON of another shape is `wrong_shape`.
pub(crate) fn from_json<'a, T>(
    body: &'a [u8],
    wrong_shape: &'static str,
    read: impl FnOnce(&mut Reader<'a>) -> Read<T>,
) -> Result<T, Error> {
    let read = |mut r: Reader<'a>| {
        let value = read(&mut r)?;
        r.end().map(|()| value)
    };
    Reader::new(body).and_then(read).map_err(|bad| match bad {
        Bad::Shape => Error::BadRequest(wrong_shape),
        Bad::Syntax => Error::BadRequest("Bad JSON"),
    })
}

/// Serializes an answer.
pub(crate) fn to_json<T: ToJson + ?Sized>(value: &T) -> Vec<u8> {
    crate::json::to_vec(value)
}

/// A query parameter, as written (ids need no decoding: `[A-Za-z0-9_-]`).
pub fn query<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
