//! Coder's wire contract, as the HTTP edge speaks it: the error table, request bodies decoded
//! and responses encoded the way Go's `encoding/json` does, Go's `%q` quoting inside messages,
//! and the `Server-Timing` header of authentication answers.

pub mod body;
pub mod error;
pub mod json;
pub mod quote;
pub mod timing;
