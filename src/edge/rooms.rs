//! Who may use a room: with `ROOM_SECRET` set, only signed room ids.
//!
//! A signed room id is `<name>_<expiry>_<mac>`: the name the app chose
//! (1-35 of `[A-Za-z0-9_-]`), the expiry in Unix seconds (10 digits) and
//! the first 16 characters of `base64url(HMAC-SHA1(secret, "<name>_<expiry>"))`
//! (96 bits). It is a room id like any other (4-64 of `[A-Za-z0-9_-]`), so
//! the stock p2pcf client takes it unchanged: the app's backend hands it out
//! instead of the plain name. The check is arithmetic on the id alone: a
//! refused id costs no R2 operation. `ROOM_SECRET_PREVIOUS` is also accepted
//! while keys roll.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use std::borrow::Cow;

use crate::config::{Config, Secret};
use crate::domain::{Base64, RoomId};
use crate::error::Error;
use crate::platform::Platform;

/// Characters of the MAC in a signed id (base64url: 96 bits).
pub const MAC_CHARS: usize = 16;
/// Digits of the expiry in a signed id (Unix seconds).
pub const EXPIRY_DIGITS: usize = 10;
/// Longest name a signed id can carry (the id is at most 64 characters).
pub const MAX_NAME_CHARS: usize = 64 - EXPIRY_DIGITS - MAC_CHARS - 2;

/// The MAC of `<name>_<expiry>` under `secret`, as it appears in the id.
fn mac(secret: &Secret, signed_part: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(signed_part.as_bytes());
    let mut full = Base64::UrlSafeNoPad.encode(&mac.finalize().into_bytes());
    full.truncate(MAC_CHARS);
    full
}

/// Signs `name` until `expires_s` (Unix seconds): the room id to hand out.
/// `None` when the name is not 1-[`MAX_NAME_CHARS`] of `[A-Za-z0-9_-]`.
pub fn sign(name: &str, expires_s: u64, secret: &Secret) -> Option<RoomId> {
    let ok = (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok || expires_s >= 10u64.pow(EXPIRY_DIGITS as u32) {
        return None;
    }
    let signed_part = format!("{name}_{expires_s:010}");
    let id = format!("{signed_part}_{}", mac(secret, &signed_part));
    RoomId::parse(&id).ok()
}

/// Serves `room` when no secret is set, or when it is signed with one of
/// `secrets` and not expired at `now_ms`. Refusals say which: not signed,
/// forged (or signed with another secret), expired.
pub fn admit(room: &RoomId, secrets: &[Secret], now_ms: u64) -> Result<(), Error> {
    if secrets.is_empty() {
        return Ok(());
    }
    let (signed_part, expiry) = parts(room.as_str()).ok_or(Error::Forbidden(
        "Room id not signed: this deployment serves only signed room ids",
    ))?;
    let given = room
        .as_str()
        .get(signed_part.len() + 1..)
        .unwrap_or_default();
    let genuine = secrets.iter().any(|secret| {
        let expected = mac(secret, signed_part);
        bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
    });
    if !genuine {
        return Err(Error::Forbidden("Room id signature does not match"));
    }
    if expiry.saturating_mul(1000) <= now_ms {
        return Err(Error::Forbidden("Room id expired: ask for a new one"));
    }
    Ok(())
}

/// When `room` is a signed id: its signed part and expiry (Unix seconds).
pub fn parts(room: &str) -> Option<(&str, u64)> {
    let b = room.as_bytes();
    let n = b.len();
    if n < MAC_CHARS + EXPIRY_DIGITS + 3 {
        return None;
    }
    let mac_at = n - MAC_CHARS;
    let expiry_at = mac_at - 1 - EXPIRY_DIGITS;
    if b[mac_at - 1] != b'_' || b[expiry_at - 1] != b'_' {
        return None;
    }
    let digits = room.get(expiry_at..mac_at - 1)?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((room.get(..mac_at - 1)?, digits.parse().ok()?))
}

/// How long a self-test room the worker signs for its status page lasts, s.
pub const SELF_TEST_ROOM_S: u64 = 600;
/// Members a worker-signed self-test room takes: the self-test's two peers.
pub const SELF_TEST_MEMBERS: usize = 2;

/// With signed rooms, a room for the status page's self-test: signed by the
/// worker for [`SELF_TEST_ROOM_S`], named `self-test-<12 hex>`. Anyone who
/// loads the status page gets one, so such rooms take only
/// [`SELF_TEST_MEMBERS`] (see [`settings_for`]): a pair for ten minutes.
pub fn self_test_room(secrets: &[Secret], platform: &impl Platform) -> Option<RoomId> {
    let secret = secrets.first()?;
    let mut random = [0u8; 6];
    platform.fill_random(&mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let expires_s = platform.now_ms() / 1000 + SELF_TEST_ROOM_S;
    sign(&format!("self-test-{hex}"), expires_s, secret)
}

/// Whether `room` is served ([`admit`]), and the settings a request for it
/// runs with: a signed self-test room takes [`SELF_TEST_MEMBERS`]; any
/// other room the deployment's own.
pub fn settings_for<'c>(
    room: &RoomId,
    config: &'c Config,
    now_ms: u64,
) -> Result<Cow<'c, Config>, Error> {
    admit(room, &config.room_secrets, now_ms)?;
    let self_test = !config.room_secrets.is_empty() && room.as_str().starts_with("self-test-");
    if !self_test {
        return Ok(Cow::Borrowed(config));
    }
    let mut capped = config.clone();
    capped.limits.max_peers = capped.limits.max_peers.min(SELF_TEST_MEMBERS);
    capped.limits.max_live_members = capped.limits.max_live_members.min(SELF_TEST_MEMBERS);
    Ok(Cow::Owned(capped))
}

/// When a signed room id stops being served, ms (`None`: not signed).
pub fn expires_ms(room: &RoomId) -> Option<u64> {
    parts(room.as_str()).map(|(_, s)| s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_219_200_000;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    #[test]
    fn signed_ids_are_room_ids_and_are_served_until_they_expire() {
        let key = secret("k1");
        let id = sign("team-chat", NOW / 1000 + 60, &key).unwrap();
        assert_eq!(id.as_str().len(), 9 + 1 + 10 + 1 + 16);
        assert_eq!(admit(&id, std::slice::from_ref(&key), NOW), Ok(()));
        assert_eq!(
            admit(&id, &[key], NOW + 60_000),
            Err(Error::Forbidden("Room id expired: ask for a new one"))
        );
        // Without a secret every room is served.
        assert_eq!(admit(&id, &[], NOW + 600_000), Ok(()));
    }

    #[test]
    fn unsigned_forged_and_other_secrets_are_refused_rotation_is_not() {
        let (old, new) = (secret("old"), secret("new"));
        let plain = RoomId::parse("team-chat").unwrap();
        assert_eq!(
            admit(&plain, std::slice::from_ref(&new), NOW),
            Err(Error::Forbidden(
                "Room id not signed: this deployment serves only signed room ids"
            ))
        );
        let by_old = sign("team-chat", NOW / 1000 + 60, &old).unwrap();
        let forged = Error::Forbidden("Room id signature does not match");
        assert_eq!(
            admit(&by_old, std::slice::from_ref(&new), NOW),
            Err(forged.clone())
        );
        assert_eq!(admit(&by_old, &[new.clone(), old], NOW), Ok(()));
        // Another expiry under the same MAC is a forgery.
        let s = by_old.as_str();
        let later = format!("team-chat_{:010}_{}", NOW / 1000 + 9999, &s[s.len() - 16..]);
        let later = RoomId::parse(&later).unwrap();
        assert_eq!(admit(&later, &[new], NOW), Err(forged));
    }

    #[test]
    fn names_that_do_not_fit_are_not_signed() {
        let key = secret("k");
        assert!(sign("", NOW / 1000, &key).is_none());
        assert!(sign("a.b", NOW / 1000, &key).is_none());
        assert!(sign(&"a".repeat(MAX_NAME_CHARS + 1), NOW / 1000, &key).is_none());
        assert!(sign(&"a".repeat(MAX_NAME_CHARS), NOW / 1000, &key).is_some());
    }
}
