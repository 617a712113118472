//! Azure verification end to end: the four real payloads against the embedded trust at pinned
//! times, test-PKI doubles in every shape, and every way an envelope can be wrong.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use instauth::identity::clock::Clock;
use serde_json::json;

use crate::helpers::app::{AZURE_PATH, REQUIRED, TestApp};
use crate::helpers::azure::{self, Shape, pki, trust_test_pki};
use crate::helpers::{keys, spawn_app, spawn_app_with};

const INVALID: &str = "Invalid Azure identity.";

/// A real payload, its vmId, and a time before its `expiresOn` and inside its signer's
/// validity (`tests/fixtures/README.md` lists them). `regular` and `rsa` use Coder's pinned
/// times; `govcloud` and `regular-2022` were pinned by Coder at times after their `expiresOn`
/// (Coder has no expiry check), so they use a time inside their content window (`createdOn` …
/// `expiresOn`) instead.
struct Real {
    name: &'static str,
    payload: &'static str,
    vm_id: &'static str,
    at: &'static str,
}

const REAL: [Real; 4] = [
    Real {
        name: "regular",
        payload: include_str!("../fixtures/azure/real/regular.signature.b64"),
        vm_id: "dc18de58-292f-4794-9a5d-a4192bad0039",
        at: "2026-06-25T00:00:00Z",
    },
    Real {
        name: "govcloud",
        payload: include_str!("../fixtures/azure/real/govcloud.signature.b64"),
        vm_id: "990878d4-068a-4ac4-9ee9-1231d2218ef2",
        at: "2023-03-08T20:00:00Z",
    },
    Real {
        name: "rsa",
        payload: include_str!("../fixtures/azure/real/rsa.signature.b64"),
        vm_id: "960a4b4a-dab2-44ef-9b73-7753043b4f16",
        at: "2024-04-22T17:32:44Z",
    },
    Real {
        name: "regular-2022",
        payload: include_str!("../fixtures/azure/real/regular-2022.signature.b64"),
        vm_id: "bd8e7443-24a0-41f3-b949-8baf4fd1c573",
        at: "2022-04-19T03:00:00Z",
    },
];

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test time")
        .with_timezone(&Utc)
}

async fn app_at(time: &str) -> TestApp {
    let time = at(time);
    spawn_app_with(|options| options.identity.clock = Clock::Fixed(time)).await
}

async fn test_pki_app() -> TestApp {
    spawn_app_with(trust_test_pki).await
}

#[tokio::test]
async fn every_real_payload_authenticates_its_agent_at_its_time() {
    for real in &REAL {
        let app = app_at(real.at).await;
        let (_, agents) = app.seed().coder_workspace(real.vm_id, &["dev"]).await;
        let response = app.azure(real.payload, None).await;
        assert_eq!(response.status, 200, "{}: {response:?}", real.name);
        assert_eq!(response.token(), agents[0].token(), "{}", real.name);
    }
}

#[tokio::test]
async fn real_payloads_at_coders_pinned_times_are_past_their_expiry() {
    // Coder verifies these at 2023-04-01 and 2023-02-01, after their `expiresOn`.
    for (real, coder_time, expired_at) in [
        (
            &REAL[1],
            "2023-04-01T00:00:00Z",
            "2023-03-08T23:09:33+00:00",
        ),
        (
            &REAL[3],
            "2023-02-01T00:00:00Z",
            "2022-04-19T07:27:21+00:00",
        ),
    ] {
        let app = app_at(coder_time).await;
        app.seed().coder_workspace(real.vm_id, &["dev"]).await;
        app.azure(real.payload, None)
            .await
            .assert_rejected(INVALID, &format!("attested data expired at {expired_at}"));
        // With the expiry check widened (parity with Coder), the same payload passes there.
        let time = at(coder_time);
        let lenient = spawn_app_with(|options| {
            options.identity.clock = Clock::Fixed(time);
            options.identity.azure.expiry_skew = StdDuration::from_secs(400 * 86_400);
        })
        .await;
        let (_, agents) = lenient.seed().coder_workspace(real.vm_id, &["dev"]).await;
        assert_eq!(
            lenient.azure(real.payload, None).await.token(),
            agents[0].token()
        );
    }
}

#[tokio::test]
async fn a_real_payload_outside_its_signers_validity_is_401() {
    // `regular`'s leaf ended on 2026-11-11; its content expired on 2026-06-26.
    let lenient = spawn_app_with(|options| {
        options.identity.clock = Clock::Fixed(at("2026-11-20T00:00:00Z"));
        options.identity.azure.expiry_skew = StdDuration::from_secs(400 * 86_400);
    })
    .await;
    lenient
        .azure(REAL[0].payload, None)
        .await
        .assert_rejected(INVALID, "certificate chain: certificate has expired");
}

/// Coder's #25286: a genuine Azure leaf in the envelope, content changed. The chain is valid at
/// that time, so only the signature check can catch it.
#[tokio::test]
async fn tampered_real_content_with_a_valid_signer_is_401() {
    let app = app_at(REAL[0].at).await;
    let der = base64_decode(REAL[0].payload);
    let forged_vm = "dc18de58-292f-4794-9a5d-a4192bad0040";
    app.seed().coder_workspace(forged_vm, &["dev"]).await;
    let tampered = azure::tamper(&der, REAL[0].vm_id, forged_vm);
    app.azure(&azure::b64(&tampered), None)
        .await
        .assert_rejected(INVALID, "signature over the content does not verify");
}

#[tokio::test]
async fn doubles_verify_with_and_without_signed_attributes_and_with_azures_oid_quirk() {
    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-double", &["dev"]).await;
    for shape in [Shape::Attributes, Shape::NoAttributes, Shape::AzureQuirk] {
        let der = azure::sign(&azure::content("vm-double"), &pki().leaf, &[], shape);
        let response = app.azure(&azure::b64(&der), None).await;
        assert_eq!(response.status, 200, "{shape:?}: {response:?}");
        assert_eq!(response.token(), agents[0].token());
    }
}

#[tokio::test]
async fn tampered_double_content_is_401_in_both_shapes() {
    let app = test_pki_app().await;
    app.seed().coder_workspace("vm-victim", &["dev"]).await;
    for shape in [Shape::Attributes, Shape::NoAttributes] {
        let der = azure::sign(&azure::content("vm-attack"), &pki().leaf, &[], shape);
        let tampered = azure::tamper(&der, "vm-attack", "vm-victim");
        app.azure(&azure::b64(&tampered), None)
            .await
            .assert_rejected(INVALID, "signature over the content does not verify");
    }
}

#[tokio::test]
async fn the_intermediate_may_come_from_configuration_or_the_envelope() {
    // Roots only: the intermediate must travel in the envelope.
    let app = spawn_app_with(|options| {
        options.identity.azure.roots_pem = Some(pki().root.pem());
    })
    .await;
    let (_, agents) = app.seed().coder_workspace("vm-chain", &["dev"]).await;
    let content = azure::content("vm-chain");
    let bare = azure::sign(&content, &pki().leaf, &[], Shape::NoAttributes);
    let response = app.azure(&azure::b64(&bare), None).await;
    response.assert_rejected(INVALID, "certificate chain: unable to get local issuer");
    assert!(
        response
            .detail()
            .contains("\"instauth test Azure intermediate\""),
        "the missing issuer is named: {}",
        response.detail()
    );
    let carried = azure::sign(
        &content,
        &pki().leaf,
        &[&pki().intermediate.cert],
        Shape::NoAttributes,
    );
    assert_eq!(
        app.azure(&azure::b64(&carried), None).await.token(),
        agents[0].token()
    );
    // Once proven, the signer is remembered while its chain holds: the same leaf now passes
    // without the intermediate beside it, as if it had been configured.
    assert_eq!(
        app.azure(&azure::b64(&bare), None).await.token(),
        agents[0].token()
    );
    // What is remembered is that leaf, not its issuer: another leaf of the same intermediate
    // still needs the intermediate.
    let other = azure::sign(&content, &pki().other_leaf, &[], Shape::NoAttributes);
    app.azure(&azure::b64(&other), None)
        .await
        .assert_rejected(INVALID, "certificate chain: unable to get local issuer");
}

#[tokio::test]
async fn without_its_root_no_chain_verifies() {
    // The embedded roots only: the test PKI's root is unknown, even with its intermediate
    // carried in the envelope (an intermediate is never a trust anchor).
    let app = spawn_app_with(|options| {
        options.identity.azure.intermediates_pem = Some(pki().intermediate.pem());
    })
    .await;
    let der = azure::sign(
        &azure::content("vm-x"),
        &pki().leaf,
        &[&pki().intermediate.cert],
        Shape::NoAttributes,
    );
    app.azure(&azure::b64(&der), None)
        .await
        .assert_rejected(INVALID, "certificate chain: ");
}

#[tokio::test]
async fn a_self_signed_signer_with_the_right_cn_is_401() {
    let app = test_pki_app().await;
    app.seed().coder_workspace("vm-self", &["dev"]).await;
    let der = azure::sign(
        &azure::content("vm-self"),
        &pki().self_signed,
        &[],
        Shape::NoAttributes,
    );
    app.azure(&azure::b64(&der), None)
        .await
        .assert_rejected(INVALID, "certificate chain: ");
}

#[tokio::test]
async fn the_signer_cn_must_be_an_azure_metadata_host() {
    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-cn", &["dev"]).await;
    for (cn, accepted) in [
        ("x.metadata.azure.com", true),
        ("metadata.azure.us", true),
        ("metadata.azure.com.evil.com", false),
        ("evilmetadata.azure.com", false),
        ("metadata.azure.de", false),
    ] {
        let leaf = keys::issue(cn, Some(&pki().intermediate), false);
        let der = azure::sign(&azure::content("vm-cn"), &leaf, &[], Shape::NoAttributes);
        let response = app.azure(&azure::b64(&der), None).await;
        if accepted {
            assert_eq!(response.token(), agents[0].token(), "{cn}");
        } else {
            response.assert_rejected(INVALID, &format!("unmatched common name of signer: {cn:?}"));
        }
    }
}

#[tokio::test]
async fn two_signers_are_401() {
    let app = test_pki_app().await;
    app.seed().coder_workspace("vm-two", &["dev"]).await;
    app.azure(&azure::b64(&azure::two_signers("vm-two")), None)
        .await
        .assert_rejected(INVALID, "expected exactly one signer, found 2");
}

#[tokio::test]
async fn expiry_is_checked_with_the_configured_skew() {
    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-time", &["dev"]).await;
    let sign = |expires_on| {
        azure::b64(&azure::sign(
            &azure::content_expiring("vm-time", expires_on),
            &pki().leaf,
            &[],
            Shape::NoAttributes,
        ))
    };
    let now = Utc::now();
    // Within the 5-minute skew.
    assert_eq!(
        app.azure(&sign(now - Duration::minutes(4)), None)
            .await
            .token(),
        agents[0].token()
    );
    app.azure(&sign(now - Duration::minutes(6)), None)
        .await
        .assert_rejected(INVALID, "attested data expired at ");
}

#[tokio::test]
async fn missing_or_unparsable_timestamps_are_401_unless_allowed() {
    let contents = [
        json!({"vmId": "vm-ts"}).to_string(),
        json!({"vmId": "vm-ts", "timeStamp": {"createdOn": "x"}}).to_string(),
        json!({"vmId": "vm-ts", "timeStamp": {"expiresOn": "2030-01-01T00:00:00Z"}}).to_string(),
    ];
    let strict = test_pki_app().await;
    strict.seed().coder_workspace("vm-ts", &["dev"]).await;
    let lenient = spawn_app_with(|options| {
        trust_test_pki(options);
        options.identity.azure.allow_missing_timestamp = true;
    })
    .await;
    let (_, agents) = lenient.seed().coder_workspace("vm-ts", &["dev"]).await;
    for content in &contents {
        let der = azure::sign(content, &pki().leaf, &[], Shape::NoAttributes);
        let response = strict.azure(&azure::b64(&der), None).await;
        response.assert_rejected(INVALID, "");
        assert!(response.detail().contains("expiresOn"), "{response:?}");
        assert_eq!(
            lenient.azure(&azure::b64(&der), None).await.token(),
            agents[0].token(),
            "{content}"
        );
    }
}

#[tokio::test]
async fn content_without_a_vm_id_is_401() {
    let app = test_pki_app().await;
    for content in [
        json!({"timeStamp": {"expiresOn": azure::azure_time(Utc::now() + Duration::hours(1))}})
            .to_string(),
        azure::content(""),
        "not json".to_owned(),
    ] {
        let der = azure::sign(&content, &pki().leaf, &[], Shape::NoAttributes);
        let response = app.azure(&azure::b64(&der), None).await;
        response.assert_error(401, INVALID);
    }
}

#[tokio::test]
async fn garbage_and_non_signed_data_are_401() {
    let app = spawn_app().await;
    for (signature, detail) in [
        ("!!!".to_owned(), "decode signature: "),
        (
            azure::b64(b"garbage DER \x30\x82\xff\xff"),
            "signature is not DER PKCS#7",
        ),
        (azure::b64(&azure::enveloped()), "PKCS#7 is not signedData"),
        ("A".repeat(50_000), "signature is too large"),
    ] {
        app.azure(&signature, None)
            .await
            .assert_rejected(INVALID, detail);
    }
}

#[tokio::test]
async fn missing_fields_are_validation_errors_in_field_order() {
    let app = spawn_app().await;
    for body in [
        "{}",
        "null",
        r#"{"signature": "", "encoding": null}"#,
        r#"{"agent_name": "dev"}"#,
    ] {
        app.post_raw(AZURE_PATH, body)
            .await
            .assert_missing_fields(&["signature", "encoding"]);
    }
    let response = app
        .post_json(AZURE_PATH, &json!({"signature": "abc"}))
        .await;
    assert_eq!(
        response.json()["validations"],
        json!([{"field": "encoding", "detail": REQUIRED}])
    );
    app.post_raw(AZURE_PATH, r#"{"signature": 1, "encoding": "pkcs7"}"#)
        .await
        .assert_error(400, "Request body must be valid JSON.");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("fixture is base64")
}

// Issue 12, item 4: stricter envelopes and signers.

#[tokio::test]
async fn bytes_after_the_der_are_401() {
    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-trail", &["dev"]).await;
    let der = azure::sign(
        &azure::content("vm-trail"),
        &pki().leaf,
        &[],
        Shape::NoAttributes,
    );
    assert_eq!(
        app.azure(&azure::b64(&der), None).await.token(),
        agents[0].token()
    );
    let junk = [der.as_slice(), b"JUNKJUNK"].concat();
    app.azure(&azure::b64(&junk), None)
        .await
        .assert_rejected(INVALID, "trailing bytes after the PKCS#7 envelope");
    // A real payload too, at its time.
    let real = spawn_app_with(|o| o.identity.clock = Clock::Fixed(at(REAL[0].at))).await;
    real.seed().coder_workspace(REAL[0].vm_id, &["dev"]).await;
    let junk = [base64_decode(REAL[0].payload).as_slice(), b"JUNKJUNK"].concat();
    real.azure(&azure::b64(&junk), None)
        .await
        .assert_rejected(INVALID, "trailing bytes after the PKCS#7 envelope");
}

#[tokio::test]
async fn digests_weaker_than_sha256_are_401() {
    use openssl::hash::MessageDigest;

    use crate::helpers::der;

    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-digest", &["dev"]).await;
    let content = azure::content("vm-digest");
    // The hand-built envelope is sound: with SHA-256 it authenticates.
    let sha256 =
        azure::sign_with_digest(&content, &pki().leaf, MessageDigest::sha256(), der::SHA256);
    assert_eq!(
        app.azure(&azure::b64(&sha256), None).await.token(),
        agents[0].token()
    );
    let sha1 = azure::sign_with_digest(&content, &pki().leaf, MessageDigest::sha1(), der::SHA1);
    app.azure(&azure::b64(&sha1), None)
        .await
        .assert_rejected(INVALID, "digest algorithm SHA-1 is weaker than SHA-256");
}

#[tokio::test]
async fn a_signer_whose_key_usage_excludes_tls_servers_is_401() {
    use openssl::x509::extension::ExtendedKeyUsage;

    let app = test_pki_app().await;
    let (_, agents) = app.seed().coder_workspace("vm-eku", &["dev"]).await;
    let with_usage = |usage: ExtendedKeyUsage| {
        let leaf = azure::issue_with(
            "metadata.azure.com",
            Some(&pki().intermediate),
            false,
            &azure::Extras {
                extended_key_usage: Some(usage),
                key: Some(pki().leaf.key.clone()),
                ..azure::Extras::default()
            },
        );
        azure::b64(&azure::sign(
            &azure::content("vm-eku"),
            &leaf,
            &[],
            Shape::NoAttributes,
        ))
    };
    let mut server = ExtendedKeyUsage::new();
    server.server_auth().client_auth();
    assert_eq!(
        app.azure(&with_usage(server), None).await.token(),
        agents[0].token()
    );
    let mut code_signing = ExtendedKeyUsage::new();
    code_signing.code_signing();
    app.azure(&with_usage(code_signing), None)
        .await
        .assert_rejected(
            INVALID,
            "signer certificate's extended key usage excludes TLS server authentication",
        );
}

#[tokio::test]
async fn an_oversized_signer_rsa_key_is_401() {
    let app = test_pki_app().await;
    app.seed().coder_workspace("vm-big", &["dev"]).await;
    // Refused on the key's size alone, before the chain or any RSA operation, so the test key
    // need not be a real (slow to generate) one.
    let leaf =
        azure::certificate_with_rsa_modulus_of("metadata.azure.com", &pki().intermediate, 4160);
    let der = azure::envelope_for(&azure::content("vm-big"), &leaf, &[0x55; 520]);
    app.azure(&azure::b64(&der), None).await.assert_rejected(
        INVALID,
        "signer's RSA key has 4160 bits; at most 4096 are accepted",
    );
}

/// An envelope with both an untrusted signer and a broken signature is refused for its chain:
/// no RSA operation is spent on a key no pinned root vouches for.
#[tokio::test]
async fn the_chain_is_checked_before_the_signature() {
    let app = test_pki_app().await;
    app.seed().coder_workspace("vm-order", &["dev"]).await;
    let der = azure::sign(
        &azure::content("vm-attack"),
        &pki().self_signed,
        &[],
        Shape::NoAttributes,
    );
    let tampered = azure::tamper(&der, "vm-attack", "vm-xttack");
    app.azure(&azure::b64(&tampered), None)
        .await
        .assert_rejected(INVALID, "certificate chain: ");
}

// Issue 12, item 5: intermediates fetched from the signer's CA-issuers URL.

/// A PKI of its own whose intermediate is configured nowhere: the leaf names a CA-issuers URL.
struct RotatedChain {
    root: azure::Issued,
    intermediate: azure::Issued,
}

/// Generated once per run: `trusted` is configured as the root, `rogue` nowhere.
fn rotated_chain(label: &'static str) -> &'static RotatedChain {
    static TRUSTED: std::sync::OnceLock<RotatedChain> = std::sync::OnceLock::new();
    static ROGUE: std::sync::OnceLock<RotatedChain> = std::sync::OnceLock::new();
    let cell = if label == "rogue" { &ROGUE } else { &TRUSTED };
    cell.get_or_init(|| {
        let root = azure::issue(&format!("instauth {label} root"), None, true);
        let intermediate = azure::issue(&format!("instauth {label} issuing CA"), Some(&root), true);
        RotatedChain { root, intermediate }
    })
}

fn leaf_pointing_at(issuer: &azure::Issued, url: &str) -> azure::Issued {
    azure::issue_with(
        "metadata.azure.com",
        Some(issuer),
        false,
        &azure::Extras {
            ca_issuers: Some(url.to_owned()),
            key: Some(pki().leaf.key.clone()),
            ..azure::Extras::default()
        },
    )
}

/// A signer whose issuer (`issuer`, served by a local stub at the leaf's CA-issuers URL) is
/// missing from the app's trust, an app trusting `root` that fetches as `mode`, and attested
/// data for `vm_id` (seeded with one agent `dev`): the app, the stub, the signature and the
/// seeded agents.
async fn unknown_issuer_signing(
    issuer: &azure::Issued,
    root: &azure::Issued,
    mode: instauth::identity::azure::IntermediateFetch,
    vm_id: &str,
) -> (
    TestApp,
    crate::helpers::http_stub::HttpStub,
    String,
    Vec<crate::helpers::seed::Agent>,
) {
    let stub = crate::helpers::http_stub::HttpStub::start(
        "200 OK",
        &[],
        issuer.cert.to_der().expect("der"),
    )
    .await;
    let leaf = leaf_pointing_at(issuer, &stub.url);
    let app = fetching_app(root, mode).await;
    let (_, agents) = app.seed().coder_workspace(vm_id, &["dev"]).await;
    let signature = azure::b64(&azure::sign(
        &azure::content(vm_id),
        &leaf,
        &[],
        Shape::NoAttributes,
    ));
    (app, stub, signature, agents)
}

async fn fetching_app(
    root: &azure::Issued,
    mode: instauth::identity::azure::IntermediateFetch,
) -> TestApp {
    let root = root.pem();
    spawn_app_with(move |options| {
        options.identity.azure.roots_pem = Some(root);
        options.identity.azure.fetch_intermediates = mode;
    })
    .await
}

#[tokio::test]
async fn a_missing_intermediate_is_fetched_and_the_retry_authenticates() {
    use instauth::identity::azure::IntermediateFetch;

    crate::helpers::logs::capture();
    let chain = rotated_chain("trusted");
    let (app, stub, signature, agents) = unknown_issuer_signing(
        &chain.intermediate,
        &chain.root,
        IntermediateFetch::LoopbackForTests,
        "vm-rotated",
    )
    .await;
    // The first attempt is refused at once and queues the fetch.
    let first = app.azure(&signature, None).await;
    first.assert_rejected(INVALID, "certificate chain: unable to get local issuer");
    assert!(
        first.detail().contains("retry shortly"),
        "{}",
        first.detail()
    );
    // The agent retries; within a few seconds the fetched intermediate completes the chain.
    let deadline = std::time::Instant::now() + StdDuration::from_secs(15);
    let mut refused = 1;
    let token = loop {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        let response = app.azure(&signature, None).await;
        if response.status == 200 {
            break response.token();
        }
        refused += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "never authenticated: {response:?}"
        );
    };
    assert_eq!(token, agents[0].token());
    assert_eq!(stub.hits(), 1, "fetched once, then served from memory");
    let lines = crate::helpers::logs::wait_for(
        "fetched a missing Azure intermediate",
        "url",
        stub.url.as_str(),
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "INFO", "{lines:#?}");
    assert_eq!(
        lines[0]["certificate"], "instauth trusted issuing CA",
        "{lines:#?}"
    );
    // docs/operations.md: `invalid_identity` for Azure rises while the intermediate is missing.
    assert_eq!(
        crate::metrics::wait_for(&app, AZURE_INVALID, f64::from(refused)).await,
        Some(f64::from(refused))
    );
}

/// Azure answers refused for their identity material.
const AZURE_INVALID: &str =
    "instauth_auth_outcomes_total{outcome=\"invalid_identity\",provider=\"azure\",target=\"none\"}";

#[tokio::test]
async fn a_fetched_certificate_that_does_not_chain_to_the_pinned_roots_is_not_used() {
    use instauth::identity::azure::IntermediateFetch;

    crate::helpers::logs::capture();
    let trusted = rotated_chain("trusted");
    // The leaf's real issuer, served at its URL, but under a root nobody pinned.
    let rogue = rotated_chain("rogue");
    let (app, stub, signature, _) = unknown_issuer_signing(
        &rogue.intermediate,
        &trusted.root,
        IntermediateFetch::LoopbackForTests,
        "vm-rogue",
    )
    .await;
    app.azure(&signature, None)
        .await
        .assert_rejected(INVALID, "certificate chain: unable to get local issuer");
    // The fetch is done, and its certificate refused, once the warning is logged.
    let lines = crate::helpers::logs::wait_for(
        "could not use the Azure intermediate at a CA-issuers URL",
        "url",
        stub.url.as_str(),
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    assert_eq!(stub.hits(), 1);
    app.azure(&signature, None)
        .await
        .assert_rejected(INVALID, "certificate chain: unable to get local issuer");
    assert_eq!(
        crate::metrics::wait_for(&app, AZURE_INVALID, 2.0).await,
        Some(2.0)
    );
}

/// The production setting only reaches Microsoft and DigiCert hosts on public addresses: a
/// signer pointing at loopback (or anywhere else) is never fetched from.
#[tokio::test]
async fn production_fetching_never_reaches_loopback() {
    use instauth::identity::azure::IntermediateFetch;

    let chain = rotated_chain("trusted");
    let (app, stub, signature, _) = unknown_issuer_signing(
        &chain.intermediate,
        &chain.root,
        IntermediateFetch::Online,
        "vm-local",
    )
    .await;
    let mut details = Vec::new();
    for _ in 0..3 {
        let response = app.azure(&signature, None).await;
        response.assert_rejected(INVALID, "certificate chain: unable to get local issuer");
        details.push(response.detail());
        tokio::time::sleep(StdDuration::from_millis(500)).await;
    }
    assert_eq!(stub.hits(), 0, "a loopback URL was fetched");
    for detail in details {
        assert!(
            detail.contains("names no CA-issuers URL that may be fetched"),
            "{detail}"
        );
    }
    // Off (the library default) asks nothing either.
    let off = fetching_app(&chain.root, IntermediateFetch::Off).await;
    let response = off.azure(&signature, None).await;
    response.assert_rejected(INVALID, "certificate chain: unable to get local issuer");
    assert!(
        !response.detail().contains("CA-issuers"),
        "{}",
        response.detail()
    );
}
