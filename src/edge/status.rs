//! The human-readable status page served on `GET`: is the R2 bucket bound
//! and answering (checked with a real read), how to fix it if not, how to
//! use this deployment, and the effective configuration. Anyone can open
//! it, so it shows no secrets, no allowed origins and no raw R2 errors, and
//! its R2 read is cached per isolate (see `http::PROBE_EVERY_MS`).

use crate::config::{Config, WithoutOrigin};
use crate::engine::room::JOIN_WINDOW_MS;
use crate::platform::SocketObjects;
use crate::wire::p2pcf::parse::MAX_TTL_MS;

/// The key read to prove the bucket answers. It never exists; a `null`
/// answer is success.
pub const PROBE_KEY: &str = "status/probe";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketState {
    /// The binding exists and a read succeeded.
    Working,
    /// No `BUCKET` binding in this deployment.
    Missing,
    /// The binding exists but R2 failed the read (the kind of failure only).
    Failing(&'static str),
}

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style sheet.
const STYLE: &str = r#"<style>
:root { color-scheme: light; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 44rem; margin: 2.5rem auto; padding: 0 1.2rem; color: #1d2125; background: #fafbfc; }
header { display: flex; align-items: center; gap: .8rem; }
h1 { font-size: 1.45rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.8rem 0 .5rem; color: #44505c; }
.badge { font-size: .8rem; font-weight: 600; padding: .15rem .6rem; border-radius: 1rem; color: #fff; }
.badge.ok { background: #1a7f37; } .badge.bad { background: #c2262d; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: .6rem; padding: 1rem 1.2rem; margin-top: 1rem; }
.card.ok { border-left: .3rem solid #1a7f37; } .card.bad { border-left: .3rem solid #c2262d; }
.headline { font-weight: 600; margin: 0 0 .3rem; }
.warn { color: #8a5300; background: #fff8e5; border: 1px solid #f0d58c; border-radius: .4rem; padding: .4rem .7rem; }
pre { background: #f3f5f7; border-radius: .4rem; padding: .7rem .9rem; overflow-x: auto; font-size: .85rem; }
code { background: #f3f5f7; padding: 0 .25rem; border-radius: .2rem; font-size: .9em; }
pre code { background: none; padding: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem; margin: 0; }
dt { color: #5a6570; } dd { margin: 0; }
footer { margin-top: 2rem; color: #6a737d; font-size: .85rem; }
button { font: inherit; font-weight: 600; padding: .4rem 1rem; border-radius: .4rem; border: 1px solid #1a7f37; background: #1a7f37; color: #fff; cursor: pointer; }
button:disabled { opacity: .5; cursor: default; }
#self-test-steps li { margin: .25rem 0; }
#self-test-steps li::marker { content: "\25CB  "; color: #8a949e; }
#self-test-steps li[data-state=running]::marker { content: "\25D4  "; color: #0969da; }
#self-test-steps li[data-state=ok]::marker { content: "\2714  "; color: #1a7f37; }
#self-test-steps li[data-state=failed]::marker { content: "\2718  "; color: #c2262d; }
#self-test-steps li[data-state=skipped]::marker { content: "\2013  "; color: #8a949e; }
#self-test-steps .time { color: #5a6570; font-size: .85rem; }
#self-test-steps .detail { color: #5a6570; font-size: .9rem; }
#self-test-steps li[data-state=failed] .detail { color: #c2262d; }
#self-test-result[data-result=passed] { color: #1a7f37; font-weight: 600; }
#self-test-result[data-result=failed] { color: #c2262d; font-weight: 600; }
</style>
"#;

/// The self-test's card: its button and step list, filled in by
/// `/self-test.js` (a static asset).
const SELF_TEST: &str = r#"<h2>Self-test</h2>
<div class="card" id="self-test">
<p>Runs two p2pcf clients in this page that signal through this worker, connect
to each other and swap a message, then leave. It uses a room of its own
(<code id="self-test-room">self-test-&hellip;</code>), about 25 requests and a few R2 writes,
and counts against this deployment's origin rules and limits like any page.
With TURN set up, it also gets a relay allocated on your TURN server.</p>
<p><button id="self-test-run" type="button" disabled>Run the self-test</button></p>
<p id="self-test-result" data-result="idle">Loading the self-test&hellip;</p>
<ol id="self-test-steps"></ol>
</div>
<script type="module" src="/self-test.js" onerror="document.getElementById('self-test-result').textContent='The self-test script (/self-test.js, a static asset) did not load: deploy with the [assets] section of wrangler.toml.'"></script>
"#;

fn seconds(ms: u64) -> String {
    if ms >= 120_000 && ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        // Integer arithmetic: float formatting would add ~12 KB to the wasm.
        let tenths = (ms + 50) / 100;
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

/// The bucket's card: CSS class, badge, headline and what to do.
fn bucket_card(state: &BucketState) -> (&'static str, &'static str, String, String) {
    match state {
        BucketState::Working => (
            "ok",
            "Ready",
            "R2 bucket is configured and answering. Ready to serve.".to_owned(),
            "A read from the bucket just succeeded.".to_owned(),
        ),
        BucketState::Missing => (
            "bad",
            "Not configured",
            "No R2 bucket is bound to this worker.".to_owned(),
            "Create a bucket (<code>npx wrangler r2 bucket create p2pcf</code>), bind it as \
             <code>BUCKET</code> in <code>wrangler.toml</code> (<code>[[r2_buckets]]</code> with \
             <code>binding = \"BUCKET\"</code>), then deploy again. INSTALL.md walks through it."
                .to_owned(),
        ),
        BucketState::Failing(reason) => (
            "bad",
            "Bucket failing",
            "The R2 bucket is bound but a read failed.".to_owned(),
            format!(
                "{}. Check that the bucket named in <code>wrangler.toml</code> exists in \
                 this account; <code>npx wrangler tail</code> shows the error.",
                escape(reason)
            ),
        ),
    }
}

/// The TURN line: off, or its source, lifetime, cap and how the last call went.
fn turn_line(config: &Config, turn_last: Option<Result<(), &str>>) -> String {
    match &config.turn.source {
        None => "off (<code>GET /turn</code> answers 404; INSTALL.md shows how to turn it on)"
            .to_owned(),
        Some(source) => format!(
            "{}: credentials for {}, at most {} a minute; last call: {}",
            source.kind(),
            seconds(config.turn.ttl_s * 1000),
            config.turn.max_per_minute,
            match turn_last {
                None => "none yet (in this isolate)".to_owned(),
                Some(Ok(())) => "worked".to_owned(),
                Some(Err(why)) => format!("failed ({})", escape(why)),
            }
        ),
    }
}

/// Who may use the deployment: listed origins, other origins, requests
/// without an `Origin`, which room ids.
fn access_lines(config: &Config) -> (String, String, String, &'static str) {
    // The list itself is the owner's business (it is in wrangler.toml).
    let origins = match config.allowed_origins.len() {
        0 => "none listed".to_owned(),
        1 => "1 origin listed".to_owned(),
        n => format!("{n} origins listed"),
    };
    let quota = match (config.origin_quota, config.allowed_origins.is_empty()) {
        (0, _) => "refused (401)".to_owned(),
        (q, true) => format!("{q} requests per month for each origin"),
        (q, false) => format!("{q} requests per month for each other origin"),
    };
    let without_origin = match config.without_origin {
        WithoutOrigin::Allow => "served, as by the original worker".to_owned(),
        WithoutOrigin::Refuse => "refused (401)".to_owned(),
        WithoutOrigin::Quota(q) => format!("{q} requests per month, counted together"),
    };
    let rooms = match config.room_secrets.len() {
        0 => "any room id",
        1 => "signed room ids only (<code>ROOM_SECRET</code>)",
        _ => "signed room ids only (<code>ROOM_SECRET</code>, and <code>ROOM_SECRET_PREVIOUS</code> while keys roll)",
    };
    (origins, quota, without_origin, rooms)
}

/// Which host serves relay rooms.
fn relay_line(config: &Config, room_objects: bool) -> String {
    if room_objects {
        format!(
            "pushed over WebSockets, one Durable Object per room (<code>RELAY_ROOMS</code>), \
             at most {} members; HTTP polling reaches the same rooms",
            config.limits.max_live_members
        )
    } else {
        "in R2, HTTP polling only (no <code>RELAY_ROOMS</code> binding: WebSocket upgrades get 501)"
            .to_owned()
    }
}

/// Which other clients are served, and where.
fn sockets_line(objects: SocketObjects) -> String {
    let y_webrtc = if objects.y_webrtc {
        "y-webrtc at <code>/y-webrtc/&lt;namespace&gt;</code>"
    } else {
        "no y-webrtc (no <code>TOPIC_ROOMS</code> binding)"
    };
    let peerjs = if objects.peerjs {
        "PeerJS at <code>path: \"/peerjs\"</code>"
    } else {
        "no PeerJS (no <code>PEER_ROOMS</code> binding)"
    };
    format!("{y_webrtc}; {peerjs}")
}

/// What the page shows besides the bucket and the configuration.
pub struct Page<'a> {
    /// Shown in the footer, e.g. the crate version.
    pub version: &'a str,
    /// This worker's address (for the usage snippet).
    pub url: &'a str,
    /// How the last call to the TURN source went in this isolate.
    pub turn_last: Option<Result<(), &'a str>>,
    /// With signed rooms, the room the worker signed for the self-test.
    pub self_test_room: Option<&'a str>,
    /// Relay rooms live on Durable Objects (`RELAY_ROOMS`), pushed.
    pub room_objects: bool,
    /// Which of y-webrtc's and PeerJS's objects are bound.
    pub socket_objects: SocketObjects,
}

/// Renders the page.
pub fn render(state: &BucketState, config: &Config, page: &Page<'_>) -> String {
    let Page {
        version,
        url,
        turn_last,
        self_test_room,
        room_objects,
        socket_objects,
    } = *page;
    let relay = relay_line(config, room_objects);
    let sockets = sockets_line(socket_objects);
    let (class, badge, headline, detail) = bucket_card(state);
    let warnings: String = config
        .warnings
        .iter()
        .map(|w| format!("<p class=\"warn\">&#9888; {}</p>", escape(w)))
        .collect();
    let turn = turn_line(config, turn_last);
    let (origins, quota, without_origin, rooms) = access_lines(config);
    let room_meta = self_test_room.map_or_else(String::new, |room| {
        format!(
            "\n<meta name=\"p2pcf-self-test-room\" content=\"{}\">",
            escape(room)
        )
    });
    let poll = &config.poll;
    let url = escape(url);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>P2PCF signalling worker: {badge}</title>{room_meta}
{STYLE}</head>
<body>
<header><h1>P2PCF signalling worker</h1><span class="badge {class}" id="badge">{badge}</span></header>
<div class="card {class}">
<p class="headline" id="bucket">{headline}</p>
<p>{detail}</p>
</div>
{warnings}
<h2>Use it</h2>
<pre><code>import P2PCF from 'p2pcf'
const p2pcf = new P2PCF('client-id', 'room-id', {{ workerUrl: '{url}' }})
p2pcf.start()</code></pre>
{SELF_TEST}<h2>Configuration</h2>
<div class="card">
<dl id="config">
<dt>Allowed origins</dt><dd>{origins}</dd>
<dt>Other origins</dt><dd>{quota}</dd>
<dt>Without Origin</dt><dd>{without_origin}</dd>
<dt>Rooms</dt><dd id="rooms">{rooms}</dd>
<dt>Poll hints</dt><dd>fast {fast}, slow {slow}, idle after {idle_after} alone, up to {idle_max}</dd>
<dt>Join window</dt><dd>{join_window}</dd>
<dt>Entry lifetime</dt><dd>as the client asks, at most {max_ttl}</dd>
<dt>Request body</dt><dd>at most {body_kib} KiB, {max_packages} packages of {package_kib} KiB</dd>
<dt>Room size</dt><dd>at most {max_peers} peers</dd>
<dt>Relay rooms</dt><dd id="relay">{relay}</dd>
<dt>y-webrtc, PeerJS</dt><dd id="sockets">{sockets}</dd>
<dt>TURN</dt><dd id="turn">{turn}</dd>
</dl>
</div>
<footer>p2pcf-rs {version}</footer>
</body>
</html>
"#,
        version = escape(version),
        fast = seconds(poll.fast_ms),
        slow = seconds(poll.slow_ms),
        idle_after = seconds(poll.idle_after_ms),
        idle_max = seconds(poll.idle_max_ms),
        join_window = seconds(JOIN_WINDOW_MS),
        max_ttl = seconds(MAX_TTL_MS),
        body_kib = config.limits.max_body_bytes / 1024,
        max_packages = config.limits.max_packages,
        package_kib = config.limits.max_package_bytes / 1024,
        max_peers = config.limits.max_peers,
    )
}
