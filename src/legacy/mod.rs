//! Legacy baselines (cargo feature `legacy`, off by default): replays of Coder's per-request
//! statement sequences (`docs/coder-contract.md` §4) on instauth's pool and HTTP stack, so their cost can be
//! measured next to the single statement on the same database, machine and load tool.
//!
//! Not part of the product. Every replay gives instauth's answers (same candidates, same
//! [`crate::agents::decide`] rules, same responses), so the correctness tests hold for it; only the
//! statement sequence differs. Where Coder's historical answers differ (rc.2 took the newest
//! row without a 409; stale builds gave 400), the replay keeps Coder's statements and
//! instauth's answers. Counts "in the replay's terms" for candidates of one live build:
//!
//! | `--lookup` | Statements | `docs/coder-contract.md` |
//! |---|---|---|
//! | `coder-rc2` | 1 + 12 per candidate (13 for one) | §4.2 |
//! | `coder-rc3` | 1 + 7N + 1 + 10 (19 for N=1, 26 for N=2) | §4.3 |
//! | `coder-main` | 3 for any N | §4.4 |
//!
//! Authorization checks (in-process in Coder) cost nothing here; the per-version modules say
//! where the replay departs from Coder's order.

mod coder_main;
mod rc2;
mod rc3;
mod replay;

use sqlx::PgConnection;

use crate::agents::Candidate;
use crate::db::StatementMode;

pub(crate) use replay::QUERIES;
use replay::Replay;
pub(crate) use replay::StatementCounter;

/// A replayed Coder version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// v2.33.0-rc.2: one agent walked resource → job → build → latest build (§4.2).
    Rc2,
    /// v2.33.0-rc.3 (#24325): every candidate walked through the job authorization cascade,
    /// then the chosen one again (§4.3).
    Rc3,
    /// Coder main (#25031 + #25207): one joined query, then workspace and latest build (§4.4).
    Main,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rc2 => "coder-rc2",
            Self::Rc3 => "coder-rc3",
            Self::Main => "coder-main",
        }
    }

    pub(crate) fn help(self) -> &'static str {
        match self {
            Self::Rc2 => "replay of Coder v2.33.0-rc.2 (13 statements for one agent)",
            Self::Rc3 => "replay of Coder v2.33.0-rc.3 (19 statements for one agent, 26 for two)",
            Self::Main => "replay of Coder main (3 statements)",
        }
    }
}

/// Runs `version`'s sequence for one request and returns the candidates it found, for the
/// product's own choice to decide on.
pub(crate) async fn replay(
    version: Version,
    conn: &mut PgConnection,
    mode: StatementMode,
    instance_id: &str,
    agent_name: Option<&str>,
    statements: &mut StatementCounter<'_>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let mut replay = Replay::new(conn, mode, statements);
    match version {
        Version::Rc2 => rc2::find(&mut replay, instance_id).await,
        Version::Rc3 => rc3::find(&mut replay, instance_id, agent_name).await,
        Version::Main => coder_main::find(&mut replay, instance_id, agent_name).await,
    }
}
