//! Azure attested-data doubles: a test PKI (root → intermediate → leaves with chosen CNs) and
//! PKCS#7 envelopes signed with it, in the shapes real and library-made payloads take.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509, X509NameBuilder};

use super::app::AppOptions;
use super::der;
use super::keys;
pub use super::keys::{Extras, Issued, issue, issue_with};

/// The test PKI, generated once per test binary.
pub struct Pki {
    pub root: Issued,
    pub intermediate: Issued,
    /// CN `metadata.azure.com`, issued by the intermediate.
    pub leaf: Issued,
    /// A second leaf with the same CN, for two-signer envelopes.
    pub other_leaf: Issued,
    /// CN `metadata.azure.com`, self-signed and trusted by nobody.
    pub self_signed: Issued,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = issue("instauth test Azure root", None, true);
        let intermediate = issue("instauth test Azure intermediate", Some(&root), true);
        let leaf = issue("metadata.azure.com", Some(&intermediate), false);
        let other_leaf = issue("metadata.azure.com", Some(&intermediate), false);
        let self_signed = keys::self_signed("metadata.azure.com");
        Pki {
            root,
            intermediate,
            leaf,
            other_leaf,
            self_signed,
        }
    })
}

/// App options trusting the test root, with the test intermediate configured.
pub fn trust_test_pki(options: &mut AppOptions) {
    options.identity.azure.roots_pem = Some(pki().root.pem());
    options.identity.azure.intermediates_pem = Some(pki().intermediate.pem());
}

/// IMDS's timestamp format.
pub fn azure_time(at: DateTime<Utc>) -> String {
    at.format("%m/%d/%y %H:%M:%S -0000").to_string()
}

/// Attested content like IMDS writes it, created now and expiring in six hours.
pub fn content(vm_id: &str) -> String {
    content_expiring(vm_id, Utc::now() + Duration::hours(6))
}

pub fn content_expiring(vm_id: &str, expires_on: DateTime<Utc>) -> String {
    serde_json::json!({
        "licenseType": "",
        "nonce": expires_on.format("%Y%m%d-%H%M%S").to_string(),
        "plan": {"name": "", "product": "", "publisher": ""},
        "sku": "20_04-lts-gen2",
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "timeStamp": {
            "createdOn": azure_time(expires_on - Duration::hours(6)),
            "expiresOn": azure_time(expires_on),
        },
        "vmId": vm_id,
    })
    .to_string()
}

/// How the envelope is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// OpenSSL's default: signed attributes (content type, signing time, messageDigest).
    Attributes,
    /// No signed attributes: the signature is over the content itself, as real Azure does.
    NoAttributes,
    /// No signed attributes and Azure's quirk: `sha256WithRSAEncryption` where the digest
    /// algorithm belongs.
    AzureQuirk,
}

/// DER PKCS#7 signedData over `content` by `signer`, carrying `signer`'s certificate and
/// `extra`.
pub fn sign(content: &str, signer: &Issued, extra: &[&X509], shape: Shape) -> Vec<u8> {
    let mut certs = Stack::new().expect("stack");
    for cert in extra {
        certs.push((*cert).clone()).expect("push");
    }
    let mut flags = Pkcs7Flags::BINARY;
    if shape != Shape::Attributes {
        flags |= Pkcs7Flags::NOATTR;
    }
    let der = Pkcs7::sign(&signer.cert, &signer.key, &certs, content.as_bytes(), flags)
        .expect("PKCS7_sign")
        .to_der()
        .expect("der");
    if shape == Shape::AzureQuirk {
        der::replace_digest_oid_with_sha256_with_rsa(&der)
    } else {
        der
    }
}

pub fn b64(der: &[u8]) -> String {
    STANDARD.encode(der)
}

/// The usual double: content for `vm_id`, signed by the test leaf without attributes.
pub fn attested(vm_id: &str) -> String {
    b64(&sign(
        &content(vm_id),
        &pki().leaf,
        &[],
        Shape::NoAttributes,
    ))
}

/// One envelope with two SignerInfos over the same content (both leaves of the test PKI).
pub fn two_signers(vm_id: &str) -> Vec<u8> {
    let content = content(vm_id);
    let first = sign(&content, &pki().leaf, &[], Shape::NoAttributes);
    let second = sign(&content, &pki().other_leaf, &[], Shape::NoAttributes);
    der::merge_signed_data(&first, &second)
}

/// A PKCS#7 that is not signedData (envelopedData to the test leaf).
pub fn enveloped() -> Vec<u8> {
    let mut recipients = Stack::new().expect("stack");
    recipients.push(pki().leaf.cert.clone()).expect("push");
    Pkcs7::encrypt(
        &recipients,
        br#"{"vmId":"x"}"#,
        Cipher::aes_256_cbc(),
        Pkcs7Flags::BINARY,
    )
    .expect("encrypt")
    .to_der()
    .expect("der")
}

/// Changes the first occurrence of `from` in `der` to `to` (same length), e.g. the `vmId` in
/// the signed content, leaving every signature as it was.
pub fn tamper(der: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "tampering keeps the length");
    let at = der
        .windows(from.len())
        .position(|window| window == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in the envelope"));
    let mut out = der.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// PKCS#7 over `content` by `signer` without signed attributes, built by hand so the digest can
/// be any: `digest` signs, `digest_oid` (content bytes) names it in the envelope.
pub fn sign_with_digest(
    content: &str,
    signer: &Issued,
    digest: MessageDigest,
    digest_oid: &[u8],
) -> Vec<u8> {
    let mut rsa = Signer::new(digest, &signer.key).expect("signer");
    let signature = rsa.sign_oneshot_to_vec(content.as_bytes()).expect("sign");
    let certificate = signer.cert.to_der().expect("der");
    let issuer_name = signer.cert.issuer_name().to_der().expect("issuer");
    let serial = signer
        .cert
        .serial_number()
        .to_bn()
        .expect("serial")
        .to_vec();
    der::build_signed_data(
        content.as_bytes(),
        digest_oid,
        &der::SignerParts {
            certificate: &certificate,
            issuer_name: &issuer_name,
            serial: &serial,
            signature: &signature,
        },
    )
}

/// A certificate for `cn` issued by `issuer` around an RSA public key of `bits` whose modulus
/// is just a random odd number: enough for checks that read the key before any RSA operation,
/// without the seconds a real key of that size takes to generate.
pub fn certificate_with_rsa_modulus_of(cn: &str, issuer: &Issued, bits: i32) -> X509 {
    use openssl::bn::MsbOption;

    let mut modulus = BigNum::new().expect("bn");
    modulus.rand(bits, MsbOption::ONE, true).expect("rand");
    let exponent = BigNum::from_u32(65_537).expect("e");
    let public = Rsa::from_public_components(modulus, exponent).expect("rsa");
    let public = PKey::from_rsa(public).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("cn");
    let name = name.build();
    let mut cert = X509::builder().expect("builder");
    cert.set_version(2).expect("version");
    let serial = BigNum::from_u32(keys::rand_serial()).expect("serial");
    cert.set_serial_number(&Asn1Integer::from_bn(&serial).expect("serial"))
        .expect("serial");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(issuer.cert.subject_name())
        .expect("issuer");
    cert.set_pubkey(&public).expect("pubkey");
    let now = Utc::now().timestamp();
    cert.set_not_before(&Asn1Time::from_unix(now - 86_400).expect("time"))
        .expect("not before");
    cert.set_not_after(&Asn1Time::from_unix(now + 365 * 86_400).expect("time"))
        .expect("not after");
    cert.sign(&issuer.key, MessageDigest::sha256())
        .expect("sign");
    cert.build()
}

/// PKCS#7 over `content` naming `certificate` as its signer, with `signature` as given (not
/// necessarily valid): for refusals that come before the signature is checked.
pub fn envelope_for(content: &str, certificate: &X509, signature: &[u8]) -> Vec<u8> {
    let der_cert = certificate.to_der().expect("der");
    let issuer_name = certificate.issuer_name().to_der().expect("issuer");
    let serial = certificate
        .serial_number()
        .to_bn()
        .expect("serial")
        .to_vec();
    der::build_signed_data(
        content.as_bytes(),
        der::SHA256,
        &der::SignerParts {
            certificate: &der_cert,
            issuer_name: &issuer_name,
            serial: &serial,
            signature,
        },
    )
}
