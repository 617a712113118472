//! AWS instance identity documents: the `signature` form (base64 RSASSA-PKCS1-v1_5/SHA-256 over
//! the document bytes), checked against pinned region public keys.
//!
//! Certificates are only key containers here: AWS's region certificates are mostly expired while
//! their keys still sign documents, so validity dates are never looked at.
//!
//! A document never expires and carries no nonce, so a copy can be replayed forever. The
//! optional [`AwsPolicy`] narrows that: an account allow-list (`accountId`) and a maximum
//! instance age (`pendingTime`, the launch time). Both are off by default, as in Coder.
//!
//! A pair proven once is remembered ([`proven`]): the same bytes again skip the RSA
//! verification and the document's JSON, and only the policy is checked.

mod proven;

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use openssl::error::ErrorStack;
use openssl::md::Md;
use openssl::pkey::{Id, PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::x509::X509;
use serde::Deserialize;

use super::{Rejected, decode_wrapped_base64};
use proven::Proven;

/// Coder's 14 region labels and their public certificates (public AWS data).
const EMBEDDED: [(&str, &str); 14] = [
    ("other", include_str!("aws_certs/other.pem")),
    ("capetown", include_str!("aws_certs/capetown.pem")),
    ("hongkong", include_str!("aws_certs/hongkong.pem")),
    ("hyderabad", include_str!("aws_certs/hyderabad.pem")),
    ("jakarta", include_str!("aws_certs/jakarta.pem")),
    ("melbourne", include_str!("aws_certs/melbourne.pem")),
    ("china", include_str!("aws_certs/china.pem")),
    ("milan", include_str!("aws_certs/milan.pem")),
    ("spain", include_str!("aws_certs/spain.pem")),
    ("zurich", include_str!("aws_certs/zurich.pem")),
    ("telaviv", include_str!("aws_certs/telaviv.pem")),
    ("bahrain", include_str!("aws_certs/bahrain.pem")),
    ("uae", include_str!("aws_certs/uae.pem")),
    ("govcloud", include_str!("aws_certs/govcloud.pem")),
];

/// Real signatures are 128 bytes (RSA-1024); anything far outside is not worth an RSA operation.
const SIGNATURE_BYTES: std::ops::RangeInclusive<usize> = 64..=512;
/// Real documents are well under 1 KiB.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

/// What a verified document says about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsIdentity {
    /// `instanceId`; empty when the document has none.
    pub instance_id: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub pending_time: Option<String>,
    /// Label of the key that verified the signature (informational).
    pub key_label: String,
}

struct TrustedKey {
    label: String,
    key: PKey<Public>,
    /// Verification contexts of this key, set up once and reused: setting one up costs
    /// OpenSSL 3 about as much as the RSA-1024 verification itself (algorithm lookups under
    /// a global lock). One per concurrent verification; each is used by one at a time.
    contexts: Mutex<Vec<PkeyCtx<Public>>>,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey")
            .field("label", &self.label)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TrustedKey {
    fn new(label: String, key: PKey<Public>) -> Self {
        Self {
            label,
            key,
            contexts: Mutex::new(Vec::new()),
        }
    }

    /// Whether `signature` is this key's RSASSA-PKCS1-v1_5 signature of `digest` (SHA-256).
    fn verifies(&self, signature: &[u8], digest: &[u8]) -> bool {
        let reused = self
            .contexts
            .lock()
            .ok()
            .and_then(|mut contexts| contexts.pop());
        let Some(mut context) = reused.or_else(|| self.context().ok()) else {
            return false;
        };
        // A refusal leaves nothing in the context: the error queue it filled is drained into
        // the result, and the next verification sets its own input.
        let verified = context.verify(digest, signature).unwrap_or(false);
        if let Ok(mut contexts) = self.contexts.lock() {
            contexts.push(context);
        }
        verified
    }

    fn context(&self) -> Result<PkeyCtx<Public>, ErrorStack> {
        let mut context = PkeyCtx::new(&self.key)?;
        context.verify_init()?;
        if self.key.id() == Id::RSA {
            context.set_rsa_padding(Padding::PKCS1)?;
        }
        context.set_signature_md(Md::sha256())?;
        Ok(context)
    }
}

/// Optional hardening checks on a verified document; the default checks nothing extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsPolicy {
    /// When not empty, the document's `accountId` must be one of these.
    pub allowed_accounts: Vec<String>,
    /// When set, the instance's `pendingTime` must be at most this long ago.
    pub max_instance_age: Option<Duration>,
}

/// Verifies AWS documents against configured keys first, then the embedded region keys.
#[derive(Debug)]
pub struct AwsVerifier {
    /// The configured keys, then the embedded ones in `EMBEDDED` order.
    keys: Vec<TrustedKey>,
    /// How many of `keys` are configured.
    configured: usize,
    allowed_accounts: Vec<String>,
    max_instance_age: Option<TimeDelta>,
    /// Pairs already verified, by digest.
    proven: Proven,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "instanceId", default)]
    instance_id: Option<String>,
    #[serde(rename = "accountId", default)]
    account_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(rename = "pendingTime", default)]
    pending_time: Option<String>,
}

impl AwsVerifier {
    /// Builds the key list: every certificate of `extra_pem` (labelled `configured-N`), then the
    /// embedded ones.
    pub fn new(extra_pem: Option<&[u8]>, policy: &AwsPolicy) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(EMBEDDED.len());
        if let Some(pem) = extra_pem {
            let certs = X509::stack_from_pem(pem).context("parsing --aws-certificates")?;
            anyhow::ensure!(
                !certs.is_empty(),
                "--aws-certificates holds no PEM certificate"
            );
            for (i, cert) in certs.iter().enumerate() {
                keys.push(TrustedKey::new(
                    format!("configured-{}", i + 1),
                    cert.public_key().with_context(|| {
                        format!("public key of configured certificate {}", i + 1)
                    })?,
                ));
            }
        }
        let configured = keys.len();
        for (label, pem) in EMBEDDED {
            let cert = X509::from_pem(pem.as_bytes())
                .with_context(|| format!("embedded AWS certificate {label}"))?;
            keys.push(TrustedKey::new(label.to_owned(), cert.public_key()?));
        }
        for account in &policy.allowed_accounts {
            check_account_id(account)?;
        }
        let max_instance_age = policy
            .max_instance_age
            .map(TimeDelta::from_std)
            .transpose()
            .context("--aws-max-instance-age is out of range")?;
        Ok(Self {
            keys,
            configured,
            allowed_accounts: policy.allowed_accounts.clone(),
            max_instance_age,
            proven: Proven::new(proven::DEFAULT_CAPACITY),
        })
    }

    /// Remembers at most `capacity` verified (document, signature) pairs instead of the
    /// default 65 536; 0 verifies every request in full.
    #[must_use]
    pub fn remembering(mut self, capacity: usize) -> Self {
        self.proven = Proven::new(capacity);
        self
    }

    /// How many verified pairs are remembered right now.
    pub fn remembered(&self) -> usize {
        self.proven.len()
    }

    /// Checks `signature` over the exact bytes of `document`, reads the document, then applies
    /// the policy as of `now`.
    pub fn verify(
        &self,
        signature: &str,
        document: &str,
        now: DateTime<Utc>,
    ) -> Result<AwsIdentity, Rejected> {
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(Rejected::new("document is too large"));
        }
        // `Sha256` rather than the one-shot `sha256`: OpenSSL 3's one-shot looks the algorithm up
        // on every call, which costs more than hashing a document.
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(document.as_bytes());
        let digest = hasher.finish();
        let pair = Proven::pair(&digest, signature);
        if let Some(identity) = self.proven.get(&pair) {
            self.check_policy(&identity, now)?;
            return Ok(AwsIdentity::clone(&identity));
        }
        let signature = decode_signature(signature)?;
        // Read before the signature is checked, only to choose which key to try first; nothing
        // from it is believed, or reported, until a key has verified the bytes.
        let parsed = parse_document(document);
        let region = parsed.as_ref().ok().and_then(|doc| doc.region.as_deref());
        let key_label = self
            .trial_order(region)
            .find(|trusted| trusted.verifies(&signature, &digest))
            .map(|trusted| trusted.label.clone())
            .ok_or_else(|| Rejected::new("signature does not verify with any trusted AWS key"))?;
        let parsed = parsed?;
        let identity = AwsIdentity {
            instance_id: parsed.instance_id.unwrap_or_default(),
            account_id: parsed.account_id,
            region: parsed.region,
            pending_time: parsed.pending_time,
            key_label,
        };
        self.check_policy(&identity, now)?;
        // Remembered only once the policy let it through: with an account allow-list, other
        // accounts' documents never take a place.
        self.proven.remember(pair, identity.clone());
        Ok(identity)
    }

    fn check_policy(&self, identity: &AwsIdentity, now: DateTime<Utc>) -> Result<(), Rejected> {
        self.check_account(identity.account_id.as_deref())?;
        self.check_age(identity.pending_time.as_deref(), now)
    }

    /// The keys in the order they are tried: the configured ones, then the embedded key of the
    /// document's region, then the other embedded keys. Every key is still tried before a
    /// signature is refused, so the order changes only the cost: in `EMBEDDED` order a document
    /// from Zurich would pay ten refused RSA verifications before its own key's turn.
    fn trial_order<'a>(&'a self, region: Option<&str>) -> impl Iterator<Item = &'a TrustedKey> {
        let (configured, embedded) = self.keys.split_at(self.configured);
        // Labels are unique, so this is one key, then the others once each.
        let label = region_label(region.unwrap_or_default());
        let own = embedded.iter().filter(move |key| key.label == label);
        let rest = embedded.iter().filter(move |key| key.label != label);
        configured.iter().chain(own).chain(rest)
    }

    fn check_account(&self, account_id: Option<&str>) -> Result<(), Rejected> {
        if self.allowed_accounts.is_empty() {
            return Ok(());
        }
        match account_id {
            Some(id) if self.allowed_accounts.iter().any(|allowed| allowed == id) => Ok(()),
            Some(_) => Err(Rejected::new("accountId is not an allowed account")),
            None => Err(Rejected::new("document has no accountId")),
        }
    }

    fn check_age(&self, pending_time: Option<&str>, now: DateTime<Utc>) -> Result<(), Rejected> {
        let Some(max_age) = self.max_instance_age else {
            return Ok(());
        };
        let launched = pending_time
            .ok_or_else(|| Rejected::new("document has no pendingTime"))
            .and_then(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map_err(|err| Rejected::new(format!("parse pendingTime: {err}")))
            })?;
        if now.signed_duration_since(launched) > max_age {
            return Err(Rejected::new(
                "instance is older than the allowed maximum age (pendingTime)",
            ));
        }
        Ok(())
    }
}

/// The document as JSON, read as Coder's handler reads it.
fn parse_document(document: &str) -> Result<Document, Rejected> {
    // Go's encoding/json (Coder) reads a struct only from an object; serde would also read
    // a JSON array, positionally, taking its first element as the instance id.
    if !document.trim_start().starts_with('{') {
        return Err(Rejected::new("parse document: not a JSON object"));
    }
    serde_json::from_str(document).map_err(|err| Rejected::new(format!("parse document: {err}")))
}

/// The label of the embedded key that signs documents of `region` (an AWS region code such as
/// `eu-central-2`). AWS gives its opt-in and partitioned regions keys of their own and signs the
/// rest with one shared key ("other"); a region missing here, or a new one, is simply tried
/// with "other" first.
fn region_label(region: &str) -> &'static str {
    match region {
        "af-south-1" => "capetown",
        "ap-east-1" => "hongkong",
        "ap-south-2" => "hyderabad",
        "ap-southeast-3" => "jakarta",
        "ap-southeast-4" => "melbourne",
        "cn-north-1" | "cn-northwest-1" => "china",
        "eu-south-1" => "milan",
        "eu-south-2" => "spain",
        "eu-central-2" => "zurich",
        "il-central-1" => "telaviv",
        "me-south-1" => "bahrain",
        "me-central-1" => "uae",
        "us-gov-east-1" | "us-gov-west-1" => "govcloud",
        _ => "other",
    }
}

/// An AWS account id as documents carry it: exactly 12 ASCII digits. An empty entry is refused
/// rather than read as "no allow-list", which would turn the check off.
pub fn check_account_id(account: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !account.is_empty(),
        "--aws-allowed-accounts holds an empty account id; leave it unset to accept any account"
    );
    anyhow::ensure!(
        account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
        "--aws-allowed-accounts: {:?} is not an AWS account id (12 digits)",
        account.chars().take(32).collect::<String>()
    );
    Ok(())
}

/// IMDS serves the signature wrapped at 76 columns; whitespace is dropped before decoding
/// standard, padded base64.
fn decode_signature(signature: &str) -> Result<Vec<u8>, Rejected> {
    let raw = decode_wrapped_base64(
        signature,
        SIGNATURE_BYTES.end() * 2,
        "signature is too long",
    )?;
    if !SIGNATURE_BYTES.contains(&raw.len()) {
        return Err(Rejected::new(format!(
            "decode signature: {} bytes is not an RSA signature length",
            raw.len()
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use openssl::hash::MessageDigest;
    use openssl::pkey::Private;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;

    use super::*;

    const REAL_DOCUMENT: &str =
        include_str!("../../tests/fixtures/aws/real-us-east-1/document.json");
    const REAL_SIGNATURE: &str =
        include_str!("../../tests/fixtures/aws/real-us-east-1/signature.b64");

    fn verifier() -> AwsVerifier {
        AwsVerifier::new(None, &AwsPolicy::default()).expect("embedded certificates parse")
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("test time")
            .with_timezone(&Utc)
    }

    /// The real document's `pendingTime` is 2022-03-25T20:07:16Z.
    const LAUNCH_PLUS_30_MIN: &str = "2022-03-25T20:37:16Z";

    #[test]
    fn embeds_all_fourteen_region_keys_after_configured_ones() {
        assert_eq!(verifier().keys.len(), 14);
        // The real "other" certificate given again as configuration is tried first.
        let configured = AwsVerifier::new(Some(EMBEDDED[0].1.as_bytes()), &AwsPolicy::default())
            .expect("parses");
        let labels: Vec<&str> = configured.keys.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(labels.len(), 15);
        assert_eq!(labels[..2], ["configured-1", "other"]);
        let identity = configured
            .verify(REAL_SIGNATURE, REAL_DOCUMENT, Utc::now())
            .expect("verifies");
        assert_eq!(
            identity,
            AwsIdentity {
                key_label: "configured-1".to_owned(),
                ..real_identity()
            }
        );
        assert!(AwsVerifier::new(Some(b"not pem"), &AwsPolicy::default()).is_err());
    }

    /// What the real document proves, verified with the embedded key shared by most regions.
    fn real_identity() -> AwsIdentity {
        AwsIdentity {
            instance_id: "i-076e9b91f7c420782".to_owned(),
            account_id: Some("628783029487".to_owned()),
            region: Some("us-east-1".to_owned()),
            pending_time: Some("2022-03-25T20:07:16Z".to_owned()),
            key_label: "other".to_owned(),
        }
    }

    #[test]
    fn real_us_east_1_document_verifies_with_the_shared_key() {
        assert_eq!(
            verifier().verify(REAL_SIGNATURE, REAL_DOCUMENT, Utc::now()),
            Ok(real_identity())
        );
    }

    /// Contexts are kept per key and reused, at most one per concurrent verification; a good
    /// signature still verifies after any number of refusals on the same contexts, from many
    /// threads at once.
    #[test]
    fn verification_contexts_are_reused_and_refusals_leave_none_behind() {
        let verifier = verifier();
        let kept = |verifier: &AwsVerifier| -> Vec<usize> {
            verifier
                .keys
                .iter()
                .map(|key| key.contexts.lock().expect("contexts").len())
                .collect()
        };
        for _ in 0..3 {
            verifier
                .verify(REAL_SIGNATURE, REAL_DOCUMENT, Utc::now())
                .expect("verifies");
        }
        // The document's key ("other") comes first: one context, used three times.
        assert_eq!(kept(&verifier), [vec![1], vec![0; 13]].concat());
        let tampered = REAL_DOCUMENT.replacen("i-", "i-0", 1);
        assert!(
            verifier
                .verify(REAL_SIGNATURE, &tampered, Utc::now())
                .is_err()
        );
        // Every key was tried and refused it; each keeps the context it refused with.
        assert_eq!(kept(&verifier), vec![1; 14]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for round in 0..50 {
                        let document = if round % 5 == 0 {
                            tampered.as_str()
                        } else {
                            REAL_DOCUMENT
                        };
                        let verified = verifier.verify(REAL_SIGNATURE, document, Utc::now());
                        assert_eq!(verified.is_ok(), round % 5 != 0, "round {round}");
                    }
                });
            }
        });
        assert!(
            kept(&verifier).iter().all(|&kept| (1..=4).contains(&kept)),
            "{:?}",
            kept(&verifier)
        );
    }

    /// A verifier over keys made here: `configured` of them configured, then one per embedded
    /// `label`; with the private halves, in the same order, to sign documents.
    fn made_verifier(configured: usize, labels: &[&str]) -> (AwsVerifier, Vec<PKey<Private>>) {
        let private: Vec<PKey<Private>> = (0..configured + labels.len())
            .map(|_| PKey::from_rsa(Rsa::generate(1024).expect("key")).expect("key"))
            .collect();
        let names = (1..=configured)
            .map(|i| format!("configured-{i}"))
            .chain(labels.iter().map(|label| (*label).to_owned()));
        let keys = names
            .zip(&private)
            .map(|(label, key)| {
                let public = PKey::public_key_from_der(&key.public_key_to_der().expect("der"))
                    .expect("public key");
                TrustedKey::new(label, public)
            })
            .collect();
        let verifier = AwsVerifier {
            keys,
            configured,
            allowed_accounts: Vec::new(),
            max_instance_age: None,
            proven: Proven::new(0),
        };
        (verifier, private)
    }

    fn sign(key: &PKey<Private>, document: &str) -> String {
        let mut signer = Signer::new(MessageDigest::sha256(), key).expect("signer");
        signer.update(document.as_bytes()).expect("update");
        STANDARD.encode(signer.sign_to_vec().expect("sign"))
    }

    /// Which keys have been tried so far: a key keeps the context of its first verification.
    fn tried(verifier: &AwsVerifier) -> Vec<bool> {
        verifier
            .keys
            .iter()
            .map(|key| !key.contexts.lock().expect("contexts").is_empty())
            .collect()
    }

    fn first_label(verifier: &AwsVerifier, region: Option<&str>) -> String {
        let first = verifier.trial_order(region).next().expect("a key");
        first.label.clone()
    }

    #[test]
    fn the_document_region_names_the_embedded_key_tried_first() {
        let real = verifier();
        let order: Vec<&str> = real
            .trial_order(Some("eu-central-2"))
            .map(|key| key.label.as_str())
            .collect();
        let mut expected: Vec<&str> = EMBEDDED.iter().map(|(label, _)| *label).collect();
        expected.retain(|label| *label != "zurich");
        expected.insert(0, "zurich");
        assert_eq!(order, expected, "every key is still tried, once each");
        for (region, label) in [
            ("af-south-1", "capetown"),
            ("ap-east-1", "hongkong"),
            ("ap-south-2", "hyderabad"),
            ("ap-southeast-3", "jakarta"),
            ("ap-southeast-4", "melbourne"),
            ("cn-north-1", "china"),
            ("cn-northwest-1", "china"),
            ("eu-south-1", "milan"),
            ("eu-south-2", "spain"),
            ("eu-central-2", "zurich"),
            ("il-central-1", "telaviv"),
            ("me-south-1", "bahrain"),
            ("me-central-1", "uae"),
            ("us-gov-east-1", "govcloud"),
            ("us-gov-west-1", "govcloud"),
            ("us-east-1", "other"),
            ("ap-southeast-7", "other"),
            ("", "other"),
        ] {
            assert_eq!(first_label(&real, Some(region)), label, "{region}");
        }
        assert_eq!(first_label(&real, None), "other");
        // Configured keys come before any embedded one, whatever the region.
        let (made, _) = made_verifier(1, &["other", "zurich"]);
        assert_eq!(first_label(&made, Some("eu-central-2")), "configured-1");
    }

    #[test]
    fn a_document_is_verified_first_with_its_own_region_key() {
        let zurich = r#"{"instanceId":"i-0zurich","region":"eu-central-2"}"#;
        // Signed by the Zurich key: the configured key, then Zurich's; "other" and Milan's are
        // never tried.
        let (made, private) = made_verifier(1, &["other", "zurich", "milan"]);
        let identity = made
            .verify(&sign(&private[2], zurich), zurich, Utc::now())
            .expect("verifies");
        assert_eq!(
            (identity.instance_id.as_str(), identity.key_label.as_str()),
            ("i-0zurich", "zurich")
        );
        assert_eq!(tried(&made), [true, false, true, false]);
        // A region that names the wrong key costs one refusal more and still verifies.
        let (made, private) = made_verifier(0, &["other", "zurich", "milan"]);
        let identity = made
            .verify(&sign(&private[0], zurich), zurich, Utc::now())
            .expect("verifies");
        assert_eq!(identity.key_label, "other");
        assert_eq!(tried(&made), [true, true, false]);
        // A signature no key made is refused after every key, before anything the document
        // says is reported.
        let (made, _) = made_verifier(0, &["other", "zurich", "milan"]);
        let (_, stranger) = made_verifier(0, &["other"]);
        let err = made
            .verify(&sign(&stranger[0], "not json"), "not json", Utc::now())
            .expect_err("refused");
        assert_eq!(err.0, "signature does not verify with any trusted AWS key");
        assert_eq!(tried(&made), [true; 3]);
        // Genuinely signed bytes that are not a JSON object: refused for what they are, once a
        // key has verified them (no region to go by, so "other" first).
        let (made, private) = made_verifier(0, &["other", "zurich"]);
        for (document, message) in [
            ("not json", "parse document: not a JSON object"),
            (r#"["i-0array"]"#, "parse document: not a JSON object"),
        ] {
            let err = made
                .verify(&sign(&private[1], document), document, Utc::now())
                .expect_err("refused");
            assert_eq!(err.0, message);
        }
        assert_eq!(tried(&made), [true, true]);
    }

    #[test]
    fn the_signature_is_wrapped_at_76_columns_as_imds_serves_it() {
        assert!(REAL_SIGNATURE.lines().next().is_some_and(|l| l.len() == 76));
        let one_line: String = REAL_SIGNATURE.split_whitespace().collect();
        let crlf = REAL_SIGNATURE.replace('\n', "\r\n");
        for signature in [one_line.as_str(), crlf.as_str()] {
            assert_eq!(
                verifier().verify(signature, REAL_DOCUMENT, Utc::now()),
                Ok(real_identity())
            );
        }
    }

    #[test]
    fn any_changed_byte_breaks_the_signature() {
        let v = verifier();
        let tampered = REAL_DOCUMENT.replace("i-076e9b91f7c420782", "i-076e9b91f7c420783");
        let compact = serde_json::to_string(
            &serde_json::from_str::<serde_json::Value>(REAL_DOCUMENT).expect("fixture is JSON"),
        )
        .expect("serialises");
        for document in [
            tampered.as_str(),
            compact.as_str(),
            "{}",
            &format!("{REAL_DOCUMENT}\n"),
        ] {
            let err = v
                .verify(REAL_SIGNATURE, document, Utc::now())
                .expect_err("must not verify");
            assert_eq!(err.0, "signature does not verify with any trusted AWS key");
        }
    }

    #[test]
    fn garbage_signatures_are_rejected_before_any_rsa_work() {
        let v = verifier();
        for (signature, detail) in [
            ("not base64!", "decode signature: "),
            ("QUJD", "decode signature: 3 bytes"),
            ("", "decode signature: 0 bytes"),
        ] {
            let err = v
                .verify(signature, REAL_DOCUMENT, Utc::now())
                .expect_err("rejected");
            assert!(
                err.0.starts_with(detail),
                "{err} should start with {detail}"
            );
        }
        let long = "A".repeat(4096);
        assert_eq!(
            v.verify(&long, REAL_DOCUMENT, Utc::now())
                .expect_err("rejected")
                .0,
            "signature is too long"
        );
    }

    /// A verified pair is remembered: with every key gone, the same bytes still verify, and
    /// nothing else does (another signature for the document, the signature under a changed
    /// document, the signature as the same text re-wrapped).
    #[test]
    fn a_proven_pair_answers_only_for_its_own_bytes() {
        let mut v = verifier();
        assert_eq!(verify_real(&v), Ok(real_identity()));
        assert_eq!(v.proven.len(), 1);
        forget_keys(&mut v);
        assert_eq!(verify_real(&v), Ok(real_identity()));
        assert_eq!(v.proven.len(), 1, "the same pair is one entry");
        let unproven = "signature does not verify with any trusted AWS key";
        let (_, private) = made_verifier(1, &[]);
        let other_signature = sign(&private[0], REAL_DOCUMENT);
        let changed_document =
            REAL_DOCUMENT.replacen("i-076e9b91f7c420782", "i-076e9b91f7c420783", 1);
        let compact: String = REAL_SIGNATURE.split_whitespace().collect();
        for (signature, document) in [
            (other_signature.as_str(), REAL_DOCUMENT),
            (REAL_SIGNATURE, changed_document.as_str()),
            (compact.as_str(), REAL_DOCUMENT),
        ] {
            assert_eq!(
                v.verify(signature, document, Utc::now())
                    .expect_err("not remembered")
                    .0,
                unproven
            );
        }
    }

    #[test]
    fn remembering_can_be_turned_off() {
        let mut v = verifier().remembering(0);
        assert_eq!(verify_real(&v), Ok(real_identity()));
        assert_eq!(v.proven.len(), 0);
        forget_keys(&mut v);
        assert!(verify_real(&v).is_err());
    }

    fn verify_real(v: &AwsVerifier) -> Result<AwsIdentity, Rejected> {
        v.verify(REAL_SIGNATURE, REAL_DOCUMENT, Utc::now())
    }

    /// Leaves `v` with no key at all: only what it remembers can still verify.
    fn forget_keys(v: &mut AwsVerifier) {
        v.keys.clear();
        v.configured = 0;
    }

    #[test]
    fn an_account_allow_list_checks_account_id() {
        let policy = |accounts: &[&str]| AwsPolicy {
            allowed_accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
            ..AwsPolicy::default()
        };
        let now = Utc::now();
        let allowed =
            AwsVerifier::new(None, &policy(&["111111111111", "628783029487"])).expect("verifier");
        assert_eq!(
            allowed.verify(REAL_SIGNATURE, REAL_DOCUMENT, now),
            Ok(real_identity())
        );
        let other = AwsVerifier::new(None, &policy(&["111111111111"])).expect("verifier");
        assert_eq!(
            other
                .verify(REAL_SIGNATURE, REAL_DOCUMENT, now)
                .expect_err("not allowed")
                .0,
            "accountId is not an allowed account"
        );
        assert_eq!(
            other.proven.len(),
            0,
            "a refused account's document is not remembered"
        );
    }

    /// The pair is remembered after the first round; the age is still checked on every one.
    #[test]
    fn a_maximum_age_checks_pending_time_against_the_injected_clock() {
        let v = AwsVerifier::new(
            None,
            &AwsPolicy {
                max_instance_age: Some(Duration::from_secs(3600)),
                ..AwsPolicy::default()
            },
        )
        .expect("verifier");
        assert_eq!(
            v.verify(REAL_SIGNATURE, REAL_DOCUMENT, at(LAUNCH_PLUS_30_MIN)),
            Ok(real_identity())
        );
        assert_eq!(
            v.verify(REAL_SIGNATURE, REAL_DOCUMENT, at("2022-03-25T21:07:16Z")),
            Ok(real_identity()),
            "exactly the maximum age is still allowed"
        );
        assert_eq!(
            v.verify(REAL_SIGNATURE, REAL_DOCUMENT, at("2022-03-25T21:07:17Z"))
                .expect_err("too old")
                .0,
            "instance is older than the allowed maximum age (pendingTime)"
        );
    }
}
