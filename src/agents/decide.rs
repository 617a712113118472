//! Choosing the agent among the candidates (`docs/coder-contract.md` §1.5): pure, no I/O, no
//! HTTP. The HTTP edge turns a [`Refusal`] into Coder's answer.
//!
//! One rule goes beyond Coder: the candidates a request could mean (all of them without a
//! name, those with the name otherwise) must belong to one workspace. Whoever can put an
//! instance id into a template could otherwise take over another workspace's VM (its agent
//! would run as the claimer's workspace) or keep it in a 409 loop, and a 409 would list the
//! other workspace's agent names.

use uuid::Uuid;

use super::Candidate;

/// Why no agent was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No agent may authenticate as the instance, whether or not a name was given.
    NoCandidate,
    /// Candidates exist, but none has the requested name.
    NoAgentNamed(String),
    /// Several candidates of one workspace and no name: every candidate's name, byte-sorted,
    /// duplicates kept.
    Ambiguous(Vec<String>),
    /// The candidates the request could mean belong to more than one workspace: those
    /// workspaces' ids, sorted, for the log (never for the client).
    ClaimedByManyWorkspaces(Vec<Uuid>),
}

/// The chosen agent, and the other workspaces that claim the same instance (sorted; empty
/// unless a name picked the agent out of candidates from several workspaces), for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision<'a> {
    pub chosen: &'a Candidate,
    pub other_claims: Vec<Uuid>,
}

/// The requested agent name as Coder reads it: trimmed with Unicode `White_Space` (Go's
/// `strings.TrimSpace`), and empty means "not set".
pub(crate) fn normalise_agent_name(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|name| !name.is_empty())
}

/// Picks the agent from `candidates` (newest first, as the lookup returns them).
///
/// - no candidates: [`Refusal::NoCandidate`] whether or not a name was given;
/// - a name: the candidates with exactly that name (byte equality); none is
///   [`Refusal::NoAgentNamed`], several workspaces among them
///   [`Refusal::ClaimedByManyWorkspaces`], else the first of them wins;
/// - no name: several workspaces among the candidates is
///   [`Refusal::ClaimedByManyWorkspaces`]; else the only candidate wins, and several are
///   [`Refusal::Ambiguous`].
pub(crate) fn decide<'a>(
    candidates: &'a [Candidate],
    agent_name: Option<&str>,
) -> Result<Decision<'a>, Refusal> {
    if candidates.is_empty() {
        return Err(Refusal::NoCandidate);
    }
    let meant: Vec<&Candidate> = match agent_name {
        Some(name) => candidates.iter().filter(|c| c.agent_name == name).collect(),
        None => candidates.iter().collect(),
    };
    let claimants = workspaces(meant.iter().copied());
    if claimants.len() > 1 {
        return Err(Refusal::ClaimedByManyWorkspaces(claimants));
    }
    let chosen = match (agent_name, meant.as_slice()) {
        (Some(name), []) => return Err(Refusal::NoAgentNamed(name.to_owned())),
        (Some(_), [first, ..]) | (None, [first]) => *first,
        (None, _) => {
            let mut names: Vec<String> = meant.iter().map(|c| c.agent_name.clone()).collect();
            // `str` ordering is byte order, as Go's sort.Strings.
            names.sort_unstable();
            return Err(Refusal::Ambiguous(names));
        }
    };
    let other_claims = workspaces(candidates.iter())
        .into_iter()
        .filter(|id| *id != chosen.workspace_id)
        .collect();
    Ok(Decision {
        chosen,
        other_claims,
    })
}

/// Whether `candidates` hold one the request could mean: [`decide`] answers anything but
/// [`Refusal::NoCandidate`] or [`Refusal::NoAgentNamed`]. A replica's answer without one may
/// be replication lag (an agent created since), so it is asked of the primary again.
pub(crate) fn finds_meant(candidates: &[Candidate], agent_name: Option<&str>) -> bool {
    match agent_name {
        Some(name) => candidates.iter().any(|c| c.agent_name == name),
        None => !candidates.is_empty(),
    }
}

/// The distinct workspace ids of `candidates`, sorted.
fn workspaces<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = candidates.map(|c| c.workspace_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// One workspace for the tests that are not about several.
    const HOME: Uuid = Uuid::from_u128(1);

    fn candidate(name: &str) -> Candidate {
        candidate_in(HOME, name)
    }

    fn candidate_in(workspace_id: Uuid, name: &str) -> Candidate {
        Candidate {
            agent_id: Uuid::new_v4(),
            agent_name: name.to_owned(),
            auth_token: Uuid::new_v4(),
            agent_created_at: Utc::now(),
            build_id: Uuid::new_v4(),
            workspace_id,
        }
    }

    fn chosen_id(rows: &[Candidate], name: Option<&str>) -> Option<Uuid> {
        decide(rows, name).ok().map(|d| d.chosen.agent_id)
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
        assert_eq!(chosen_id(&rows, Some("dev")), Some(rows[0].agent_id));
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

    #[test]
    fn candidates_of_several_workspaces_are_refused_without_their_names() {
        let (a, b) = (Uuid::from_u128(7), Uuid::from_u128(3));
        // One candidate each: without the rule, no name would be a 409 listing both names,
        // and either name would take over the VM.
        let rows = [candidate_in(a, "dev"), candidate_in(b, "dev")];
        for name in [None, Some("dev")] {
            assert_eq!(
                decide(&rows, name).err(),
                Some(Refusal::ClaimedByManyWorkspaces(vec![b, a])),
                "{name:?}"
            );
        }
        // A single agent of another workspace is enough to refuse a lone match too.
        let rows = [candidate_in(a, "dev"), candidate_in(b, "other")];
        assert_eq!(
            decide(&rows, None).err(),
            Some(Refusal::ClaimedByManyWorkspaces(vec![b, a]))
        );
    }

    #[test]
    fn a_name_found_in_one_workspace_wins_and_reports_the_other_claims() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let rows = [
            candidate_in(c, "x"),
            candidate_in(a, "dev"),
            candidate_in(b, "y"),
            candidate_in(c, "z"),
        ];
        let decision = decide(&rows, Some("dev")).expect("one workspace has dev");
        assert_eq!(decision.chosen.agent_id, rows[1].agent_id);
        assert_eq!(decision.other_claims, vec![b, c]);
        // Nobody else claims it: nothing to report.
        let alone = [candidate_in(a, "dev"), candidate_in(a, "web")];
        let decision = decide(&alone, Some("dev")).expect("dev");
        assert!(decision.other_claims.is_empty());
        // A name no workspace has is still Coder's 404.
        assert_eq!(
            decide(&rows, Some("nope")).err(),
            Some(Refusal::NoAgentNamed("nope".to_owned()))
        );
    }

    #[test]
    fn finds_meant_is_false_exactly_when_decide_finds_nobody_meant() {
        let other = Uuid::from_u128(2);
        let sets = [
            vec![],
            vec![candidate("dev")],
            vec![candidate("dev"), candidate("dev")],
            vec![candidate("dev"), candidate_in(other, "dev")],
            vec![candidate("alpha"), candidate_in(other, "beta")],
        ];
        for candidates in &sets {
            for name in [None, Some("dev"), Some("beta"), Some("missing")] {
                let nobody = matches!(
                    decide(candidates, name),
                    Err(Refusal::NoCandidate | Refusal::NoAgentNamed(_))
                );
                assert_eq!(
                    finds_meant(candidates, name),
                    !nobody,
                    "{name:?} in {candidates:?}"
                );
            }
        }
    }
}
