//! "Now" for every time-dependent check (Azure certificate validity and `expiresOn`, Google
//! `exp`, AWS instance age).
//!
//! The verifiers never read the system clock themselves: the handler asks this clock and passes
//! the instant in. Tests and benchmarks pin it, so recorded material (Azure payloads whose
//! certificates expired years ago) verifies end to end at the moment it was issued.

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock (production).
    #[default]
    System,
    /// Always this instant (tests, benchmarks).
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(at) => *at,
        }
    }
}
