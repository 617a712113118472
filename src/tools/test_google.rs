//! A throwaway RSA key standing in for Google's token signer: `seed --provider google` signs
//! identity tokens with it, and `serve --google-jwks` trusts the JWKS it writes.
//!
//! The tokens are shaped as a VM's metadata server issues them with `format=full`: RS256, the
//! key named by `kid`, audience `coder` (what the service requires by default), Google's issuer,
//! and the instance under `google.compute_engine`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::json;

/// How long the tokens stay valid. Google's live an hour; a seeded corpus is meant to be
/// replayed for weeks.
const VALID_FOR: TimeDelta = TimeDelta::days(30);
const KID: &str = "instauth-test-key";

/// A key that exists only in this process.
pub struct TestGoogleSigner {
    key: PKey<Private>,
    issued_at: i64,
}

impl std::fmt::Debug for TestGoogleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGoogleSigner")
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl TestGoogleSigner {
    /// RSA-2048, as Google signs.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            key: PKey::from_rsa(Rsa::generate(2048)?)?,
            issued_at: Utc::now().timestamp(),
        })
    }

    /// The JWKS that `serve --google-jwks` reads: this key alone.
    pub fn jwks(&self) -> anyhow::Result<Vec<u8>> {
        let rsa = self.key.rsa()?;
        Ok(serde_json::to_vec_pretty(&json!({ "keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        }]}))?)
    }

    /// The private key (PKCS#8 PEM), so other tools can sign more tokens.
    pub fn private_key_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// An identity token for `instance_id`.
    pub fn sign_token(&self, instance_id: &str) -> anyhow::Result<String> {
        let header = json!({ "alg": "RS256", "kid": KID, "typ": "JWT" });
        let claims = json!({
            "aud": "coder",
            "azp": "000000000000000000000",
            "exp": self.issued_at + VALID_FOR.num_seconds(),
            "iat": self.issued_at,
            "iss": "https://accounts.google.com",
            "sub": "000000000000000000000",
            "google": { "compute_engine": {
                "instance_creation_timestamp": self.issued_at,
                "instance_id": instance_id,
                "instance_name": instance_id,
                "project_id": "instauth-load",
                "project_number": 0,
                "zone": "us-central1-a",
            }},
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        let signature = signer.sign_oneshot_to_vec(signed.as_bytes())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}
