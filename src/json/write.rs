//! The writer: [`Writer`] appends JSON to a string; each type writes
//! itself ([`ToJson`]) as serde_json wrote it.

use super::{Number, Raw};
use crate::vec_map::VecMap;

/// A value that writes itself as JSON.
pub trait ToJson {
    fn write(&self, w: &mut Writer);
}

/// `value` as JSON bytes.
pub fn to_vec<T: ToJson + ?Sized>(value: &T) -> Vec<u8> {
    to_string(value).into_bytes()
}

/// `value` as JSON text.
pub fn to_string<T: ToJson + ?Sized>(value: &T) -> String {
    let mut w = Writer::default();
    value.write(&mut w);
    w.out
}

/// A JSON document being written. Commas are placed by the writer: each
/// value and each key is preceded by one unless it opens its container or
/// follows its key.
#[derive(Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    fn separate(&mut self) {
        if !matches!(self.out.as_bytes().last(), None | Some(b'{' | b'[' | b':')) {
            self.out.push(',');
        }
    }

    /// An object; `fields` writes its keys and values.
    pub fn object(&mut self, fields: impl FnOnce(&mut Self)) {
        self.separate();
        self.out.push('{');
        fields(self);
        self.out.push('}');
    }

    /// An array; `items` writes its elements.
    pub fn array(&mut self, items: impl FnOnce(&mut Self)) {
        self.separate();
        self.out.push('[');
        items(self);
        self.out.push(']');
    }

    /// A key, then `value` (in an object).
    pub fn field<T: ToJson + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        self.separate();
        self.escaped(key);
        self.out.push(':');
        value.write(self);
        self
    }

    /// A field that is left out when `value` is `None`.
    pub fn field_if<T: ToJson + ?Sized>(&mut self, key: &str, value: Option<&T>) -> &mut Self {
        if let Some(value) = value {
            self.field(key, value);
        }
        self
    }

    /// Every element of `items`, in an array.
    pub fn list<T: ToJson>(&mut self, items: &[T]) {
        self.array(|w| items.iter().for_each(|item| item.write(w)));
    }

    pub fn str(&mut self, s: &str) {
        self.separate();
        self.escaped(s);
    }

    pub fn u64(&mut self, n: u64) {
        self.separate();
        self.digits(n);
    }

    pub fn bool(&mut self, b: bool) {
        self.separate();
        self.out.push_str(if b { "true" } else { "false" });
    }

    pub fn null(&mut self) {
        self.separate();
        self.out.push_str("null");
    }

    /// Text that is JSON already, as it is.
    pub fn raw(&mut self, json: &str) {
        self.separate();
        self.out.push_str(json);
    }

    pub fn number(&mut self, n: Number) {
        self.separate();
        match n {
            Number::Int(n) => self.digits(n),
            Number::Negative(n) => {
                self.out.push('-');
                self.digits(n.unsigned_abs());
            }
            // As serde_json writes a float: the shortest text that reads back the same.
            Number::Float(f) => self.out.push_str(zmij::Buffer::new().format_finite(f)),
        }
    }

    fn digits(&mut self, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        self.out
            .push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
    }

    /// A string in quotes, escaped as serde_json escapes: `"`, `\` and the
    /// control characters, nothing else.
    fn escaped(&mut self, s: &str) {
        self.out.push('"');
        let mut run = 0;
        for (i, b) in s.bytes().enumerate() {
            let short = match b {
                b'"' => '"',
                b'\\' => '\\',
                b'\n' => 'n',
                b'\r' => 'r',
                b'\t' => 't',
                0x08 => 'b',
                0x0c => 'f',
                0..=0x1f => 'u',
                _ => continue,
            };
            self.out.push_str(s.get(run..i).unwrap_or_default());
            self.out.push('\\');
            self.out.push(short);
            if short == 'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.out.push_str("00");
                self.out.push(char::from(HEX[usize::from(b >> 4)]));
                self.out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
            run = i + 1;
        }
        self.out.push_str(s.get(run..).unwrap_or_default());
        self.out.push('"');
    }
}

impl ToJson for str {
    fn write(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl ToJson for String {
    fn write(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl ToJson for u64 {
    fn write(&self, w: &mut Writer) {
        w.u64(*self);
    }
}

impl ToJson for bool {
    fn write(&self, w: &mut Writer) {
        w.bool(*self);
    }
}

impl ToJson for Number {
    fn write(&self, w: &mut Writer) {
        w.number(*self);
    }
}

impl ToJson for Raw {
    fn write(&self, w: &mut Writer) {
        w.raw(self.get());
    }
}

/// `None` as `null` (a field that is left out uses [`Writer::field_if`]).
impl<T: ToJson> ToJson for Option<T> {
    fn write(&self, w: &mut Writer) {
        match self {
            Some(value) => value.write(w),
            None => w.null(),
        }
    }
}

impl<T: ToJson + ?Sized> ToJson for &T {
    fn write(&self, w: &mut Writer) {
        (**self).write(w);
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn write(&self, w: &mut Writer) {
        w.list(self);
    }
}

impl<T: ToJson> ToJson for [T] {
    fn write(&self, w: &mut Writer) {
        w.list(self);
    }
}

/// A map, as an object in key order.
impl<K: AsRef<str>, V: ToJson> ToJson for VecMap<K, V> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            for (k, v) in self.iter() {
                w.field(k.as_ref(), v);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_byte: String = (0u8..0x80).map(char::from).collect();
        every_byte.push_str("é中😀\u{7f}\u{2028}");
        for s in [
            "",
            "plain",
            "a\"b\\c/d",
            "\u{0}\u{1f}\n\r\t\u{8}\u{c}",
            &every_byte,
        ] {
            assert_eq!(to_string(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn containers_are_written_as_serde_json_writes_them() {
        let mut map = VecMap::new();
        map.insert("b".to_owned(), vec![1u64, 2]);
        map.insert("a".to_owned(), vec![]);
        let theirs: std::collections::BTreeMap<_, _> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(to_string(&map), serde_json::to_string(&theirs).unwrap());
        let nested = vec![Some(true), None, Some(false)];
        assert_eq!(to_string(&nested), serde_json::to_string(&nested).unwrap());
        let mut w = Writer::default();
        w.object(|w| {
            w.field("x", &1u64)
                .field_if::<u64>("gone", None)
                .field("raw", &Raw::parse(" [1, {\"a\":2}] ").unwrap())
                .field("s", "t");
        });
        assert_eq!(w.out, r#"{"x":1,"raw":[1, {"a":2}],"s":"t"}"#);
    }
}
