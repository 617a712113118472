//! RSA keys and X.509 certificates made in the test process: the one place the AWS, Azure and
//! Google doubles get their key material from.

use chrono::Utc;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509, X509NameBuilder};

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
    let key = rsa_key();
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

fn rand_serial() -> u32 {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).expect("rand");
    u32::from_be_bytes(bytes) >> 1
}
