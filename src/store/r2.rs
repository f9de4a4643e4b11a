//! The [`Store`] trait on a Workers R2 binding.

use worker::{Bucket, Conditional};

use super::{Object, Precondition, PutOutcome, Store, StoreError};

pub struct R2Store {
    bucket: Bucket,
}

impl R2Store {
    pub fn new(bucket: Bucket) -> Self {
        Self { bucket }
    }
}

/// See [`super::classify_r2_error`].
fn classify(e: worker::Error) -> StoreError {
    super::classify_r2_error(&e.to_string())
}

impl Store for R2Store {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let Some(object) = self.bucket.get(key).execute().await.map_err(classify)? else {
            return Ok(None);
        };
        let etag = object.etag();
        let uploaded_ms = object.uploaded().as_millis();
        let body = match object.body() {
            Some(body) => body.bytes().await.map_err(classify)?,
            None => Vec::new(),
        };
        Ok(Some(Object {
            body,
            etag,
            uploaded_ms,
        }))
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let condition = match pre {
            Precondition::Absent => Conditional {
                etag_does_not_match: Some("*".to_owned()),
                ..Conditional::default()
            },
            Precondition::EtagMatches(etag) => Conditional {
                etag_matches: Some(etag),
                ..Conditional::default()
            },
        };
        match self
            .bucket
            .put(key, body)
            .only_if(condition)
            .execute()
            .await
        {
            Ok(Some(object)) => Ok(PutOutcome::Stored {
                etag: object.etag(),
            }),
            Ok(None) => Ok(PutOutcome::PreconditionFailed),
            Err(e) => Err(classify(e)),
        }
    }
}
