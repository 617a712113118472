//! Which agent may authenticate as an instance: the candidates the one statement returns
//! ([`query`]), and the pure choice among them ([`decide`]).

mod candidate;
mod decide;
mod query;

pub(crate) use candidate::Candidate;
pub(crate) use decide::{Decision, Refusal, decide, normalise_agent_name};
pub(crate) use query::{QUERY, agents_by_instance_id};
