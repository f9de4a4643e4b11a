//! What a relay member costs per hour, counted: a steady room of `n`
//! members (simple-peer's signals at each join: an offer or answer and two
//! candidates each way), then quiet for the rest of the hour, on a virtual
//! clock, over both transports with the code the worker runs:
//!
//! - **pushed**: `LiveRoom` and the WebSocket adapter (`wire::relay::socket`)
//!   as the room's Durable Object drives them, with its alarm rule
//!   (`LiveRoom::alarm_to_set`) and `SignalRelay`'s ping every 30 s;
//! - **polled on R2**: the HTTP layer over the R2 model, each member
//!   polling when the worker's hint says, as `SignalRelay` does.
//!
//! Counted: Worker requests, Durable Object requests (raw, and billed with
//! incoming WebSocket messages at 20:1), rows written (each `setAlarm` is
//! one), R2 operations, and the object's awake time, taken as each event
//! plus [`AWAKE_AFTER_EVENT_MS`] (the runtime hibernates an idle object
//! with no pending work after about that long).

use p2pcf_rs::domain::{RoomId, SessionId};
use p2pcf_rs::edge::HttpRequest;
use p2pcf_rs::host::live::{LiveRoom, RESUME_WINDOW_MS};
use p2pcf_rs::platform::{join_all, Platform};
use p2pcf_rs::testing::SimPlatform;
use p2pcf_rs::wire::relay::adapter::RelayMember;
use p2pcf_rs::wire::relay::socket::{on_alarm, on_frame, SocketRoom};
use serde_json::{json, Value};

use crate::Ours;

const HOUR_MS: u64 = 3_600_000;
/// `SignalRelay`'s ping (client/relay.js `PING_MS`).
const PING_MS: u64 = 30_000;
/// `SOCKET_IDLE_S`, the default.
const IDLE_MS: u64 = 75_000;
/// How long an object with nothing to do stays awake after an event.
pub const AWAKE_AFTER_EVENT_MS: u64 = 10_000;
/// Members join this far apart.
const JOIN_GAP_MS: u64 = 3_000;

/// Counts for one room over one hour.
#[derive(Debug, Default, Clone)]
pub struct Cost {
    pub members: usize,
    pub worker_requests: u64,
    /// Durable Object requests: fetches (upgrades, relay calls) and alarms.
    pub object_requests: u64,
    /// Incoming WebSocket messages: frames the object handles and pings the
    /// runtime answers without waking it.
    pub frames: u64,
    pub pings: u64,
    pub rows_written: u64,
    pub alarms_set: u64,
    pub awake_ms: u64,
    pub class_a: u64,
    pub class_b: u64,
    /// Messages delivered, to check the room did its work.
    pub delivered: u64,
}

impl Cost {
    /// Durable Object requests as billed: incoming WebSocket messages at 20:1.
    pub fn billed_object_requests(&self) -> u64 {
        self.object_requests + (self.frames + self.pings).div_ceil(20)
    }
}

/// Sleeps until the platform's clock reads `at` (ms), if that is ahead.
async fn wait_until(platform: &SimPlatform, at: u64) {
    let now = platform.now_ms();
    if at > now {
        platform.sleep(at - now).await;
    }
}

fn signal(kind: &str, n: u64) -> Value {
    json!({"type": kind, "sdp": "v=0 ".repeat(300), "n": n})
}

/// The pushed room: joins, then each new member offers to those before it
/// (offer + 2 candidates in one frame, then their answer + 2 candidates),
/// then an hour of quiet with pings and the room's alarms.
pub async fn pushed(n: usize) -> Cost {
    let platform = SimPlatform::new(42);
    let id = RoomId::parse("cost-room").expect("a valid room id");
    let room = SocketRoom {
        id: &id,
        platform: &platform,
        max_members: 256,
        max_frame_bytes: 64 * 1024,
    };
    let start = platform.now_ms();
    let mut live: LiveRoom<RelayMember> =
        LiveRoom::restore(None, [], [], RESUME_WINDOW_MS, start).expect("an empty room");
    let mut cost = Cost {
        members: n,
        ..Cost::default()
    };
    let mut alarm: Option<u64> = None;
    let mut awake_until = 0u64;
    let mut ids: Vec<SessionId> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    // Each event: the object is awake, writes what changed, sets its alarm.
    let settle = |cost: &mut Cost,
                  awake_until: &mut u64,
                  live: &mut LiveRoom<RelayMember>,
                  alarm: &mut Option<u64>,
                  now: u64| {
        cost.awake_ms += (now + AWAKE_AFTER_EVENT_MS).saturating_sub((*awake_until).max(now));
        *awake_until = now + AWAKE_AFTER_EVENT_MS;
        let changes = live.take_changes();
        cost.rows_written +=
            (changes.put.len() + changes.delete.len()) as u64 + u64::from(changes.head.is_some());
        if let Some(at) = live.alarm_to_set(*alarm, now, IDLE_MS) {
            *alarm = Some(at);
            cost.alarms_set += 1;
            cost.rows_written += 1;
        }
    };
    let frame = |live: &mut LiveRoom<RelayMember>, from: Option<&SessionId>, text: &str| {
        let effects = on_frame(live, &room, from, text);
        assert!(effects.close.is_none(), "{:?}", effects.close);
        let delivered = effects
            .pushes
            .iter()
            .map(|(_, f)| f.matches("\"seq\"").count() as u64)
            .sum::<u64>();
        (effects, delivered)
    };
    for i in 0..n {
        platform.sleep(JOIN_GAP_MS).await;
        // The upgrade: one Worker request, one object request (its fetch).
        cost.worker_requests += 1;
        cost.object_requests += 1;
        cost.frames += 1;
        let (effects, _) = frame(&mut live, None, &json!({"meta": {"i": i}}).to_string());
        let me = effects.became.expect("joined");
        settle(
            &mut cost,
            &mut awake_until,
            &mut live,
            &mut alarm,
            platform.now_ms(),
        );
        ids.push(me.clone());
        seqs.push(0);
        for j in 0..i {
            for (from, to, kind) in [(i, j, "offer"), (j, i, "answer")] {
                platform.sleep(20).await;
                let batch = signals(&mut seqs[from], ids[to].as_str(), kind);
                cost.frames += 1;
                let sender = ids[from].clone();
                let (_, delivered) = frame(
                    &mut live,
                    Some(&sender),
                    &json!({ "send": batch }).to_string(),
                );
                cost.delivered += delivered;
                settle(
                    &mut cost,
                    &mut awake_until,
                    &mut live,
                    &mut alarm,
                    platform.now_ms(),
                );
            }
        }
    }
    // The quiet rest of the hour: pings (answered by the runtime, the object
    // asleep) and the alarms the room set.
    let end = start + HOUR_MS;
    let mut next_ping = platform.now_ms() + PING_MS;
    loop {
        let next = alarm.map_or(next_ping, |a| a.min(next_ping));
        if next >= end {
            break;
        }
        wait_until(&platform, next).await;
        let now = platform.now_ms();
        if alarm.is_some_and(|a| a <= now) {
            alarm = None;
            cost.object_requests += 1;
            let pushes = on_alarm(&mut live, now);
            assert!(pushes.is_empty(), "nobody leaves a steady room");
            settle(&mut cost, &mut awake_until, &mut live, &mut alarm, now);
        }
        if next_ping <= now {
            cost.pings += n as u64;
            next_ping += PING_MS;
        }
    }
    assert_eq!(live.member_count(platform.now_ms()), n);
    cost.awake_ms = cost.awake_ms.min(HOUR_MS);
    cost
}

fn relay_request(body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST".to_owned(),
        url: "https://p2pcf.example.workers.dev/relay/v1".to_owned(),
        headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// A member's three signals to `to` (an offer or answer, two candidates).
fn signals(seq: &mut u64, to: &str, kind: &str) -> Vec<Value> {
    ["sdp", "candidate", "candidate"]
        .iter()
        .map(|what| {
            *seq += 1;
            let data = if *what == "sdp" {
                signal(kind, *seq)
            } else {
                json!({"candidate": "a=candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host"})
            };
            json!({"to": to, "seq": *seq, "data": data})
        })
        .collect()
}

/// One `SignalRelay` member polling until `end`: at once while it has
/// something queued or the answer says `more`, else at the worker's hint,
/// sending back the answer's `read_from`.
/// Offers to each member it sees with a smaller id, answers each offer.
/// Returns (requests, messages received).
async fn poll_member(worker: &Ours<'_>, platform: &SimPlatform, i: usize, end: u64) -> (u64, u64) {
    platform.sleep(JOIN_GAP_MS * (i as u64 + 1)).await;
    let join = json!({"room": "cost-room", "meta": {"i": i}});
    let (response, _) = worker.serve(&relay_request(&join)).await;
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    assert_eq!(response.status, 200, "{answer}");
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    let token = answer["token"].as_str().unwrap_or_default().to_owned();
    let (mut requests, mut received, mut seq) = (1u64, 0u64, 0u64);
    let mut after = serde_json::Map::new();
    let mut queue: Vec<Value> = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    let mut read_from: Option<String> = None;
    while platform.now_ms() < end {
        // At most 64 messages a request (`SignalRelay`'s MAX_BATCH).
        let send: Vec<Value> = queue.drain(..queue.len().min(64)).collect();
        let mut body =
            json!({"room": "cost-room", "id": id, "token": token, "after": after, "send": &send});
        if let Some(from) = &read_from {
            body["read_from"] = json!(from);
        }
        let (response, _) = worker.serve(&relay_request(&body)).await;
        requests += 1;
        if matches!(response.status, 429 | 503) {
            // Busy: the same batch again after Retry-After, as SignalRelay does.
            let wait_s = response
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(1);
            queue.splice(0..0, send);
            platform.sleep(wait_s * 1000).await;
            continue;
        }
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        read_from = answer["read_from"].as_str().map(str::to_owned);
        for p in answer["peers"].as_array().into_iter().flatten() {
            let peer = p["id"].as_str().unwrap_or_default().to_owned();
            if known.insert(peer.clone()) && id > peer {
                queue.extend(signals(&mut seq, &peer, "offer"));
            }
        }
        for msg in answer["messages"].as_array().into_iter().flatten() {
            let from = msg["from"].as_str().unwrap_or_default().to_owned();
            after.insert(from.clone(), msg["seq"].clone());
            received += 1;
            if msg["data"]["type"] == "offer" {
                queue.extend(signals(&mut seq, &from, "answer"));
            }
        }
        let hint = answer["hint"]["ms"].as_u64().unwrap_or(2_000);
        let soon = !queue.is_empty() || answer["more"] == json!(true);
        platform.sleep(if soon { 0 } else { hint }).await;
    }
    (requests, received)
}

/// The same room polling on R2, each member as `SignalRelay` polls.
pub async fn polled(n: usize) -> Cost {
    let platform = SimPlatform::new(42);
    let worker = Ours::new(&platform, crate::scenario::R2_LATENCY_MS);
    let end = platform.now_ms() + HOUR_MS;
    let members = (0..n).map(|i| poll_member(&worker, &platform, i, end));
    let done = join_all(members.collect()).await;
    let stats = worker.store.stats();
    Cost {
        members: n,
        worker_requests: done.iter().map(|d| d.0).sum(),
        delivered: done.iter().map(|d| d.1).sum(),
        class_a: stats.class_a,
        class_b: stats.class_b,
        ..Cost::default()
    }
}

/// The table for BENCHMARKS.md: per member-hour, rooms of 8 and 32.
pub fn table() -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime builds");
    let mut out = String::from(
        "| room | transport | Worker requests | DO requests, raw / billed | of which incoming WS messages: frames + pings | rows written (of which alarms) | object awake, a room | R2 Class A / B | signals delivered / sent, the room |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for n in [8usize, 32] {
        let (push, poll) = runtime.block_on(async { (pushed(n).await, polled(n).await) });
        let per = |x: u64| x as f64 / n as f64;
        let sent = (n * (n - 1) / 2 * 6) as u64;
        out += &format!(
            "| {n} | pushed | {:.1} | {:.1} / {:.1} | {:.1} + {:.1} | {:.1} ({:.1}) | {:.0} s | 0 / 0 | {} / {sent} |\n",
            per(push.worker_requests),
            per(push.object_requests + push.frames + push.pings),
            per(push.billed_object_requests()),
            per(push.frames),
            per(push.pings),
            per(push.rows_written),
            per(push.alarms_set),
            push.awake_ms as f64 / 1000.0,
            push.delivered,
        );
        out += &format!(
            "| {n} | polled on R2 | {:.1} | 0 / 0 | 0 | 0 | none | {:.1} / {:.1} | {} / {sent} |\n",
            per(poll.worker_requests),
            per(poll.class_a),
            per(poll.class_b),
            poll.delivered,
        );
    }
    out += "\nPer member and hour (a room's figures where said). Billed: Durable Object requests with incoming WebSocket messages at 20:1. Object awake: each event plus 10 s (hibernation); pings are answered by the runtime without waking it.\n";
    out
}
