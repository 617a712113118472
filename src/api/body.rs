//! Reading request bodies as Coder's `httpapi.Read` does: Go's `encoding/json` rules for
//! decoding, and Coder's validation answer for required fields.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::{ApiError, Validation};

/// A request body type: its JSON field names, so keys can be matched the way Go does.
pub(crate) trait RequestBody: DeserializeOwned + Default {
    const FIELDS: &'static [&'static str];
}

/// Decodes the first JSON value of a body (read whole by admission control) as Go's
/// `json.Decoder` would: an empty body is an `EOF` error; `null` decodes to the empty struct (and
/// then fails validation); only an object fills the struct; object keys match field names
/// case-insensitively, and when several keys land on one field the later one wins; unknown
/// fields and bytes after the first value are ignored; invalid UTF-8 becomes U+FFFD. The content
/// type is not checked: Coder's agents always send JSON.
pub(crate) fn parse_json<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = String::from_utf8_lossy(bytes);
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<TopLevel>();
    let value = match values.next() {
        None => return Err(ApiError::InvalidJson("EOF".to_owned())),
        Some(Err(err)) => return Err(ApiError::InvalidJson(err.to_string())),
        Some(Ok(value)) => value,
    };
    match value {
        TopLevel::Null => Ok(T::default()),
        TopLevel::Object(pairs) => {
            serde_json::from_value(Value::Object(fold_keys(pairs, T::FIELDS)))
                .map_err(|err| ApiError::InvalidJson(err.to_string()))
        }
        // serde would also build a struct from an array of its fields; Go only from an object.
        TopLevel::Other(kind) => Err(ApiError::InvalidJson(format!(
            "expected a JSON object, found {kind}"
        ))),
    }
}

/// The first value of a body, with an object's members kept in document order and duplicates
/// kept: `serde_json::Map` sorts its keys (or, with `preserve_order`, keeps a repeated key at its
/// first position), and either would lose which of two keys for one field came last.
enum TopLevel {
    Null,
    Object(Vec<(String, Value)>),
    /// Anything else, by kind, for the error text.
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        // Read to its end so a malformed array is still a syntax error, as in Go.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<String, Value>()? {
            pairs.push(pair);
        }
        Ok(TopLevel::Object(pairs))
    }
}

/// Keeps the members whose key equals a field name under Go's case folding, renamed to that
/// field name. As in Go, a later key overwrites an earlier one for the same field, whatever
/// their spelling, except that `null` leaves a string field as it was; other keys are dropped
/// (Go ignores unknown fields).
fn fold_keys(pairs: Vec<(String, Value)>, fields: &[&str]) -> Map<String, Value> {
    let mut object = Map::new();
    for (key, value) in pairs {
        if value.is_null() {
            continue;
        }
        if let Some(field) = fields.iter().find(|field| go_equal_fold(&key, field)) {
            object.insert((*field).to_owned(), value);
        }
    }
    object
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
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    struct Body {
        document: Option<String>,
        agent_name: Option<String>,
    }

    impl RequestBody for Body {
        const FIELDS: &'static [&'static str] = &["document", "agent_name"];
    }

    fn parse(json: &str) -> Body {
        parse_json(json.as_bytes()).unwrap_or_else(|err| panic!("{json}: {err}"))
    }

    #[test]
    fn the_later_of_two_keys_for_one_field_wins_as_in_go() {
        let body = parse(r#"{"document":"real","Document":"garbage"}"#);
        assert_eq!(body.document.as_deref(), Some("garbage"));
        let body = parse(r#"{"agent_name":"nope","AGENT_NAME":"main"}"#);
        assert_eq!(body.agent_name.as_deref(), Some("main"));
        let body = parse(r#"{"AGENT_NAME":"main","agent_name":"nope"}"#);
        assert_eq!(body.agent_name.as_deref(), Some("nope"));
        // A repeated key counts where it is repeated, not where it first appeared.
        let body = parse(r#"{"AGENT_NAME":"x","agent_name":"y","AGENT_NAME":"z"}"#);
        assert_eq!(body.agent_name.as_deref(), Some("z"));
        // Go's `null` leaves a string as it was.
        let body = parse(r#"{"agent_name":"main","Agent_Name":null}"#);
        assert_eq!(body.agent_name.as_deref(), Some("main"));
    }

    #[test]
    fn only_an_object_fills_the_body() {
        for (json, kind) in [
            ("[1,2]", "an array"),
            ("\"x\"", "a string"),
            ("12", "a number"),
            ("true", "a boolean"),
        ] {
            let err = parse_json::<Body>(json.as_bytes()).expect_err(json);
            assert_eq!(
                err.to_string(),
                format!("request body is not valid JSON: expected a JSON object, found {kind}")
            );
        }
        assert!(parse("null").document.is_none());
        assert!(parse_json::<Body>(b"[1,").is_err());
        assert!(parse_json::<Body>(b"").is_err());
        // Only the first value is read.
        assert_eq!(
            parse(r#"{"document":"a"} trailing"#).document.as_deref(),
            Some("a")
        );
    }

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
