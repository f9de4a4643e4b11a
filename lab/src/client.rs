//! A model of the stock `p2pcf` 1.3.x client's signalling behaviour.
//!
//! It follows the client's `_step` and `_handleWorkerResponse`: a 500 ms
//! step timer; a read-only first poll, then an immediate publish if the room
//! is empty; `d`+`t`+`x` on every later poll and `p` when packages changed or
//! the heartbeat is due (`x - 30 s`, so every 90 s); 1.5 s polls for 10 s
//! after the peer list changed, then 5 s; "markers set before the request",
//! so a failed write is not retried until the next change or heartbeat.
//! Peer roles: the later starter is A; B creates a package for A about 3 s
//! (ICE gathering) after discovering it; A answers once it has B's package
//! (its answer is queued when its own gathering ends, even if the pair has
//! connected by then, as the real client's `finishIce` does). WebRTC itself
//! is not simulated: a pair connects 0.5-1.5 s after A has B's package; on
//! connect both sides withdraw their packages for each other (a write);
//! a peer not connected 15 s after it was created is dropped, with its
//! packages (`CONNECT_TIMEOUT`), and not retried until the other's `t`
//! changes. Packages older than 60 s are dropped at the next write.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use crate::Server;
use p2pcf_rs::platform::Platform;
use p2pcf_rs::testing::{SimPlatform, EPOCH_MS};

const STEP_MS: u64 = 500;
const FAST_POLL_MS: u64 = 1500;
const SLOW_POLL_MS: u64 = 5000;
const FAST_DURATION_MS: u64 = 10_000;
const EXPIRY_MS: u64 = 120_000;
const HEARTBEAT_WINDOW_MS: u64 = 30_000;
const PACKAGE_MAX_AGE_MS: u64 = 60_000;
/// ICE gathering before a package is queued ("about 3 s"), ± this jitter.
const GATHER_MS: u64 = 3000;
const GATHER_JITTER_MS: u64 = 1000;
/// ICE connectivity checks once A has B's package, ± this jitter.
const CONNECT_MS: u64 = 1000;
const CONNECT_JITTER_MS: u64 = 500;
/// The stock client drops a peer not connected this long after creating it.
const CONNECT_TIMEOUT_MS: u64 = 15_000;
/// `start()` gathers network settings before the step timer runs.
const START_DELAY_MS: u64 = 1000;
const FINGERPRINT: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";

/// When a simulated client comes and goes.
#[derive(Clone, Copy, Debug)]
pub struct PeerPlan {
    /// Ms after the simulation start.
    pub join_at: u64,
    /// Ms after the simulation start; `None`: stays to the end.
    pub leave_at: Option<u64>,
    /// Leaves with a delete request (`true`) or by vanishing.
    pub sends_leave: bool,
}

/// What one pair of peers went through.
#[derive(Clone, Debug, Default)]
pub struct PairLog {
    /// When both were present (the later one's join), ms since start.
    pub both_present: u64,
    /// When A had B's package.
    pub a_got_b: Option<u64>,
    /// When the pair connected (A had B's package + ICE checks).
    pub connected: Option<u64>,
    /// When B had A's answer.
    pub b_got_a: Option<u64>,
}

/// Shared observations of all clients, in ms since the simulation start.
#[derive(Default)]
pub struct World {
    pub requests: Cell<u64>,
    pub non_200: Cell<u64>,
    pub status_503: Cell<u64>,
    /// Session -> (joined, left).
    pub lifetimes: RefCell<BTreeMap<String, (u64, Option<u64>)>>,
    /// Session -> when its first publish was acknowledged.
    pub registered: RefCell<HashMap<String, u64>>,
    /// Sessions whose last write failed (they may rightly be missing).
    pub write_failed: RefCell<HashSet<String>>,
    /// Unordered session pair -> log.
    pub pairs: RefCell<BTreeMap<(String, String), PairLog>>,
    /// (from, to, sentAt) -> when a 200 acknowledged it.
    pub acked: RefCell<BTreeMap<(String, String, u64), u64>>,
    pub received: RefCell<HashSet<(String, String, u64)>>,
    /// A poll that did not list a peer registered and alive for 15 s.
    pub missing_peer_observations: Cell<u64>,
    /// A poll that listed a peer which had left (deleted) over 2 s before.
    pub stale_peer_observations: Cell<u64>,
    /// Every request: who sent it, when, what it cost and took.
    pub log: RefCell<Vec<Sent>>,
}

/// One request as the world saw it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: u64,
    pub session: String,
    /// It carried `p` (a write, as the client sees it).
    pub write: bool,
    /// Recipients whose package it added or withdrew.
    pub touched: Vec<String>,
    pub class_a: u32,
    pub took_ms: u64,
    pub status: u16,
}

impl World {
    fn pair_key(a: &str, b: &str) -> (String, String) {
        if a < b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        }
    }

    fn has_left(&self, session: &str) -> bool {
        self.lifetimes
            .borrow()
            .get(session)
            .is_some_and(|(_, left)| left.is_some())
    }
}

fn splitmix(state: &Cell<u64>) -> u64 {
    let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(z);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A peer object (simple-peer) the client holds for a remote session.
struct Link {
    created: u64,
    /// Its `connect` event was handled (packages for it withdrawn).
    connected: bool,
}

struct Package {
    to: String,
    sent_at: u64,
    is_answer: bool,
}

pub struct Client<'w, S> {
    server: &'w S,
    world: &'w World,
    platform: &'w SimPlatform,
    room: String,
    context: String,
    session: String,
    joined_at: u64,
    t: Option<u64>,
    packages: Vec<Package>,
    version: u64,
    sent_version: Option<u64>,
    sent_first_poll: bool,
    dk: Option<String>,
    next_step: u64,
    stop_fast_at: u64,
    /// Remote session -> the peer object this client holds for it.
    links: HashMap<String, Link>,
    last_processed: HashMap<String, Value>,
    got_package_from: HashSet<String>,
    /// (due, recipient, is_answer): packages waiting for ICE gathering.
    pending: Vec<(u64, String, bool)>,
    previous_peers: Vec<String>,
    /// Recipients of the packages in the last write sent.
    last_recipients: HashSet<String>,
    /// This client's own random stream, so that every server sees the same clients.
    rng: Cell<u64>,
    /// Follows the worker's polling hints, as `followHints` (client/hints.js) makes the stock client do.
    pub follow_hints: bool,
}

impl<'w, S: Server> Client<'w, S> {
    pub fn new(
        server: &'w S,
        world: &'w World,
        platform: &'w SimPlatform,
        room: &str,
        n: usize,
        seed: u64,
    ) -> Self {
        let rng = Cell::new(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let session = format!("s{n:03}-{:08x}", splitmix(&rng) as u32);
        Self {
            server,
            world,
            platform,
            room: room.to_owned(),
            context: format!("ctx-{n}"),
            session,
            joined_at: 0,
            t: None,
            packages: Vec::new(),
            version: 0,
            sent_version: None,
            sent_first_poll: false,
            dk: None,
            next_step: 0,
            stop_fast_at: 0,
            links: HashMap::new(),
            last_processed: HashMap::new(),
            got_package_from: HashSet::new(),
            pending: Vec::new(),
            previous_peers: Vec::new(),
            last_recipients: HashSet::new(),
            rng,
            follow_hints: false,
        }
    }

    fn now(&self) -> u64 {
        self.platform.elapsed_ms()
    }

    fn d(&self) -> Value {
        json!([
            self.session,
            format!("client-{}", self.context),
            false,
            FINGERPRINT,
            EPOCH_MS + self.joined_at,
            ["203.0.113.9"]
        ])
    }

    fn package_json(&self, p: &Package) -> Value {
        let candidates = json!([
            "candidate:842163049 1 udp 1677729535 203.0.113.9 61823 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag mYqH network-cost 999",
            "candidate:1467250027 1 udp 2122260223 192.168.1.20 61823 typ host generation 0 ufrag mYqH network-id 1"
        ]);
        if p.is_answer {
            json!([
                p.to,
                self.session,
                "aUfr",
                "aPwdaPwdaPwdaPwdaPwdaP",
                FINGERPRINT,
                null,
                null,
                EPOCH_MS + p.sent_at,
                candidates
            ])
        } else {
            json!([
                p.to,
                self.session,
                null,
                null,
                null,
                "rUfragrUfrag",
                "rPwdrPwdrPwdrPwdrPwdrPwdrPwdrPwd",
                EPOCH_MS + p.sent_at,
                candidates
            ])
        }
    }

    /// Runs the client from its join to its leave.
    pub async fn run(mut self, plan: PeerPlan, end: u64) {
        self.platform.sleep_until(plan.join_at).await;
        self.joined_at = self.now();
        self.world
            .lifetimes
            .borrow_mut()
            .insert(self.session.clone(), (self.joined_at, None));
        self.stop_fast_at = self.joined_at + FAST_DURATION_MS;
        self.platform.sleep(START_DELAY_MS).await;
        let stop = plan.leave_at.unwrap_or(end).min(end);
        while self.now() < stop {
            self.tick();
            if self.now() >= self.next_step {
                self.step().await;
            }
            let next_tick = (self.now() / STEP_MS + 1) * STEP_MS;
            self.platform.sleep_until(next_tick.min(stop)).await;
        }
        if plan.leave_at.is_some_and(|l| l <= end) {
            if plan.sends_leave {
                self.leave().await;
            }
            let now = self.now();
            if let Some(life) = self.world.lifetimes.borrow_mut().get_mut(&self.session) {
                life.1 = Some(now);
            }
        }
    }

    /// Timer work between requests: queued packages become ready, closed connections go.
    fn tick(&mut self) {
        let now = self.now();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(due, _, _)| *due <= now);
        self.pending = waiting;
        for (_, to, is_answer) in ready {
            if self.links.contains_key(&to) {
                self.packages.push(Package {
                    to,
                    sent_at: now,
                    is_answer,
                });
                self.version += 1;
            }
        }
        let closed: Vec<String> = self
            .links
            .keys()
            .filter(|s| self.world.has_left(s))
            .cloned()
            .collect();
        for session in closed {
            self.remove_link(&session);
        }
        // `connect`: withdraw the packages for that peer (the real client's
        // `removeInPlace(this.packages, pkg => pkg[0] === peer.id)`).
        let connected: Vec<String> = self
            .links
            .iter()
            .filter(|(s, l)| !l.connected && self.connected_at(s).is_some_and(|c| c <= now))
            .map(|(s, _)| s.clone())
            .collect();
        for session in connected {
            if let Some(link) = self.links.get_mut(&session) {
                link.connected = true;
            }
            self.withdraw(&session);
        }
        // CONNECT_TIMEOUT: not connected in time, the peer is dropped.
        let timed_out: Vec<String> = self
            .links
            .iter()
            .filter(|(s, l)| {
                !l.connected
                    && now >= l.created + CONNECT_TIMEOUT_MS
                    && self.connected_at(s).is_none_or(|c| c > now)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for session in timed_out {
            self.remove_link(&session);
        }
    }

    fn connected_at(&self, remote: &str) -> Option<u64> {
        self.world
            .pairs
            .borrow()
            .get(&World::pair_key(&self.session, remote))
            .and_then(|l| l.connected)
    }

    fn withdraw(&mut self, session: &str) {
        let before = self.packages.len();
        self.packages.retain(|p| p.to != session);
        if self.packages.len() != before {
            self.version += 1;
        }
    }

    fn remove_link(&mut self, session: &str) {
        self.links.remove(session);
        self.got_package_from.remove(session);
        self.withdraw(session);
    }

    /// Recipients whose package was added or withdrawn since the last write sent.
    fn touched(&mut self) -> Vec<String> {
        let now: HashSet<String> = self.packages.iter().map(|p| p.to.clone()).collect();
        let before = std::mem::replace(&mut self.last_recipients, now.clone());
        now.symmetric_difference(&before).cloned().collect()
    }

    fn gather_delay(&self) -> u64 {
        GATHER_MS - GATHER_JITTER_MS + splitmix(&self.rng) % (2 * GATHER_JITTER_MS + 1)
    }

    async fn send(&self, body: &Value, leave: bool, touched: Vec<String>) -> (u16, Value) {
        self.world.requests.set(self.world.requests.get() + 1);
        let started = self.now();
        let answer = self.server.call(body, leave).await;
        let (status, json) = (answer.status, answer.json);
        self.world.log.borrow_mut().push(Sent {
            at: started,
            session: self.session.clone(),
            write: body.get("p").is_some(),
            touched,
            class_a: answer.class_a,
            took_ms: self.now() - started,
            status,
        });
        if status != 200 {
            self.world.non_200.set(self.world.non_200.get() + 1);
            if status == 503 {
                self.world.status_503.set(self.world.status_503.get() + 1);
            }
        }
        (status, json)
    }

    /// Records a write's outcome: registration and acknowledged packages.
    fn record_write(&mut self, status: u16, json: &Value, sent: &[(String, u64)]) {
        let now = self.now();
        if status != 200 {
            self.world
                .write_failed
                .borrow_mut()
                .insert(self.session.clone());
            return;
        }
        self.world.write_failed.borrow_mut().remove(&self.session);
        if let Some(dk) = json["dk"].as_str() {
            self.dk = Some(dk.to_owned());
            self.world
                .registered
                .borrow_mut()
                .entry(self.session.clone())
                .or_insert(now);
        }
        let mut acked = self.world.acked.borrow_mut();
        for (to, sent_at) in sent {
            acked
                .entry((self.session.clone(), to.clone(), *sent_at))
                .or_insert(now);
        }
    }

    async fn step(&mut self) {
        let now = self.now();
        let expired = self
            .t
            .is_none_or(|t| now - t >= EXPIRY_MS - HEARTBEAT_WINDOW_MS);
        let changed = self.sent_version != Some(self.version);
        let mut include = false;
        if expired || changed {
            self.t = Some(now);
            let before = self.packages.len();
            self.packages
                .retain(|p| now - p.sent_at <= PACKAGE_MAX_AGE_MS);
            if self.packages.len() != before {
                self.version += 1;
            }
            include = true;
        }
        let t = EPOCH_MS + self.t.unwrap_or(now);
        let mut body = json!({"r": self.room, "k": self.context});
        let mut sent = Vec::new();
        if self.sent_first_poll {
            body["d"] = self.d();
            body["t"] = json!(t);
            body["x"] = json!(EXPIRY_MS);
            if include {
                body["p"] =
                    Value::Array(self.packages.iter().map(|p| self.package_json(p)).collect());
                sent = self
                    .packages
                    .iter()
                    .map(|p| (p.to.clone(), p.sent_at))
                    .collect();
                self.sent_version = Some(self.version);
            }
        }
        let touched = if body.get("p").is_some() {
            self.touched()
        } else {
            Vec::new()
        };
        let (status, json) = self.send(&body, false, touched).await;
        if body.get("p").is_some() {
            self.record_write(status, &json, &sent);
        }
        if status != 200 || !json["ps"].is_array() {
            self.next_step = now + SLOW_POLL_MS;
            return;
        }
        let mut hint = json["hint"]["ms"].as_u64();
        if !self.sent_first_poll && json["ps"].as_array().is_some_and(Vec::is_empty) {
            body["d"] = self.d();
            body["t"] = json!(t);
            body["x"] = json!(EXPIRY_MS);
            body["p"] = Value::Array(self.packages.iter().map(|p| self.package_json(p)).collect());
            self.sent_version = Some(self.version);
            let touched = self.touched();
            let (status, publish) = self.send(&body, false, touched).await;
            self.record_write(status, &publish, &[]);
            hint = publish["hint"]["ms"].as_u64().or(hint);
        }
        self.sent_first_poll = true;
        let peers_changed = self.handle_response(&json);
        if peers_changed {
            self.stop_fast_at = now + FAST_DURATION_MS;
        }
        self.next_step = now
            + if now < self.stop_fast_at {
                FAST_POLL_MS
            } else {
                SLOW_POLL_MS
            };
        // What followHints (client/hints.js) does after the step: the hinted delay from the response.
        if let Some(ms) = hint.filter(|_| self.follow_hints) {
            self.next_step = self.now() + ms;
        }
    }

    /// The client's `_handleWorkerResponse`; returns whether the peer list changed.
    fn handle_response(&mut self, json: &Value) -> bool {
        let now = self.now();
        let empty = Vec::new();
        let ps = json["ps"].as_array().unwrap_or(&empty);
        let pk = json["pk"].as_array().unwrap_or(&empty);
        for p in pk {
            if let (Some(from), Some(sent_at)) = (p[1].as_str(), p[7].as_u64()) {
                self.world.received.borrow_mut().insert((
                    from.to_owned(),
                    self.session.clone(),
                    sent_at - EPOCH_MS,
                ));
            }
        }
        self.observe_membership(ps, now);

        for remote in ps {
            let (Some(rs), Some(rjoined)) = (remote[0].as_str(), remote[4].as_u64()) else {
                continue;
            };
            let rt = remote[6].clone();
            if self.last_processed.get(rs) == Some(&rt) {
                continue;
            }
            let local_joined = EPOCH_MS + self.joined_at;
            let is_a = if local_joined == rjoined {
                self.session.as_str() > rs
            } else {
                local_joined > rjoined
            };
            let remote_package = pk.iter().find(|p| p[1].as_str() == Some(rs));
            if is_a {
                if self.links.contains_key(rs) || remote_package.is_none() {
                    continue;
                }
                self.last_processed.insert(rs.to_owned(), rt);
                if !self.got_package_from.insert(rs.to_owned()) {
                    continue;
                }
                self.links.insert(
                    rs.to_owned(),
                    Link {
                        created: now,
                        connected: false,
                    },
                );
                let connect = now + CONNECT_MS - CONNECT_JITTER_MS
                    + splitmix(&self.rng) % (2 * CONNECT_JITTER_MS + 1);
                self.log_pair(rs, |log| {
                    log.a_got_b = log.a_got_b.or(Some(now));
                    log.connected = log.connected.or(Some(connect));
                });
                let due = now + self.gather_delay();
                self.pending.push((due, rs.to_owned(), true));
            } else {
                if !self.links.contains_key(rs) {
                    self.last_processed.insert(rs.to_owned(), rt);
                    self.links.insert(
                        rs.to_owned(),
                        Link {
                            created: now,
                            connected: false,
                        },
                    );
                    let due = now + self.gather_delay();
                    self.pending.push((due, rs.to_owned(), false));
                }
                if remote_package.is_some() && self.got_package_from.insert(rs.to_owned()) {
                    self.log_pair(rs, |log| log.b_got_a = log.b_got_a.or(Some(now)));
                }
            }
        }

        // Unconnected peers no longer listed are dropped (connected = A has B's package).
        let listed: HashSet<&str> = ps.iter().filter_map(|p| p[0].as_str()).collect();
        let unlisted: Vec<String> = self
            .links
            .keys()
            .filter(|s| !listed.contains(s.as_str()) && !self.is_connected(s))
            .cloned()
            .collect();
        for s in unlisted {
            self.remove_link(&s);
        }

        let mut current: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
        current.sort();
        let changed = current != self.previous_peers;
        self.previous_peers = current;
        changed
    }

    fn is_connected(&self, remote: &str) -> bool {
        self.links.get(remote).is_some_and(|l| l.connected)
    }

    fn log_pair(&self, remote: &str, f: impl FnOnce(&mut PairLog)) {
        let lifetimes = self.world.lifetimes.borrow();
        let joined = |s: &str| lifetimes.get(s).map_or(0, |l| l.0);
        let both = joined(&self.session).max(joined(remote));
        let mut pairs = self.world.pairs.borrow_mut();
        let log = pairs
            .entry(World::pair_key(&self.session, remote))
            .or_insert_with(|| PairLog {
                both_present: both,
                ..PairLog::default()
            });
        f(log);
    }

    /// Checks the listed peers against who is really there.
    fn observe_membership(&self, ps: &[Value], now: u64) {
        if !self.world.registered.borrow().contains_key(&self.session) {
            return;
        }
        let listed: HashSet<&str> = ps.iter().filter_map(|p| p[0].as_str()).collect();
        let lifetimes = self.world.lifetimes.borrow();
        let registered = self.world.registered.borrow();
        let failed = self.world.write_failed.borrow();
        for (session, (_, left)) in lifetimes.iter() {
            if *session == self.session {
                continue;
            }
            match left {
                None => {
                    let settled = registered.get(session).is_some_and(|r| now >= r + 15_000);
                    if settled && !failed.contains(session) && !listed.contains(session.as_str()) {
                        self.world
                            .missing_peer_observations
                            .set(self.world.missing_peer_observations.get() + 1);
                    }
                }
                Some(l) => {
                    // Deleted peers must be gone; vanished ones until their entry expires.
                    if now > l + EXPIRY_MS + 2000 && listed.contains(session.as_str()) {
                        self.world
                            .stale_peer_observations
                            .set(self.world.stale_peer_observations.get() + 1);
                    }
                }
            }
        }
    }

    async fn leave(&mut self) {
        let Some(dk) = self.dk.clone() else {
            return;
        };
        let body = json!({"r": self.room, "k": self.context, "d": self.d(), "t": EPOCH_MS + self.now(), "x": EXPIRY_MS, "dk": dk});
        self.send(&body, true, Vec::new()).await;
    }
}
