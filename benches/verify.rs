//! Cost of one verification per provider, on real-shaped material:
//! `cargo bench --bench verify`.
//!
//! - AWS: the real us-east-1 document against the embedded region keys, with nothing
//!   remembered (its region names its key, tried first, so this is one RSA-1024 verification
//!   plus JSON parsing) and as a fleet's reconnects meet it, remembered (one SHA-256 of the
//!   pair, one map probe); and the same document changed by one byte, refused after all 14
//!   keys.
//! - Azure: the real `regular` payload at its pinned time against the embedded trust. The
//!   check before timing proves its signer (PKCS#7 parse, chain leaf → two intermediates →
//!   root), so what is timed is a fleet's steady state: the envelope read without the
//!   remembered certificate, the RSA-2048 signature, JSON.
//! - Google: a test RS256 token (RSA-2048) against an in-memory JWKS.
//!
//! With `--test` (`cargo test --bench verify -- --test`, as `.ci/run` does) it only checks
//! that each material verifies, and that a tampered copy does not, without timing anything.
//!
//! A plain timed loop rather than a harness: the numbers decide whether verification runs on
//! the async workers or on the blocking pool, and a median of a few rounds is enough for that.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use instauth::identity::aws::{AwsPolicy, AwsVerifier};
use instauth::identity::azure::{AzureSettings, AzureVerifier};
use instauth::identity::google::{GoogleSettings, GoogleVerifier, JwksSource};
use instauth::tools::test_google::TestGoogleSigner;

const AWS_DOCUMENT: &str = include_str!("../tests/fixtures/aws/real-us-east-1/document.json");
const AWS_SIGNATURE: &str = include_str!("../tests/fixtures/aws/real-us-east-1/signature.b64");
const AZURE_PAYLOAD: &str = include_str!("../tests/fixtures/azure/real/regular.signature.b64");
const AZURE_AT: &str = "2026-06-25T00:00:00Z";

/// Rounds per provider; the median is reported.
const ROUNDS: usize = 7;
/// Length of one round.
const ROUND: Duration = Duration::from_millis(300);

fn main() {
    let aws = AwsVerifier::new(None, &AwsPolicy::default()).expect("aws");
    let aws_unremembered = AwsVerifier::new(None, &AwsPolicy::default())
        .expect("aws")
        .remembering(0);
    let azure = AzureVerifier::new(&AzureSettings::default()).expect("azure");
    let azure_at: DateTime<Utc> = AZURE_AT.parse().expect("time");
    let (google, token) = google_fixture();
    let now = Utc::now();

    assert!(aws.verify(AWS_SIGNATURE, AWS_DOCUMENT, now).is_ok());
    assert!(
        aws_unremembered
            .verify(AWS_SIGNATURE, AWS_DOCUMENT, now)
            .is_ok()
    );
    assert!(azure.verify(AZURE_PAYLOAD, azure_at).is_ok());
    assert!(google.verify(&token, now).is_ok());
    // What is timed must be a real verification: tampered material is refused.
    let tampered_document = AWS_DOCUMENT.replacen("i-", "i-0", 1);
    assert!(aws.verify(AWS_SIGNATURE, &tampered_document, now).is_err());
    assert!(
        aws_unremembered
            .verify(AWS_SIGNATURE, &tampered_document, now)
            .is_err()
    );
    assert!(
        azure
            .verify(&AZURE_PAYLOAD.replacen('A', "B", 1), azure_at)
            .is_err()
    );
    let (signed, _) = token.rsplit_once('.').expect("a JWT");
    assert!(google.verify(&format!("{signed}.AAAA"), now).is_err());
    if std::env::args().any(|arg| arg == "--test") {
        println!("verify: checks passed (--test: nothing timed)");
        return;
    }

    println!("µs per verification (median of {ROUNDS} rounds of {ROUND:?}):");
    report("aws, first sight", || {
        aws_unremembered
            .verify(black_box(AWS_SIGNATURE), black_box(AWS_DOCUMENT), now)
            .is_ok()
    });
    report("aws, remembered", || {
        aws.verify(black_box(AWS_SIGNATURE), black_box(AWS_DOCUMENT), now)
            .is_ok()
    });
    // Every one of the 14 keys tried and refused: a forgery's cost, and what a document whose
    // key came last would cost if its region did not name its key.
    report("aws, refused by all keys", || {
        aws.verify(black_box(AWS_SIGNATURE), black_box(&tampered_document), now)
            .is_err()
    });
    report("azure", || {
        azure
            .verify(black_box(AZURE_PAYLOAD), black_box(azure_at))
            .is_ok()
    });
    report("google", || google.verify(black_box(&token), now).is_ok());
}

fn report(name: &str, mut verify: impl FnMut() -> bool) {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut count = 0u32;
            while start.elapsed() < ROUND {
                assert!(verify(), "{name}: unexpected outcome");
                count += 1;
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(count)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    let median = rounds[ROUNDS / 2];
    let (min, max) = (rounds[0], rounds[ROUNDS - 1]);
    println!("  {name:<25} {median:>9.1} µs  (min {min:.1}, max {max:.1})");
}

/// `seed --provider google`'s signer: an RSA-2048 key in a JWKS, and a `format=full`-shaped
/// token signed by it.
fn google_fixture() -> (GoogleVerifier, String) {
    let signer = TestGoogleSigner::generate().expect("signer");
    let verifier = GoogleVerifier::new(&GoogleSettings {
        jwks: JwksSource::Document(signer.jwks().expect("jwks")),
        ..GoogleSettings::default()
    })
    .expect("google");
    let token = signer.sign_token("1234567890123456789").expect("token");
    (verifier, token)
}
