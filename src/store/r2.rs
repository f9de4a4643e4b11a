//! The [`Store`] trait on a Workers R2 binding.
//!
//! It calls the binding's `get` and `put` directly (`worker_sys`) rather
//! than through `worker::Bucket`'s builders: those convert every option
//! R2 has and read bodies as streams, ~2 KB of wasm gzip for two calls.

use crate::runtime_error::js_error_text;
use worker::js_sys::{Object as JsObject, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{R2Bucket, R2Object, R2ObjectBody};
use worker::Bucket;

use super::{Object, Precondition, PutOutcome, Store, StoreError};

pub struct R2Store {
    bucket: Bucket,
}

impl R2Store {
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket }
    }

    fn binding(&self) -> &R2Bucket {
        self.bucket.as_ref().unchecked_ref()
    }
}

/// See [`super::classify_r2_error`]; the text is `worker::Error`'s.
fn classify(e: JsValue) -> StoreError {
    super::classify_r2_error(&js_error_text(e))
}

/// `{ onlyIf: { <field>: <value> } }`.
fn only_if(field: &str, value: &str) -> Result<JsValue, JsValue> {
    let (options, condition) = (JsObject::new(), JsObject::new());
    Reflect::set(&condition, &field.into(), &value.into())?;
    Reflect::set(&options, &"onlyIf".into(), &condition)?;
    Ok(options.into())
}

impl Store for R2Store {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let read = async {
            let found = JsFuture::from(self.binding().get(key.to_owned(), JsValue::UNDEFINED)?);
            let found = found.await?;
            if found.is_null() || found.is_undefined() {
                return Ok(None);
            }
            let object: R2ObjectBody = found.unchecked_into();
            let etag = object.etag()?;
            let uploaded_ms = object.uploaded()?.get_time() as u64;
            let bytes = JsFuture::from(object.array_buffer()?).await?;
            Ok(Some(Object {
                body: Uint8Array::new(&bytes).to_vec(),
                etag,
                uploaded_ms,
            }))
        };
        read.await.map_err(classify)
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let write = async {
            let options = match pre {
                Precondition::Absent => only_if("etagDoesNotMatch", "*")?,
                Precondition::EtagMatches(etag) => only_if("etagMatches", &etag)?,
            };
            let value = Uint8Array::from(&body[..]).into();
            let put = self.binding().put(key.to_owned(), value, options)?;
            let stored = JsFuture::from(put).await?;
            if stored.is_null() || stored.is_undefined() {
                return Ok(PutOutcome::PreconditionFailed);
            }
            let etag = stored.unchecked_into::<R2Object>().etag()?;
            Ok(PutOutcome::Stored { etag })
        };
        write.await.map_err(classify)
    }
}
