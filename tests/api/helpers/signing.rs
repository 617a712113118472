//! Test doubles for cloud identity material: keys that exist only in the test process.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509, X509NameBuilder};

/// An RSA key and a self-signed certificate wrapping it.
pub struct TestKey {
    pub key: PKey<Private>,
    pub certificate: X509,
}

impl TestKey {
    pub fn generate(common_name: &str) -> Self {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", common_name).expect("cn");
        let name = name.build();
        let mut cert = X509::builder().expect("builder");
        cert.set_version(2).expect("version");
        cert.set_subject_name(&name).expect("subject");
        cert.set_issuer_name(&name).expect("issuer");
        cert.set_pubkey(&key).expect("pubkey");
        cert.set_not_before(Asn1Time::days_from_now(0).expect("time").as_ref())
            .expect("not before");
        cert.set_not_after(Asn1Time::days_from_now(365).expect("time").as_ref())
            .expect("not after");
        cert.sign(&key, MessageDigest::sha256()).expect("sign");
        Self {
            key,
            certificate: cert.build(),
        }
    }

    pub fn certificate_pem(&self) -> Vec<u8> {
        self.certificate.to_pem().expect("pem")
    }

    /// Standard base64 of RSASSA-PKCS1-v1_5/SHA-256 over `data`.
    pub fn sign_b64(&self, data: &[u8]) -> String {
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key).expect("signer");
        STANDARD.encode(signer.sign_oneshot_to_vec(data).expect("signature"))
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
