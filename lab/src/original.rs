//! A model of the original JavaScript worker's R2 access pattern (the one in
//! the `p2pcf` npm package), for side-by-side cost figures.
//!
//! Per poll: GET `next_vacuum`, GET `max_index`, one GET per slot
//! `0..=max_index`. A write (`d`+`p` with a new `t`) PUTs the context's slot
//! (reusing its slot, else the first empty one, else a new one at the end)
//! and PUTs `max_index` when it grew; writes are unconditional and
//! fire-and-forget, so a 429 or a racing writer silently loses them. When
//! `next_vacuum` is due, a vacuum runs 0-10 s later: GET `next_vacuum`, and if
//! still due PUT it (+30 s), LIST the room and DELETE expired slots. Expired
//! entries are returned until a vacuum removes them. Leave: GET `max_index`
//! and the slots, DELETE the slot, PUT `max_index` if it was the last.
//! The origin quota is left out: the simulated app's origin is allowed, which
//! skips its GET in both workers.

use std::cell::RefCell;

use serde_json::{json, Value};

use crate::{Answer, Server};
use p2pcf_rs::platform::Platform;
use p2pcf_rs::store::memory::{MemoryStore, Stats};
use p2pcf_rs::store::Store;
use p2pcf_rs::testing::SimPlatform;

const VACUUM_INTERVAL_MS: u64 = 30_000;
const VACUUM_DELAY_MAX_MS: u64 = 10_000;
const MAX_TTL_MS: u64 = 15 * 60 * 1000;

pub struct Original<'a> {
    pub store: MemoryStore<&'a SimPlatform>,
    platform: &'a SimPlatform,
    /// Vacuums scheduled (`waitUntil` + `setTimeout`): (fire at, room).
    vacuums: RefCell<Vec<(u64, String)>>,
}

/// A stored slot: the entry `[...d, t, p, k, dk]` and its `expireAt`.
fn slot_body(entry: &Value, expire_at: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"entry": entry, "expireAt": expire_at})).unwrap_or_default()
}

impl<'a> Original<'a> {
    pub fn new(platform: &'a SimPlatform, latency_ms: u64) -> Self {
        Self {
            store: MemoryStore::new(platform, latency_ms),
            platform,
            vacuums: RefCell::default(),
        }
    }

    async fn get_json(&self, key: &str) -> Option<Value> {
        let object = self.store.get(key).await.ok()??;
        serde_json::from_slice(&object.body).ok()
    }

    /// `lookupEntries`: max_index, then every slot up to it.
    async fn entries(&self, room: &str) -> (Vec<Option<Value>>, i64) {
        let max_index = self
            .get_json(&format!("rooms/{room}/max_index"))
            .await
            .and_then(|v| v.as_i64())
            .unwrap_or(-1);
        let mut entries = Vec::new();
        for i in 0..=max_index {
            let slot = self.get_json(&format!("rooms/{room}/entries:{i}")).await;
            entries.push(slot.map(|s| s["entry"].clone()));
        }
        (entries, max_index)
    }

    /// Runs the vacuums whose delay has passed (they run between requests).
    async fn run_due_vacuums(&self) {
        let now = self.platform.now_ms();
        let due: Vec<(u64, String)> = {
            let mut v = self.vacuums.borrow_mut();
            let (due, later): (Vec<_>, Vec<_>) = v.drain(..).partition(|(at, _)| *at <= now);
            *v = later;
            due
        };
        for (_, room) in due {
            let next = self
                .get_json(&format!("rooms/{room}/next_vacuum"))
                .await
                .and_then(|v| v.as_u64());
            let now = self.platform.now_ms();
            if next.is_some_and(|n| now <= n) {
                continue;
            }
            let _ = self
                .store
                .put_unconditional(
                    &format!("rooms/{room}/next_vacuum"),
                    (now + VACUUM_INTERVAL_MS).to_string().into_bytes(),
                )
                .await;
            for (key, body) in self.store.list(&format!("rooms/{room}/")).await {
                let expire_at = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["expireAt"].as_u64());
                if expire_at.is_some_and(|e| now >= e) {
                    self.store.delete(&key).await;
                }
            }
        }
    }

    async fn poll(&self, body: &Value) -> (u16, Value, u32) {
        let mut puts = 0;
        let room = body["r"].as_str().unwrap_or_default().to_owned();
        let k = body["k"].clone();
        let now = self.platform.now_ms();
        let next_vacuum = self
            .get_json(&format!("rooms/{room}/next_vacuum"))
            .await
            .and_then(|v| v.as_u64());
        let (mut entries, max_index) = self.entries(&room).await;
        let mut dk = None;
        if body.get("d").is_some() && body.get("p").is_some() {
            let t = body["t"].clone();
            let existing = entries.iter().enumerate().find_map(|(i, e)| {
                e.as_ref()
                    .filter(|e| e[e.as_array().map_or(0, Vec::len) - 2] == k)
                    .map(|e| (i, e.clone()))
            });
            let key = existing.as_ref().map_or_else(
                || format!("{:024x}", u128::from(self.platform.next_u64()) << 32),
                |(_, e)| {
                    e[e.as_array().map_or(0, Vec::len) - 1]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                },
            );
            dk = Some(key.clone());
            let unchanged = existing
                .as_ref()
                .is_some_and(|(_, e)| e[e.as_array().map_or(0, Vec::len) - 4] == t);
            if !unchanged {
                let mut entry = body["d"].as_array().cloned().unwrap_or_default();
                entry.extend([t, body["p"].clone(), k.clone(), json!(key)]);
                let entry = Value::Array(entry);
                let ttl = body["x"].as_u64().unwrap_or(MAX_TTL_MS).min(MAX_TTL_MS);
                let index = match existing {
                    Some((i, _)) => i,
                    None => entries
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(entries.len()),
                };
                if index == entries.len() {
                    entries.push(None);
                }
                entries[index] = Some(entry.clone());
                puts += 1;
                let _ = self
                    .store
                    .put_unconditional(
                        &format!("rooms/{room}/entries:{index}"),
                        slot_body(&entry, now + ttl),
                    )
                    .await;
                let highest = entries
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(-1, |i| i as i64);
                if highest > max_index {
                    puts += 1;
                    let _ = self
                        .store
                        .put_unconditional(
                            &format!("rooms/{room}/max_index"),
                            highest.to_string().into_bytes(),
                        )
                        .await;
                }
            }
        }
        let session = body["d"][0].clone();
        let mut ps = Vec::new();
        let mut pk = Vec::new();
        for entry in entries.iter().flatten() {
            let n = entry.as_array().map_or(0, Vec::len);
            if n < 4 || entry[n - 2] == k {
                continue;
            }
            ps.push(Value::Array(
                entry
                    .as_array()
                    .map(|a| a[..n - 3].to_vec())
                    .unwrap_or_default(),
            ));
            if !session.is_null() {
                for p in entry[n - 3].as_array().into_iter().flatten() {
                    if p[0] == session {
                        pk.push(p.clone());
                    }
                }
            }
        }
        if next_vacuum.is_none_or(|n| now > n) {
            let at = now + self.platform.next_u64() % VACUUM_DELAY_MAX_MS;
            self.vacuums.borrow_mut().push((at, room));
        }
        let mut response = json!({"ps": ps, "pk": pk});
        if let Some(dk) = dk {
            response["dk"] = json!(dk);
        }
        (200, response, puts)
    }

    async fn leave(&self, body: &Value) -> (u16, Value) {
        let room = body["r"].as_str().unwrap_or_default().to_owned();
        let (entries, max_index) = self.entries(&room).await;
        for (i, entry) in entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            let n = entry.as_array().map_or(0, Vec::len);
            if n >= 4
                && entry[n - 2] == body["k"]
                && entry[0] == body["d"][0]
                && entry[n - 1] == body["dk"]
            {
                self.store
                    .delete(&format!("rooms/{room}/entries:{i}"))
                    .await;
                if max_index == i as i64 {
                    let _ = self
                        .store
                        .put_unconditional(
                            &format!("rooms/{room}/max_index"),
                            (i as i64 - 1).to_string().into_bytes(),
                        )
                        .await;
                }
                return (200, json!({}));
            }
        }
        (404, Value::Null)
    }
}

impl Server for Original<'_> {
    async fn call(&self, body: &Value, leave: bool) -> Answer {
        self.run_due_vacuums().await;
        let (status, json, class_a) = if leave {
            let (status, json) = self.leave(body).await;
            (status, json, 0)
        } else {
            self.poll(body).await
        };
        Answer {
            status,
            json,
            class_a,
        }
    }

    fn stats(&self) -> Stats {
        self.store.stats()
    }

    fn name(&self) -> &'static str {
        "original"
    }
}
