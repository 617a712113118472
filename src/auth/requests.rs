//! The three request bodies and, for each, what Coder requires of it and how its cloud
//! material is verified (`docs/coder-contract.md` §1.2).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::api::body::{RequestBody, check, required};
use crate::api::error::ApiError;
use crate::identity::google::GoogleRejection;
use crate::identity::{Provider, Rejected, Verifiers};

/// A body that proves an instance's identity.
pub(crate) trait IdentityRequest: RequestBody + Send + 'static {
    const PROVIDER: Provider;
    /// Whether verifying costs enough CPU to belong on the blocking pool, so the event loop
    /// keeps serving other connections meanwhile.
    const OFF_LOOP: bool;

    /// Coder's required-field check: every missing field is listed in one 400.
    fn validate(&self) -> Result<(), ApiError>;

    /// The requested agent name, as sent.
    fn take_agent_name(&mut self) -> Option<String>;

    /// The instance id the material proves, as of `now`.
    fn verify(&self, verifiers: &Verifiers, now: DateTime<Utc>) -> Result<String, ApiError>;
}

fn invalid(provider: Provider, rejected: Rejected) -> ApiError {
    ApiError::InvalidIdentity {
        provider,
        detail: rejected.0,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AwsRequest {
    signature: Option<String>,
    document: Option<String>,
    agent_name: Option<String>,
}

impl RequestBody for AwsRequest {
    const FIELDS: &'static [&'static str] = &["signature", "document", "agent_name"];
}

impl IdentityRequest for AwsRequest {
    const PROVIDER: Provider = Provider::Aws;
    const OFF_LOOP: bool = false;

    fn validate(&self) -> Result<(), ApiError> {
        let mut failures = Vec::new();
        required("signature", &self.signature, &mut failures);
        required("document", &self.document, &mut failures);
        check(failures)
    }

    fn take_agent_name(&mut self) -> Option<String> {
        self.agent_name.take()
    }

    fn verify(&self, verifiers: &Verifiers, now: DateTime<Utc>) -> Result<String, ApiError> {
        let signature = self.signature.as_deref().unwrap_or_default();
        let document = self.document.as_deref().unwrap_or_default();
        verifiers
            .aws
            .verify(signature, document, now)
            .map(|identity| identity.instance_id)
            .map_err(|rejected| invalid(Self::PROVIDER, rejected))
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AzureRequest {
    signature: Option<String>,
    /// Required like Coder, but its value is not used: only `signature` is verified.
    encoding: Option<String>,
    agent_name: Option<String>,
}

impl RequestBody for AzureRequest {
    const FIELDS: &'static [&'static str] = &["signature", "encoding", "agent_name"];
}

impl IdentityRequest for AzureRequest {
    const PROVIDER: Provider = Provider::Azure;
    /// PKCS#7 and X.509 parsing plus the chain cost 0.5–1 ms of CPU.
    const OFF_LOOP: bool = true;

    fn validate(&self) -> Result<(), ApiError> {
        let mut failures = Vec::new();
        required("signature", &self.signature, &mut failures);
        required("encoding", &self.encoding, &mut failures);
        check(failures)
    }

    fn take_agent_name(&mut self) -> Option<String> {
        self.agent_name.take()
    }

    fn verify(&self, verifiers: &Verifiers, now: DateTime<Utc>) -> Result<String, ApiError> {
        let signature = self.signature.as_deref().unwrap_or_default();
        verifiers
            .azure
            .verify(signature, now)
            .map(|identity| identity.vm_id)
            .map_err(|rejected| invalid(Self::PROVIDER, rejected))
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct GoogleRequest {
    json_web_token: Option<String>,
    agent_name: Option<String>,
}

impl RequestBody for GoogleRequest {
    const FIELDS: &'static [&'static str] = &["json_web_token", "agent_name"];
}

impl IdentityRequest for GoogleRequest {
    const PROVIDER: Provider = Provider::Google;
    const OFF_LOOP: bool = false;

    fn validate(&self) -> Result<(), ApiError> {
        let mut failures = Vec::new();
        required("json_web_token", &self.json_web_token, &mut failures);
        check(failures)
    }

    fn take_agent_name(&mut self) -> Option<String> {
        self.agent_name.take()
    }

    fn verify(&self, verifiers: &Verifiers, now: DateTime<Utc>) -> Result<String, ApiError> {
        let token = self.json_web_token.as_deref().unwrap_or_default();
        verifiers
            .google
            .verify(token, now)
            .map_err(|rejection| match rejection {
                GoogleRejection::Invalid(rejected) => invalid(Self::PROVIDER, rejected),
                GoogleRejection::Claims(detail) => ApiError::ClaimsDecode(detail),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::body::parse_json;

    /// A body with a string under every name in `FIELDS`, as the request type reads it.
    fn every_field_given<T: RequestBody + std::fmt::Debug>() -> String {
        let body: serde_json::Map<String, serde_json::Value> = T::FIELDS
            .iter()
            .map(|field| ((*field).to_owned(), format!("given-{field}").into()))
            .collect();
        let parsed: T = parse_json(serde_json::Value::Object(body).to_string().as_bytes())
            .unwrap_or_else(|err| panic!("{:?}: {err}", T::FIELDS));
        format!("{parsed:?}")
    }

    /// Each listed name fills a field, and every field is listed: a struct and its `FIELDS`
    /// cannot drift apart unnoticed.
    #[test]
    fn the_field_lists_match_the_structs() {
        for (read, fields) in [
            (every_field_given::<AwsRequest>(), AwsRequest::FIELDS),
            (every_field_given::<AzureRequest>(), AzureRequest::FIELDS),
            (every_field_given::<GoogleRequest>(), GoogleRequest::FIELDS),
        ] {
            for field in fields {
                assert!(read.contains(&format!("given-{field}")), "{field}: {read}");
            }
            assert!(
                !read.contains("None"),
                "a field missing from FIELDS: {read}"
            );
        }
    }
}
