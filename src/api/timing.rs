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
        let noun = if self.statements == 1 {
            "query"
        } else {
            "queries"
        };
        let shared = if self.shared > 1 {
            format!(", {} lookups", self.shared)
        } else {
            String::new()
        };
        let text = format!(
            "verify;dur={:.3}, acquire;dur={:.3}, db;dur={:.3};desc=\"{} {noun}{shared}\"",
            millis(self.verify),
            millis(self.acquire),
            millis(self.db),
            self.statements,
        );
        // Digits, ASCII letters and punctuation only: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
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
        assert_eq!(
            ServerTiming::default().header_value(),
            "verify;dur=0.000, acquire;dur=0.000, db;dur=0.000;desc=\"0 queries\""
        );
    }
}
