//! The ids and values every part shares, each a newtype that can only be
//! built valid (`parse`): room, context and session ids, delete keys as
//! stored and as sent, and client timestamps kept exactly as written.

use subtle::ConstantTimeEq;

use crate::json::{FromJson, Number, Read, Reader, ToJson, Writer};

/// Longest identifier (room, context, session, client) the protocol accepts.
pub const MAX_ID_LEN: usize = 64;

/// Defines a string newtype that is only constructible through `parse`.
macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $err:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Accepts `s` if it satisfies the protocol's rule for this field.
            pub fn parse(s: &str) -> Result<Self, $crate::error::Error> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err($crate::error::Error::BadRequest($err))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl $crate::json::FromJson for $name {
            fn read(r: &mut $crate::json::Reader<'_>) -> $crate::json::Read<Self> {
                <Self as $crate::json::FromKey>::from_key(&r.string()?)
            }
        }

        impl $crate::json::FromKey for $name {
            fn from_key(key: &str) -> $crate::json::Read<Self> {
                Self::parse(key).map_err(|_| $crate::json::Bad::Shape)
            }
        }

        impl $crate::json::ToJson for $name {
            fn write(&self, w: &mut $crate::json::Writer) {
                w.str(&self.0);
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use id_newtype;

pub fn len_between(s: &str, min: usize, max: usize) -> bool {
    // JS counts UTF-16 units; for the ASCII ids real clients send this is the same.
    let n = s.encode_utf16().count();
    (min..=max).contains(&n)
}

id_newtype!(
    /// Room id (`r`): 4..64 characters of `[A-Za-z0-9_-]`. Safe to embed in an R2 key.
    RoomId,
    "Bad room id",
    |s| len_between(s, 4, MAX_ID_LEN)
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
);
id_newtype!(
    /// The key of a member's entry in its room, 1..64 characters: p2pcf's
    /// context id (`k`, a browser tab's stable id); the relay's peer id.
    ContextId,
    "Bad context id",
    |s| len_between(s, 1, MAX_ID_LEN)
);
id_newtype!(
    /// The id messages are addressed to, 1..64 characters: p2pcf's session
    /// id (`d[0]`, random per page load); the relay's peer id.
    SessionId,
    "Bad session id",
    |s| len_between(s, 1, MAX_ID_LEN)
);
id_newtype!(
    /// A member's secret as sent (p2pcf's `dk`, the relay's `token`):
    /// checked against the stored [`DeleteKey`].
    DeleteKeyInput,
    "Bad delete key",
    |s| len_between(s, 1, 128)
);

id_newtype!(
    /// A PeerJS peer id, as PeerJS checks it: 1..64 characters of
    /// `[A-Za-z0-9]`, single spaces, `_` or `-` only between them.
    PeerJsId,
    "Bad PeerJS id",
    |s| len_between(s, 1, MAX_ID_LEN)
        && s.split([' ', '_', '-']).all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
);
id_newtype!(
    /// The token a PeerJS client makes up once and sends with its id on
    /// every connect (1..128 characters, none a control): whoever shows it
    /// again may take the id back.
    PeerJsToken,
    "Bad PeerJS token",
    |s| len_between(s, 1, 128) && !s.chars().any(char::is_control)
);

/// A millisecond timestamp or duration exactly as the client wrote it.
///
/// Kept as a JSON number so it goes back to clients unchanged (`ps` appends
/// `t`, and the client compares it with `===`).
#[derive(Clone, Debug, PartialEq)]
pub struct Millis(Number);

impl ToJson for Millis {
    fn write(&self, w: &mut Writer) {
        w.number(self.0);
    }
}

impl FromJson for Millis {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        r.number().map(Self)
    }
}

impl Millis {
    /// The number a raw value holds, if it is one.
    pub(crate) fn from_raw(raw: &str) -> Option<Self> {
        Reader::over(raw).number().ok().map(Self)
    }

    pub fn as_f64(&self) -> f64 {
        self.0.as_f64()
    }

    pub fn from_u64(ms: u64) -> Self {
        Self(Number::Int(ms))
    }
}

/// Bytes of CSPRNG output in a delete key (192 bits).
pub const DELETE_KEY_BYTES: usize = 24;

/// The secret that proves a member owns its entry (p2pcf: the delete key
/// `dk`; the relay: the `token` every call carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteKey(String);

impl ToJson for DeleteKey {
    fn write(&self, w: &mut Writer) {
        w.str(&self.0);
    }
}

impl FromJson for DeleteKey {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        String::read(r).map(Self)
    }
}

impl DeleteKey {
    /// Encodes random bytes (from the platform CSPRNG) as URL-safe base64.
    pub fn from_random(bytes: &[u8; DELETE_KEY_BYTES]) -> Self {
        Self(Base64::UrlSafeNoPad.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in constant time, so response timing reveals nothing of the key.
    pub fn matches(&self, candidate: &DeleteKeyInput) -> bool {
        self.0
            .as_bytes()
            .ct_eq(candidate.as_str().as_bytes())
            .into()
    }
}

/// The base64 alphabets the worker writes (RFC 4648).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Base64 {
    /// `+` and `/`, padded with `=`.
    Standard,
    /// `-` and `_`, unpadded.
    UrlSafeNoPad,
}

impl Base64 {
    /// `bytes` in this alphabet.
    pub fn encode(self, bytes: &[u8]) -> String {
        const LETTERS: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let (c62, c63) = match self {
            Base64::Standard => (b'+', b'/'),
            Base64::UrlSafeNoPad => (b'-', b'_'),
        };
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .zip([16, 8, 0])
                .fold(0u32, |n, (&b, shift)| n | u32::from(b) << shift);
            for i in 0..4 {
                if i <= chunk.len() {
                    let digit = (n >> (18 - 6 * i)) & 63;
                    out.push(char::from(match LETTERS.get(digit as usize) {
                        Some(&c) => c,
                        None if digit == 62 => c62,
                        None => c63,
                    }));
                } else if self == Base64::Standard {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Sorts `items` by `key`, keeping the order of equal keys (as
/// `sort_by_key`).
pub fn sort_by_u64<T>(items: &mut [T], key: impl Fn(&T) -> u64) {
    let keys: Vec<u64> = items.iter().map(key).collect();
    let order = sorted_order(keys.len(), &|a, b| (keys[a], a) < (keys[b], b));
    permute(items, &order);
}

/// Sorts `items` by `less`, not keeping the order of equal items (as
/// `sort_unstable_by`).
pub fn sort_unstable_by<T>(items: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let order = sorted_order(items.len(), &|a, b| less(&items[a], &items[b]));
    permute(items, &order);
}

/// The order of `0..n` that sorts it under `less`: a heapsort of indices.
/// Not generic, so the wasm holds this one sorting routine instead of the
/// standard library's (2-4 KB) once per item type. O(n log n) at worst;
/// the lists sorted are at most a room's members.
fn sorted_order(n: usize, less: &dyn Fn(usize, usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let sift_down = |order: &mut [usize], mut root: usize| loop {
        let mut child = 2 * root + 1;
        if child >= order.len() {
            break;
        }
        if child + 1 < order.len() && less(order[child], order[child + 1]) {
            child += 1;
        }
        if !less(order[root], order[child]) {
            break;
        }
        order.swap(root, child);
        root = child;
    };
    for root in (0..n / 2).rev() {
        sift_down(&mut order, root);
    }
    for end in (1..n).rev() {
        order.swap(0, end);
        sift_down(&mut order[..end], 0);
    }
    order
}

/// Reorders `items` so that position `i` holds what was at `order[i]`, by
/// swaps alone (little code per item type): position `i` takes the item
/// first at `order[i]` from where the earlier swaps moved it.
fn permute<T>(items: &mut [T], order: &[usize]) {
    for (i, &first) in order.iter().enumerate() {
        let mut at = first;
        while at < i {
            at = order[at];
        }
        items.swap(i, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_by_u64_is_sort_by_key() {
        // Equal keys keep their order, as with the standard stable sort.
        let mut seed = 7u64;
        for len in 0..40 {
            let mut items: Vec<(u64, usize)> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((seed >> 60) % 4, i)
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_by_key(|(k, _)| *k);
            sort_by_u64(&mut items, |(k, _)| *k);
            assert_eq!(items, expected);
        }
    }

    #[test]
    fn base64_is_the_base64_crate() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine as _;
        let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in 0..70 {
            for start in [0, 1, 200, 255, 300] {
                let b = &bytes[start..start + len];
                assert_eq!(Base64::Standard.encode(b), STANDARD.encode(b));
                assert_eq!(Base64::UrlSafeNoPad.encode(b), URL_SAFE_NO_PAD.encode(b));
            }
        }
    }

    #[test]
    fn sort_unstable_by_sorts() {
        let mut seed = 11u64;
        for len in 0..60 {
            let mut items: Vec<String> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    format!("k{}", (seed >> 58) % 9)
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_unstable();
            sort_unstable_by(&mut items, |a, b| a < b);
            assert_eq!(items, expected);
        }
    }
}
