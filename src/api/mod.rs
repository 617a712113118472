//! Coder's wire contract, as the HTTP edge speaks it: the error table, request bodies decoded
//! and responses encoded the way Go's `encoding/json` does, Go's `%q` quoting inside messages,
//! and the `Server-Timing` header of authentication answers.

pub(crate) mod body;
pub(crate) mod error;
pub(crate) mod json;
pub(crate) mod quote;
pub(crate) mod timing;
