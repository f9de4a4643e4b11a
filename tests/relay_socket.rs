//! The relay over a WebSocket (`wire::relay::socket` on the push host), as
//! the Durable Object glue drives it, on a virtual clock: the first frame
//! joins or resumes, messages are pushed and acked, joins and leaves are
//! pushed, refusals keep the socket open, protocol breaks close it with
//! `4000 + status`, and a dropped socket comes back with nothing lost.

use std::collections::BTreeMap;
use std::time::Duration;

use p2pcf_rs::domain::{RoomId, SessionId};
use p2pcf_rs::host::live::{LiveRoom, RESUME_WINDOW_MS};
use p2pcf_rs::platform::Platform;
use p2pcf_rs::testing::SimPlatform;
use p2pcf_rs::wire::relay::adapter::RelayMember;
use p2pcf_rs::wire::relay::object;
use p2pcf_rs::wire::relay::socket::{on_alarm, on_close, on_frame, Effects, SocketRoom};
use serde_json::{json, Value};

/// A room's object and the sockets of its clients, by name.
struct Object {
    live: LiveRoom<RelayMember>,
    platform: SimPlatform,
    room: RoomId,
    /// Client name -> the member its socket belongs to.
    sockets: BTreeMap<&'static str, Option<SessionId>>,
    /// Frames each client received, in order.
    inbox: BTreeMap<&'static str, Vec<String>>,
    closed: BTreeMap<&'static str, (u16, String)>,
}

impl Object {
    fn new() -> Self {
        let platform = SimPlatform::new(7);
        let live = LiveRoom::restore(None, [], [], RESUME_WINDOW_MS, platform.now_ms()).unwrap();
        Self {
            live,
            platform,
            room: RoomId::parse("socket-room").unwrap(),
            sockets: BTreeMap::new(),
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
        }
    }

    fn connect(&mut self, name: &'static str) {
        self.sockets.insert(name, None);
        self.closed.remove(name);
    }

    fn apply(&mut self, name: &'static str, effects: Effects) {
        self.inbox.entry(name).or_default().extend(effects.reply);
        for (to, frame) in effects.pushes {
            let client = self.sockets.iter().find(|(_, m)| m.as_ref() == Some(&to));
            let client = *client.expect("pushed to a connected member").0;
            self.inbox.entry(client).or_default().push(frame);
        }
        if let Some(id) = effects.became {
            self.sockets.insert(name, Some(id));
        }
        if let Some(close) = effects.close {
            self.sockets.remove(name);
            self.closed.insert(name, close);
        }
    }

    fn frame(&mut self, name: &'static str, frame: &str) {
        let room = SocketRoom {
            id: &self.room,
            platform: &self.platform,
            max_members: 256,
            max_frame_bytes: 64 * 1024,
        };
        let member = self.sockets[name].clone();
        let effects = on_frame(&mut self.live, &room, member.as_ref(), frame);
        self.apply(name, effects);
    }

    fn send(&mut self, name: &'static str, frame: Value) {
        self.frame(name, &frame.to_string());
    }

    /// The socket closes with `code` (from the client's side).
    fn close(&mut self, name: &'static str, code: u16) {
        let member = self.sockets.remove(name).flatten().unwrap();
        let pushes = on_close(&mut self.live, &member, code, self.platform.now_ms());
        self.deliver(pushes);
    }

    /// The room's alarm fires.
    fn alarm(&mut self) {
        let pushes = on_alarm(&mut self.live, self.platform.now_ms());
        self.deliver(pushes);
    }

    /// Frames for members, each to its socket.
    fn deliver(&mut self, pushes: Vec<(SessionId, String)>) {
        self.apply(
            "nobody",
            Effects {
                pushes,
                ..Effects::default()
            },
        );
    }

    /// Takes the frames `name` received since the last call, as JSON.
    fn take(&mut self, name: &'static str) -> Vec<Value> {
        let frames = std::mem::take(self.inbox.entry(name).or_default());
        frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap_or(json!(f)))
            .collect()
    }

    fn id(&self, name: &str) -> String {
        self.sockets[name].as_ref().unwrap().to_string()
    }
}

fn joined(o: &mut Object, name: &'static str) -> Value {
    o.connect(name);
    o.send(name, json!({"meta": {"name": name}}));
    o.take(name).remove(0)
}

#[tokio::test(start_paused = true)]
async fn members_join_send_and_leave_with_everything_pushed() {
    let mut o = Object::new();
    let ann = joined(&mut o, "ann");
    assert_eq!(ann["peers"], json!([]));
    assert!(ann["token"].as_str().unwrap().len() >= 32);
    let bob = joined(&mut o, "bob");
    let (ann_id, bob_id) = (o.id("ann"), o.id("bob"));
    assert_eq!(
        bob["peers"],
        json!([{"id": ann_id, "meta": {"name": "ann"}}])
    );
    assert_eq!(
        o.take("ann"),
        vec![json!({"joined": {"id": bob_id, "meta": {"name": "bob"}}})]
    );

    let offer = json!({"send": [{"to": bob_id, "seq": 1, "data": {"type": "offer"}}]});
    o.send("ann", offer);
    assert_eq!(o.take("ann"), vec![json!({"ack": 1})]);
    let pushed = json!({"messages": [{"from": ann_id, "seq": 1, "data": {"type": "offer"}}]});
    assert_eq!(o.take("bob"), vec![pushed]);

    o.send(
        "bob",
        json!({"send": [{"to": "nobody", "seq": 1, "data": 0}]}),
    );
    assert_eq!(o.take("bob"), vec![json!({"ack": 1, "undeliverable": [1]})]);

    o.send("bob", json!({"leave": true}));
    assert_eq!(o.closed["bob"], (1000, "Left".to_owned()));
    assert_eq!(o.take("ann"), vec![json!({"left": bob_id})]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_answered_and_the_socket_stays_open() {
    let mut o = Object::new();
    joined(&mut o, "ann");
    joined(&mut o, "bob");
    let bob_id = o.id("bob");
    o.take("ann");
    o.send(
        "ann",
        json!({"send": [{"to": bob_id, "seq": 3, "data": "a"}]}),
    );
    o.send(
        "ann",
        json!({"send": [{"to": bob_id, "seq": 3, "data": "b"}]}),
    );
    let frames = o.take("ann");
    assert_eq!(frames[1]["refused"], json!(3));
    assert_eq!(frames[1]["status"], json!(409));
    assert!(o.sockets.contains_key("ann"), "still open");
    let big = "x".repeat(15 * 1024);
    for seq in 4..9 {
        o.send(
            "ann",
            json!({"send": [{"to": bob_id, "seq": seq, "data": big}]}),
        );
    }
    let last = o.take("ann").pop().unwrap();
    assert_eq!(
        (last["status"].clone(), last["retryAfter"].clone()),
        (json!(429), json!(60))
    );
    o.frame("ann", "ping");
    assert_eq!(o.take("ann"), vec![json!("pong")]);
}

#[tokio::test(start_paused = true)]
async fn frames_that_break_the_protocol_close_the_socket_with_a_reason() {
    let member_later = json!({"meta": {}});
    let cases: Vec<(bool, String, u16, &str)> = vec![
        (false, "not json".into(), 4400, "Bad JSON"),
        (
            false,
            "[1]".into(),
            4400,
            "Bad relay request: expected a JSON object with valid fields",
        ),
        (
            false,
            json!({"send": [{"to": "*", "seq": 1, "data": 1}]}).to_string(),
            4400,
            "A join sends no messages and does not leave",
        ),
        (
            false,
            json!({"room": "other-room"}).to_string(),
            4400,
            "Room does not match the socket's",
        ),
        (
            false,
            json!({"id": "nobody", "token": "nothing"}).to_string(),
            4410,
            "This session left the room; a new session can join",
        ),
        (
            false,
            json!({"meta": "x".repeat(2000)}).to_string(),
            4413,
            "Meta too large",
        ),
        (false, "x".repeat(64 * 1024 + 1), 4413, "Frame too large"),
        (
            true,
            member_later.to_string(),
            4400,
            "This socket has joined: later frames carry send or leave",
        ),
        (
            true,
            json!({"send": [{"to": "*", "seq": 2, "data": 1}, {"to": "*", "seq": 2, "data": 1}]})
                .to_string(),
            4400,
            "Message seq must grow",
        ),
    ];
    for (after_join, frame, code, reason) in cases {
        let mut o = Object::new();
        o.connect("eve");
        if after_join {
            o.send("eve", json!({}));
            o.take("eve");
        }
        o.frame("eve", &frame);
        assert_eq!(
            o.closed.get("eve"),
            Some(&(code, reason.to_owned())),
            "{frame:.60}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_socket_resumes_and_a_closed_tab_leaves_at_once() {
    let mut o = Object::new();
    joined(&mut o, "ann");
    let bob = joined(&mut o, "bob");
    let (ann_id, bob_id) = (o.id("ann"), o.id("bob"));
    o.take("ann");
    o.close("bob", 1006);
    assert!(o.take("ann").is_empty(), "a drop is not a leave");
    let batch = json!({"send": [{"to": bob_id, "seq": 1, "data": "c1"}, {"to": bob_id, "seq": 2, "data": "c2"}]});
    o.send("ann", batch);
    tokio::time::advance(Duration::from_secs(20)).await;
    o.connect("bob");
    let resume = json!({"id": bob_id, "token": bob["token"], "after": {ann_id.clone(): 1}});
    o.send("bob", resume);
    let frames = o.take("bob");
    assert_eq!(frames[0]["id"], json!(bob_id));
    assert_eq!(frames[0].get("token"), None);
    assert_eq!(
        frames[1],
        json!({"messages": [{"from": ann_id, "seq": 2, "data": "c2"}]})
    );
    assert_eq!(frames.len(), 2);

    o.take("ann");
    o.close("bob", 1001);
    assert_eq!(o.take("ann"), vec![json!({"left": bob_id})]);

    // A drop past the resume window: the alarm tells the others.
    let cy = joined(&mut o, "cy");
    let cy_id = o.id("cy");
    o.take("ann");
    o.close("cy", 1006);
    tokio::time::advance(Duration::from_millis(RESUME_WINDOW_MS)).await;
    o.alarm();
    assert_eq!(o.take("ann"), vec![json!({"left": cy_id})]);
    o.connect("cy");
    o.send("cy", json!({"id": cy_id, "token": cy["token"]}));
    assert_eq!(o.closed["cy"].0, 4410);
}

/// A relay call over HTTP on the object (`wire::relay::object`).
fn call(o: &mut Object, body: Value) -> (u16, Value) {
    let config = p2pcf_rs::config::Config::default();
    let request = p2pcf_rs::wire::relay::parse(body.to_string().as_bytes()).unwrap();
    let (result, pushes) = object::handle(&mut o.live, &request, &o.platform, &config);
    o.deliver(pushes);
    match result {
        Ok(reply) => (reply.status, serde_json::from_slice(&reply.body).unwrap()),
        Err(e) => (e.status(), json!(e.to_string())),
    }
}

#[tokio::test(start_paused = true)]
async fn a_poller_and_a_socket_member_share_the_room() {
    let mut o = Object::new();
    o.connect("http"); // frames pushed to the poller's name never come: it polls
    joined(&mut o, "ann");
    let ann_id = o.id("ann");
    let (status, bob) = call(
        &mut o,
        json!({"room": "socket-room", "meta": {"name": "bob"}}),
    );
    assert_eq!(status, 200);
    let (bob_id, token) = (bob["id"].clone(), bob["token"].clone());
    assert_eq!(
        bob["peers"],
        json!([{"id": ann_id, "meta": {"name": "ann"}}])
    );
    assert_eq!(
        o.take("ann"),
        vec![json!({"joined": {"id": bob_id, "meta": {"name": "bob"}}})]
    );
    o.live.take_changes();

    let send = json!({"room": "socket-room", "id": bob_id, "token": token,
        "send": [{"to": ann_id, "seq": 1, "data": "hi"}]});
    assert_eq!(call(&mut o, send).0, 200);
    assert_eq!(
        o.take("ann"),
        vec![json!({"messages": [{"from": bob_id, "seq": 1, "data": "hi"}]})]
    );
    assert_eq!(
        o.live.take_changes().put.len(),
        1,
        "a send writes the sender's row"
    );

    o.send(
        "ann",
        json!({"send": [{"to": bob_id, "seq": 1, "data": "back"}]}),
    );
    assert_eq!(o.take("ann"), vec![json!({"ack": 1})]);
    let poll = json!({"room": "socket-room", "id": bob_id, "token": token, "after": {}});
    let (_, got) = call(&mut o, poll.clone());
    assert_eq!(
        got["messages"],
        json!([{"from": ann_id, "seq": 1, "data": "back"}])
    );
    o.live.take_changes();
    let (_, again) = call(
        &mut o,
        json!({"room": "socket-room", "id": bob_id, "token": token, "after": {ann_id.clone(): 1}}),
    );
    assert_eq!(again["messages"], json!([]));
    assert!(
        o.live.take_changes().is_empty(),
        "a poll writes nothing until its renewal is due"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    call(&mut o, poll.clone());
    assert_eq!(
        o.live.take_changes().put.len(),
        1,
        "renewed once half its life passed"
    );

    // A poller that stops polling expires; the alarm tells the sockets.
    tokio::time::advance(Duration::from_secs(61)).await;
    o.alarm();
    assert_eq!(o.take("ann"), vec![json!({"left": bob_id})]);
    assert_eq!(call(&mut o, poll).0, 410);
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_floods_frames_is_closed() {
    let mut o = Object::new();
    joined(&mut o, "ann");
    for _ in 0..99 {
        o.frame("ann", "ping");
    }
    assert!(o.sockets.contains_key("ann"), "100 frames in 10 s are fine");
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..100 {
        o.frame("ann", "ping");
    }
    assert!(o.sockets.contains_key("ann"), "a new window");
    o.frame("ann", "ping");
    let reason = "Too many frames: at most 100 per 10 s per socket".to_owned();
    assert_eq!(o.closed["ann"], (4429, reason));
}
