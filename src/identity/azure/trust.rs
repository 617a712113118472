//! Azure's trust material: the pinned roots and the intermediates that chains are built from.
//!
//! Real attested-data payloads embed only the signing leaf, and no intermediate is ever fetched
//! online, so every intermediate Azure may use has to be here or in `--azure-intermediates`.
//! The embedded set is public Microsoft/DigiCert data (the list Coder ships). It rots: Azure
//! rolls issuing CAs over, so [`expiry_report`] is logged at startup to say which certificates
//! are about to lapse (a log line rather than a test, so CI does not turn red by the calendar).

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::x509::{X509, X509Ref};

/// Trust anchors; `--azure-roots` replaces them. Baltimore CyberTrust Root expired in 2025 and
/// is kept so older payloads verify at their own time.
const EMBEDDED_ROOTS: [&str; 3] = [
    include_str!("certs/roots/digicert-global-root-g2.pem"),
    include_str!("certs/roots/digicert-global-root-g3.pem"),
    include_str!("certs/roots/baltimore-cybertrust-root.pem"),
];

/// Untrusted chain material; `--azure-intermediates` adds to it. Expired ones are kept on
/// purpose (see [`EMBEDDED_ROOTS`]).
const EMBEDDED_INTERMEDIATES: [&str; 23] = [
    include_str!("certs/intermediates/microsoft-azure-ecc-tls-issuing-ca-03.pem"),
    include_str!("certs/intermediates/microsoft-azure-ecc-tls-issuing-ca-04.pem"),
    include_str!("certs/intermediates/microsoft-azure-ecc-tls-issuing-ca-07.pem"),
    include_str!("certs/intermediates/microsoft-azure-ecc-tls-issuing-ca-08.pem"),
    include_str!("certs/intermediates/microsoft-azure-rsa-tls-issuing-ca-03.pem"),
    include_str!("certs/intermediates/microsoft-azure-rsa-tls-issuing-ca-04.pem"),
    include_str!("certs/intermediates/microsoft-azure-rsa-tls-issuing-ca-07.pem"),
    include_str!("certs/intermediates/microsoft-azure-rsa-tls-issuing-ca-08.pem"),
    include_str!("certs/intermediates/microsoft-azure-tls-issuing-ca-01.pem"),
    include_str!("certs/intermediates/microsoft-azure-tls-issuing-ca-02.pem"),
    include_str!("certs/intermediates/microsoft-azure-tls-issuing-ca-05.pem"),
    include_str!("certs/intermediates/microsoft-azure-tls-issuing-ca-06.pem"),
    include_str!("certs/intermediates/microsoft-rsa-tls-ca-01.pem"),
    include_str!("certs/intermediates/microsoft-rsa-tls-ca-02.pem"),
    include_str!("certs/intermediates/microsoft-tls-rsa-root-g2-xsign.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-02.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-04.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-06.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-08.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-10.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-12.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-14.pem"),
    include_str!("certs/intermediates/microsoft-tls-g2-rsa-ca-ocsp-16.pem"),
];

/// How far ahead [`expiry_report`] looks (Coder's `TestExpiresSoon` uses six months).
pub(super) const EXPIRY_WARNING_WINDOW: TimeDelta = TimeDelta::days(180);

/// Parsed roots and intermediates, built once at startup.
#[derive(Debug, Clone)]
pub(crate) struct AzureTrust {
    pub roots: Vec<X509>,
    pub intermediates: Vec<X509>,
}

impl AzureTrust {
    /// The embedded roots, or those of `roots_pem`; the embedded intermediates plus those of
    /// `intermediates_pem`.
    pub(crate) fn load(
        roots_pem: Option<&[u8]>,
        intermediates_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let roots = match roots_pem {
            Some(pem) => non_empty_bundle(pem, "--azure-roots")?,
            None => embedded(&EMBEDDED_ROOTS)?,
        };
        let mut intermediates = embedded(&EMBEDDED_INTERMEDIATES)?;
        if let Some(pem) = intermediates_pem {
            intermediates.extend(non_empty_bundle(pem, "--azure-intermediates")?);
        }
        Ok(Self {
            roots,
            intermediates,
        })
    }

    fn all(&self) -> impl Iterator<Item = &X509> {
        self.roots.iter().chain(&self.intermediates)
    }
}

fn embedded(pems: &[&str]) -> anyhow::Result<Vec<X509>> {
    pems.iter()
        .enumerate()
        .map(|(i, pem)| {
            X509::from_pem(pem.as_bytes())
                .with_context(|| format!("embedded Azure certificate {i}"))
        })
        .collect()
}

fn non_empty_bundle(pem: &[u8], flag: &str) -> anyhow::Result<Vec<X509>> {
    let certs = X509::stack_from_pem(pem).with_context(|| format!("parsing {flag}"))?;
    anyhow::ensure!(!certs.is_empty(), "{flag} holds no PEM certificate");
    Ok(certs)
}

/// Which trust certificates have lapsed and which lapse within `window` of `now`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ExpiryReport {
    /// Subject CNs of certificates already past `notAfter` (kept for older payloads).
    pub expired: Vec<String>,
    /// Subject CNs of certificates that expire within the window.
    pub expiring: Vec<String>,
}

pub(super) fn expiry_report(
    trust: &AzureTrust,
    now: DateTime<Utc>,
    window: TimeDelta,
) -> ExpiryReport {
    let mut report = ExpiryReport::default();
    for cert in trust.all() {
        match seconds_until_expiry(cert, now) {
            Some(left) if left < 0 => report.expired.push(common_name(cert)),
            Some(left) if left <= window.num_seconds() => report.expiring.push(common_name(cert)),
            Some(_) => {}
            // A notAfter OpenSSL cannot compare is worth a look too.
            None => report.expiring.push(common_name(cert)),
        }
    }
    report
}

/// Logs [`expiry_report`]: a warning per certificate about to lapse, one line for the rest.
pub(crate) fn log_expiry(trust: &AzureTrust, now: DateTime<Utc>) {
    let report = expiry_report(trust, now, EXPIRY_WARNING_WINDOW);
    for name in &report.expiring {
        tracing::warn!(
            certificate = %name,
            "Azure trust certificate expires within 180 days; payloads chaining through it will \
             fail afterwards: ship its successor with --azure-intermediates / --azure-roots"
        );
    }
    tracing::info!(
        roots = trust.roots.len(),
        intermediates = trust.intermediates.len(),
        expired = report.expired.len(),
        "Azure trust material loaded (expired certificates are kept for payloads of their time)"
    );
}

fn seconds_until_expiry(cert: &X509Ref, now: DateTime<Utc>) -> Option<i64> {
    let now = Asn1Time::from_unix(now.timestamp()).ok()?;
    let diff = now.diff(cert.not_after()).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// The subject CN (or the whole subject when there is none), for logs and details.
pub(super) fn common_name(cert: &X509Ref) -> String {
    let name = cert.subject_name();
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|entry| entry.data().to_string().ok())
        .unwrap_or_else(|| format!("{name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn embeds_three_roots_and_twenty_three_intermediates() {
        let trust = AzureTrust::load(None, None).expect("embedded certificates parse");
        assert_eq!(trust.roots.len(), 3);
        assert_eq!(trust.intermediates.len(), 23);
    }

    #[test]
    fn configured_roots_replace_and_intermediates_add() {
        let g3 = EMBEDDED_ROOTS[1].as_bytes();
        let extra = EMBEDDED_INTERMEDIATES[0].as_bytes();
        let trust = AzureTrust::load(Some(g3), Some(extra)).expect("loads");
        assert_eq!(trust.roots.len(), 1);
        assert_eq!(common_name(&trust.roots[0]), "DigiCert Global Root G3");
        assert_eq!(trust.intermediates.len(), 24);
        assert!(AzureTrust::load(Some(b"not pem"), None).is_err());
        assert!(AzureTrust::load(None, Some(b"")).is_err());
    }

    /// Pinned dates, so this never changes colour with the calendar.
    #[test]
    fn the_expiry_report_names_what_lapses_within_the_window() {
        let trust = AzureTrust::load(None, None).expect("loads");
        let report = expiry_report(&trust, at("2026-03-01T00:00:00Z"), EXPIRY_WARNING_WINDOW);
        // The ECC and RSA TLS Issuing CAs 03/04/07/08 end on 2026-08-25.
        assert_eq!(report.expiring.len(), 8, "{report:?}");
        assert!(
            report
                .expiring
                .iter()
                .all(|cn| cn.starts_with("Microsoft Azure ECC TLS Issuing CA")
                    || cn.starts_with("Microsoft Azure RSA TLS Issuing CA"))
        );
        // Baltimore root, Azure TLS Issuing CA 01/02/05/06, Microsoft RSA TLS CA 01/02.
        assert_eq!(report.expired.len(), 7, "{report:?}");

        let early = expiry_report(&trust, at("2023-01-01T00:00:00Z"), EXPIRY_WARNING_WINDOW);
        assert_eq!(early, ExpiryReport::default());
    }
}
