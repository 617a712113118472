//! Google Compute Engine identity tokens: JWTs signed RS256 by Google, verified with the key
//! named by `kid` in Google's JWKS.
//!
//! Written against OpenSSL directly rather than a JWT crate: the checks are few and every one
//! is pinned here (RS256 only, so `none` and HS256-with-the-public-key cannot be expressed;
//! unpadded base64url; `exp` required and compared with the injected clock), and it keeps one
//! crypto stack for all three clouds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use serde_json::Value;

mod jwks;
pub mod refresh;

use super::{Rejected, shorten};
use jwks::{JwksStore, KeySet};
pub(crate) use refresh::RefreshTask;
use refresh::{HttpJwks, RefreshPolicy};

/// The two spellings of Google's issuer.
pub const ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];
/// Real tokens are 1–1.5 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Header values quoted in details are cut to this many characters.
const MAX_VALUE_IN_DETAIL: usize = 32;

/// Where Google's keys come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum JwksSource {
    /// No keys, every token is rejected. The library default, so nothing reaches the network
    /// unless asked to.
    #[default]
    Disabled,
    /// A JWKS document (`--google-jwks`), loaded once and never refreshed.
    Document(Vec<u8>),
    /// Fetched from this URL at startup and refreshed in the background.
    Url(String),
}

/// Google verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSettings {
    pub jwks: JwksSource,
    /// When set, `aud` must be (or contain) this value; the Coder agent asks for
    /// [`GoogleSettings::DEFAULT_AUDIENCE`], the default. `None` checks nothing (Coder's
    /// behaviour, `--google-audience any`): a token minted for any other service of the VM
    /// then works here too.
    pub audience: Option<String>,
    /// Accept tokens without `iss` (Coder's test tokens have none). A present `iss` must still
    /// be Google's.
    pub allow_missing_issuer: bool,
    /// How long after `exp` a token is still accepted.
    pub leeway: Duration,
}

impl GoogleSettings {
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
    /// The audience the Coder agent always asks the metadata server for.
    pub const DEFAULT_AUDIENCE: &'static str = "coder";
}

impl Default for GoogleSettings {
    fn default() -> Self {
        Self {
            jwks: JwksSource::default(),
            audience: Some(Self::DEFAULT_AUDIENCE.to_owned()),
            allow_missing_issuer: false,
            leeway: Self::DEFAULT_LEEWAY,
        }
    }
}

/// Why a token was refused: Coder answers claims of the wrong shape with a 400 and everything
/// else with a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoogleRejection {
    Invalid(Rejected),
    Claims(String),
}

impl From<Rejected> for GoogleRejection {
    fn from(rejected: Rejected) -> Self {
        Self::Invalid(rejected)
    }
}

/// Verifies identity tokens against the current key set; built once at startup.
#[derive(Debug)]
pub struct GoogleVerifier {
    keys: Arc<JwksStore>,
    /// Set in URL mode: where [`GoogleVerifier::start_refresh`] fetches from.
    url: Option<String>,
    audience: Option<String>,
    allow_missing_issuer: bool,
    leeway_seconds: i64,
}

impl GoogleVerifier {
    pub fn new(settings: &GoogleSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.audience.as_deref() != Some(""),
            "the Google audience is empty; use `any` to accept every audience"
        );
        let (keys, url) = match &settings.jwks {
            JwksSource::Disabled => (KeySet::default(), None),
            JwksSource::Document(json) => {
                (KeySet::parse(json).context("parsing --google-jwks")?, None)
            }
            JwksSource::Url(url) => (KeySet::default(), Some(url.clone())),
        };
        Ok(Self {
            keys: Arc::new(JwksStore::new(keys)),
            url,
            audience: settings.audience.clone(),
            allow_missing_issuer: settings.allow_missing_issuer,
            leeway_seconds: i64::try_from(settings.leeway.as_secs())
                .context("--google-leeway is out of range")?,
        })
    }

    /// In URL mode, fetches the keys and keeps them fresh until the task is dropped.
    pub(crate) async fn start_refresh(&self) -> anyhow::Result<Option<RefreshTask>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let fetcher = HttpJwks::new(url)?;
        Ok(Some(
            refresh::start(Arc::clone(&self.keys), fetcher, RefreshPolicy::default()).await,
        ))
    }

    /// Verifies `token` as of `now` and returns the instance id (empty when the claim is
    /// absent).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<String, GoogleRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejected::new("token is too long").into());
        }
        let three_segments = || Rejected::new("token must have three segments");
        let (signed, signature_b64) = token.rsplit_once('.').ok_or_else(three_segments)?;
        let (header_b64, payload_b64) = signed.split_once('.').ok_or_else(three_segments)?;
        if payload_b64.contains('.') {
            return Err(three_segments().into());
        }
        let header: Value = serde_json::from_slice(&segment(header_b64, "header")?)
            .map_err(|err| Rejected::new(format!("parse header: {err}")))?;
        if !header.is_object() {
            return Err(Rejected::new("header is not a JSON object").into());
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| Rejected::new("header has no alg"))?;
        // The algorithm is pinned, never taken from the token: `none`, HS256 signed with the
        // public key as secret, and every other family fail here. `jku`, `x5u` and `jwk` are
        // never looked at: keys come from the trusted JWKS only.
        if alg != "RS256" {
            return Err(Rejected::new(format!(
                "algorithm {:?} is not RS256",
                shorten(alg, MAX_VALUE_IN_DETAIL)
            ))
            .into());
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|kid| !kid.is_empty())
            .ok_or_else(|| Rejected::new("header has no kid"))?;
        let keys = self.keys.snapshot();
        let Some(key) = keys.get(kid) else {
            self.keys.request_refresh();
            return Err(Rejected::new(format!(
                "unknown key id {:?}",
                shorten(kid, MAX_VALUE_IN_DETAIL)
            ))
            .into());
        };
        let signature = segment(signature_b64, "signature")?;
        let verified = Verifier::new(MessageDigest::sha256(), key)
            .and_then(|mut verifier| verifier.verify_oneshot(&signature, signed.as_bytes()))
            .unwrap_or(false);
        if !verified {
            return Err(Rejected::new("signature does not verify").into());
        }
        let claims: Value = serde_json::from_slice(&segment(payload_b64, "claims")?)
            .map_err(|err| Rejected::new(format!("parse claims: {err}")))?;
        if !claims.is_object() {
            return Err(Rejected::new("claims are not a JSON object").into());
        }
        self.check_expiry(&claims, now)?;
        self.check_issuer(&claims)?;
        self.check_audience(&claims)?;
        instance_id(&claims).map_err(GoogleRejection::Claims)
    }

    fn check_expiry(&self, claims: &Value, now: DateTime<Utc>) -> Result<(), Rejected> {
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(Rejected::new("token has no exp")),
            Some(exp) => exp
                .as_i64()
                .ok_or_else(|| Rejected::new("exp is not an integer"))?,
        };
        if now.timestamp() > exp.saturating_add(self.leeway_seconds) {
            return Err(Rejected::new("token expired"));
        }
        Ok(())
    }

    fn check_issuer(&self, claims: &Value) -> Result<(), Rejected> {
        match claims.get("iss") {
            None if self.allow_missing_issuer => Ok(()),
            None => Err(Rejected::new("token has no iss")),
            Some(Value::String(iss)) if ISSUERS.contains(&iss.as_str()) => Ok(()),
            Some(_) => Err(Rejected::new("iss is not Google's")),
        }
    }

    fn check_audience(&self, claims: &Value) -> Result<(), Rejected> {
        let Some(wanted) = &self.audience else {
            return Ok(());
        };
        let matches = match claims.get("aud") {
            Some(Value::String(aud)) => aud == wanted,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(wanted)),
            _ => false,
        };
        if matches {
            Ok(())
        } else {
            Err(Rejected::new("aud does not match the configured audience"))
        }
    }
}

/// `google.compute_engine.instance_id`, decoded the way Coder's `mapstructure` does: an absent
/// or null value anywhere on the path is an empty id, a value of another type an error (an
/// array is not an object, a number not a string).
fn instance_id(claims: &Value) -> Result<String, String> {
    let mut node = claims;
    for (depth, name) in ["google", "compute_engine"].into_iter().enumerate() {
        node = match node.get(name) {
            None | Some(Value::Null) => return Ok(String::new()),
            Some(object @ Value::Object(_)) => object,
            Some(other) => {
                let path = ["google", "compute_engine"][..=depth].join(".");
                return Err(format!("'{path}' expected a map, got '{}'", kind(other)));
            }
        };
    }
    match node.get("instance_id") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(id)) => Ok(id.clone()),
        Some(other) => Err(format!(
            "'google.compute_engine.instance_id' expected type 'string', got '{}'",
            kind(other)
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// A JWT segment: base64url without padding, as RFC 7515 requires (Coder's validator refuses
/// padding too).
fn segment(text: &str, what: &str) -> Result<Vec<u8>, Rejected> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|err| Rejected::new(format!("decode {what}: {err}")))
}
