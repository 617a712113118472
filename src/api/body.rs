//! Reading request bodies as Coder's `httpapi.Read` does: Go's `encoding/json` rules for
//! decoding, and Coder's validation answer for required fields.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde_json::Value;

use super::error::{ApiError, Validation};

/// A request body type: its JSON field names, so keys can be matched the way Go does.
///
/// Every name in `FIELDS` is an `Option<String>` field of that serde name, and those are all
/// its fields: [`parse_json`] reads only strings into them (Coder's bodies hold nothing else).
pub(crate) trait RequestBody: DeserializeOwned + Default {
    const FIELDS: &'static [&'static str];
}

/// Decodes the first JSON value of a body (read whole by admission control) as Go's
/// `json.Decoder` would: an empty body is an `EOF` error; `null` decodes to the empty struct (and
/// then fails validation); only an object fills the struct; object keys match field names
/// case-insensitively, and when several keys land on one field the later one wins; unknown
/// fields and bytes after the first object or array are ignored; invalid UTF-8 becomes U+FFFD.
/// The content type is not checked: Coder's agents always send JSON.
///
/// The value is read once, straight into the fields' strings: no JSON tree is built and members
/// that name no field are skipped, not kept. As in Go, a field of the wrong type fails the body
/// only once the whole value has been read, so a syntax error later on is what the client hears.
/// Skipped values may nest as deep as the body cap allows (Go refuses beyond 10 000 levels):
/// serde_json skips them without recursing, so depth costs no stack.
pub(crate) fn parse_json<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    // Valid UTF-8 (every body a real agent sends) is checked by std's word-at-a-time validator
    // and borrowed; only an invalid body pays for the replacement pass, which checks byte by
    // byte: 0.49 us against 0.035 us for a 465-byte AWS body, 0.7 % of the service's CPU in a
    // profile at 256 clients when every body took it.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<FoldedOnto<T>>();
    let value = match values.next() {
        None => return Err(ApiError::InvalidJson("EOF".to_owned())),
        Some(Err(err)) => return Err(ApiError::InvalidJson(err.to_string())),
        Some(Ok(FoldedOnto(value, _))) => value,
    };
    match value {
        TopLevel::Null => Ok(T::default()),
        TopLevel::Object {
            mistyped: Some(message),
            ..
        } => Err(ApiError::InvalidJson(message)),
        TopLevel::Object {
            fields,
            mistyped: None,
        } => {
            // Each string moves into a `Value` (no copy), which gives `Some` to an
            // `Option<String>` field. Only strings under the struct's own field names: this
            // cannot fail.
            let members = T::FIELDS
                .iter()
                .zip(fields)
                .filter_map(|(name, value)| Some((*name, Value::String(value?))));
            T::deserialize(MapDeserializer::<_, serde_json::Error>::new(members))
                .map_err(|err| ApiError::InvalidJson(err.to_string()))
        }
        // serde would also build a struct from an array of its fields; Go only from an object.
        TopLevel::Other(kind) => Err(ApiError::InvalidJson(format!(
            "expected a JSON object, found {kind}"
        ))),
    }
}

/// The first value of a body, an object already folded onto a body type's fields.
enum TopLevel {
    Null,
    Object {
        /// One slot per name in the body's `FIELDS`: the last string given for it, if any.
        fields: Vec<Option<String>>,
        /// The error for the first field that held neither a string nor `null`.
        mistyped: Option<String>,
    },
    /// Anything else, by kind, for the error text.
    Other(&'static str),
}

/// [`TopLevel`], read for the body type `T`.
struct FoldedOnto<T>(TopLevel, PhantomData<T>);

impl<'de, T: RequestBody> Deserialize<'de> for FoldedOnto<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TopLevelVisitor(T::FIELDS))
            .map(|value| Self(value, PhantomData))
    }
}

/// Reads a top-level value for a body with these field names.
struct TopLevelVisitor(&'static [&'static str]);

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
        let mut fields = vec![None; self.0.len()];
        let mut mistyped = None;
        while let Some(slot) = map.next_key_seed(FieldOf(self.0))? {
            let Some(slot) = slot else {
                // Go ignores unknown fields.
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            // A later key overwrites an earlier one for the same field, whatever their spelling.
            match map.next_value::<Member>()? {
                Member::Text(text) => fields[slot] = Some(text),
                // Go's `null` leaves a string as it was.
                Member::Null => {}
                Member::Mistyped(message) => {
                    mistyped.get_or_insert(message);
                }
            }
        }
        Ok(TopLevel::Object { fields, mistyped })
    }
}

/// A member's key: the index of the field it names under Go's case folding, if any.
struct FieldOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldOf {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|field| go_equal_fold(key, field)))
    }
}

/// A field's value: a string, `null`, or the error for anything else, worded as serde words it.
enum Member {
    Text(String),
    Null,
    Mistyped(String),
}

impl Member {
    /// serde's own type error, worded as `from_value` worded it before.
    fn mistyped(unexpected: Unexpected<'_>) -> Self {
        Self::Mistyped(
            <de::value::Error as de::Error>::invalid_type(unexpected, &"a string").to_string(),
        )
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // Reading from a `&str`, serde_json hands every string over borrowed, never owned.
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Member, E> {
        Ok(Member::Text(text.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Member, E> {
        Ok(Member::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Member, E> {
        Ok(Member::mistyped(Unexpected::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Member, E> {
        Ok(Member::mistyped(Unexpected::Signed(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Member, E> {
        Ok(Member::mistyped(Unexpected::Unsigned(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Member, E> {
        Ok(Member::mistyped(Unexpected::Float(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Member, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Member::mistyped(Unexpected::Seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Member, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::mistyped(Unexpected::Map))
    }
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
    fn a_field_of_the_wrong_type_fails_once_the_value_is_read_as_in_go() {
        let detail = |json: &str| {
            parse_json::<Body>(json.as_bytes())
                .expect_err(json)
                .to_string()
        };
        for (json, expected) in [
            (
                r#"{"document": 5}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"document": -5}"#,
                "invalid type: integer `-5`, expected a string",
            ),
            (
                r#"{"document": 1.5}"#,
                "invalid type: floating point `1.5`, expected a string",
            ),
            (
                r#"{"document": true}"#,
                "invalid type: boolean `true`, expected a string",
            ),
            (
                r#"{"document": {"a": [1]}}"#,
                "invalid type: map, expected a string",
            ),
            (
                r#"{"document": ["a"]}"#,
                "invalid type: sequence, expected a string",
            ),
            // The first wrong member is the one reported, and a later string for the same
            // field does not mend it: Go keeps the first type error too.
            (
                r#"{"agent_name": [], "document": 5}"#,
                "invalid type: sequence, expected a string",
            ),
            (
                r#"{"document": 5, "Document": "d"}"#,
                "invalid type: integer `5`, expected a string",
            ),
        ] {
            assert_eq!(
                detail(json),
                format!("request body is not valid JSON: {expected}"),
                "{json}"
            );
        }
        // A syntax error anywhere in the value wins over a type error before it.
        let syntax = detail(r#"{"document": 5, "agent_name": tru}"#);
        assert!(syntax.contains("expected ident"), "{syntax}");
        // Members that name no field may hold anything, but must still be valid JSON.
        assert_eq!(
            parse(r#"{"other": {"x": [1, null]}, "document": "d"}"#)
                .document
                .as_deref(),
            Some("d")
        );
        assert!(parse_json::<Body>(br#"{"other": [1,], "document": "d"}"#).is_err());
    }

    /// The deepest value a body can hold (the body cap is 64 KiB) is read without deep
    /// recursion, in a field or out of one: a thread with a small stack survives it.
    #[test]
    fn deep_nesting_costs_no_stack() {
        let depth = 32 * 1024 - 16;
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let outcomes = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                [
                    format!(r#"{{"other": {nested}, "document": "d"}}"#),
                    format!(r#"{{"document": {nested}}}"#),
                    nested.clone(),
                ]
                .map(|json| parse_json::<Body>(json.as_bytes()).map(|body| body.document))
            })
            .expect("thread")
            .join()
            .expect("no stack overflow");
        let [unknown, known, top] = outcomes.map(|outcome| match outcome {
            Ok(document) => Ok(document),
            Err(err) => Err(err.to_string()),
        });
        assert_eq!(unknown, Ok(Some("d".to_owned())));
        assert_eq!(
            known,
            Err("request body is not valid JSON: invalid type: sequence, expected a string".into())
        );
        assert_eq!(
            top,
            Err("request body is not valid JSON: expected a JSON object, found an array".into())
        );
    }

    #[test]
    fn escaped_keys_and_values_are_read_as_text() {
        let body = parse(r#"{"docum\u0065nt": "a\nb\u00e9", "agent_name": "x"}"#);
        assert_eq!(body.document.as_deref(), Some("a\nb\u{e9}"));
        assert_eq!(body.agent_name.as_deref(), Some("x"));
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
