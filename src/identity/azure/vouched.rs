//! Signing certificates already proven: their CN, usage and chain to a pinned root checked
//! once, remembered with the time window in which that chain holds.
//!
//! A fleet signs with a handful of certificates (one per region, rotated every few months), so
//! nearly every payload names a signer some earlier payload already proved. Building its chain
//! again (two or three RSA verifications) was about 40 % of an Azure verification
//! (`cargo bench --bench verify`). The checks skipped depend only on the certificate, the
//! pinned roots (fixed at startup) and the time, so a remembered proof is the proof itself for
//! as long as `now` stays inside every certificate of its chain. The intermediates it was
//! built through may come and go (one carried by that payload only, a fetched one dropped when
//! 64 newer were fetched); the leaf stays proven, as if they had been configured. The signature over the content is still verified on every request. The
//! certificate is kept parsed too: an envelope carrying only proven certificates is handed to
//! OpenSSL without them (`envelope`), sparing their slow public-key decoding.
//!
//! Only proven certificates get in, so whoever sends payloads cannot fill it; it is bounded
//! anyway. A hand-written map rather than a cache crate: entries leave by their own validity
//! window, which no eviction policy (LRU, TTL) expresses, and a full map only means the next
//! new signer is proven on every request until an entry lapses.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use openssl::x509::X509;

/// SHA-256 of a certificate's DER.
pub(super) type Fingerprint = [u8; 32];

/// Signers remembered at most. Azure's public clouds sign with well under a hundred
/// certificates at any time.
const CAPACITY: usize = 256;

/// What was proven about one signing certificate.
#[derive(Debug, Clone)]
struct Proof {
    certificate: X509,
    /// Its common name, as the signer check read it.
    common_name: String,
    /// Unix seconds in which every certificate of its chain is valid (OpenSSL's rule: from
    /// `notBefore` inclusive to `notAfter` exclusive).
    valid: Range<i64>,
}

#[derive(Debug, Default)]
pub(super) struct Vouched {
    proofs: Mutex<HashMap<Fingerprint, Proof>>,
}

impl Vouched {
    /// The proven signer whose DER has this fingerprint, parsed, and its common name, when
    /// its chain holds at `at` (unix seconds). A proof whose window has ended is forgotten.
    pub(super) fn proven(&self, signer: &Fingerprint, at: i64) -> Option<(X509, String)> {
        let mut proofs = self.lock();
        let proof = proofs.get(signer)?;
        if proof.valid.contains(&at) {
            return Some((proof.certificate.clone(), proof.common_name.clone()));
        }
        if at >= proof.valid.end {
            proofs.remove(signer);
        }
        None
    }

    /// Remembers a signer whose checks all passed at `at`, its chain valid over `valid`.
    pub(super) fn remember(
        &self,
        signer: Fingerprint,
        certificate: X509,
        common_name: String,
        valid: Range<i64>,
        at: i64,
    ) {
        let mut proofs = self.lock();
        if proofs.len() >= CAPACITY && !proofs.contains_key(&signer) {
            proofs.retain(|_, proof| at < proof.valid.end);
            if proofs.len() >= CAPACITY {
                return;
            }
        }
        proofs.insert(
            signer,
            Proof {
                certificate,
                common_name,
                valid,
            },
        );
    }

    /// How many signers are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Proof>> {
        // A panic while holding the lock cannot leave a half-written entry (one insert or
        // remove at a time), so a poisoned map is still sound.
        self.proofs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> X509 {
        X509::from_pem(include_bytes!("certs/roots/digicert-global-root-g2.pem")).expect("pem")
    }

    /// The common name `vouched` gives `signer` at `at`.
    fn name(vouched: &Vouched, signer: usize, at: i64) -> Option<String> {
        vouched
            .proven(&fingerprint(signer), at)
            .map(|(_, name)| name)
    }

    fn fingerprint(n: usize) -> Fingerprint {
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes
    }

    #[test]
    fn a_proof_holds_from_not_before_to_just_before_not_after() {
        let vouched = Vouched::default();
        vouched.remember(
            fingerprint(1),
            certificate(),
            "metadata.azure.com".into(),
            100..200,
            150,
        );
        assert_eq!(name(&vouched, 1, 99), None);
        assert_eq!(
            name(&vouched, 1, 100).as_deref(),
            Some("metadata.azure.com")
        );
        assert!(name(&vouched, 1, 199).is_some());
        let (kept, _) = vouched.proven(&fingerprint(1), 199).expect("proven");
        assert!(kept == certificate());
        assert_eq!(name(&vouched, 2, 150), None);
        // Before the window the proof stays (a clock can be set back); after it, it is gone.
        assert_eq!(vouched.len(), 1);
        assert_eq!(name(&vouched, 1, 200), None);
        assert_eq!(vouched.len(), 0);
        assert_eq!(name(&vouched, 1, 150), None);
    }

    #[test]
    fn a_full_map_makes_room_only_from_lapsed_proofs() {
        let vouched = Vouched::default();
        for n in 0..CAPACITY {
            let end = if n < 2 { 50 } else { 1_000 };
            vouched.remember(fingerprint(n), certificate(), format!("cn-{n}"), 0..end, 10);
        }
        assert_eq!(vouched.len(), CAPACITY);
        // Full, nothing lapsed: the newcomer is not remembered, the others stay.
        vouched.remember(
            fingerprint(CAPACITY),
            certificate(),
            "new".into(),
            0..1_000,
            20,
        );
        assert_eq!(name(&vouched, CAPACITY, 20), None);
        assert_eq!(vouched.len(), CAPACITY);
        // A known signer is still refreshed when full.
        vouched.remember(
            fingerprint(5),
            certificate(),
            "renewed".into(),
            0..1_000,
            20,
        );
        assert_eq!(name(&vouched, 5, 20).as_deref(), Some("renewed"));
        // Two proofs have lapsed by 60: they make room.
        vouched.remember(
            fingerprint(CAPACITY),
            certificate(),
            "new".into(),
            0..1_000,
            60,
        );
        assert_eq!(name(&vouched, CAPACITY, 60).as_deref(), Some("new"));
        assert_eq!(vouched.len(), CAPACITY - 1);
        assert_eq!(name(&vouched, 0, 10), None);
    }
}
