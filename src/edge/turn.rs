//! Short-lived TURN credentials (`GET /turn`), from one of two sources:
//!
//! * **any TURN server with the TURN REST API** (coturn's `use-auth-secret`):
//!   the worker holds the shared secret and mints credentials itself:
//!   username `<expiry unix s>:<label>`, password
//!   `base64(HMAC-SHA1(secret, username))`. No outbound call.
//! * **Cloudflare's TURN service**: the worker asks
//!   `POST <base>/v1/turn/keys/<key id>/credentials/generate-ice-servers`
//!   with the TURN key's own API token and `{"ttl": N}`, and passes the
//!   `iceServers` on, without port-53 URLs (browsers block that port).
//!
//! Either way the answer is `{"iceServers": [RTCIceServer...], "expiresAt": ms,
//! "expiresIn": ms}` (`expiresIn`: from when the answer was made).
//! Secrets live in [`Secret`], which never prints.

use hmac::{Hmac, Mac};

use crate::config::{Secret, TurnSettings, TurnSource};
use crate::domain::Base64;
use crate::error::Error;
use crate::json::{once, required, FromJson, Read, Reader, ToJson, Writer};
use crate::platform::Platform;

/// One `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl ToJson for IceServer {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("urls", &self.urls)
                .field_if("username", self.username.as_ref())
                .field_if("credential", self.credential.as_ref());
        });
    }
}

impl FromJson for IceServer {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut urls, mut username, mut credential) = (None, None, None);
        r.object(&mut |r, key| match key {
            "urls" => once(&mut urls, Vec::read(r)),
            "username" => once(&mut username, r.option(String::read)),
            "credential" => once(&mut credential, r.option(String::read)),
            _ => r.skip(),
        })?;
        Ok(Self {
            urls: required(urls)?,
            username: username.flatten(),
            credential: credential.flatten(),
        })
    }
}

/// The `/turn` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub ice_servers: Vec<IceServer>,
    /// When the credentials stop working, ms since the epoch.
    pub expires_at: u64,
    /// The same moment as ms from this answer, for clients to count from
    /// their own receipt of it (a page's clock may be off by hours).
    pub expires_in_ms: u64,
}

impl ToJson for Credentials {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("iceServers", &self.ice_servers)
                .field("expiresAt", &self.expires_at)
                .field("expiresIn", &self.expires_in_ms);
        });
    }
}

/// TURN REST API credentials (draft-uberti-behave-turn-rest): valid until
/// `now + ttl`, for `label` (any text without `:`).
pub fn rest_credentials(
    urls: &[String],
    secret: &Secret,
    label: &str,
    now_ms: u64,
    ttl_s: u64,
) -> Credentials {
    let expires_s = now_ms / 1000 + ttl_s;
    let username = format!("{expires_s}:{label}");
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    let credential = Base64::Standard.encode(&mac.finalize().into_bytes());
    Credentials {
        ice_servers: vec![IceServer {
            urls: urls.to_vec(),
            username: Some(username),
            credential: Some(credential),
        }],
        expires_at: expires_s * 1000,
        expires_in_ms: (expires_s * 1000).saturating_sub(now_ms),
    }
}

/// Cloudflare's answer, without port-53 URLs (browsers refuse to connect to
/// port 53, so those only slow ICE down) and without servers left with none.
pub fn parse_cloudflare(body: &[u8], now_ms: u64, ttl_s: u64) -> Result<Credentials, Error> {
    let mut ice_servers = None;
    let answer = Reader::new(body).and_then(|mut r| {
        r.object(&mut |r, key| match key {
            "iceServers" => once(&mut ice_servers, r.raw()),
            _ => r.skip(),
        })?;
        r.end()
    });
    let raw = answer
        .ok()
        .and(ice_servers)
        .ok_or(Error::TurnUpstream("an answer without iceServers"))?;
    // Older answers held one server object; newer ones a list.
    let mut r = Reader::over(raw);
    let servers = match raw.as_bytes().first() {
        Some(b'[') => Vec::read(&mut r),
        _ => IceServer::read(&mut r).map(|s| vec![s]),
    }
    .map_err(|_| Error::TurnUpstream("iceServers in an unknown shape"))?;
    let ice_servers: Vec<IceServer> = servers
        .into_iter()
        .map(|mut s| {
            s.urls.retain(|u| !uses_port_53(u));
            s
        })
        .filter(|s| !s.urls.is_empty())
        .collect();
    if ice_servers.is_empty() {
        return Err(Error::TurnUpstream("no usable iceServers"));
    }
    Ok(Credentials {
        ice_servers,
        expires_at: now_ms + ttl_s * 1000,
        expires_in_ms: ttl_s * 1000,
    })
}

/// `stun:host:53`, `turn:host:53?transport=udp`, ...
fn uses_port_53(url: &str) -> bool {
    let without_query = url.split('?').next().unwrap_or(url);
    without_query
        .rsplit_once(':')
        .is_some_and(|(_, port)| port == "53")
}

/// Mints credentials from the configured source.
pub async fn mint<P: Platform>(
    settings: &TurnSettings,
    platform: &P,
) -> Result<Credentials, Error> {
    let now = platform.now_ms();
    match &settings.source {
        None => Err(Error::TurnNotConfigured),
        Some(TurnSource::RestApi { urls, secret }) => {
            // A random label, so that one user's credentials cannot be told from another's.
            let mut label = [0u8; 6];
            platform.fill_random(&mut label);
            let label = Base64::UrlSafeNoPad.encode(&label);
            Ok(rest_credentials(
                urls,
                secret,
                &format!("p2pcf-{label}"),
                now,
                settings.ttl_s,
            ))
        }
        Some(TurnSource::Cloudflare {
            key_id,
            token,
            api_base,
        }) => {
            let url = format!("{api_base}/v1/turn/keys/{key_id}/credentials/generate-ice-servers");
            let body = format!("{{\"ttl\":{}}}", settings.ttl_s).into_bytes();
            match platform.post_json(&url, token.expose(), &body).await {
                Ok((200..=299, answer)) => parse_cloudflare(&answer, now, settings.ttl_s),
                Ok((401 | 403, _)) => {
                    Err(Error::TurnUpstream("the TURN key or its token was refused"))
                }
                Ok((404, _)) => Err(Error::TurnUpstream("no such TURN key")),
                Ok((429, _)) => Err(Error::TurnUnavailable),
                Ok((400..=499, _)) => Err(Error::TurnUpstream("the request was refused")),
                Ok(_) | Err(_) => Err(Error::TurnUnavailable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_CF_API_BASE, DEFAULT_TTL_S};

    fn settings(vars: &[(&str, &str)]) -> (TurnSettings, Vec<String>) {
        let mut warnings = Vec::new();
        let lookup = |n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        (TurnSettings::from_vars(&lookup, &mut warnings), warnings)
    }

    #[test]
    fn rest_credentials_follow_the_turn_rest_api() {
        // Checked with: printf '%s' '1700003600:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let c = rest_credentials(
            &["turn:127.0.0.1:3478".to_owned()],
            &Secret::new("north".to_owned()),
            "alice",
            1_700_000_000_123,
            3600,
        );
        let server = &c.ice_servers[0];
        assert_eq!(server.username.as_deref(), Some("1700003600:alice"));
        assert_eq!(server.credential.as_deref(), Some(EXPECTED_NORTH_ALICE));
        assert_eq!(c.expires_at, 1_700_003_600_000);
    }

    const EXPECTED_NORTH_ALICE: &str = "wjwSXO2ch1B6VaLTLMy2Avn5O9o=";

    #[test]
    fn configuration_needs_both_halves_and_valid_urls() {
        let (s, w) = settings(&[("TURN_URLS", "turn:a.example:3478, turns:a.example:5349")]);
        assert_eq!(s.source, None);
        assert!(w[0].contains("TURN_SHARED_SECRET is not"));
        let (s, w) = settings(&[("TURN_URLS", "http://nope"), ("TURN_SHARED_SECRET", "x")]);
        assert_eq!(s.source, None);
        assert_eq!(w.len(), 1);
        let (s, w) = settings(&[
            ("TURN_URLS", "turn:a.example:3478?transport=udp"),
            ("TURN_SHARED_SECRET", "x"),
            ("TURN_TTL_S", "5"),
        ]);
        assert!(matches!(s.source, Some(TurnSource::RestApi { .. })));
        assert_eq!(s.ttl_s, DEFAULT_TTL_S);
        assert!(w[0].starts_with("TURN_TTL_S"));
        let (s, _) = settings(&[
            ("CF_TURN_KEY_ID", "abc123"),
            ("CF_TURN_KEY_API_TOKEN", "tok"),
        ]);
        assert_eq!(
            s.source,
            Some(TurnSource::Cloudflare {
                key_id: "abc123".into(),
                token: Secret::new("tok".into()),
                api_base: DEFAULT_CF_API_BASE.into()
            })
        );
        // Secrets never show in Debug output or warnings.
        let (s, w) = settings(&[
            ("CF_TURN_KEY_API_TOKEN", "hunter2"),
            ("TURN_SHARED_SECRET", "swordfish"),
        ]);
        let shown = format!("{s:?} {w:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
    }

    #[test]
    fn cloudflare_answers_lose_port_53() {
        let body = br#"{"iceServers":[{"urls":["stun:stun.cloudflare.com:3478","stun:stun.cloudflare.com:53"]},{"urls":["turn:turn.cloudflare.com:3478?transport=udp","turn:turn.cloudflare.com:53?transport=udp","turns:turn.cloudflare.com:443?transport=tcp"],"username":"u","credential":"c"}]}"#;
        let c = parse_cloudflare(body, 1000, 60).unwrap();
        assert_eq!(c.ice_servers[0].urls, vec!["stun:stun.cloudflare.com:3478"]);
        assert_eq!(
            c.ice_servers[1].urls,
            vec![
                "turn:turn.cloudflare.com:3478?transport=udp",
                "turns:turn.cloudflare.com:443?transport=tcp"
            ]
        );
        assert_eq!(c.expires_at, 61_000);
        // The older single-object shape.
        let one =
            br#"{"iceServers":{"urls":["turn:t.example:3478"],"username":"u","credential":"c"}}"#;
        assert_eq!(parse_cloudflare(one, 0, 1).unwrap().ice_servers.len(), 1);
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"iceServers":[{"urls":["stun:x:53"]}]}"#,
        ] {
            assert!(matches!(
                parse_cloudflare(bad, 0, 1),
                Err(Error::TurnUpstream(_))
            ));
        }
    }
}
