//! Reading request bodies as Coder's `httpapi.Read` does: Go's `encoding/json` rules for
//! decoding, and Coder's validation answer for required fields.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ApiError, Validation};

/// A request body type: its JSON field names, so keys can be matched the way Go does.
pub(crate) trait RequestBody: DeserializeOwned + Default {
    const FIELDS: &'static [&'static str];
}

/// Decodes the first JSON value of a body (read whole by admission control) as Go's
/// `json.Decoder` would: an empty body is an `EOF` error; `null` decodes to the empty struct (and
/// then fails validation); only an object fills the struct; object keys match field names
/// case-insensitively; unknown fields and bytes after the first value are ignored; invalid
/// UTF-8 becomes U+FFFD. The content type is not checked: Coder's agents always send JSON.
pub(crate) fn parse_json<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = String::from_utf8_lossy(bytes);
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let value = match values.next() {
        None => return Err(ApiError::InvalidJson("EOF".to_owned())),
        Some(Err(err)) => return Err(ApiError::InvalidJson(err.to_string())),
        Some(Ok(value)) => value,
    };
    match value {
        Value::Null => Ok(T::default()),
        Value::Object(object) => {
            serde_json::from_value(Value::Object(fold_keys(object, T::FIELDS)))
                .map_err(|err| ApiError::InvalidJson(err.to_string()))
        }
        // serde would also build a struct from an array of its fields; Go only from an object.
        other => Err(ApiError::InvalidJson(format!(
            "expected a JSON object, found {}",
            json_kind(&other)
        ))),
    }
}

/// Renames keys that equal a field name under Go's case folding to that field name. As in Go,
/// a later key overwrites an earlier one for the same field.
fn fold_keys(object: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    object
        .into_iter()
        .map(|(key, value)| {
            let field = fields.iter().find(|field| go_equal_fold(&key, field));
            (field.map_or(key, |f| (*f).to_owned()), value)
        })
        .collect()
}

/// Go's `bytes.EqualFold` for a lower-case ASCII field name: ASCII case-insensitive, plus the
/// two non-ASCII letters that fold to ASCII ones (U+017F long s, U+212A Kelvin sign).
fn go_equal_fold(key: &str, field: &str) -> bool {
    let mut key_chars = key.chars();
    for expected in field.chars() {
        let folded = match key_chars.next() {
            Some('\u{17F}') => 's',
            Some('\u{212A}') => 'k',
            Some(c) => c.to_ascii_lowercase(),
            None => return false,
        };
        if folded != expected {
            return false;
        }
    }
    key_chars.next().is_none()
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
pub(crate) fn required<'a>(
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
pub(crate) fn check(failures: Vec<Validation>) -> Result<(), ApiError> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::go_equal_fold;

    #[test]
    fn folds_keys_like_go() {
        assert!(go_equal_fold("signature", "signature"));
        assert!(go_equal_fold("Signature", "signature"));
        assert!(go_equal_fold("SIGNATURE", "signature"));
        assert!(go_equal_fold("\u{17F}ignature", "signature"));
        assert!(go_equal_fold("\u{212A}ey", "key"));
        assert!(!go_equal_fold("signatures", "signature"));
        assert!(!go_equal_fold("signatur", "signature"));
        assert!(!go_equal_fold("agent-name", "agent_name"));
    }
}
