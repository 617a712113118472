//! Reading request bodies the way Coder's `httpapi.Read` does, with a size cap Coder lacks.

use actix_web::web;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, Validation};

/// Largest accepted body. Real identity material is under 5 KiB (Azure's PKCS#7 is the largest).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads at most [`MAX_BODY_BYTES`] and decodes the first JSON value in it.
///
/// Like Go's `json.Decoder`, an empty body is an `EOF` error, `null` decodes to the empty
/// struct (and then fails validation), unknown fields are ignored and bytes after the first
/// value are not read. The content type is not checked: Coder's agents always send JSON.
pub async fn read_json<T: DeserializeOwned + Default>(
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| match err {
            actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            },
            other => ApiError::InvalidJson(format!("reading the body: {other}")),
        })?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut values = serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>();
    let value = match values.next() {
        None => return Err(ApiError::InvalidJson("EOF".to_owned())),
        Some(Err(err)) => return Err(ApiError::InvalidJson(err.to_string())),
        Some(Ok(value)) => value,
    };
    match value {
        Value::Null => Ok(T::default()),
        // serde would also build a struct from an array of its fields; Go only from an object.
        Value::Object(_) => {
            serde_json::from_value(value).map_err(|err| ApiError::InvalidJson(err.to_string()))
        }
        other => Err(ApiError::InvalidJson(format!(
            "expected a JSON object, found {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required string field: absent, `null` and `""` all fail with Coder's validation entry.
pub fn required<'a>(
    field: &'static str,
    value: &'a Option<String>,
    failures: &mut Vec<Validation>,
) -> &'a str {
    match value.as_deref() {
        Some(v) if !v.is_empty() => v,
        _ => {
            failures.push(Validation::required(field));
            ""
        }
    }
}

/// Turns collected validation failures into the 400 response, if there are any.
pub fn check(failures: Vec<Validation>) -> Result<(), ApiError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(failures))
    }
}
