//! The `Server-Timing` header of every auth response: how long verification, the wait for the
//! database (the lookup queue and a pooled connection) and the database work took, how many
//! statements ran and how many lookups shared them, so a load tester sees the split per
//! request without access to the server.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

pub(crate) const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// What one auth request spent where. Stages that did not run (a body rejected before
/// verification, an identity rejected before the lookup) report zero.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerTiming {
    pub verify: Duration,
    pub acquire: Duration,
    pub db: Duration,
    pub statements: u32,
    /// Lookups that shared the statement (coalesced), this one included.
    pub shared: usize,
}

impl ServerTiming {
    /// E.g. `verify;dur=0.041, acquire;dur=0.004, db;dur=0.310;desc="1 query"` (milliseconds).
    pub(crate) fn header_value(&self) -> HeaderValue {
        use std::fmt::Write as _;

        let noun = if self.statements == 1 {
            "query"
        } else {
            "queries"
        };
        // Every answer carries this header: written into one buffer, the durations as whole
        // microseconds, without float formatting.
        let mut text = String::with_capacity(96);
        let _ = write!(
            text,
            "verify;dur={}, acquire;dur={}, db;dur={};desc=\"{} {noun}",
            Millis(self.verify),
            Millis(self.acquire),
            Millis(self.db),
            self.statements,
        );
        if self.shared > 1 {
            let _ = write!(text, ", {} lookups", self.shared);
        }
        text.push('"');
        // Digits, ASCII letters and punctuation only: always a valid header value.
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A duration as milliseconds with three decimals, rounded to the nearest microsecond.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_nanos().saturating_add(500) / 1000;
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// A duration in milliseconds, as the header and the log line show durations.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_milliseconds_and_the_statement_count() {
        let timing = ServerTiming {
            verify: Duration::from_micros(41),
            acquire: Duration::from_micros(4),
            db: Duration::from_micros(310),
            statements: 1,
            shared: 1,
        };
        assert_eq!(
            timing.header_value(),
            "verify;dur=0.041, acquire;dur=0.004, db;dur=0.310;desc=\"1 query\""
        );
        let coalesced = ServerTiming {
            shared: 12,
            ..timing
        };
        assert_eq!(
            coalesced.header_value(),
            "verify;dur=0.041, acquire;dur=0.004, db;dur=0.310;desc=\"1 query, 12 lookups\""
        );
        let rounded = ServerTiming {
            verify: Duration::from_nanos(1_499),
            acquire: Duration::from_nanos(1_500),
            db: Duration::from_nanos(12_345_678_900),
            ..timing
        };
        assert_eq!(
            rounded.header_value(),
            "verify;dur=0.001, acquire;dur=0.002, db;dur=12345.679;desc=\"1 query\""
        );
        assert_eq!(
            ServerTiming::default().header_value(),
            "verify;dur=0.000, acquire;dur=0.000, db;dur=0.000;desc=\"0 queries\""
        );
    }
}
