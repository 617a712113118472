//! Google identity-token doubles: an RS256 key published in a JWKS, and tokens shaped like
//! GCE's `format=full` ones (or deliberately not).

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde_json::{Value, json};

use super::keys;

/// An RSA key and the `kid` it is published under.
pub struct GoogleKey {
    pub kid: String,
    pub key: PKey<Private>,
}

impl GoogleKey {
    fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            key: keys::rsa_key(),
        }
    }

    /// The public half as a JWK, with or without `kty`/`alg`/`use` (Coder's has none).
    pub fn jwk(&self, full: bool) -> Value {
        let rsa = self.key.rsa().expect("rsa");
        let mut jwk = json!({
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        });
        if full {
            jwk["kty"] = json!("RSA");
            jwk["alg"] = json!("RS256");
            jwk["use"] = json!("sig");
        }
        jwk
    }

    pub fn public_pem(&self) -> Vec<u8> {
        self.key.public_key_to_pem().expect("pem")
    }
}

/// The key every test app trusts.
pub fn key() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(|| GoogleKey::generate("instauth-test-kid"))
}

/// A key no test app trusts.
pub fn stranger() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(|| GoogleKey::generate("stranger-kid"))
}

/// `{"keys": [...]}` for `keys`.
pub fn jwks(keys: &[&GoogleKey], full: bool) -> Vec<u8> {
    let keys: Vec<Value> = keys.iter().map(|key| key.jwk(full)).collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

/// Claims of a real `format=full` token for `instance_id`, valid for an hour.
pub fn claims(instance_id: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "aud": "coder",
        "azp": "117000000000000000000",
        "email": "vm@project.iam.gserviceaccount.com",
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "117000000000000000000",
        "google": {
            "compute_engine": {
                "instance_creation_timestamp": now - 600,
                "instance_id": instance_id,
                "instance_name": "dev",
                "project_id": "instauth-test",
                "project_number": 1234567890,
                "zone": "us-central1-a",
            }
        }
    })
}

fn segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `header.claims` signed RS256 by `key` (whatever the header says).
pub fn sign_with(header: &Value, claims: &Value, key: &GoogleKey) -> String {
    let signed = format!("{}.{}", segment(header), segment(claims));
    let signature = keys::sign_sha256(&key.key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A token as Google issues it, by the trusted key.
pub fn token(claims: &Value) -> String {
    sign_with(
        &json!({"alg": "RS256", "kid": key().kid, "typ": "JWT"}),
        claims,
        key(),
    )
}

/// A valid token for `instance_id`.
pub fn token_for(instance_id: &str) -> String {
    token(&claims(instance_id))
}

/// `header.claims` with an HMAC-SHA256 signature keyed by `secret` (the algorithm-confusion
/// attack when `secret` is the public key).
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signed = format!("{}.{}", segment(header), segment(claims));
    let key = PKey::hmac(secret).expect("hmac key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    let mac = signer.sign_oneshot_to_vec(signed.as_bytes()).expect("mac");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// `header.claims.` with an empty signature (`alg: none`).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", segment(header), segment(claims))
}
