//! Documents already proven: the signature checked and the document read once, remembered by a
//! digest of the exact bytes that were sent.
//!
//! An instance's document and signature stay the same bytes for as long as it runs (IMDS
//! serves them unchanged, and an RSASSA-PKCS1-v1_5 signature is deterministic), and a Coder
//! agent sends them again on every reconnect. After a fleet's first wave nearly every request
//! carries material an earlier request proved, and the RSA verification and the document's
//! JSON were most of what verifying it cost (`cargo bench --bench verify`, docs/identity.md).
//! What a remembered entry stands for depends only on those bytes and the trusted keys, fixed
//! at startup; the policy (allowed accounts, maximum age) is applied again on every request,
//! since the age moves with the clock.
//!
//! The key is SHA-256 over the document's SHA-256 and the signature as sent, so an entry
//! answers only for the very pair that was proven: another signature for the same
//! document, or the same signature under another document, misses and is checked in full.
//! Only material that verified gets in, but anyone can launch instances of their own and send
//! their genuine documents, so it is bounded; quick_cache's eviction keeps the documents sent
//! most often, and a miss only costs what every verification cost before.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::AwsIdentity;

/// Documents remembered by default: a fleet of this many instances reconnects without an RSA
/// verification. About 400 bytes each with the map's own share (414 measured over 65 269
/// entries of real-shaped identities), so some 26 MiB when full.
pub(super) const DEFAULT_CAPACITY: usize = 65_536;

/// A SHA-256: of a document, or of one (document, signature) pair.
pub(super) type Digest = [u8; 32];

#[derive(Debug)]
pub(super) struct Proven {
    /// `None` when remembering is off (capacity 0).
    documents: Option<Cache<Digest, Arc<AwsIdentity>>>,
}

impl Proven {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            documents: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    /// The digest a pair is remembered by, from the document's SHA-256 (the one its signature
    /// is checked against, so the document is hashed once) and the signature text as sent.
    pub(super) fn pair(document: &Digest, signature: &str) -> Digest {
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(document);
        hasher.update(signature.as_bytes());
        hasher.finish()
    }

    /// What the pair with this digest was proven to say, when it was.
    pub(super) fn get(&self, digest: &Digest) -> Option<Arc<AwsIdentity>> {
        self.documents.as_ref()?.get(digest)
    }

    /// Remembers what a verified pair says.
    pub(super) fn remember(&self, digest: Digest, identity: AwsIdentity) {
        if let Some(documents) = &self.documents {
            documents.insert(digest, Arc::new(identity));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.documents.as_ref().map_or(0, Cache::len)
    }
}
