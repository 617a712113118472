//! Test doubles for cloud identity material: keys that exist only in the test process.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::keys::{self, Issued};

/// An RSA key and a self-signed certificate wrapping it.
pub struct TestKey(Issued);

impl TestKey {
    pub fn generate(common_name: &str) -> Self {
        Self(keys::self_signed(common_name))
    }

    pub fn certificate_pem(&self) -> Vec<u8> {
        self.0.pem()
    }

    /// Standard base64 of RSASSA-PKCS1-v1_5/SHA-256 over `data`.
    pub fn sign_b64(&self, data: &[u8]) -> String {
        STANDARD.encode(keys::sign_sha256(&self.0.key, data))
    }
}

/// The AWS key every test app trusts (besides the real embedded region keys).
pub fn aws_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate("instauth test AWS key"))
}

/// A key no test app trusts.
pub fn untrusted_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate("untrusted"))
}

/// `{"instanceId": id}` compact, as Coder's test doubles, and its signature by the test key.
pub fn aws_document(instance_id: &str) -> (String, String) {
    let document = serde_json::json!({ "instanceId": instance_id }).to_string();
    let signature = aws_key().sign_b64(document.as_bytes());
    (signature, document)
}
