//! Choosing the agent among the candidates (reference §1.5): pure, no I/O.

use crate::error::ApiError;
use crate::lookup::Candidate;

/// The requested agent name as Coder reads it: trimmed with Unicode `White_Space` (Go's
/// `strings.TrimSpace`), and empty means "not set".
pub fn normalise_agent_name(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|name| !name.is_empty())
}

/// Picks the agent for `instance_id` from `candidates` (newest first, as the lookup returns them).
///
/// - no candidates: 404 whether or not a name was given;
/// - a name: the first candidate with exactly that name (byte equality), else 404;
/// - no name: the only candidate, else 409 listing every candidate's name, byte-sorted,
///   duplicates kept.
pub fn choose<'a>(
    instance_id: &str,
    candidates: &'a [Candidate],
    agent_name: Option<&str>,
) -> Result<&'a Candidate, ApiError> {
    if candidates.is_empty() {
        return Err(ApiError::InstanceNotFound {
            instance_id: instance_id.to_owned(),
        });
    }
    match agent_name {
        Some(name) => candidates
            .iter()
            .find(|c| c.agent_name == name)
            .ok_or_else(|| ApiError::AgentNameNotFound {
                instance_id: instance_id.to_owned(),
                name: name.to_owned(),
            }),
        None => match candidates {
            [only] => Ok(only),
            _ => {
                let mut names: Vec<String> =
                    candidates.iter().map(|c| c.agent_name.clone()).collect();
                // `str` ordering is byte order, as Go's sort.Strings.
                names.sort_unstable();
                Err(ApiError::Ambiguous {
                    instance_id: instance_id.to_owned(),
                    names,
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn candidate(name: &str) -> Candidate {
        Candidate {
            agent_id: Uuid::new_v4(),
            agent_name: name.to_owned(),
            auth_token: Uuid::new_v4(),
            agent_created_at: Utc::now(),
            build_id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
        }
    }

    #[test]
    fn trims_unicode_white_space() {
        assert_eq!(normalise_agent_name(Some("  dev\t\n")), Some("dev"));
        assert_eq!(
            normalise_agent_name(Some("\u{a0}\u{3000}dev\u{85}")),
            Some("dev")
        );
        assert_eq!(normalise_agent_name(Some(" \u{2003} ")), None);
        assert_eq!(normalise_agent_name(Some("")), None);
        assert_eq!(normalise_agent_name(None), None);
        // Zero-width space is not White_Space: Go keeps it too.
        assert_eq!(normalise_agent_name(Some("\u{200b}")), Some("\u{200b}"));
    }

    #[test]
    fn first_match_in_query_order_wins() {
        let rows = [candidate("dev"), candidate("dev")];
        let chosen = choose("i", &rows, Some("dev")).map(|c| c.agent_id);
        assert_eq!(chosen.ok(), Some(rows[0].agent_id));
    }

    #[test]
    fn names_are_case_sensitive() {
        let rows = [candidate("Dev")];
        assert!(matches!(
            choose("i", &rows, Some("dev")),
            Err(ApiError::AgentNameNotFound { .. })
        ));
    }

    #[test]
    fn ambiguity_lists_byte_sorted_names_with_duplicates() {
        let rows = [
            candidate("main"),
            candidate("b"),
            candidate("B"),
            candidate("main"),
            candidate("é"),
        ];
        match choose("i", &rows, None) {
            Err(ApiError::Ambiguous { names, .. }) => {
                assert_eq!(names, ["B", "b", "main", "main", "é"]);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
    }

    #[test]
    fn no_candidates_is_not_found_with_or_without_name() {
        assert!(matches!(
            choose("i", &[], None),
            Err(ApiError::InstanceNotFound { .. })
        ));
        assert!(matches!(
            choose("i", &[], Some("dev")),
            Err(ApiError::InstanceNotFound { .. })
        ));
    }
}
