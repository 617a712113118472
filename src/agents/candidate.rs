//! A candidate: one agent that may authenticate as an instance, as the lookup returns it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One agent that may authenticate as the instance.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub auth_token: Uuid,
    pub agent_created_at: DateTime<Utc>,
    pub build_id: Uuid,
    pub workspace_id: Uuid,
}

/// Everything but the token, which must never reach a log.
impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("agent_id", &self.agent_id)
            .field("agent_name", &self.agent_name)
            .field("auth_token", &"<redacted>")
            .field("agent_created_at", &self.agent_created_at)
            .field("build_id", &self.build_id)
            .field("workspace_id", &self.workspace_id)
            .finish()
    }
}
