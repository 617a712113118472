//! RSA keys and X.509 certificates made in the test process: the one place the AWS, Azure and
//! Google doubles get their key material from.

use chrono::Utc;
use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
use openssl::x509::{X509, X509Extension, X509NameBuilder};

use super::der;

/// A fresh RSA-2048 key.
pub fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey")
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (AWS's signature, JWT's RS256).
pub fn sign_sha256(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut signer = Signer::new(MessageDigest::sha256(), key).expect("signer");
    signer.sign_oneshot_to_vec(data).expect("signature")
}

/// A key and the certificate issued for it.
pub struct Issued {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl Issued {
    pub fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("pem")
    }
}

/// Issues a certificate with subject `CN=cn` for a fresh RSA-2048 key, valid from a day ago
/// for a year; `issuer` `None` makes it self-signed, `ca` makes it a CA that may sign
/// certificates.
pub fn issue(cn: &str, issuer: Option<&Issued>, ca: bool) -> Issued {
    issue_with(cn, issuer, ca, &Extras::default())
}

/// What [`issue_with`] may add to a certificate.
#[derive(Default)]
pub struct Extras {
    /// An extended key usage extension.
    pub extended_key_usage: Option<ExtendedKeyUsage>,
    /// A CA-issuers URL (Authority Information Access).
    pub ca_issuers: Option<String>,
    /// This key instead of a fresh one (key generation is the slow part).
    pub key: Option<PKey<Private>>,
}

/// [`issue`] with `extras`.
pub fn issue_with(cn: &str, issuer: Option<&Issued>, ca: bool, extras: &Extras) -> Issued {
    let key = extras.key.clone().unwrap_or_else(rsa_key);
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut cert = X509::builder().expect("builder");
    cert.set_version(2).expect("version");
    let serial = BigNum::from_u32(rand_serial()).expect("serial");
    cert.set_serial_number(&Asn1Integer::from_bn(&serial).expect("serial"))
        .expect("serial");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    let now = Utc::now().timestamp();
    cert.set_not_before(&Asn1Time::from_unix(now - 86_400).expect("time"))
        .expect("not before");
    cert.set_not_after(&Asn1Time::from_unix(now + 365 * 86_400).expect("time"))
        .expect("not after");
    if ca {
        cert.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("bc");
        cert.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ku");
    }
    if let Some(usage) = &extras.extended_key_usage {
        cert.append_extension(usage.build().expect("eku"))
            .expect("eku");
    }
    if let Some(url) = &extras.ca_issuers {
        let value = Asn1OctetString::new_from_bytes(&der::ca_issuers_extension(url)).expect("aia");
        let oid = Asn1Object::from_str("1.3.6.1.5.5.7.1.1").expect("aia oid");
        cert.append_extension(X509Extension::new_from_der(&oid, false, &value).expect("aia"))
            .expect("aia");
    }
    cert.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())
        .expect("sign");
    Issued {
        key,
        cert: cert.build(),
    }
}

/// A self-signed end-entity certificate with subject `CN=cn`.
pub fn self_signed(cn: &str) -> Issued {
    issue(cn, None, false)
}

pub fn rand_serial() -> u32 {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).expect("rand");
    u32::from_be_bytes(bytes) >> 1
}
