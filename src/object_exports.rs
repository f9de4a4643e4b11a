//! The Durable Object classes' exports to the runtime (wasm only), as
//! workers-rs' `#[durable_object]` writes them but for three things: no
//! `connect` export (no object takes TCP sockets; the default one panics);
//! `fetch` takes the runtime's request as it comes (workers-rs' `Request`
//! costs its conversions); and a failure is thrown as the runtime's own
//! error value or a plain `Error(text)`, without `worker::Error`'s
//! `Display` (with its chain of error types). Together ~3 KB of wasm gzip.

use wasm_bindgen::JsValue;
use worker::worker_sys::web_sys;
use worker::{js_sys, Env, Response, State, WebSocket, WebSocketIncomingMessage};

use crate::runtime_error::error_text;

/// A Durable Object class: what the runtime calls on it (workers-rs'
/// `DurableObject`, but for `fetch`'s request).
#[allow(async_fn_in_trait)] // single-threaded (wasm): no Send bound wanted
pub(crate) trait HostedObject {
    fn new(state: State, env: Env) -> Self;
    async fn fetch(&self, req: web_sys::Request) -> worker::Result<Response>;
    async fn alarm(&self) -> worker::Result<Response>;
    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()>;
    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        was_clean: bool,
    ) -> worker::Result<()>;
    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> worker::Result<()>;
}

/// Exports `$class` (a [`HostedObject`]) to the runtime: its constructor,
/// `fetch`, `alarm` and the three hibernation WebSocket handlers.
macro_rules! durable_object_exports {
    ($class:ident) => {
        const _: () = {
            use wasm_bindgen::prelude::wasm_bindgen;
            use wasm_bindgen::JsValue;
            use worker::worker_sys::web_sys;
            use $crate::object_exports::HostedObject;

            use $crate::object_exports::thrown;

            #[wasm_bindgen(
                                                js_sys = worker::js_sys,
                                                wasm_bindgen_futures = worker::wasm_bindgen_futures
                                            )]
            impl $class {
                #[wasm_bindgen(constructor)]
                pub fn new(
                    state: worker::worker_sys::DurableObjectState,
                    env: worker::Env,
                ) -> Self {
                    <Self as HostedObject>::new(worker::State::from(state), env)
                }

                #[wasm_bindgen(js_name = fetch)]
                pub async fn fetch(&self, req: web_sys::Request) -> Result<JsValue, JsValue> {
                    <Self as HostedObject>::fetch(self, req)
                        .await
                        .map(|r| web_sys::Response::from(r).into())
                        .map_err(thrown)
                }

                #[wasm_bindgen(js_name = alarm)]
                pub async fn alarm(&self) -> Result<JsValue, JsValue> {
                    <Self as HostedObject>::alarm(self)
                        .await
                        .map(|r| web_sys::Response::from(r).into())
                        .map_err(thrown)
                }

                #[wasm_bindgen(js_name = webSocketMessage)]
                pub async fn websocket_message(
                    &self,
                    ws: web_sys::WebSocket,
                    message: JsValue,
                ) -> Result<JsValue, JsValue> {
                    let message = match message.as_string() {
                        Some(text) => worker::WebSocketIncomingMessage::String(text),
                        None => worker::WebSocketIncomingMessage::Binary(
                            worker::js_sys::Uint8Array::new(&message).to_vec(),
                        ),
                    };
                    <Self as HostedObject>::websocket_message(self, ws.into(), message)
                        .await
                        .map(|()| JsValue::NULL)
                        .map_err(thrown)
                }

                #[wasm_bindgen(js_name = webSocketClose)]
                pub async fn websocket_close(
                    &self,
                    ws: web_sys::WebSocket,
                    code: usize,
                    reason: String,
                    was_clean: bool,
                ) -> Result<JsValue, JsValue> {
                    <Self as HostedObject>::websocket_close(
                        self,
                        ws.into(),
                        code,
                        reason,
                        was_clean,
                    )
                    .await
                    .map(|()| JsValue::NULL)
                    .map_err(thrown)
                }

                #[wasm_bindgen(js_name = webSocketError)]
                pub async fn websocket_error(
                    &self,
                    ws: web_sys::WebSocket,
                    error: JsValue,
                ) -> Result<JsValue, JsValue> {
                    <Self as HostedObject>::websocket_error(self, ws.into(), error.into())
                        .await
                        .map(|()| JsValue::NULL)
                        .map_err(thrown)
                }
            }
        };
    };
}

/// What a failed handler throws: the runtime's own value when it came from
/// the runtime, else an `Error` with the text.
pub(crate) fn thrown(e: worker::Error) -> JsValue {
    match e {
        worker::Error::UnknownJsError { original, .. } | worker::Error::Internal(original) => {
            original
        }
        other => js_sys::Error::new(&error_text(&other)).into(),
    }
}
