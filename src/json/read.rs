//! The reader: one small pull parser ([`Reader`]) that each type reads
//! itself from ([`FromJson`]).
//!
//! What serde_json answered is kept: the same documents are accepted, and
//! a refusal is [`Bad::Syntax`] where serde_json reports a syntax or
//! end-of-input error, [`Bad::Shape`] where it reports a data error (a
//! wrong type, a missing or duplicate field).

use std::borrow::Cow;

use super::{Number, Raw};
use crate::vec_map::VecMap;

/// Why a document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not JSON (or cut short).
    Syntax,
    /// JSON of another shape: a wrong type, a missing or repeated field, a
    /// value its type refuses.
    Shape,
}

pub type Read<T> = Result<T, Bad>;

/// A value that reads itself from JSON.
pub trait FromJson: Sized {
    fn read(r: &mut Reader<'_>) -> Read<Self>;
}

/// A map key that reads itself from an object's key.
pub trait FromKey: Sized {
    fn from_key(key: &str) -> Read<Self>;
}

/// Reads one `T` that must fill `bytes` (whitespace aside).
pub fn from_slice<T: FromJson>(bytes: &[u8]) -> Read<T> {
    let mut r = Reader::new(bytes)?;
    let value = T::read(&mut r)?;
    r.end()?;
    Ok(value)
}

/// Most arrays and objects open at once; deeper is refused, as serde_json does.
const MAX_DEPTH: usize = 127;

/// A cursor over one JSON document.
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, which must be UTF-8.
    pub fn new(bytes: &'a [u8]) -> Read<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| Bad::Syntax)?;
        Ok(Self::over(text))
    }

    /// A reader over text already read once (a raw value).
    pub fn over(text: &'a str) -> Self {
        Self {
            text,
            at: 0,
            depth: 0,
        }
    }

    /// Only whitespace may follow.
    pub fn end(&mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Bad::Syntax),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn literal(&mut self, word: &str) -> Read<()> {
        match self.text.get(self.at..self.at + word.len()) {
            Some(w) if w == word => {
                self.at += word.len();
                Ok(())
            }
            _ => Err(Bad::Syntax),
        }
    }

    /// Consumes a `null` if one comes next.
    pub fn null(&mut self) -> Read<bool> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal("null")?;
        Ok(true)
    }

    /// `null` as `None`, anything else read by `read`.
    pub fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Read<T>) -> Read<Option<T>> {
        if self.null()? {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// The value that comes next is not of the type asked for: a scalar is
    /// read to the end first, so that a broken one is still a syntax error.
    fn mismatch(&mut self) -> Bad {
        let checked = match self.peek() {
            Some(b'[' | b'{') => Ok(()),
            Some(b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => self.pass(true),
            _ => Err(Bad::Syntax),
        };
        checked.err().unwrap_or(Bad::Shape)
    }

    pub fn bool(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.mismatch()),
        }
    }

    pub fn u64(&mut self) -> Read<u64> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => match self.number_token(true)? {
                Number::Int(n) => Ok(n),
                Number::Negative(_) | Number::Float(_) => Err(Bad::Shape),
            },
            _ => Err(self.mismatch()),
        }
    }

    /// Any number, kept as serde_json keeps it (an integer while it fits).
    pub fn number(&mut self) -> Read<Number> {
        match self.peek() {
            // Finite: an out-of-range number is refused while read.
            Some(b'-' | b'0'..=b'9') => self.number_token(true),
            _ => Err(self.mismatch()),
        }
    }

    /// A number, valued. Unless `strict` (serde_json skipping one), one too
    /// large for an f64 passes.
    fn number_token(&mut self, strict: bool) -> Read<Number> {
        let start = self.at;
        let negative = self.bytes().get(self.at) == Some(&b'-');
        let integer = self.scan_number()?;
        if integer {
            let digits = start + usize::from(negative);
            if let Some(Ok(n)) = self.text.get(digits..self.at).map(str::parse::<u64>) {
                if !negative {
                    return Ok(Number::Int(n));
                }
                // `-0` is a float for serde_json too.
                if n != 0 && n <= i64::MIN.unsigned_abs() {
                    return Ok(Number::Negative(0i64.wrapping_sub_unsigned(n)));
                }
            }
        }
        match self.text.get(start..self.at).map(str::parse::<f64>) {
            Some(Ok(f)) if f.is_finite() || !strict => Ok(Number::Float(f)),
            _ => Err(Bad::Syntax),
        }
    }

    /// Passes over a number as JSON writes it,
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; whether it is an integer.
    fn scan_number(&mut self) -> Read<bool> {
        let b = self.bytes();
        self.at += usize::from(b.get(self.at) == Some(&b'-'));
        match b.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.eat_digits(),
            _ => return Err(Bad::Syntax),
        }
        let mut integer = true;
        if b.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.digits_required()?;
            integer = false;
        }
        if matches!(b.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(b.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digits_required()?;
            integer = false;
        }
        Ok(integer)
    }

    fn eat_digits(&mut self) {
        while self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn digits_required(&mut self) -> Read<()> {
        let start = self.at;
        self.eat_digits();
        if self.at == start {
            Err(Bad::Syntax)
        } else {
            Ok(())
        }
    }

    /// A string, unescaped (borrowed when it holds no escape).
    pub fn string(&mut self) -> Read<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return Err(self.mismatch());
        }
        self.at += 1;
        self.string_body(true)
    }

    /// The rest of a string after its opening quote. Unless `build`, escapes
    /// are only checked (as serde_json skips a string: a lone surrogate passes).
    fn string_body(&mut self, build: bool) -> Read<Cow<'a, str>> {
        let b = self.bytes();
        let mut owned: Option<String> = None;
        let mut run = self.at;
        loop {
            // Plain characters in one tight scan; then the byte that ends the run.
            let rest = b.get(self.at..).unwrap_or_default();
            self.at += rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(rest.len());
            let Some(&c) = b.get(self.at) else {
                return Err(Bad::Syntax);
            };
            match c {
                b'"' => {
                    let tail = self.text.get(run..self.at).ok_or(Bad::Syntax)?;
                    self.at += 1;
                    return Ok(match owned {
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                        None => Cow::Borrowed(tail),
                    });
                }
                b'\\' => {
                    let before = self.text.get(run..self.at).ok_or(Bad::Syntax)?;
                    self.at += 1;
                    if build {
                        let s = owned.get_or_insert_with(String::new);
                        s.push_str(before);
                        self.escape(Some(s))?;
                    } else {
                        self.escape(None)?;
                    }
                    run = self.at;
                }
                _ => return Err(Bad::Syntax),
            }
        }
    }

    /// One escape after its backslash, appended to `out` when given.
    fn escape(&mut self, out: Option<&mut String>) -> Read<()> {
        let c = *self.bytes().get(self.at).ok_or(Bad::Syntax)?;
        self.at += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = self.hex4()?;
                let Some(out) = out else {
                    return Ok(());
                };
                let code = match n {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: its trailing half must follow.
                        if self.text.get(self.at..self.at + 2) != Some("\\u") {
                            return Err(Bad::Syntax);
                        }
                        self.at += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Bad::Syntax);
                        }
                        0x1_0000 + ((u32::from(n) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Bad::Syntax),
                    n => u32::from(n),
                };
                out.push(char::from_u32(code).ok_or(Bad::Syntax)?);
                return Ok(());
            }
            _ => return Err(Bad::Syntax),
        };
        if let Some(out) = out {
            out.push(ch);
        }
        Ok(())
    }

    fn hex4(&mut self) -> Read<u16> {
        let digits = self.text.get(self.at..self.at + 4).ok_or(Bad::Syntax)?;
        if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
            return Err(Bad::Syntax);
        }
        self.at += 4;
        u16::from_str_radix(digits, 16).map_err(|_| Bad::Syntax)
    }

    fn enter(&mut self, open: u8) -> Read<bool> {
        if self.peek() != Some(open) {
            return Ok(false);
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Bad::Syntax);
        }
        self.at += 1;
        Ok(true)
    }

    /// After an element: a comma (then no closing bracket) or the close.
    fn next_or_close(&mut self, close: u8) -> Read<bool> {
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                // A trailing comma is a syntax error.
                match self.peek() {
                    Some(c) if c == close => Err(Bad::Syntax),
                    _ => Ok(true),
                }
            }
            Some(c) if c == close => {
                self.at += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => Err(Bad::Syntax),
        }
    }

    /// An object: `field` is called with each key, the reader on its value,
    /// and must read the value.
    ///
    /// For a record (a struct): serde also read a struct from an array,
    /// element by element, so where an array comes instead, a broken one is
    /// still a syntax error. A map ([`Reader::map`]) is refused at its `[`.
    pub fn object(&mut self, field: &mut dyn FnMut(&mut Self, &str) -> Read<()>) -> Read<()> {
        if self.peek() == Some(b'[') {
            return Err(self.pass(false).err().unwrap_or(Bad::Shape));
        }
        self.map(field)
    }

    /// An object read as a map: as [`Reader::object`], but an array in its
    /// place is refused as it begins.
    pub fn map(&mut self, field: &mut dyn FnMut(&mut Self, &str) -> Read<()>) -> Read<()> {
        if !self.enter(b'{')? {
            return Err(self.mismatch());
        }
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Bad::Syntax);
            }
            self.at += 1;
            let key = self.string_body(true)?;
            if self.peek() != Some(b':') {
                return Err(Bad::Syntax);
            }
            self.at += 1;
            field(self, &key)?;
            if !self.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }

    /// An array: `item` is called with the reader on each element.
    pub fn array(&mut self, item: &mut dyn FnMut(&mut Self) -> Read<()>) -> Read<()> {
        if !self.enter(b'[')? {
            return Err(self.mismatch());
        }
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            item(self)?;
            if !self.next_or_close(b']')? {
                return Ok(());
            }
        }
    }

    /// Checks the next value and passes over it, as serde_json skips one
    /// (a lone surrogate escape passes).
    pub fn skip(&mut self) -> Read<()> {
        self.pass(false)
    }

    /// Passes over the next value; `strict`: as serde_json reads one into a
    /// `Value` (a lone surrogate escape is an error).
    /// Skipping, serde_json sets no limit to nesting; reading into a
    /// `Value`, it refuses more than [`MAX_DEPTH`].
    ///
    /// One loop over the tokens, the open containers kept as bits (set: an
    /// object), so that skipping a large value costs no call per element.
    fn pass(&mut self, strict: bool) -> Read<()> {
        let mut open = Open::default();
        loop {
            // A value.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    if strict && self.depth + open.depth >= MAX_DEPTH {
                        return Err(Bad::Syntax);
                    }
                    self.at += 1;
                    open.push(c == b'{');
                    match self.peek() {
                        Some(b'}') if c == b'{' => self.at += 1,
                        Some(b']') if c == b'[' => self.at += 1,
                        _ if c == b'{' => {
                            self.key(strict)?;
                            continue;
                        }
                        _ => continue,
                    }
                    open.pop();
                }
                Some(b'"') => {
                    self.at += 1;
                    self.string_body(strict)?;
                }
                Some(b'-' | b'0'..=b'9') if strict => {
                    self.number_token(true)?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.scan_number()?;
                }
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                _ => return Err(Bad::Syntax),
            }
            // After a value: the next one in its container, or closes.
            loop {
                if open.depth == 0 {
                    return Ok(());
                }
                let in_object = open.in_object();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if in_object {
                            self.key(strict)?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(Bad::Syntax),
                }
                self.at += 1;
                open.pop();
            }
        }
    }

    /// An object's key and its colon.
    fn key(&mut self, strict: bool) -> Read<()> {
        if self.peek() != Some(b'"') {
            return Err(Bad::Syntax);
        }
        self.at += 1;
        self.string_body(strict)?;
        if self.peek() != Some(b':') {
            return Err(Bad::Syntax);
        }
        self.at += 1;
        Ok(())
    }

    /// The next value's text as written, checked as [`Reader::skip`] checks.
    pub fn raw(&mut self) -> Read<&'a str> {
        self.peek();
        let start = self.at;
        self.pass(false)?;
        self.text.get(start..self.at).ok_or(Bad::Syntax)
    }

    /// The next value's text as written, checked as serde_json checks what
    /// it reads into a `Value`.
    pub fn value(&mut self) -> Read<&'a str> {
        self.peek();
        let start = self.at;
        self.pass(true)?;
        self.text.get(start..self.at).ok_or(Bad::Syntax)
    }

    /// A list of `T`.
    pub fn list<T>(&mut self, read: &mut dyn FnMut(&mut Self) -> Read<T>) -> Read<Vec<T>> {
        let mut items = Vec::new();
        self.array(&mut |r| {
            items.push(read(r)?);
            Ok(())
        })?;
        Ok(items)
    }
}

/// The containers open around a skipped value: a bit each (set: an
/// object), 128 to a word.
#[derive(Default)]
struct Open {
    bits: u128,
    full: Vec<u128>,
    depth: usize,
}

impl Open {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.full.push(self.bits);
            self.bits = 0;
        }
        self.bits = self.bits << 1 | u128::from(object);
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.bits = self.full.pop().unwrap_or_default();
        }
    }

    fn in_object(&self) -> bool {
        self.bits & 1 == 1
    }
}

/// Stores a field's value, refusing a second one (as serde's derived readers do).
pub fn once<T>(slot: &mut Option<T>, value: Read<T>) -> Read<()> {
    if slot.is_some() {
        return Err(Bad::Shape);
    }
    *slot = Some(value?);
    Ok(())
}

/// A field that must be present.
pub fn required<T>(slot: Option<T>) -> Read<T> {
    slot.ok_or(Bad::Shape)
}

impl FromJson for u64 {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        r.u64()
    }
}

impl FromJson for String {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        r.string().map(Cow::into_owned)
    }
}

impl FromKey for String {
    fn from_key(key: &str) -> Read<Self> {
        Ok(key.to_owned())
    }
}

impl FromJson for Raw {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        r.raw().map(Raw::checked)
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        r.list(&mut T::read)
    }
}

/// A JSON object, as serde reads one into a `BTreeMap`: the last of two
/// equal keys wins.
impl<K: Ord + FromKey, V: FromJson> FromJson for VecMap<K, V> {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let mut map = VecMap::new();
        r.map(&mut |r, key| {
            let key = K::from_key(key)?;
            map.insert(key, V::read(r)?);
            Ok(())
        })?;
        Ok(map)
    }
}

/// The string a raw value holds, if it is one.
pub fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    Reader::over(raw).string().ok()
}

/// The elements of a raw array, each raw, if it is one.
pub fn items(raw: &str) -> Option<Vec<&str>> {
    Reader::over(raw).list(&mut |r| r.raw()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What serde_json makes of `text` read as a `T` (through `Value` for
    /// the class of error), next to what [`from_slice`] makes of it.
    fn class_of(e: &serde_json::Error) -> Bad {
        if e.is_data() {
            Bad::Shape
        } else {
            Bad::Syntax
        }
    }

    #[test]
    fn skipping_accepts_and_refuses_what_serde_json_does() {
        let cases = [
            "0",
            "-0",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E-7",
            "-",
            "- 1",
            "1e400",
            "-1.5e3",
            "18446744073709551616",
            "\"a\\u00e9\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"\u{1}\"",
            "\"cut",
            "[1,2,]",
            "[1 2]",
            "[,]",
            "[]",
            "{}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1}{",
            "nul",
            "null",
            "truex",
            " [ true , false , null ] ",
            "",
            "   ",
        ];
        for text in cases {
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            let ours = Reader::over(text).skip().and_then(|()| {
                let mut r = Reader::over(text);
                r.skip()?;
                r.end()
            });
            assert_eq!(ours.is_ok(), theirs, "{text:?}");
        }
        // Arrays and objects alternating past 128 levels, each closed by its own bracket.
        let (mut open, mut close) = (String::new(), Vec::new());
        for level in 0..300 {
            open.push_str(if level % 2 == 0 { "[" } else { "{\"k\":" });
            close.push(if level % 2 == 0 { "]" } else { "}" });
        }
        let closed: String = close.iter().rev().copied().collect();
        let valid = format!("{open}1{closed}");
        assert_eq!(Reader::over(&valid).skip(), Ok(()));
        for wrong in [10, 150, 290] {
            let mut closers: Vec<&str> = close.iter().rev().copied().collect();
            closers[wrong] = if closers[wrong] == "]" { "}" } else { "]" };
            let text = format!("{open}1{}", closers.concat());
            assert_eq!(Reader::over(&text).skip(), Err(Bad::Syntax), "{wrong}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err());
        }
        for depth in [126, 127, 128, 129, 200, 300] {
            for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                let deep = open.repeat(depth) + "1" + &close.repeat(depth);
                let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&deep).is_ok();
                assert_eq!(Reader::over(&deep).skip().is_ok(), theirs, "{depth} {open}");
                let typed = serde_json::from_str::<Value>(&deep).is_ok();
                assert_eq!(
                    Reader::over(&deep).value().is_ok(),
                    typed,
                    "value {depth} {open}"
                );
            }
        }
    }

    #[test]
    fn an_array_for_a_record_is_checked_first_and_for_a_map_not() {
        // serde read a struct from an array element by element (a broken
        // array is a syntax error), and refused one for a map at once.
        let record = |text: &str| Reader::over(text).object(&mut |r, _| r.skip());
        let map = |text: &str| Reader::over(text).map(&mut |r, _| r.skip());
        assert_eq!(record("[\"r\":1]"), Err(Bad::Syntax));
        assert_eq!(record("[1, 2]"), Err(Bad::Shape));
        assert_eq!(record("[]"), Err(Bad::Shape));
        assert_eq!(map("[\"r\":1]"), Err(Bad::Shape));
        assert_eq!(record("5x"), Err(Bad::Shape));
        assert_eq!(record("tru"), Err(Bad::Syntax));
    }

    #[test]
    fn numbers_are_kept_as_serde_json_keeps_them() {
        for text in [
            "0",
            "-0",
            "7",
            "-7",
            "1.5",
            "1e3",
            "1700000000123",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1",
            "2.5e-3",
        ] {
            let theirs: serde_json::Number = serde_json::from_str(text).unwrap();
            let ours = Reader::over(text).number().unwrap();
            let same_kind = match ours {
                Number::Int(n) => theirs.as_u64() == Some(n),
                Number::Negative(n) => theirs.is_i64() && theirs.as_i64() == Some(n),
                Number::Float(f) => theirs.is_f64() && theirs.as_f64() == Some(f),
            };
            assert!(same_kind, "{text}: {ours:?} {theirs:?}");
            // And written back as serde_json writes it.
            assert_eq!(
                crate::json::to_string(&ours),
                serde_json::to_string(&theirs).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn typed_reads_fail_in_the_class_serde_json_gives() {
        for text in [
            "1",
            "-1",
            "1.0",
            "true",
            "null",
            "\"s\"",
            "[1]",
            "{}",
            "\"bad\\q\"",
            "tru",
            "1.",
            "[1,",
            "",
        ] {
            let theirs = serde_json::from_str::<u64>(text).map_err(|e| class_of(&e));
            assert_eq!(from_slice::<u64>(text.as_bytes()), theirs, "u64 {text}");
            let theirs = serde_json::from_str::<String>(text).map_err(|e| class_of(&e));
            assert_eq!(
                from_slice::<String>(text.as_bytes()),
                theirs,
                "string {text}"
            );
            let theirs = serde_json::from_str::<bool>(text).map_err(|e| class_of(&e));
            let ours = Reader::new(text.as_bytes()).and_then(|mut r| {
                let b = r.bool()?;
                r.end().map(|()| b)
            });
            assert_eq!(ours, theirs, "bool {text}");
        }
    }

    #[test]
    fn strings_unescape_as_serde_json_does() {
        for text in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u4e2d\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
        ] {
            let theirs = serde_json::from_str::<String>(text).ok();
            let ours = from_slice::<String>(text.as_bytes()).ok();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn raw_values_are_cut_as_serde_json_cuts_them() {
        let text = r#"{"a": [1, {"b": "c"} ] , "d": 2.50 , "e":"\ud800"}"#;
        let mut cut = Vec::new();
        Reader::over(text)
            .object(&mut |r, key| {
                cut.push((key.to_owned(), Raw::read(r)?.get().to_owned()));
                Ok(())
            })
            .unwrap();
        let theirs: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(text).unwrap();
        let theirs: Vec<_> = theirs
            .into_iter()
            .map(|(k, v)| (k, v.get().to_owned()))
            .collect();
        assert_eq!(cut, theirs);
        // And where it is not JSON, the class serde_json gives.
        let mut r = Reader::over("[1, }");
        assert_eq!(Raw::read(&mut r).err(), Some(Bad::Syntax));
        assert!(serde_json::from_str::<Value>("[1, }").is_err());
    }
}
