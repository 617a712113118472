//! Writing JSON bodies as Coder's `httpapi.Write` does: Go's `encoding/json` escaping, a
//! trailing newline and `application/json; charset=utf-8`, so a byte-level comparison with
//! Coder's output holds.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header;
use serde::Serialize;

/// Writes `value` as Coder's `httpapi.Write` does: Go-escaped JSON, a trailing newline and
/// `application/json; charset=utf-8`.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    let mut body = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut body, GoEscapes);
    if let Err(err) = value.serialize(&mut serializer) {
        // Only plain structs of strings reach here; a failure is a programming error, reported
        // as such rather than as a half-written body.
        tracing::error!(error = %err, "response serialisation failed");
        return HttpResponse::InternalServerError().finish();
    }
    body.push(b'\n');
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .body(body)
}

/// serde_json formatter that additionally escapes what Go's encoder escapes by default:
/// `<`, `>`, `&`, U+2028 and U+2029.
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn escapes_like_go() {
        let response = json_response(
            StatusCode::OK,
            &serde_json::json!({"m": "<a & b>\u{2028}\"\n"}),
        );
        let bytes = response.into_body().try_into_bytes().unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "{\"m\":\"\\u003ca \\u0026 b\\u003e\\u2028\\\"\\n\"}\n"
        );
    }
}
