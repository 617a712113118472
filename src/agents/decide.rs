//! Choosing the agent among the candidates (`docs/coder-contract.md` §1.5): pure, no I/O, no
//! HTTP. The HTTP edge turns a [`Refusal`] into Coder's answer.

use super::Candidate;

/// Why no agent was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No agent may authenticate as the instance, whether or not a name was given.
    NoCandidate,
    /// Candidates exist, but none has the requested name.
    NoAgentNamed(String),
    /// Several candidates and no name: every candidate's name, byte-sorted, duplicates kept.
    Ambiguous(Vec<String>),
}

/// The requested agent name as Coder reads it: trimmed with Unicode `White_Space` (Go's
/// `strings.TrimSpace`), and empty means "not set".
pub(crate) fn normalise_agent_name(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|name| !name.is_empty())
}

/// Picks the agent from `candidates` (newest first, as the lookup returns them).
///
/// - no candidates: [`Refusal::NoCandidate`] whether or not a name was given;
/// - a name: the first candidate with exactly that name (byte equality), else
///   [`Refusal::NoAgentNamed`];
/// - no name: the only candidate, else [`Refusal::Ambiguous`].
pub(crate) fn decide<'a>(
    candidates: &'a [Candidate],
    agent_name: Option<&str>,
) -> Result<&'a Candidate, Refusal> {
    if candidates.is_empty() {
        return Err(Refusal::NoCandidate);
    }
    match agent_name {
        Some(name) => candidates
            .iter()
            .find(|c| c.agent_name == name)
            .ok_or_else(|| Refusal::NoAgentNamed(name.to_owned())),
        None => match candidates {
            [only] => Ok(only),
            _ => {
                let mut names: Vec<String> =
                    candidates.iter().map(|c| c.agent_name.clone()).collect();
                // `str` ordering is byte order, as Go's sort.Strings.
                names.sort_unstable();
                Err(Refusal::Ambiguous(names))
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
        let chosen = decide(&rows, Some("dev")).map(|c| c.agent_id);
        assert_eq!(chosen.ok(), Some(rows[0].agent_id));
    }

    #[test]
    fn names_are_case_sensitive() {
        let rows = [candidate("Dev")];
        assert_eq!(
            decide(&rows, Some("dev")).err(),
            Some(Refusal::NoAgentNamed("dev".to_owned()))
        );
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
        assert_eq!(
            decide(&rows, None).err(),
            Some(Refusal::Ambiguous(
                ["B", "b", "main", "main", "é"].map(str::to_owned).to_vec()
            ))
        );
    }

    #[test]
    fn no_candidates_is_refused_with_or_without_name() {
        assert_eq!(decide(&[], None).err(), Some(Refusal::NoCandidate));
        assert_eq!(decide(&[], Some("dev")).err(), Some(Refusal::NoCandidate));
    }
}
