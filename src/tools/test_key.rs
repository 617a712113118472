//! A throwaway RSA key with a self-signed certificate, standing in for AWS's signing key:
//! `demo` and `seed` sign instance identity documents with it, and `serve --aws-certificates`
//! trusts its certificate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509, X509NameBuilder};
use serde_json::json;

/// A key and self-signed certificate that exist only in this process.
#[derive(Debug)]
pub struct TestKey {
    key: PKey<Private>,
    certificate_pem: Vec<u8>,
}

impl TestKey {
    pub fn generate() -> anyhow::Result<Self> {
        Self::with_key(
            PKey::from_rsa(Rsa::generate(2048)?)?,
            "instauth demo (not AWS)",
        )
    }

    /// A key of the size AWS signs instance identity documents with (RSA-1024), so a load
    /// test pays what production verification costs.
    pub fn generate_aws_sized() -> anyhow::Result<Self> {
        Self::with_key(
            PKey::from_rsa(Rsa::generate(1024)?)?,
            "instauth test key (not AWS)",
        )
    }

    /// An existing private key (PEM), with a fresh self-signed certificate for it.
    pub fn from_private_key_pem(pem: &[u8]) -> anyhow::Result<Self> {
        Self::with_key(
            PKey::private_key_from_pem(pem)?,
            "instauth test key (not AWS)",
        )
    }

    fn with_key(key: PKey<Private>, common_name: &str) -> anyhow::Result<Self> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut cert = X509::builder()?;
        cert.set_version(2)?;
        cert.set_subject_name(&name)?;
        cert.set_issuer_name(&name)?;
        cert.set_pubkey(&key)?;
        cert.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
        cert.set_not_after(Asn1Time::days_from_now(1)?.as_ref())?;
        cert.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            certificate_pem: cert.build().to_pem()?,
            key,
        })
    }

    /// The self-signed certificate that `serve --aws-certificates` trusts.
    pub fn certificate_pem(&self) -> &[u8] {
        &self.certificate_pem
    }

    /// The private key (PKCS#8 PEM), so other tools can sign more documents.
    pub fn private_key_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// A document for `instance_id` and its signature, as IMDS would serve them.
    pub fn sign_document(&self, instance_id: &str) -> anyhow::Result<(String, String)> {
        let document = serde_json::to_string_pretty(&json!({
            "instanceId": instance_id,
            "region": "us-east-1",
            "accountId": "000000000000",
        }))?;
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        let signature = STANDARD.encode(signer.sign_oneshot_to_vec(document.as_bytes())?);
        Ok((document, signature))
    }
}
