//! A throwaway certificate authority and an Azure-shaped signer under it, standing in for
//! Azure's metadata service: `seed --provider azure` signs attested data with it, and
//! `serve --azure-roots` trusts its root.
//!
//! The shape follows what IMDS serves: PKCS#7 signedData with the JSON inside, SHA-256, the
//! signing leaf (RSA-2048, CN `metadata.azure.com`, TLS server usage) the only certificate
//! carried. The leaf hangs straight off the root: a real chain has two intermediates, but a
//! proven signer's chain is built once per signer, so its length does not change a load run.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use serde_json::json;

/// How long the root, the leaf and the attested data stay valid. IMDS gives attested data six
/// hours; a seeded corpus is meant to be replayed for weeks.
const VALID_FOR: TimeDelta = TimeDelta::days(30);
/// `timeStamp` as IMDS writes it.
const TIMESTAMP_FORMAT: &str = "%m/%d/%y %H:%M:%S -0000";

/// A root and a leaf that exist only in this process.
pub struct TestAzureSigner {
    root_pem: Vec<u8>,
    leaf: X509,
    key: PKey<Private>,
    created_on: DateTime<Utc>,
}

impl std::fmt::Debug for TestAzureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAzureSigner")
            .field("created_on", &self.created_on)
            .finish_non_exhaustive()
    }
}

impl TestAzureSigner {
    pub fn generate() -> anyhow::Result<Self> {
        let root_key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let mut root = certificate("instauth test Azure root (not Azure)", &root_key)?;
        root.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        root.append_extension(KeyUsage::new().critical().key_cert_sign().build()?)?;
        root.sign(&root_key, MessageDigest::sha256())?;
        let root = root.build();

        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        let mut leaf = certificate("metadata.azure.com", &key)?;
        leaf.set_issuer_name(root.subject_name())?;
        leaf.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        leaf.sign(&root_key, MessageDigest::sha256())?;
        Ok(Self {
            root_pem: root.to_pem()?,
            leaf: leaf.build(),
            key,
            created_on: Utc::now(),
        })
    }

    /// The root that `serve --azure-roots` trusts.
    pub fn root_pem(&self) -> &[u8] {
        &self.root_pem
    }

    /// The signer's private key (PKCS#8 PEM), so other tools can sign more payloads.
    pub fn private_key_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// Attested data for `vm_id` (base64 PKCS#7), as IMDS would serve it.
    pub fn sign_attested_data(&self, vm_id: &str) -> anyhow::Result<String> {
        let content = serde_json::to_vec(&json!({
            "licenseType": "",
            "nonce": vm_id,
            "plan": { "name": "", "product": "", "publisher": "" },
            "sku": "",
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "timeStamp": {
                "createdOn": self.created_on.format(TIMESTAMP_FORMAT).to_string(),
                "expiresOn": (self.created_on + VALID_FOR).format(TIMESTAMP_FORMAT).to_string(),
            },
            "vmId": vm_id,
        }))?;
        let no_more_certificates = Stack::new()?;
        let signed = Pkcs7::sign(
            &self.leaf,
            &self.key,
            &no_more_certificates,
            &content,
            Pkcs7Flags::BINARY | Pkcs7Flags::NOSMIMECAP,
        )?;
        Ok(STANDARD.encode(signed.to_der()?))
    }
}

/// A certificate for `key` named `common_name`, valid from now for [`VALID_FOR`], not yet
/// issued or signed.
fn certificate(common_name: &str, key: &PKey<Private>) -> anyhow::Result<X509Builder> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    cert.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(key)?;
    cert.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    let days = u32::try_from(VALID_FOR.num_days())?;
    cert.set_not_after(Asn1Time::days_from_now(days)?.as_ref())?;
    Ok(cert)
}
