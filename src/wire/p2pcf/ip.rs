//! IP address text, accepted exactly as the standard library's
//! `IpAddr`/`Ipv6Addr` parsers accept it (same steps, same backtracking),
//! without their code in the wasm (~1 KB gzip): the addresses are only
//! checked, never used.

/// Whether `s` parses as an `IpAddr`.
pub fn is_ip_addr(s: &str) -> bool {
    let mut c = Cursor::over(s);
    // As the standard parser: IPv6 is tried only where IPv4 fails.
    if c.ipv4() {
        return c.at == c.text.len();
    }
    c.ipv6() && c.at == c.text.len()
}

/// Whether `s` parses as an `Ipv6Addr`.
pub fn is_ipv6_addr(s: &str) -> bool {
    let mut c = Cursor::over(s);
    c.ipv6() && c.at == c.text.len()
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn over(s: &'a str) -> Self {
        Cursor {
            text: s.as_bytes(),
            at: 0,
        }
    }

    /// Runs `read`; where it fails, nothing is consumed.
    fn atomically(&mut self, read: impl FnOnce(&mut Self) -> bool) -> bool {
        let start = self.at;
        let ok = read(self);
        if !ok {
            self.at = start;
        }
        ok
    }

    fn given(&mut self, byte: u8) -> bool {
        let ok = self.text.get(self.at) == Some(&byte);
        self.at += usize::from(ok);
        ok
    }

    /// A number of at most `max_digits` digits in `radix` (10 or 16) that
    /// fits `max`; greedy, as the standard parser's `read_number`.
    fn number(&mut self, radix: u32, max_digits: usize, max: u32, zero_prefix: bool) -> bool {
        self.atomically(|c| {
            let leading_zero = c.text.get(c.at) == Some(&b'0');
            let (mut value, mut digits) = (0u32, 0usize);
            while let Some(d) = c
                .text
                .get(c.at)
                .and_then(|&b| char::from(b).to_digit(radix))
            {
                c.at += 1;
                value = value * radix + d;
                digits += 1;
                if digits > max_digits || value > max {
                    return false;
                }
            }
            digits > 0 && (zero_prefix || !leading_zero || digits == 1)
        })
    }

    /// `read` after `separator`, unless it is the first of its list.
    fn separated(&mut self, separator: u8, index: usize, read: fn(&mut Self) -> bool) -> bool {
        self.atomically(|c| (index == 0 || c.given(separator)) && read(c))
    }

    fn ipv4(&mut self) -> bool {
        self.atomically(|c| (0..4).all(|i| c.separated(b'.', i, |c| c.number(10, 3, 255, false))))
    }

    /// Up to `limit` colon-separated groups, the last two of which may be
    /// an IPv4 address: (groups read, whether it ended with IPv4).
    fn groups(&mut self, limit: usize) -> (usize, bool) {
        for i in 0..limit {
            if i + 1 < limit && self.separated(b':', i, Cursor::ipv4) {
                return (i + 2, true);
            }
            if !self.separated(b':', i, |c| c.number(16, 4, 0xffff, true)) {
                return (i, false);
            }
        }
        (limit, false)
    }

    fn ipv6(&mut self) -> bool {
        self.atomically(|c| {
            let (head, head_ipv4) = c.groups(8);
            if head == 8 {
                return true;
            }
            // `::` stands for at least one group of zeros.
            !head_ipv4 && c.given(b':') && c.given(b':') && {
                c.groups(8 - (head + 1));
                true
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

    fn same_as_std(s: &str) {
        assert_eq!(is_ip_addr(s), s.parse::<IpAddr>().is_ok(), "{s:?}");
        assert_eq!(is_ipv6_addr(s), s.parse::<Ipv6Addr>().is_ok(), "{s:?}");
    }

    #[test]
    fn accepts_what_std_accepts() {
        for s in [
            "",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "::",
            ":::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1.2.3.4::",
            "::ffff:1.2.3.4",
            "fe80::1",
            "FE80::AbCd",
            "00000::1",
            "0000::1",
            "1::2::3",
            "::1.2.3.4:5",
            "1:2:3:4:5::1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4",
            "12345::",
            "::0001.2.3.4",
            "::1.2.3.04",
            " 1.2.3.4",
            "1.2.3.4 ",
            "１.2.3.4",
            "+1.2.3.4",
            "1.2.3.-4",
            "::g",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:8:9",
            "1::2:3:4:5:6:7",
            "1::2:3:4:5:6:7:8",
            "::1.2.3",
            "a:b:c:d:e:f:0.0.0.0",
        ] {
            same_as_std(s);
        }
    }

    #[test]
    fn random_strings_answer_as_std() {
        // Every string of up to 5 characters over a small alphabet, and
        // random longer ones: the same verdict as the standard parser.
        let alphabet = b"0129af:.";
        let mut s = Vec::new();
        fn all(s: &mut Vec<u8>, alphabet: &[u8], left: usize) {
            same_as_std(std::str::from_utf8(s).unwrap());
            if left > 0 {
                for &b in alphabet {
                    s.push(b);
                    all(s, alphabet, left - 1);
                    s.pop();
                }
            }
        }
        all(&mut s, alphabet, 5);
        let alphabet = b"0123456789abcdefABCDEF:.::..x";
        let mut seed = 3u64;
        for _ in 0..200_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 58) as usize;
            let s: String = (0..len)
                .map(|i| {
                    let r = seed.rotate_left(5 * i as u32 + 7) ^ (i as u64).wrapping_mul(0x9e37);
                    alphabet[(r % alphabet.len() as u64) as usize] as char
                })
                .collect();
            same_as_std(&s);
        }
    }

    #[test]
    fn addresses_as_std_writes_them_pass() {
        let mut seed = 5u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut groups = [0u16; 8];
            for (i, g) in groups.iter_mut().enumerate() {
                // Runs of zeros often, so that `::` appears in many places.
                *g = if (seed >> (i * 3)) & 3 == 0 {
                    0
                } else {
                    (seed >> (i * 7)) as u16
                };
            }
            let v6 = Ipv6Addr::from(groups);
            same_as_std(&v6.to_string());
            let v4 = std::net::Ipv4Addr::from((seed >> 13) as u32);
            same_as_std(&v4.to_string());
            same_as_std(&format!("::ffff:{v4}"));
            same_as_std(&format!("1:2:3:4:5:6:{v4}"));
        }
    }
}
