//! The wire protocol of the stock `p2pcf` client: request bodies parsed into
//! typed values that can only hold valid data, and the JSON responses.
//!
//! Rules and field meanings are those of `PROTOCOL.md`. Every rule that fails
//! yields [`Error::BadRequest`] with a short reason; nothing here panics.

use std::borrow::Cow;

use super::ip::{is_ip_addr, is_ipv6_addr};
use crate::domain::{
    id_newtype, len_between, ContextId, DeleteKeyInput, Millis, RoomId, SessionId, MAX_ID_LEN,
};
use crate::engine::hints::Hint;
use crate::engine::limits::Limits;
use crate::error::Error;
use crate::json::{self, once, required, Bad, FromJson, Raw, Read, Reader, ToJson, Writer};

/// Largest `t`: ms exact in an f64 (2^53). A client's `t` is its own clock,
/// however far off: the worker only compares a client's `t`s with each
/// other and maps them to its own clock through the offset seen at the last
/// index write (expiry is the worker's clock), so a stock client whose
/// clock is hours off is served like any other; the bound keeps that
/// arithmetic exact.
pub const MAX_T_MS: f64 = 9_007_199_254_740_992.0;
/// Largest `x` a client may ask for.
pub const MAX_REQUESTED_TTL_MS: f64 = 24.0 * 60.0 * 60.0 * 1000.0;
/// Most reflexive IPs one peer may list (a real client has one per
/// network path it found through STUN: one or two, rarely more).
pub const MAX_REFLEXIVE_IPS: usize = 8;
/// The server never keeps an entry longer than this after its last write.
pub const MAX_TTL_MS: u64 = 15 * 60 * 1000;

id_newtype!(
    /// Client id (`d[1]`): chosen by the application, 1..64 characters.
    ClientId,
    "Bad client id",
    |s| len_between(s, 1, MAX_ID_LEN)
);
id_newtype!(
    /// DTLS SHA-256 fingerprint (`d[3]`): exactly 44 characters of valid base64.
    Fingerprint,
    "Bad dtls fingerprint",
    is_base64_of_44
);

/// 44 characters of standard base64 as the `base64` crate's `STANDARD`
/// decodes them: canonical padding (none, `=` or `==`) and no stray bits
/// before it. (Checked by hand: the decoder was 1.5 KB of wasm gzip for
/// this one check.)
fn is_base64_of_44(s: &str) -> bool {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let b = s.as_bytes();
    if b.len() != 44 {
        return false;
    }
    let padding = b.iter().rev().take_while(|&&c| c == b'=').count();
    let data = &b[..44 - padding];
    // Bits of the last character that no byte uses: 2 before `=`, 4 before `==`.
    let unused_bits = match padding {
        0 => 0,
        1 => 2,
        2 => 4,
        _ => return false,
    };
    let mut last = 0;
    for &c in data {
        match value(c) {
            Some(v) => last = v,
            None => return false,
        }
    }
    last & ((1 << unused_bits) - 1) == 0
}
id_newtype!(
    /// A reflexive IP address (`d[5][i]`): IPv4 or IPv6, optionally with a zone.
    ReflexiveIp,
    "Bad reflexive IPs",
    is_ip
);
fn is_ip(s: &str) -> bool {
    if is_ip_addr(s) {
        return true;
    }
    // Link-local IPv6 with a zone, e.g. `fe80::1%eth0`.
    match s.split_once('%') {
        Some((addr, zone)) => {
            is_ipv6_addr(addr)
                && !zone.is_empty()
                && zone.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        None => false,
    }
}

/// A peer's public data `d`: `[session, client, symmetric, fingerprint, joinedAt, ips]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerData {
    pub session: SessionId,
    pub client: ClientId,
    pub symmetric: bool,
    pub fingerprint: Fingerprint,
    pub joined_at: Millis,
    pub reflexive_ips: Vec<ReflexiveIp>,
}

/// The string `raw` (a checked JSON value) holds, parsed by `parse`.
fn string_of<T>(
    raw: &str,
    err: &'static str,
    parse: fn(&str) -> Result<T, Error>,
) -> Result<T, Error> {
    parse(&json::as_str(raw).ok_or(Error::BadRequest(err))?)
}

impl PeerData {
    /// Parses `d` (checked JSON), reporting the first field that breaks its rule.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let items = json::items(raw).ok_or(Error::BadRequest("Bad data"))?;
        let [session, client, symmetric, fingerprint, joined_at, ips] = items.as_slice() else {
            return Err(Error::BadRequest("Bad data length"));
        };
        let joined_at = Millis::from_raw(joined_at)
            .filter(|m| m.as_f64() != 0.0)
            .ok_or(Error::BadRequest("Bad joined at timestamp"))?;
        let ips = json::items(ips).ok_or(Error::BadRequest("Bad reflexive IPs"))?;
        if ips.len() > MAX_REFLEXIVE_IPS {
            return Err(Error::BadRequest("Too many reflexive IPs"));
        }
        let ips = ips
            .iter()
            .map(|ip| string_of(ip, "Bad reflexive IPs", ReflexiveIp::parse))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            session: string_of(session, "Bad session id", SessionId::parse)?,
            client: string_of(client, "Bad client id", ClientId::parse)?,
            symmetric: match *symmetric {
                "true" => true,
                "false" => false,
                _ => return Err(Error::BadRequest("Bad is symmetric")),
            },
            fingerprint: string_of(fingerprint, "Bad dtls fingerprint", Fingerprint::parse)?,
            joined_at,
            reflexive_ips: ips,
        })
    }

    /// Writes `d`, with `t` appended when given (the 7-element form of `ps`).
    fn write_with(&self, t: Option<&Millis>, w: &mut Writer) {
        w.array(|w| {
            self.session.write(w);
            self.client.write(w);
            w.bool(self.symmetric);
            self.fingerprint.write(w);
            self.joined_at.write(w);
            w.list(&self.reflexive_ips);
            if let Some(t) = t {
                t.write(w);
            }
        });
    }
}

impl ToJson for PeerData {
    fn write(&self, w: &mut Writer) {
        self.write_with(None, w);
    }
}

/// A stored `d`, read in one pass: each element by its type, with the
/// rules of [`PeerData::parse`] (which a request's `d` goes through, for
/// its error texts).
impl FromJson for PeerData {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut session, mut client, mut symmetric, mut fingerprint) = (None, None, None, None);
        let (mut joined_at, mut ips) = (None, None);
        let mut index = 0;
        r.array(&mut |r| {
            match index {
                0 => session = Some(SessionId::read(r)?),
                1 => client = Some(ClientId::read(r)?),
                2 => symmetric = Some(r.bool()?),
                3 => fingerprint = Some(Fingerprint::read(r)?),
                4 => joined_at = Some(Millis::read(r)?),
                5 => ips = Some(Vec::<ReflexiveIp>::read(r)?),
                _ => return Err(Bad::Shape),
            }
            index += 1;
            Ok(())
        })?;
        let ips = ips.filter(|ips| ips.len() <= MAX_REFLEXIVE_IPS);
        Ok(Self {
            session: required(session)?,
            client: required(client)?,
            symmetric: required(symmetric)?,
            fingerprint: required(fingerprint)?,
            joined_at: required(joined_at.filter(|m| m.as_f64() != 0.0))?,
            reflexive_ips: required(ips)?,
        })
    }
}

/// One element of `ps`: a peer's `d` with its `t` appended.
pub struct PeerView<'a> {
    pub data: &'a PeerData,
    pub t: &'a Millis,
}

impl ToJson for PeerView<'_> {
    fn write(&self, w: &mut Writer) {
        self.data.write_with(Some(self.t), w);
    }
}

/// A package: routed by its element 0 (the recipient's session id) and
/// otherwise passed through byte for byte.
#[derive(Clone, Debug)]
pub struct Package {
    /// Recipient session id (element 0 of `raw`).
    pub to: SessionId,
    /// The package exactly as the sender wrote it.
    pub raw: Raw,
}

impl PartialEq for Package {
    fn eq(&self, other: &Self) -> bool {
        self.to == other.to && self.raw.get() == other.raw.get()
    }
}

impl Package {
    /// Parses one package, which must be a JSON array whose first element is
    /// a session id, within the size and candidate limits.
    /// Parses one package sent by `sender`: a package claiming another
    /// sender would make its recipient connect to the publisher believing it
    /// is someone else, so it is refused.
    pub fn parse(raw: Raw, sender: &SessionId, limits: &Limits) -> Result<Self, Error> {
        if raw.get().len() > limits.max_package_bytes {
            return Err(Error::PayloadTooLarge("Package too large"));
        }
        let head = PackageHead::read(raw.get()).ok_or(Error::BadRequest("Bad package"))?;
        if head.candidates > limits.max_candidates {
            return Err(Error::PayloadTooLarge("Too many candidates in a package"));
        }
        let to = SessionId::parse(&head.to).map_err(|_| Error::BadRequest("Bad package"))?;
        if head.from.as_deref() != Some(sender.as_str()) {
            return Err(Error::BadRequest("Package sender is not this session"));
        }
        Ok(Self { to, raw })
    }
}

/// Reads element 0 of a JSON array as a string, counts the candidates
/// (element 8, when an array) and skips the rest without building it.
struct PackageHead {
    to: String,
    from: Option<String>,
    candidates: usize,
}

impl PackageHead {
    fn read(raw: &str) -> Option<Self> {
        let (mut to, mut from, mut candidates) = (None, None, 0);
        let mut index = 0;
        Reader::over(raw)
            .array(&mut |r| {
                match index {
                    0 => to = Some(String::read(r)?),
                    1 => from = json::as_str(r.value()?).map(Cow::into_owned),
                    8 => candidates = json::items(r.raw()?).map_or(0, |c| c.len()),
                    _ => r.skip()?,
                }
                index += 1;
                Ok(())
            })
            .ok()?;
        Some(PackageHead {
            to: to?,
            from,
            candidates,
        })
    }
}

/// What a request asks the server to do.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// Read the room. With `d`, the caller's session selects the packages
    /// returned, and the poll says "I am here" (see [`Presence`]).
    Poll {
        room: RoomId,
        context: ContextId,
        presence: Option<Presence>,
    },
    /// Create or refresh this context's entry, then read the room.
    Publish(Publish),
    /// Remove this context's entry, if the delete key is its owner's.
    Leave {
        room: RoomId,
        context: ContextId,
        session: Option<SessionId>,
        delete_key: DeleteKeyInput,
    },
}

/// A client's own account of its last write: `t` (its clock) and the
/// lifetime it asked for, capped as the server grants it.
/// What a poll carrying `d` tells: the client's data and its last write
/// (`t`, the client clock) with the lifetime it asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Presence {
    pub data: PeerData,
    pub t: Millis,
    pub ttl_ms: u64,
}

/// The write half of a poll: `d`, `t`, `x` and `p` together.
#[derive(Debug, PartialEq)]
pub struct Publish {
    pub room: RoomId,
    pub context: ContextId,
    pub data: PeerData,
    pub t: Millis,
    /// Requested lifetime in ms, already capped at [`MAX_TTL_MS`].
    pub ttl_ms: u64,
    pub packages: Vec<Package>,
}

/// The body's fields, each as written (checked JSON), before validation.
/// A field given twice is refused.
#[derive(Default)]
struct WireBody<'a> {
    r: Option<&'a str>,
    k: Option<&'a str>,
    d: Option<&'a str>,
    t: Option<&'a str>,
    x: Option<&'a str>,
    p: Option<&'a str>,
    dk: Option<&'a str>,
}

impl<'a> WireBody<'a> {
    fn read(body: &'a [u8]) -> Result<Self, Error> {
        let mut wire = WireBody::default();
        let mut r = Reader::new(body).map_err(|_| Error::BadRequest("Bad JSON"))?;
        let fields = r.object(&mut |r, key| {
            let slot = match key {
                "r" => &mut wire.r,
                "k" => &mut wire.k,
                "d" => &mut wire.d,
                "t" => &mut wire.t,
                "x" => &mut wire.x,
                "p" => &mut wire.p,
                "dk" => &mut wire.dk,
                _ => return r.skip(),
            };
            once(slot, r.value())
        });
        fields.and_then(|()| r.end()).map_err(|bad| match bad {
            Bad::Shape => Error::BadRequest(BAD_BODY),
            Bad::Syntax => Error::BadRequest("Bad JSON"),
        })?;
        Ok(wire)
    }
}

const BAD_BODY: &str = "Bad request body: expected a JSON object with valid fields";

/// Reads an optional field, treating JSON `null` as absent (as the original worker did).
fn present(raw: Option<&str>) -> Option<&str> {
    raw.filter(|raw| *raw != "null")
}

fn parse_string<T>(
    raw: Option<&str>,
    err: &'static str,
    parse: fn(&str) -> Result<T, Error>,
) -> Result<T, Error> {
    string_of(present(raw).ok_or(Error::BadRequest(err))?, err, parse)
}

/// `d` with its `x` and `t`: the data, `t` and the lifetime granted.
fn parse_presence(
    d: &str,
    x: Option<&str>,
    t: Option<&str>,
) -> Result<(PeerData, Millis, u64), Error> {
    let x = present(x)
        .and_then(Millis::from_raw)
        .map(|x| x.as_f64())
        .filter(|x| *x > 0.0 && *x <= MAX_REQUESTED_TTL_MS)
        .ok_or(Error::BadRequest("Bad expiration"))?;
    let t = present(t)
        .and_then(Millis::from_raw)
        .filter(|t| (0.0..=MAX_T_MS).contains(&t.as_f64()))
        .ok_or(Error::BadRequest("Bad timestamp"))?;
    let data = PeerData::parse(d)?;
    // x is in (0, 24h]: the cast cannot overflow; sub-ms precision is dropped.
    let ttl_ms = (x.ceil() as u64).min(MAX_TTL_MS);
    Ok((data, t, ttl_ms))
}

/// `p`, sent by `sender`. A package list needs its sender: without `d` it
/// is ignored (`None`), as before.
fn parse_packages(
    p: &str,
    sender: Option<&SessionId>,
    limits: &Limits,
) -> Result<Option<Vec<Package>>, Error> {
    let raw =
        Vec::<Raw>::read(&mut Reader::over(p)).map_err(|_| Error::BadRequest("Bad packages"))?;
    if raw.len() > limits.max_packages {
        return Err(Error::PayloadTooLarge("Too many packages"));
    }
    let Some(sender) = sender else {
        return Ok(None);
    };
    let packages = raw
        .into_iter()
        .map(|r| Package::parse(r, sender, limits))
        .collect::<Result<Vec<_>, _>>()?;
    // The stock client keeps one package per peer; more would only make
    // every reader's poll larger. (At most `max_packages`, a few dozen:
    // compared pairwise, without a sort of its own in the wasm.)
    let repeated = |(i, p): (usize, &Package)| packages[..i].iter().any(|q| q.to == p.to);
    if packages.iter().enumerate().any(repeated) {
        return Err(Error::BadRequest("Two packages for one recipient"));
    }
    Ok(Some(packages))
}

/// Parses a request body. `leave` is true for `DELETE` / `X-Worker-Method: DELETE`.
pub fn parse_request(body: &[u8], leave: bool, limits: &Limits) -> Result<Request, Error> {
    let wire = WireBody::read(body)?;
    let room = parse_string(wire.r, "Bad room id", RoomId::parse)?;
    let context = parse_string(wire.k, "Bad context id", ContextId::parse)?;

    let data = match present(wire.d) {
        None => None,
        Some(d) => Some(parse_presence(d, wire.x, wire.t)?),
    };

    if leave {
        let delete_key = match present(wire.dk) {
            None => return Err(Error::BadRequest("Missing delete key")),
            Some(dk) => string_of(dk, "Bad delete key", DeleteKeyInput::parse)?,
        };
        return Ok(Request::Leave {
            room,
            context,
            session: data.map(|(d, _, _)| d.session),
            delete_key,
        });
    }

    let packages = match present(wire.p) {
        None => None,
        Some(p) => parse_packages(p, data.as_ref().map(|(d, _, _)| &d.session), limits)?,
    };

    Ok(match (data, packages) {
        (Some((data, t, ttl_ms)), Some(packages)) => Request::Publish(Publish {
            room,
            context,
            data,
            t,
            ttl_ms,
            packages,
        }),
        (data, _) => Request::Poll {
            room,
            context,
            presence: data.map(|(data, t, ttl_ms)| Presence { data, t, ttl_ms }),
        },
    })
}

/// The body of a successful poll: `{ "ps": [...], "pk": [...], "dk"?: "...", "hint": {...} }`.
pub struct PollResponse<'a> {
    pub ps: Vec<PeerView<'a>>,
    pub pk: Vec<&'a Raw>,
    pub dk: Option<&'a str>,
    /// When to poll next; the stock client ignores it, `followHints` (client/hints.js) follows it.
    pub hint: Option<Hint>,
}

impl ToJson for PollResponse<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("ps", &self.ps)
                .field("pk", &self.pk)
                .field_if("dk", self.dk)
                .field_if("hint", self.hint.as_ref());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NOW: u64 = 1_795_219_200_000;
    const FP: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";

    fn d() -> Value {
        json!(["sess", "client", false, FP, 1, ["192.0.2.1"]])
    }

    fn parse(body: Value, leave: bool) -> Result<Request, Error> {
        parse_request(
            &serde_json::to_vec(&body).unwrap(),
            leave,
            &Limits::default(),
        )
    }

    #[test]
    fn first_poll_read_and_publish_are_told_apart() {
        let first = parse(json!({"r": "room", "k": "ctx"}), false).unwrap();
        assert!(matches!(first, Request::Poll { presence: None, .. }));
        let read = parse(
            json!({"r": "room", "k": "ctx", "d": d(), "t": NOW, "x": 1000}),
            false,
        )
        .unwrap();
        assert!(
            matches!(read, Request::Poll { presence: Some(ref p), .. } if p.data.session.as_str() == "sess")
        );
        let null_p = parse(
            json!({"r": "room", "k": "ctx", "d": d(), "t": NOW, "x": 1000, "p": null}),
            false,
        )
        .unwrap();
        assert!(matches!(null_p, Request::Poll { .. }));
        let Request::Publish(p) = parse(
            json!({"r": "room", "k": "ctx", "d": d(), "t": NOW, "x": 1000, "p": []}),
            false,
        )
        .unwrap() else {
            panic!("expected a publish");
        };
        assert_eq!(p.ttl_ms, 1000);
        assert!(p.packages.is_empty());
    }

    #[test]
    fn ttl_is_capped_at_fifteen_minutes() {
        let Request::Publish(p) = parse(
            json!({"r": "room", "k": "ctx", "d": d(), "t": NOW, "x": 86_400_000, "p": []}),
            false,
        )
        .unwrap() else {
            panic!("expected a publish");
        };
        assert_eq!(p.ttl_ms, MAX_TTL_MS);
    }

    #[test]
    fn packages_pass_through_byte_for_byte() {
        let body = format!(
            r#"{{"r":"room","k":"ctx","d":["sess","client",false,"{FP}",1,[]],"t":{NOW},"x":1000,"p":[["to", "sess", 1.50, null, {{"a" : 1e3}}]]}}"#
        );
        let Request::Publish(p) =
            parse_request(body.as_bytes(), false, &Limits::default()).unwrap()
        else {
            panic!("expected a publish");
        };
        assert_eq!(p.packages[0].to.as_str(), "to");
        assert_eq!(
            p.packages[0].raw.get(),
            r#"["to", "sess", 1.50, null, {"a" : 1e3}]"#
        );
    }

    #[test]
    fn leave_needs_a_delete_key_and_takes_the_session_from_d() {
        assert_eq!(
            parse(json!({"r": "room", "k": "ctx"}), true),
            Err(Error::BadRequest("Missing delete key"))
        );
        assert_eq!(
            parse(json!({"r": "room", "k": "ctx", "dk": 5}), true),
            Err(Error::BadRequest("Bad delete key"))
        );
        let leave = parse(
            json!({"r": "room", "k": "ctx", "d": d(), "t": NOW, "x": 1000, "dk": "key"}),
            true,
        )
        .unwrap();
        assert!(
            matches!(leave, Request::Leave { session: Some(ref s), ref delete_key, .. }
            if s.as_str() == "sess" && delete_key.as_str() == "key")
        );
        let bare = parse(json!({"r": "room", "k": "ctx", "dk": "key"}), true).unwrap();
        assert!(matches!(bare, Request::Leave { session: None, .. }));
    }

    #[test]
    fn ips_accept_v4_v6_and_zoned_link_local_only() {
        for ok in [
            "192.0.2.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "fe80::1%en0",
            "::ffff:192.0.2.1",
        ] {
            assert!(ReflexiveIp::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "300.1.1.1",
            "fe80::1%",
            "fe80::1%e n",
            "host.local",
            "1.2.3.4%eth0",
        ] {
            assert!(ReflexiveIp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_are_checked_as_the_base64_crate_decodes() {
        use base64::Engine as _;
        let decodes =
            |s: &str| s.len() == 44 && base64::engine::general_purpose::STANDARD.decode(s).is_ok();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ .";
        let mut seed = 11u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases = vec![FP.to_owned(), FP.replace('=', "A"), String::new()];
        for _ in 0..20_000 {
            let len = [43, 44, 44, 44, 45][(next() % 5) as usize];
            let mut s: Vec<u8> = (0..len).map(|_| alphabet[(next() % 64) as usize]).collect();
            // Mostly valid characters, with padding and strays at the end.
            for i in 0..(next() % 3) as usize {
                if let Some(c) = s.len().checked_sub(1 + i) {
                    s[c] = alphabet[(next() % alphabet.len() as u64) as usize];
                }
            }
            cases.push(String::from_utf8(s).unwrap());
        }
        for pad in ["=", "=="] {
            for c in alphabet.iter().take(64) {
                let mut s = FP[..44 - pad.len() - 1].to_owned();
                s.push(char::from(*c));
                s.push_str(pad);
                cases.push(s);
            }
        }
        let mut valid = 0;
        for s in &cases {
            assert_eq!(is_base64_of_44(s), decodes(s), "{s:?}");
            valid += usize::from(decodes(s));
        }
        assert!(valid > 1000, "the cases include valid ones: {valid}");
    }

    #[test]
    fn stored_peer_data_round_trips() {
        let data = PeerData::parse(&d().to_string()).unwrap();
        let json: Value = serde_json::from_str(&json::to_string(&data)).unwrap();
        assert_eq!(json, d());
        let t = Millis::from_u64(NOW);
        let view: Value =
            serde_json::from_str(&json::to_string(&PeerView { data: &data, t: &t })).unwrap();
        assert_eq!(view.as_array().unwrap().len(), 7);
        assert_eq!(view[6], json!(NOW));
    }
}
