//! Google's signing keys: parsing a JWKS into RSA public keys by `kid`, and the shared store the
//! verifier reads on every request while [`super::refresh`] replaces its contents.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use openssl::bn::BigNum;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use serde::Deserialize;
use tokio::sync::Notify;

/// A JWKS with more keys than this is not Google's (it publishes two or three).
pub(super) const MAX_KEYS: usize = 64;
/// RSA modulus sizes accepted for signing keys (Google uses 2048 bits).
const MODULUS_BITS: std::ops::RangeInclusive<u32> = 2048..=8192;

/// JWK `n`/`e` are unpadded base64url; padding is tolerated because the JWKS is trusted input
/// and rejecting a padded one would only cost availability.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// RSA verification keys by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, PKey<Public>>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// One JWK. Coder's test JWKS carries only `kid`, `n` and `e`, so `kty`, `alg` and `use` are
/// optional; when present they must say RSA signing with RS256.
#[derive(Deserialize)]
struct Jwk {
    kid: String,
    n: String,
    e: String,
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(rename = "use", default)]
    usage: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not RSA signing keys are skipped; a document with
    /// none left is an error, so a bad file or response never silently empties the store.
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        let document: Document = serde_json::from_slice(json)
            .map_err(|err| anyhow::anyhow!("JWKS is not {{\"keys\": [...]}}: {err}"))?;
        anyhow::ensure!(
            document.keys.len() <= MAX_KEYS,
            "JWKS holds {} keys, more than {MAX_KEYS}",
            document.keys.len()
        );
        let mut keys = HashMap::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            match parse_key(value) {
                Ok((kid, key)) => match keys.entry(kid) {
                    Entry::Occupied(first) => {
                        tracing::warn!(
                            index,
                            kid = first.key(),
                            "JWKS repeats a kid; the first key is kept"
                        );
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(key);
                    }
                },
                Err(reason) => tracing::warn!(index, %reason, "JWKS key skipped"),
            }
        }
        anyhow::ensure!(!keys.is_empty(), "JWKS holds no usable RSA signing key");
        Ok(Self { keys })
    }

    pub fn get(&self, kid: &str) -> Option<&PKey<Public>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_key(value: serde_json::Value) -> anyhow::Result<(String, PKey<Public>)> {
    let jwk: Jwk = serde_json::from_value(value)?;
    anyhow::ensure!(!jwk.kid.is_empty(), "empty kid");
    for (field, value, wanted) in [
        ("kty", &jwk.kty, "RSA"),
        ("alg", &jwk.alg, "RS256"),
        ("use", &jwk.usage, "sig"),
    ] {
        if let Some(value) = value {
            anyhow::ensure!(value == wanted, "{field} is {value:?}, not {wanted:?}");
        }
    }
    let n = BigNum::from_slice(&JWK_BASE64.decode(&jwk.n)?)?;
    let e = BigNum::from_slice(&JWK_BASE64.decode(&jwk.e)?)?;
    anyhow::ensure!(
        MODULUS_BITS.contains(&u32::try_from(n.num_bits()).unwrap_or(0)),
        "modulus of {} bits",
        n.num_bits()
    );
    let key = PKey::from_rsa(Rsa::from_public_components(n, e)?)?;
    Ok((jwk.kid, key))
}

/// The keys currently trusted, shared between the verifier and the refresher.
#[derive(Debug, Default)]
pub struct JwksStore {
    current: RwLock<Arc<KeySet>>,
    /// Signalled when a token names an unknown `kid`; the refresher coalesces and rate-limits.
    wanted: Notify,
}

impl JwksStore {
    pub fn new(keys: KeySet) -> Self {
        Self {
            current: RwLock::new(Arc::new(keys)),
            wanted: Notify::new(),
        }
    }

    /// The key set as of now; cheap (one reference count).
    pub fn snapshot(&self) -> Arc<KeySet> {
        // A panic while the lock is held would leave a complete set behind (it is swapped in
        // whole), so a poisoned lock is still safe to read.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, keys: KeySet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Asks the refresher (if any) for an early fetch; never blocks.
    pub fn request_refresh(&self) {
        self.wanted.notify_one();
    }

    /// Completes after [`JwksStore::request_refresh`] (a request made while nobody waited
    /// counts once).
    pub async fn refresh_requested(&self) {
        self.wanted.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn jwk_number(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(kid: &str, bits: u32) -> serde_json::Value {
        let rsa = Rsa::generate(bits).expect("rsa");
        json!({
            "kid": kid,
            "n": jwk_number(&rsa.n().to_vec()),
            "e": jwk_number(&rsa.e().to_vec()),
        })
    }

    #[test]
    fn coder_style_keys_without_kty_parse() {
        let set = KeySet::parse(json!({"keys": [rsa_jwk("a", 2048)]}).to_string().as_bytes())
            .expect("parses");
        assert_eq!(set.len(), 1);
        assert!(set.get("a").is_some());
        assert!(set.get("b").is_none());
    }

    #[test]
    fn non_rsa_or_weak_keys_are_skipped_and_an_empty_result_is_an_error() {
        let mut ec = rsa_jwk("ec", 2048);
        ec["kty"] = json!("EC");
        let mut hs = rsa_jwk("hs", 2048);
        hs["alg"] = json!("HS256");
        let mut enc = rsa_jwk("enc", 2048);
        enc["use"] = json!("enc");
        let weak = rsa_jwk("weak", 1024);
        let err = KeySet::parse(
            json!({"keys": [ec, hs, enc, weak, {"kid": "x"}]})
                .to_string()
                .as_bytes(),
        )
        .expect_err("nothing usable");
        assert!(err.to_string().contains("no usable"), "{err}");

        let mut good = rsa_jwk("good", 2048);
        good["kty"] = json!("RSA");
        good["alg"] = json!("RS256");
        good["use"] = json!("sig");
        let set = KeySet::parse(
            json!({"keys": [good, rsa_jwk("weak", 1024)]})
                .to_string()
                .as_bytes(),
        )
        .expect("parses");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn malformed_documents_are_errors() {
        for doc in [
            "".to_owned(),
            "[]".to_owned(),
            r#"{"keys": {}}"#.to_owned(),
            json!({"keys": vec![json!({}); MAX_KEYS + 1]}).to_string(),
        ] {
            assert!(KeySet::parse(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    #[test]
    fn the_store_swaps_whole_sets() {
        let store = JwksStore::default();
        assert!(store.snapshot().is_empty());
        let set = KeySet::parse(json!({"keys": [rsa_jwk("a", 2048)]}).to_string().as_bytes())
            .expect("parses");
        let before = store.snapshot();
        store.replace(set);
        assert!(before.is_empty(), "old snapshots stay as they were");
        assert_eq!(store.snapshot().len(), 1);
    }
}
