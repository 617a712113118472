//! Azure attested data: base64 DER PKCS#7 signedData whose encapsulated content is the JSON
//! IMDS signed, with the signing certificate embedded.
//!
//! Two independent proofs are required, because Coder once shipped only the first (#25286:
//! any envelope wrapping a genuine Azure certificate was accepted, whatever it said):
//! 1. the certificate the one SignerInfo names chains to a pinned root (never the host's trust
//!    store) at `now`, with its CN one of Azure's metadata hosts;
//! 2. the signature over the content verifies with that certificate.
//!
//! Before either, the envelope must be exactly one DER value with SHA-256 or stronger digests
//! ([`envelope`]), and the signer must be fit for the job: its extended key usage (when present)
//! includes TLS server authentication, as every Azure metadata certificate's does, and an RSA
//! key has at most [`MAX_SIGNER_RSA_BITS`]. The chain comes before the signature, so an envelope
//! whose signer no pinned root vouches for never costs an RSA operation with its key. A missing
//! intermediate can be fetched in the background ([`fetch`]). A signer that passed these
//! checks is remembered while its chain holds ([`vouched`]), so a fleet's payloads, signed by a
//! few certificates, pay for them once.
//!
//! Then the content must carry a `vmId` and an `expiresOn` that has not passed.

use std::ops::Range;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::Id;
use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{
    X509, X509ExtendedKeyUsage, X509PurposeId, X509Ref, X509StoreContext, X509VerifyResult,
};
use regex_lite::Regex;
use serde::Deserialize;

mod envelope;
pub mod fetch;
mod trust;
mod vouched;

use super::{Rejected, decode_wrapped_base64, shorten};
pub use fetch::IntermediateFetch;
use fetch::{Asked, Fetcher};
pub(crate) use trust::{AzureTrust, log_expiry};
use vouched::{Fingerprint, Vouched};

/// The signer CNs of Azure's public, Government, China and Germany clouds (Coder's pattern).
const SIGNER_CN: &str = r"^(.*\.)?metadata\.(azure\.(com|us|cn)|microsoftazure\.de)$";
/// `timeStamp.expiresOn` as IMDS writes it, e.g. `04/19/22 07:27:21 -0000`.
const TIMESTAMP_FORMAT: &str = "%m/%d/%y %H:%M:%S %z";
/// Real payloads are about 3 KiB of DER; this leaves room for longer chains.
const MAX_DER_BYTES: usize = 32 * 1024;
/// Longest certificate path accepted (leaf, two intermediates and a root in practice).
const MAX_CHAIN_DEPTH: i32 = 6;
/// Issuer names quoted in details are cut to this many characters.
const MAX_NAME_IN_DETAIL: usize = 96;
/// Largest RSA key a signer may have: Azure's leaves are RSA-2048, and verifying with an
/// attacker-chosen 16 384-bit key would cost milliseconds per request.
pub const MAX_SIGNER_RSA_BITS: u32 = 4096;

/// Azure verification settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// PEM bundle replacing the embedded roots.
    pub roots_pem: Option<Vec<u8>>,
    /// PEM bundle added to the embedded intermediates.
    pub intermediates_pem: Option<Vec<u8>>,
    /// How long after `expiresOn` a payload is still accepted.
    pub expiry_skew: Duration,
    /// Accept content whose `timeStamp.expiresOn` is absent or unparsable (no expiry check).
    pub allow_missing_timestamp: bool,
    /// Whether a signer's missing intermediate is fetched from its CA-issuers URL.
    pub fetch_intermediates: IntermediateFetch,
}

impl AzureSettings {
    pub const DEFAULT_EXPIRY_SKEW: Duration = Duration::from_secs(5 * 60);
}

impl Default for AzureSettings {
    fn default() -> Self {
        Self {
            roots_pem: None,
            intermediates_pem: None,
            expiry_skew: Self::DEFAULT_EXPIRY_SKEW,
            allow_missing_timestamp: false,
            fetch_intermediates: IntermediateFetch::Off,
        }
    }
}

/// What verified attested data says about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureIdentity {
    /// `vmId`, never empty.
    pub vm_id: String,
    /// `timeStamp.expiresOn`, when present and parsable.
    pub expires_on: Option<DateTime<Utc>>,
    /// The signing certificate's CN.
    pub signer: String,
}

/// Verifies attested data against the pinned roots; built once at startup.
pub struct AzureVerifier {
    trust: AzureTrust,
    /// Passed to the signature-only `PKCS7_verify`, which never consults it (`NOVERIFY`).
    empty_store: X509Store,
    signer_cn: Regex,
    expiry_skew: TimeDelta,
    allow_missing_timestamp: bool,
    /// Set unless fetching is off.
    fetcher: Option<Fetcher>,
    /// Signers already proven, with the window in which their chain holds.
    vouched: Vouched,
}

impl std::fmt::Debug for AzureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureVerifier")
            .field("roots", &self.trust.roots.len())
            .field("intermediates", &self.trust.intermediates.len())
            .field("expiry_skew", &self.expiry_skew)
            .field("allow_missing_timestamp", &self.allow_missing_timestamp)
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Content {
    #[serde(rename = "vmId", default)]
    vm_id: Option<String>,
    #[serde(rename = "timeStamp", default)]
    time_stamp: Option<TimeStamp>,
}

#[derive(Deserialize)]
struct TimeStamp {
    #[serde(rename = "expiresOn", default)]
    expires_on: Option<String>,
}

impl AzureVerifier {
    /// Parses the trust material; with fetching on, starts its background task on the current
    /// Tokio runtime (stopped when the verifier is dropped).
    pub fn new(settings: &AzureSettings) -> anyhow::Result<Self> {
        let trust = AzureTrust::load(
            settings.roots_pem.as_deref(),
            settings.intermediates_pem.as_deref(),
        )?;
        let fetcher = Fetcher::start(settings.fetch_intermediates, &trust)?;
        Ok(Self {
            trust,
            fetcher,
            empty_store: X509StoreBuilder::new()?.build(),
            signer_cn: Regex::new(SIGNER_CN).context("signer CN pattern")?,
            expiry_skew: TimeDelta::from_std(settings.expiry_skew)
                .context("--azure-expiry-skew is out of range")?,
            allow_missing_timestamp: settings.allow_missing_timestamp,
            vouched: Vouched::default(),
        })
    }

    pub(crate) fn trust(&self) -> &AzureTrust {
        &self.trust
    }

    /// Verifies `signature` (the attested data's base64 PKCS#7) as of `now`.
    pub fn verify(&self, signature: &str, now: DateTime<Utc>) -> Result<AzureIdentity, Rejected> {
        let der = decode(signature)?;
        let signed_data = envelope::inspect(&der)?;
        // Certificates already proven come parsed, beside the envelope without them; any
        // other envelope is parsed whole.
        let known = signed_data.and_then(|data| self.known(&data, now));
        let (pkcs7, certificates) = match &known {
            Some(known) => (Pkcs7::from_der(&known.envelope), &known.certificates),
            None => (Pkcs7::from_der(&der), &Stack::new().map_err(internal)?),
        };
        let pkcs7 = pkcs7.map_err(|_| Rejected::new("signature is not DER PKCS#7"))?;
        // Checked before any other PKCS#7 call: `signed()` is `None` for every other content
        // type and for a signedData whose body is absent.
        let signed = pkcs7
            .signed()
            .ok_or_else(|| Rejected::new("PKCS#7 is not signedData"))?;
        // One entry per SignerInfo: the certificate it names by issuer and serial, looked up
        // among the envelope's certificates only (carried, or known in their place).
        let signers = pkcs7
            .signers(certificates, Pkcs7Flags::empty())
            .map_err(|_| Rejected::new("no signer certificate in the envelope"))?;
        let signer = match signers.iter().collect::<Vec<_>>().as_slice() {
            [one] => *one,
            more => {
                return Err(Rejected::new(format!(
                    "expected exactly one signer, found {}",
                    more.len()
                )));
            }
        };
        let signer_name = match known.as_ref().and_then(|known| known.name_of(signer)) {
            Some(name) => name,
            None => self.check_signer(signer, signed.certificates(), now)?,
        };
        let mut content = Vec::new();
        pkcs7
            .verify(
                certificates,
                &self.empty_store,
                None,
                Some(&mut content),
                // Signature (and signed attributes) only; the chain was checked above with the
                // pinned roots, an injected time and purpose "any".
                Pkcs7Flags::NOVERIFY,
            )
            .map_err(|_| Rejected::new("signature over the content does not verify"))?;
        let (vm_id, expires_on) = self.read_content(&content, now)?;
        Ok(AzureIdentity {
            vm_id,
            expires_on,
            signer: signer_name,
        })
    }

    /// When every certificate `data` carries is a signer proven at `now`: the envelope without
    /// them, and them as proven. `None` sends the envelope to OpenSSL whole, which refuses what
    /// this reading could not make sense of.
    fn known(&self, data: &envelope::SignedData<'_>, now: DateTime<Utc>) -> Option<Known> {
        let carried = data.certificates().ok()?;
        if carried.is_empty() {
            return None;
        }
        let mut certificates = Stack::new().ok()?;
        let mut names = Vec::with_capacity(carried.len());
        // The fingerprint of the bytes as carried; `check_signer` remembers that of OpenSSL's
        // encoding of the parsed certificate. The two agree for every DER certificate (the
        // signed part is kept byte for byte); where they do not, this only misses.
        for der in carried {
            let (certificate, name) = self
                .vouched
                .proven(&openssl::sha::sha256(&der), now.timestamp())?;
            certificates.push(certificate).ok()?;
            names.push(name);
        }
        Some(Known {
            envelope: data.without_certificates().ok()?,
            certificates,
            names,
        })
    }

    /// The signer's name, use and chain at `now`, from what an earlier payload proved when it
    /// still holds; the signer's common name when all pass.
    fn check_signer(
        &self,
        signer: &X509Ref,
        embedded: Option<&StackRef<X509>>,
        now: DateTime<Utc>,
    ) -> Result<String, Rejected> {
        // The time OpenSSL verifies at (whole seconds, see `store_at`).
        let at = now.timestamp();
        let fingerprint: Fingerprint = signer
            .digest(MessageDigest::sha256())
            .map_err(internal)?
            .as_ref()
            .try_into()
            .map_err(|_| Rejected::new("verification could not be completed"))?;
        if let Some((_, name)) = self.vouched.proven(&fingerprint, at) {
            return Ok(name);
        }
        let name = self.check_signer_name(signer)?;
        check_signer_use(signer)?;
        let valid = self.check_chain(signer, embedded, now)?;
        self.vouched
            .remember(fingerprint, signer.to_owned(), name.clone(), valid, at);
        Ok(name)
    }

    fn check_signer_name(&self, signer: &X509Ref) -> Result<String, Rejected> {
        let mut names = signer.subject_name().entries_by_nid(Nid::COMMONNAME);
        let (Some(entry), None) = (names.next(), names.next()) else {
            return Err(Rejected::new(
                "signer certificate must have exactly one common name",
            ));
        };
        // `to_string` keeps interior NULs, so `metadata.azure.com\0.evil.com` cannot pass as
        // its prefix.
        let cn = entry
            .data()
            .to_string()
            .map_err(|_| Rejected::new("signer common name is not text"))?;
        if !self.signer_cn.is_match(&cn) {
            return Err(Rejected::new(format!(
                "unmatched common name of signer: {:?}",
                shorten(&cn, MAX_NAME_IN_DETAIL)
            )));
        }
        Ok(cn)
    }

    /// Chains `signer` to a pinned root at `now`. Untrusted material: the configured
    /// intermediates and whatever the envelope carries. No partial chains: an intermediate is
    /// never an anchor. Gives the unix seconds in which every certificate of the chain built is
    /// valid.
    fn check_chain(
        &self,
        signer: &X509Ref,
        embedded: Option<&StackRef<X509>>,
        now: DateTime<Utc>,
    ) -> Result<Range<i64>, Rejected> {
        let store = self.store_at(now).map_err(internal)?;
        let mut untrusted = Stack::new().map_err(internal)?;
        let carried = embedded.into_iter().flatten();
        let fetched = self
            .fetcher
            .as_ref()
            .map(Fetcher::fetched)
            .unwrap_or_default();
        for cert in self
            .trust
            .intermediates
            .iter()
            .chain(&fetched)
            .map(|c| &**c)
            .chain(carried)
        {
            untrusted.push(cert.to_owned()).map_err(internal)?;
        }
        let mut context = X509StoreContext::new().map_err(internal)?;
        let (valid, error, culprit) = context
            .init(&store, signer, &untrusted, |ctx| {
                let valid = match (ctx.verify_cert()?, ctx.chain()) {
                    (true, Some(chain)) => Some(validity(chain)?),
                    _ => None,
                };
                let culprit = ctx.current_cert().map(X509Ref::to_owned);
                Ok((valid, ctx.error(), culprit))
            })
            .map_err(internal)?;
        if let Some(valid) = valid {
            return Ok(valid);
        }
        let mut detail = chain_detail(error, culprit.as_deref().map(issuer_name));
        if let (Some(fetcher), Some(culprit)) = (&self.fetcher, &culprit)
            && MISSING_ISSUER.contains(&error.as_raw())
        {
            detail.push_str(match fetcher.ask(culprit) {
                Asked::Queued => {
                    "; fetching it from the certificate's CA-issuers URL, retry shortly"
                }
                Asked::NoUsableUrl => {
                    "; the certificate names no CA-issuers URL that may be fetched"
                }
            });
        }
        Err(Rejected::new(detail))
    }

    /// A store holding only the pinned roots, verifying at `now` for any purpose. Built per
    /// request because OpenSSL takes the verification time from the store's parameters; the
    /// roots are shared, not copied.
    fn store_at(&self, now: DateTime<Utc>) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for root in &self.trust.roots {
            builder.add_cert(root.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(now.timestamp());
        // Azure's leaves carry TLS usages only; OpenSSL's PKCS#7 default (S/MIME signing)
        // would refuse them.
        param.set_purpose(X509PurposeId::ANY)?;
        param.set_depth(MAX_CHAIN_DEPTH);
        builder.set_param(&param)?;
        Ok(builder.build())
    }

    fn read_content(
        &self,
        content: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(String, Option<DateTime<Utc>>), Rejected> {
        let parsed: Content = serde_json::from_slice(content)
            .map_err(|err| Rejected::new(format!("parse content: {err}")))?;
        let vm_id = parsed
            .vm_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Rejected::new("content has no vmId"))?;
        let expires_on = parsed
            .time_stamp
            .and_then(|stamp| stamp.expires_on)
            .ok_or("content has no timeStamp.expiresOn")
            .and_then(|text| {
                DateTime::parse_from_str(&text, TIMESTAMP_FORMAT)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| "timeStamp.expiresOn is not MM/DD/YY HH:MM:SS -ZZZZ")
            });
        match expires_on {
            Ok(expires_on) if now > expires_on + self.expiry_skew => Err(Rejected::new(format!(
                "attested data expired at {}",
                expires_on.to_rfc3339()
            ))),
            Ok(expires_on) => Ok((vm_id, Some(expires_on))),
            Err(_) if self.allow_missing_timestamp => Ok((vm_id, None)),
            Err(reason) => Err(Rejected::new(reason)),
        }
    }
}

fn decode(signature: &str) -> Result<Vec<u8>, Rejected> {
    decode_wrapped_base64(
        signature,
        MAX_DER_BYTES.div_ceil(3) * 4,
        "signature is too large",
    )
}

/// An envelope whose carried certificates are all proven signers.
struct Known {
    /// The envelope without them.
    envelope: Vec<u8>,
    /// Them, parsed, in the order carried.
    certificates: Stack<X509>,
    /// Their common names, in the same order.
    names: Vec<String>,
}

impl Known {
    /// The common name proven for `signer`, one of `certificates`.
    fn name_of(&self, signer: &X509Ref) -> Option<String> {
        let index = self.certificates.iter().position(|known| known == signer)?;
        self.names.get(index).cloned()
    }
}

/// Unix seconds in which every certificate of `chain` is valid: the latest `notBefore` to the
/// earliest `notAfter`.
fn validity(chain: &StackRef<X509>) -> Result<Range<i64>, openssl::error::ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let seconds = |time: &Asn1TimeRef| -> Result<i64, openssl::error::ErrorStack> {
        let since = epoch.diff(time)?;
        Ok(i64::from(since.days) * 86_400 + i64::from(since.secs))
    };
    let mut valid = i64::MIN..i64::MAX;
    for cert in chain {
        valid.start = valid.start.max(seconds(cert.not_before())?);
        valid.end = valid.end.min(seconds(cert.not_after())?);
    }
    Ok(valid)
}

/// X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY): the chain lacks an issuer.
const MISSING_ISSUER: [i32; 2] = [2, 20];

/// Refuses a signer that is not for TLS servers, or whose RSA key is oversized. Azure's
/// metadata certificates are TLS server certificates; one that allows, say, only code signing
/// was issued for something else. Without the extension, usage is unrestricted.
fn check_signer_use(signer: &X509Ref) -> Result<(), Rejected> {
    if let Some(usage) = signer.extended_key_usage()
        && !usage.contains(X509ExtendedKeyUsage::SSL_SERVER)
    {
        return Err(Rejected::new(
            "signer certificate's extended key usage excludes TLS server authentication",
        ));
    }
    let key = signer
        .public_key()
        .map_err(|_| Rejected::new("signer certificate's public key does not decode"))?;
    if key.id() == Id::RSA && key.bits() > MAX_SIGNER_RSA_BITS {
        return Err(Rejected::new(format!(
            "signer's RSA key has {} bits; at most {MAX_SIGNER_RSA_BITS} are accepted",
            key.bits()
        )));
    }
    Ok(())
}

fn chain_detail(error: X509VerifyResult, issuer_of_culprit: Option<String>) -> String {
    // Name what is missing, so an operator knows which certificate to add.
    match issuer_of_culprit {
        Some(issuer) if MISSING_ISSUER.contains(&error.as_raw()) => format!(
            "certificate chain: {} (issuer {:?} is neither a pinned root nor a known \
             intermediate)",
            error.error_string(),
            shorten(&issuer, MAX_NAME_IN_DETAIL)
        ),
        _ => format!("certificate chain: {}", error.error_string()),
    }
}

fn issuer_name(cert: &X509Ref) -> String {
    cert.issuer_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|entry| entry.data().to_string().ok())
        .unwrap_or_else(|| format!("{:?}", cert.issuer_name()))
}

/// An OpenSSL failure that no input should cause (allocation, context set-up).
fn internal(err: openssl::error::ErrorStack) -> Rejected {
    tracing::warn!(error = %err, "OpenSSL failed while verifying Azure attested data");
    Rejected::new("verification could not be completed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (payload, vmId, a time inside both its content window and its leaf's validity).
    const REAL: [(&str, &str, &str); 4] = [
        (
            include_str!("../../../tests/fixtures/azure/real/regular.signature.b64"),
            "dc18de58-292f-4794-9a5d-a4192bad0039",
            "2026-06-25T00:00:00Z",
        ),
        (
            include_str!("../../../tests/fixtures/azure/real/rsa.signature.b64"),
            "960a4b4a-dab2-44ef-9b73-7753043b4f16",
            "2024-04-22T17:32:44Z",
        ),
        (
            include_str!("../../../tests/fixtures/azure/real/govcloud.signature.b64"),
            "990878d4-068a-4ac4-9ee9-1231d2218ef2",
            "2023-03-08T20:00:00Z",
        ),
        (
            include_str!("../../../tests/fixtures/azure/real/regular-2022.signature.b64"),
            "bd8e7443-24a0-41f3-b949-8baf4fd1c573",
            "2022-04-19T03:00:00Z",
        ),
    ];

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn verifier() -> AzureVerifier {
        AzureVerifier::new(&AzureSettings::default()).expect("embedded trust parses")
    }

    #[test]
    fn every_real_payload_verifies_with_the_embedded_trust_at_its_time() {
        let v = verifier();
        for (payload, vm_id, time) in REAL {
            let identity = v
                .verify(payload, at(time))
                .unwrap_or_else(|err| panic!("{vm_id} at {time}: {err}"));
            assert_eq!(identity.vm_id, vm_id);
            assert!(identity.signer.starts_with("metadata.azure."));
            assert!(identity.expires_on.is_some());
        }
    }

    #[test]
    fn real_payloads_are_refused_once_expired_or_outside_the_leaf_validity() {
        let v = verifier();
        // govcloud expired 2023-03-08T23:09:33Z; Coder verifies it at 2023-04-01 without an
        // expiry check.
        let (govcloud, _, _) = REAL[2];
        assert_eq!(
            v.verify(govcloud, at("2023-04-01T00:00:00Z"))
                .expect_err("expired")
                .0,
            "attested data expired at 2023-03-08T23:09:33+00:00"
        );
        assert!(
            v.verify(govcloud, at("2023-03-08T23:14:00Z")).is_ok(),
            "within skew"
        );
        assert!(
            v.verify(govcloud, at("2023-03-08T23:15:00Z")).is_err(),
            "past skew"
        );
        // With the expiry check widened, the leaf's own validity still decides: regular-2022's
        // leaf ended on 2023-02-20.
        let lenient = AzureVerifier::new(&AzureSettings {
            expiry_skew: Duration::from_secs(400 * 86_400),
            ..AzureSettings::default()
        })
        .expect("verifier");
        let (regular_2022, _, _) = REAL[3];
        assert!(
            lenient
                .verify(regular_2022, at("2023-02-01T00:00:00Z"))
                .is_ok()
        );
        assert_eq!(
            lenient
                .verify(regular_2022, at("2023-03-01T00:00:00Z"))
                .expect_err("leaf expired")
                .0,
            "certificate chain: certificate has expired"
        );
    }

    #[test]
    fn replacing_the_roots_drops_the_embedded_ones() {
        let g3_only = AzureVerifier::new(&AzureSettings {
            roots_pem: Some(include_bytes!("certs/roots/digicert-global-root-g3.pem").to_vec()),
            ..AzureSettings::default()
        })
        .expect("verifier");
        let (regular, _, time) = REAL[0];
        let err = g3_only.verify(regular, at(time)).expect_err("no G2 root");
        assert!(err.0.starts_with("certificate chain: "), "{err}");
    }

    /// The one certificate a real payload carries, its fingerprint and the payload's DER.
    fn carried(payload: &str) -> (X509, Fingerprint, Vec<u8>) {
        let der = decode(payload).expect("base64");
        let pkcs7 = Pkcs7::from_der(&der).expect("PKCS#7");
        let certificates = pkcs7
            .signed()
            .and_then(|s| s.certificates())
            .expect("certs");
        let [leaf] = certificates.iter().collect::<Vec<_>>()[..] else {
            panic!("one carried certificate");
        };
        let fingerprint = openssl::sha::sha256(&leaf.to_der().expect("der"));
        (leaf.to_owned(), fingerprint, der)
    }

    /// `payload` with one byte of its signed content (the vmId's first character) changed.
    fn with_other_vm_id(payload: &str, vm_id: &str) -> String {
        use base64::Engine as _;
        let mut der = decode(payload).expect("base64");
        let at = der
            .windows(vm_id.len())
            .position(|window| window == vm_id.as_bytes())
            .expect("vmId in the content");
        der[at] = if der[at] == b'0' { b'1' } else { b'0' };
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    #[test]
    fn the_envelope_without_its_certificates_is_the_same_signed_data() {
        for (payload, _, _) in REAL {
            let (leaf, fingerprint, der) = carried(payload);
            let data = envelope::inspect(&der)
                .expect("inspect")
                .expect("signedData");
            let certificates = data.certificates().expect("certificates");
            assert_eq!(certificates, [leaf.to_der().expect("der")]);
            assert_eq!(openssl::sha::sha256(&certificates[0]), fingerprint);
            let stripped = data.without_certificates().expect("stripped");
            assert_eq!(der.len() - stripped.len(), certificates[0].len() + 4);
            let pkcs7 = Pkcs7::from_der(&stripped).expect("still PKCS#7");
            let signed = pkcs7.signed().expect("still signedData");
            assert!(signed.certificates().is_none());
            let inner = envelope::inspect(&stripped)
                .expect("inspect")
                .expect("signedData");
            assert!(inner.certificates().expect("none").is_empty());
            // Its signature still verifies with the certificate handed in beside it.
            let mut known = Stack::new().expect("stack");
            known.push(leaf).expect("push");
            let store = X509StoreBuilder::new().expect("store").build();
            let mut content = Vec::new();
            pkcs7
                .verify(
                    &known,
                    &store,
                    None,
                    Some(&mut content),
                    Pkcs7Flags::NOVERIFY,
                )
                .expect("signature verifies");
            assert!(!content.is_empty());
        }
    }

    #[test]
    fn a_proven_signer_is_remembered_within_its_chain_validity() {
        let v = verifier();
        let (regular, vm_id, time) = REAL[0];
        assert_eq!(v.vouched.len(), 0);
        // A refusal for the content still proves the signer, which is genuine.
        let forged = with_other_vm_id(regular, vm_id);
        let refused = "signature over the content does not verify";
        assert_eq!(v.verify(&forged, at(time)).expect_err("forged").0, refused);
        assert_eq!(v.vouched.len(), 1);
        let (_, fingerprint, _) = carried(regular);
        let at_time = at(time).timestamp();
        assert!(v.vouched.proven(&fingerprint, at_time).is_some());
        // Remembered, the signer no longer shields a forgery: the signature is still checked.
        assert_eq!(v.verify(&forged, at(time)).expect_err("forged").0, refused);
        assert_eq!(v.verify(regular, at(time)).expect("genuine").vm_id, vm_id);
        // A signer whose chain does not reach a root is never remembered.
        let g3_only = AzureVerifier::new(&AzureSettings {
            roots_pem: Some(include_bytes!("certs/roots/digicert-global-root-g3.pem").to_vec()),
            ..AzureSettings::default()
        })
        .expect("verifier");
        assert!(g3_only.verify(regular, at(time)).is_err());
        assert_eq!(g3_only.vouched.len(), 0);
    }

    #[test]
    fn a_remembered_signer_skips_its_chain_and_its_parsing() {
        // A verifier whose roots cannot vouch for the leaf accepts it once told the leaf is
        // proven: what is remembered stands in for the chain (and for the carried copy).
        let g3_only = AzureVerifier::new(&AzureSettings {
            roots_pem: Some(include_bytes!("certs/roots/digicert-global-root-g3.pem").to_vec()),
            ..AzureSettings::default()
        })
        .expect("verifier");
        let (regular, vm_id, time) = REAL[0];
        let (leaf, fingerprint, der) = carried(regular);
        let at_time = at(time).timestamp();
        let data = envelope::inspect(&der)
            .expect("inspect")
            .expect("signedData");
        assert!(
            g3_only.known(&data, at(time)).is_none(),
            "nothing proven yet"
        );
        g3_only.vouched.remember(
            fingerprint,
            leaf,
            "remembered name".into(),
            at_time - 1..at_time + 1,
            at_time,
        );
        let known = g3_only.known(&data, at(time)).expect("the leaf is known");
        assert_eq!(known.certificates.len(), 1);
        assert_eq!(known.names, ["remembered name"]);
        assert!(known.envelope.len() < der.len());
        let identity = g3_only.verify(regular, at(time)).expect("remembered");
        assert_eq!(identity.vm_id, vm_id);
        assert_eq!(identity.signer, "remembered name");
        // Outside the remembered window the chain is built again, and fails.
        let later = at(time) + TimeDelta::seconds(1);
        let err = g3_only.verify(regular, later).expect_err("no G2 root");
        assert!(err.0.starts_with("certificate chain: "), "{err}");
    }

    /// The elements inside the constructed DER value `der`, each as DER.
    fn elements(der: &[u8]) -> Vec<Vec<u8>> {
        use der::{Decode as _, Encode as _, Reader as _};
        let value = der::asn1::AnyRef::from_der(der).expect("DER");
        let mut reader = der::SliceReader::new(value.value()).expect("reader");
        let mut out = Vec::new();
        while !reader.is_finished() {
            let element: der::asn1::AnyRef<'_> = reader.decode().expect("element");
            out.push(element.to_der().expect("DER"));
        }
        out
    }

    fn wrap(tag: der::Tag, parts: &[Vec<u8>]) -> Vec<u8> {
        use der::Encode as _;
        let value = parts.concat();
        der::asn1::AnyRef::new(tag, &value)
            .expect("length")
            .to_der()
            .expect("DER")
    }

    const CONTEXT_0: der::Tag = der::Tag::ContextSpecific {
        constructed: true,
        number: der::TagNumber::N0,
    };

    /// `payload` rebuilt after `edit` has changed its ContentInfo's elements (content type,
    /// `[0]`) or its SignedData's fields.
    fn rebuilt(payload: &str, edit: impl FnOnce(&mut Vec<Vec<u8>>, &mut Vec<Vec<u8>>)) -> String {
        use base64::Engine as _;
        let mut info = elements(&decode(payload).expect("base64"));
        let mut fields = elements(&elements(&info[1])[0]);
        edit(&mut info, &mut fields);
        info[1] = wrap(CONTEXT_0, &[wrap(der::Tag::Sequence, &fields)]);
        base64::engine::general_purpose::STANDARD.encode(wrap(der::Tag::Sequence, &info))
    }

    #[test]
    fn envelopes_refused_whole_stay_refused_once_their_signer_is_proven() {
        let v = verifier();
        let (regular, vm_id, time) = REAL[0];
        let junk_after_content = rebuilt(regular, |info, _| info.push(vec![0x05, 0x00]));
        let certificates_twice = rebuilt(regular, |_, fields| {
            let certificates = fields[3].clone();
            fields.insert(4, certificates);
        });
        let refusals: Vec<String> = [&junk_after_content, &certificates_twice]
            .iter()
            .map(|payload| v.verify(payload, at(time)).expect_err("refused").0)
            .collect();
        assert_eq!(refusals[0], "signature is not DER PKCS#7");
        assert_eq!(v.verify(regular, at(time)).expect("genuine").vm_id, vm_id);
        assert_eq!(v.vouched.len(), 1);
        for (payload, refusal) in [&junk_after_content, &certificates_twice]
            .iter()
            .zip(&refusals)
        {
            assert_eq!(
                &v.verify(payload, at(time)).expect_err("refused").0,
                refusal
            );
        }
        // A proven leaf carried beside a certificate never proven: parsed whole, and fine.
        let intermediate = v.trust.intermediates[0].to_der().expect("DER");
        let mixed = rebuilt(regular, |_, fields| {
            let mut carried = elements(&fields[3]);
            carried.push(intermediate);
            fields[3] = wrap(CONTEXT_0, &carried);
        });
        let data_der = decode(&mixed).expect("base64");
        let data = envelope::inspect(&data_der)
            .expect("inspect")
            .expect("signedData");
        assert_eq!(data.certificates().expect("two").len(), 2);
        assert!(v.known(&data, at(time)).is_none());
        assert_eq!(v.verify(&mixed, at(time)).expect("genuine").vm_id, vm_id);
    }

    /// Unix seconds of a certificate time, read from its text (independently of `validity`).
    fn unix(time: &Asn1TimeRef) -> i64 {
        chrono::NaiveDateTime::parse_from_str(&time.to_string(), "%b %e %H:%M:%S %Y GMT")
            .expect("certificate time")
            .and_utc()
            .timestamp()
    }

    #[test]
    fn a_remembered_signer_lapses_exactly_when_openssl_says_its_chain_does() {
        let lenient = || {
            AzureVerifier::new(&AzureSettings {
                expiry_skew: Duration::from_secs(400 * 86_400),
                ..AzureSettings::default()
            })
            .expect("verifier")
        };
        let (payload, _, time) = REAL[3];
        let (leaf, _, _) = carried(payload);
        let (not_before, not_after) = (unix(leaf.not_before()), unix(leaf.not_after()));
        let moment = |unix| DateTime::from_timestamp(unix, 0).expect("time");
        let cases = [
            (
                not_before - 1,
                Err("certificate chain: certificate is not yet valid"),
            ),
            (not_before, Ok(())),
            (not_after - 1, Ok(())),
            (not_after, Err("certificate chain: certificate has expired")),
        ];
        let proven = lenient();
        assert!(proven.verify(payload, at(time)).is_ok());
        for (when, expected) in cases {
            for verifier in [&lenient(), &proven] {
                let outcome = verifier
                    .verify(payload, moment(when))
                    .map(|_| ())
                    .map_err(|err| err.0);
                assert_eq!(outcome, expected.map_err(str::to_owned), "at {when}");
            }
        }
    }

    #[test]
    fn the_signer_pattern_is_anchored() {
        let v = verifier();
        for good in [
            "metadata.azure.com",
            "x.metadata.azure.com",
            "southcentralus.metadata.azure.com",
            "metadata.azure.us",
            "metadata.azure.cn",
            "metadata.microsoftazure.de",
        ] {
            assert!(v.signer_cn.is_match(good), "{good}");
        }
        for bad in [
            "metadata.azure.com.evil.com",
            "evilmetadata.azure.com",
            "metadata.azure.co",
            "metadata.azure.de",
            "metadata.azure.com\0.evil.com",
            "evil.com\n.metadata.azure.com",
            "",
        ] {
            assert!(!v.signer_cn.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn malformed_input_is_refused_early() {
        let v = verifier();
        let now = Utc::now();
        for (input, detail) in [
            ("%%%", "decode signature: "),
            ("", "signature is not DER PKCS#7"),
            ("AAAA", "signature is not DER PKCS#7"),
        ] {
            let err = v.verify(input, now).expect_err("refused");
            assert!(err.0.starts_with(detail), "{input:?}: {err}");
        }
        let huge = "A".repeat(MAX_DER_BYTES / 3 * 4 + 8);
        assert_eq!(
            v.verify(&huge, now).expect_err("refused").0,
            "signature is too large"
        );
        // IMDS-style wrapping is fine.
        let (regular, _, time) = REAL[0];
        let wrapped: Vec<String> = regular
            .as_bytes()
            .chunks(64)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect();
        assert!(v.verify(&wrapped.join("\r\n"), at(time)).is_ok());
    }
}
