//! A relay client as the tests drive it, over the harness.

use super::{Harness, Reply};
use p2pcf_rs::edge::HttpRequest;
use serde_json::{json, Value};

pub fn relay(body: &Value) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url: "https://p2pcf.example.workers.dev/relay/v1".into(),
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: serde_json::to_vec(body).unwrap(),
    }
}

/// A relay client as the tests drive it: id, token, cursors.
pub struct Member {
    pub room: String,
    pub id: String,
    pub token: String,
    pub after: serde_json::Map<String, Value>,
    pub next_seq: u64,
    /// The last answer's `read_from`, sent back as `SignalRelay` does
    /// (unless `echo_read_from` is off).
    pub read_from: Option<String>,
    pub echo_read_from: bool,
}

impl Member {
    pub async fn join(h: &Harness, room: &str, meta: Value) -> Member {
        let r = h.request(relay(&json!({"room": room, "meta": meta}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.outcome.ops.class_a, 1, "a join is one write (the index)");
        Member {
            room: room.into(),
            id: r.body["id"].as_str().unwrap().into(),
            token: r.body["token"].as_str().unwrap().into(),
            after: serde_json::Map::new(),
            next_seq: 1,
            read_from: None,
            echo_read_from: true,
        }
    }

    pub fn body(&self, send: Vec<Value>) -> Value {
        let mut body = json!({"room": self.room, "id": self.id, "token": self.token, "after": self.after, "send": send});
        if let Some(from) = self.read_from.as_ref().filter(|_| self.echo_read_from) {
            body["read_from"] = json!(from);
        }
        body
    }

    /// A poll (with `send`), taking the messages it answers.
    pub async fn sync(&mut self, h: &Harness, send: Vec<Value>) -> Reply {
        let r = h.request(relay(&self.body(send))).await;
        if r.status == 200 {
            self.read_from = r.body["read_from"].as_str().map(str::to_owned);
            for m in r.body["messages"].as_array().unwrap() {
                self.after
                    .insert(m["from"].as_str().unwrap().into(), m["seq"].clone());
            }
        }
        r
    }

    pub fn message(&mut self, to: &str, data: Value) -> Value {
        let seq = self.next_seq;
        self.next_seq += 1;
        json!({"to": to, "seq": seq, "data": data})
    }
}

pub fn peer_ids(r: &Reply) -> Vec<String> {
    let mut ids: Vec<String> = r.body["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}
