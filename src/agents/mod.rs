//! Which agent may authenticate as an instance: the candidates the one statement returns
//! ([`query`]), coalesced with concurrent lookups ([`coalesce`]), and the pure choice among
//! them ([`decide`]).

mod candidate;
mod coalesce;
mod decide;
mod query;

pub(crate) use candidate::Candidate;
pub(crate) use coalesce::{Coalescer, Served};
pub(crate) use decide::{Decision, Refusal, decide, finds_meant, normalise_agent_name};
pub(crate) use query::{BATCH_QUERY, QUERY};
