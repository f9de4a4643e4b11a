//! Every setting of a deployment, read once from the worker's `[vars]` and
//! secrets: origins and quota, polling hints, abuse limits, TURN, log key.
//! A value that does not parse is a warning on the status page, never a crash.

use std::fmt;

use crate::engine::hints::PollSettings;
use crate::engine::limits::Limits;

/// What the worker does with requests that carry no `Origin` header (not a
/// browser's: tests, native apps, scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithoutOrigin {
    /// Served, as the original worker does (the default).
    Allow,
    /// Refused (401).
    Refuse,
    /// Served up to this many requests a month, counted together.
    Quota(u64),
}

/// Monthly request quota for origins not in `ALLOWED_ORIGINS` when
/// `ORIGIN_QUOTA` is not set (as in the original worker).
pub const DEFAULT_ORIGIN_QUOTA: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Origins always allowed (`ALLOWED_ORIGINS`, comma-separated).
    pub allowed_origins: Vec<String>,
    /// Requests per calendar month (UTC) for any other origin; 0 refuses them.
    pub origin_quota: u64,
    /// Requests without an `Origin` header (`WITHOUT_ORIGIN`).
    pub without_origin: WithoutOrigin,
    /// With any, only room ids signed with one of these are served
    /// (`ROOM_SECRET`, then `ROOM_SECRET_PREVIOUS` while keys roll).
    pub room_secrets: Vec<Secret>,
    /// Polling hints (`POLL_FAST_MS`, `POLL_SLOW_MS`, `POLL_IDLE_AFTER_MS`,
    /// `POLL_IDLE_MAX_MS`, `POLL_FAST_WINDOW_MS`).
    pub poll: PollSettings,
    /// Abuse limits (`MAX_*`).
    pub limits: Limits,
    /// `GET /turn` (`TURN_*`, `CF_TURN_*`; secrets inside never print).
    pub turn: TurnSettings,
    /// Key of the room tags in log lines, derived from the `LOG_KEY` secret
    /// (`None`: each isolate picks a random one). Never shown.
    pub log_key: Option<[u8; 16]>,
    /// Problems found while reading the variables, shown on the status page.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_vars(|_| None)
    }
}

impl Config {
    /// Reads the variables through `var` (name to value).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        Self::read(&var)
    }

    /// [`Config::from_vars`], in the wasm once for all its callers.
    fn read(var: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let allowed_origins: Vec<String> = var("ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let origin_quota = match var("ORIGIN_QUOTA").map(|q| q.trim().to_owned()) {
            Some(q) if !q.is_empty() => q.parse().unwrap_or_else(|_| {
                warnings.push(format!(
                    "ORIGIN_QUOTA={} is not a whole number; using {DEFAULT_ORIGIN_QUOTA}",
                    quoted(&q)
                ));
                DEFAULT_ORIGIN_QUOTA
            }),
            // With an allow-list and no quota, other origins are refused.
            _ if !allowed_origins.is_empty() => 0,
            _ => DEFAULT_ORIGIN_QUOTA,
        };
        let poll = poll_settings(var, &mut warnings);
        let d = Limits::default();
        let mut size =
            |name: &str, default: usize, max: usize| match var(name).map(|v| v.trim().to_owned()) {
                Some(v) if !v.is_empty() => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => n,
                    _ => {
                        warnings.push(format!(
                            "{name}={} is not a whole number in 1..{max}; using {default}",
                            quoted(&v)
                        ));
                        default
                    }
                },
                _ => default,
            };
        let limits = Limits {
            max_body_bytes: size("MAX_BODY_BYTES", d.max_body_bytes, 1 << 20),
            max_packages: size("MAX_PACKAGES", d.max_packages, 1024),
            max_candidates: size("MAX_CANDIDATES", d.max_candidates, 1024),
            max_package_bytes: size("MAX_PACKAGE_BYTES", d.max_package_bytes, 1 << 20),
            max_peers: size("MAX_PEERS", d.max_peers, 256),
            max_room_bytes: size("MAX_ROOM_BYTES", d.max_room_bytes, 8 << 20),
            max_live_members: size("MAX_LIVE_MEMBERS", d.max_live_members, 1024),
            resume_window_s: size("RESUME_WINDOW_S", d.resume_window_s, 600),
            socket_idle_s: size("SOCKET_IDLE_S", d.socket_idle_s, 3600),
        };
        let without_origin = without_origin(&var, &mut warnings);
        let room_secrets = ["ROOM_SECRET", "ROOM_SECRET_PREVIOUS"]
            .iter()
            .filter_map(|name| var(name).filter(|s| !s.trim().is_empty()))
            .map(|s| Secret::new(s.trim().to_owned()))
            .collect();
        let turn = TurnSettings::from_vars(var, &mut warnings);
        let log_key = var("LOG_KEY")
            .filter(|k| !k.trim().is_empty())
            .map(|k| derive_log_key(k.trim()));
        Self {
            allowed_origins,
            origin_quota,
            without_origin,
            room_secrets,
            poll,
            limits,
            turn,
            log_key,
            warnings,
        }
    }
}

/// A setting's value in quotes, for warnings, with JSON's escapes (`{:?}`
/// would bring the standard library's `Debug` escaping into the wasm).
fn quoted(value: &str) -> String {
    crate::json::to_string(value)
}

/// Turns the `LOG_KEY` secret into a 128-bit hash key.
pub fn derive_log_key(secret: &str) -> [u8; 16] {
    use std::hash::Hasher as _;
    let mut h =
        siphasher::sip128::SipHasher13::new_with_keys(0x7032_7063_662d_7273, 0x006c_6f67_2d6b_6579);
    h.write(secret.as_bytes());
    siphasher::sip128::Hasher128::finish128(&h).as_bytes()
}

/// Default lifetime of minted credentials (`TURN_TTL_S`).
pub const DEFAULT_TTL_S: u64 = 3600;
/// Default cap on credentials per signed room per minute (`TURN_MAX_PER_ROOM_PER_MINUTE`).
pub const DEFAULT_MAX_PER_ROOM_PER_MINUTE: u64 = 10;
/// Default cap on credentials per minute for the whole deployment (`TURN_MAX_PER_MINUTE`).
pub const DEFAULT_MAX_PER_MINUTE: u64 = 120;
/// Default base URL of Cloudflare's TURN API (`CF_TURN_API_BASE`).
pub const DEFAULT_CF_API_BASE: &str = "https://rtc.live.cloudflare.com";

/// A secret from `wrangler secret put`: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnSource {
    /// A TURN server with the TURN REST API (coturn `use-auth-secret`).
    RestApi { urls: Vec<String>, secret: Secret },
    /// Cloudflare's TURN service.
    Cloudflare {
        key_id: String,
        token: Secret,
        api_base: String,
    },
}

impl TurnSource {
    /// A short name for the status page and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TurnSource::RestApi { .. } => "TURN REST API (shared secret)",
            TurnSource::Cloudflare { .. } => "Cloudflare TURN",
        }
    }
}

/// The `/turn` endpoint's configuration (`[vars]` and secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnSettings {
    pub source: Option<TurnSource>,
    pub ttl_s: u64,
    pub max_per_minute: u64,
    /// With signed rooms, credentials per room per minute
    /// (`TURN_MAX_PER_ROOM_PER_MINUTE`): a room id handed to one user
    /// cannot mint for a crowd.
    pub max_per_room_per_minute: u64,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            source: None,
            ttl_s: DEFAULT_TTL_S,
            max_per_minute: DEFAULT_MAX_PER_MINUTE,
            max_per_room_per_minute: DEFAULT_MAX_PER_ROOM_PER_MINUTE,
        }
    }
}

impl TurnSettings {
    /// Reads `TURN_URLS`, `TURN_SHARED_SECRET`, `TURN_TTL_S`, `CF_TURN_KEY_ID`,
    /// `CF_TURN_KEY_API_TOKEN`, `CF_TURN_API_BASE` and `TURN_MAX_PER_MINUTE`.
    /// Problems go to `warnings` (never with a secret in them).
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> Self {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut number =
            |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| match set(name) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if range.contains(&n) => n,
                    _ => {
                        warnings.push(format!(
                            "{name}={} is not a whole number in {}..{}; using {default}",
                            quoted(&v),
                            range.start(),
                            range.end()
                        ));
                        default
                    }
                },
            };
        let ttl_s = number("TURN_TTL_S", DEFAULT_TTL_S, 60..=86_400);
        let max_per_minute = number("TURN_MAX_PER_MINUTE", DEFAULT_MAX_PER_MINUTE, 1..=100_000);
        let max_per_room_per_minute = number(
            "TURN_MAX_PER_ROOM_PER_MINUTE",
            DEFAULT_MAX_PER_ROOM_PER_MINUTE,
            1..=100_000,
        );
        let cloudflare = cloudflare_source(&set, warnings);
        let rest = rest_source(&set, warnings);
        if cloudflare.is_some() && rest.is_some() {
            warnings.push(
                "both Cloudflare TURN and TURN_URLS are configured; using Cloudflare".to_owned(),
            );
        }
        Self {
            source: cloudflare.or(rest),
            ttl_s,
            max_per_minute,
            max_per_room_per_minute,
        }
    }
}

/// The polling hints (`POLL_*`), each a number of ms in 100..3600000.
fn poll_settings(var: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> PollSettings {
    let defaults = PollSettings::default();
    let mut ms = |name: &str, default: u64| match var(name).map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => match v.parse::<u64>() {
            Ok(n) if (100..=3_600_000).contains(&n) => n,
            _ => {
                warnings.push(format!(
                    "{name}={} is not a number of ms in 100..3600000; using {default}",
                    quoted(&v)
                ));
                default
            }
        },
        _ => default,
    };
    PollSettings {
        fast_ms: ms("POLL_FAST_MS", defaults.fast_ms),
        slow_ms: ms("POLL_SLOW_MS", defaults.slow_ms),
        idle_after_ms: ms("POLL_IDLE_AFTER_MS", defaults.idle_after_ms),
        idle_max_ms: ms("POLL_IDLE_MAX_MS", defaults.idle_max_ms),
        fast_window_ms: ms("POLL_FAST_WINDOW_MS", defaults.fast_window_ms),
    }
}

/// `WITHOUT_ORIGIN`: `allow` (or unset), `refuse`, or a monthly quota. A
/// value that is none of these refuses (and warns): it was meant to restrict.
fn without_origin(
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> WithoutOrigin {
    match var("WITHOUT_ORIGIN").map(|v| v.trim().to_ascii_lowercase()) {
        None => WithoutOrigin::Allow,
        Some(v) if v.is_empty() || v == "allow" => WithoutOrigin::Allow,
        Some(v) if v == "refuse" => WithoutOrigin::Refuse,
        Some(v) => v.parse().map(WithoutOrigin::Quota).unwrap_or_else(|_| {
            warnings.push(format!(
                "WITHOUT_ORIGIN={} is not allow, refuse or a whole number; refusing them",
                quoted(&v)
            ));
            WithoutOrigin::Refuse
        }),
    }
}

/// Cloudflare's TURN service, from `CF_TURN_KEY_ID`, the secret
/// `CF_TURN_KEY_API_TOKEN` and `CF_TURN_API_BASE`.
fn cloudflare_source(
    set: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<TurnSource> {
    match (set("CF_TURN_KEY_ID"), set("CF_TURN_KEY_API_TOKEN")) {
        (Some(key_id), Some(token)) => {
            let api_base = set("CF_TURN_API_BASE")
                .unwrap_or_else(|| DEFAULT_CF_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned();
            if !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                warnings.push("CF_TURN_KEY_ID is not a TURN key id; TURN is off".to_owned());
                None
            } else if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                warnings.push("CF_TURN_API_BASE is not an http(s) URL; TURN is off".to_owned());
                None
            } else {
                Some(TurnSource::Cloudflare {
                    key_id,
                    token: Secret::new(token),
                    api_base,
                })
            }
        }
        (Some(_), None) => {
            warnings.push(
                "CF_TURN_KEY_ID is set but the secret CF_TURN_KEY_API_TOKEN is not".to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            warnings.push(
                "the secret CF_TURN_KEY_API_TOKEN is set but CF_TURN_KEY_ID is not".to_owned(),
            );
            None
        }
        (None, None) => None,
    }
}

/// A TURN server with the TURN REST API, from `TURN_URLS` and the secret
/// `TURN_SHARED_SECRET`.
fn rest_source(
    set: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<TurnSource> {
    match (set("TURN_URLS"), set("TURN_SHARED_SECRET")) {
        (Some(urls), Some(secret)) => {
            let urls: Vec<String> = urls
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect();
            if urls.is_empty() || !urls.iter().all(|u| is_turn_url(u)) {
                warnings.push(
                    "TURN_URLS must be comma-separated turn: or turns: URLs; TURN is off"
                        .to_owned(),
                );
                None
            } else {
                Some(TurnSource::RestApi {
                    urls,
                    secret: Secret::new(secret),
                })
            }
        }
        (Some(_), None) => {
            warnings.push("TURN_URLS is set but the secret TURN_SHARED_SECRET is not".to_owned());
            None
        }
        (None, Some(_)) => {
            warnings.push("the secret TURN_SHARED_SECRET is set but TURN_URLS is not".to_owned());
            None
        }
        (None, None) => None,
    }
}

/// `turn:` or `turns:` followed by a host (RFC 7065), no spaces or quotes.
fn is_turn_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b',')
    })
}
