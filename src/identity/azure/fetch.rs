//! Fetching an Azure signer's missing intermediate from its certificate's CA-issuers URL (the
//! Authority Information Access extension), as Coder does: Microsoft rotates these issuing CAs,
//! and an embedded-only set would then answer 401 to every Azure VM.
//!
//! Design: verification never waits on the network. A request whose chain lacks an issuer gets
//! its 401 at once and queues the URL; one background task fetches it (bounded queue, one fetch
//! at a time, each URL at most once per [`RETRY_URL_AFTER`]) and, when the certificate checks
//! out, adds it to an in-memory set the chain builder uses from then on. The agent retries about
//! every 10 s, so its next attempt succeeds, as with Google's unknown `kid`. A bounded fetch on
//! the request path was the alternative; it would hold a blocking-pool thread for up to the
//! fetch timeout per request, and an attacker could send many envelopes naming allowed but slow
//! URLs.
//!
//! What may be fetched ([`Reach::Public`], `serve`'s default): `http`/`https` URLs on a
//! Microsoft or DigiCert host ([`ALLOWED_DOMAINS`]), ports 80 and 443, no redirects, no proxy;
//! the host is resolved once and every address it resolves to must be public (no private,
//! loopback, link-local, CGNAT, multicast or reserved range), and the connection goes to those
//! checked addresses. At most [`MAX_CERTIFICATE_BYTES`], [`FETCH_TIMEOUT`] in all.
//!
//! A fetched certificate is only ever untrusted chain material: it is kept only if it issued the
//! certificate that lacked an issuer and itself chains to the pinned roots, and every request's
//! chain is still anchored in the pinned roots.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509PurposeId, X509Ref, X509StoreContext, X509VerifyResult};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::trust::{AzureTrust, common_name};

/// Hosts (and their subdomains) a CA-issuers URL may name in production.
pub const ALLOWED_DOMAINS: [&str; 2] = ["microsoft.com", "digicert.com"];
/// Ports a CA-issuers URL may use in production.
pub const ALLOWED_PORTS: [u16; 2] = [80, 443];
/// Largest certificate read.
pub const MAX_CERTIFICATE_BYTES: usize = 1024 * 1024;
/// Longest one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A URL is fetched at most once in this period, whatever the outcome.
pub const RETRY_URL_AFTER: Duration = Duration::from_secs(600);
/// Least time between two fetches, whatever asks for them.
const MIN_SPACING: Duration = Duration::from_millis(500);
/// Requests waiting for the task; more are dropped (their agents retry).
const QUEUE: usize = 16;
/// Most fetched certificates kept, and most URLs remembered.
const MAX_FETCHED: usize = 64;
const MAX_REMEMBERED_URLS: usize = 1024;

/// Whether and from where missing Azure intermediates are fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IntermediateFetch {
    /// Never: only the embedded and configured intermediates (library default, so nothing
    /// reaches the network unless asked; `serve --azure-fetch-intermediates=false`).
    #[default]
    Off,
    /// From Microsoft and DigiCert hosts on public addresses (`serve`'s default).
    Online,
    /// Test seam: only `http://127.0.0.1:<any port>/…`, only loopback addresses. No flag or
    /// environment variable selects it, so no deployment can be pointed at loopback (or any
    /// other host) by configuration.
    LoopbackForTests,
}

/// Which URLs and addresses a fetch may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Public,
    Loopback,
}

/// The request side: queues URLs and reads what the task fetched.
pub(crate) struct Fetcher {
    reach: Reach,
    queue: mpsc::Sender<Wanted>,
    fetched: Arc<RwLock<Vec<X509>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("reach", &self.reach)
            .field("fetched", &self.fetched().len())
            .finish_non_exhaustive()
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What made a request ask: the certificate whose issuer is missing, and its URLs.
struct Wanted {
    subject: X509,
    urls: Vec<String>,
}

/// What the request learns when it asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// Queued (or already known to the task): a retry shortly may succeed.
    Queued,
    /// The certificate names no CA-issuers URL that may be fetched.
    NoUsableUrl,
}

impl Fetcher {
    /// Starts the background task on the current Tokio runtime; `None` when `mode` is
    /// [`IntermediateFetch::Off`].
    pub(crate) fn start(
        mode: IntermediateFetch,
        trust: &AzureTrust,
    ) -> anyhow::Result<Option<Self>> {
        let reach = match mode {
            IntermediateFetch::Off => return Ok(None),
            IntermediateFetch::Online => Reach::Public,
            IntermediateFetch::LoopbackForTests => Reach::Loopback,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .context("fetching Azure intermediates needs a Tokio runtime")?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let fetched = Arc::new(RwLock::new(Vec::new()));
        let task = runtime.spawn(
            Task {
                reach,
                trust: trust.clone(),
                fetched: Arc::clone(&fetched),
                attempted: HashMap::new(),
            }
            .run(receiver),
        );
        Ok(Some(Self {
            reach,
            queue,
            fetched,
            task,
        }))
    }

    /// The intermediates fetched so far.
    pub(crate) fn fetched(&self) -> Vec<X509> {
        self.fetched
            .read()
            .map(|certs| certs.clone())
            .unwrap_or_default()
    }

    /// Asks for `subject`'s issuer, without waiting.
    pub(crate) fn ask(&self, subject: &X509Ref) -> Asked {
        let urls: Vec<String> = ca_issuers(subject)
            .into_iter()
            .filter(|url| check_url(url, self.reach).is_ok())
            .collect();
        if urls.is_empty() {
            return Asked::NoUsableUrl;
        }
        // A full queue drops the ask: the task is busy, and the agent retries anyway.
        let _ = self.queue.try_send(Wanted {
            subject: subject.to_owned(),
            urls,
        });
        Asked::Queued
    }
}

/// The CA-issuers URIs of `cert`'s Authority Information Access extension, in order.
fn ca_issuers(cert: &X509Ref) -> Vec<String> {
    cert.authority_info()
        .map(|descriptions| {
            descriptions
                .iter()
                .filter(|d| d.method().nid() == Nid::AD_CA_ISSUERS)
                .filter_map(|d| d.location().uri().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The host and port `url` may be fetched from under `reach`, or why not.
fn check_url(url: &str, reach: Reach) -> Result<(String, u16), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("not a URL: {err}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URL carries credentials".to_owned());
    }
    let port = parsed.port_or_known_default().ok_or("URL has no port")?;
    let host = parsed.host_str().ok_or("URL has no host")?;
    let literal: Option<IpAddr> = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    let host = match (reach, literal) {
        (Reach::Public, None) => {
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("scheme {:?} is not http(s)", parsed.scheme()));
            }
            if !ALLOWED_PORTS.contains(&port) {
                return Err(format!("port {port} is not 80 or 443"));
            }
            let domain = host.trim_end_matches('.').to_ascii_lowercase();
            let allowed = ALLOWED_DOMAINS
                .iter()
                .any(|allowed| domain == *allowed || domain.ends_with(&format!(".{allowed}")));
            if !allowed {
                return Err(format!(
                    "host {domain:?} is not a Microsoft or DigiCert host"
                ));
            }
            domain
        }
        (Reach::Public, Some(_)) => return Err("host is an address, not a name".to_owned()),
        (Reach::Loopback, Some(ip @ IpAddr::V4(_))) if ip.is_loopback() => {
            if parsed.scheme() != "http" {
                return Err("scheme is not http".to_owned());
            }
            ip.to_string()
        }
        (Reach::Loopback, _) => return Err("host is not a loopback address".to_owned()),
    };
    Ok((host, port))
}

/// Whether a fetch under `reach` may connect to `ip`.
fn address_allowed(ip: IpAddr, reach: Reach) -> bool {
    match reach {
        Reach::Public => is_public(ip),
        Reach::Loopback => ip.is_loopback(),
    }
}

/// Not private, loopback, link-local, shared (CGNAT), multicast, documentation, benchmarking,
/// reserved or unspecified; IPv4-mapped and -compatible IPv6 addresses are judged as IPv4.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        // `to_ipv4` sees through IPv4-mapped and IPv4-compatible addresses (`::1` among them).
        IpAddr::V6(v6) => match v6.to_ipv4() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0064 // NAT64 and local-use translation prefixes
        || first == 0x2002) // 6to4, which embeds an IPv4 address
}

/// The background task.
struct Task {
    reach: Reach,
    trust: AzureTrust,
    fetched: Arc<RwLock<Vec<X509>>>,
    /// When each URL was last tried.
    attempted: HashMap<String, Instant>,
}

impl Task {
    async fn run(mut self, mut receiver: mpsc::Receiver<Wanted>) {
        while let Some(wanted) = receiver.recv().await {
            if self.have_issuer_of(&wanted.subject) {
                continue;
            }
            for url in &wanted.urls {
                if !self.first_attempt_in_a_while(url) {
                    continue;
                }
                let result = self.fetch_and_check(url, &wanted.subject).await;
                tokio::time::sleep(MIN_SPACING).await;
                match result {
                    Ok(cert) => {
                        tracing::info!(
                            url = %url,
                            certificate = %common_name(&cert),
                            "fetched a missing Azure intermediate"
                        );
                        self.keep(cert);
                        break;
                    }
                    Err(err) => tracing::warn!(
                        url = %url,
                        error = %format!("{err:#}"),
                        "could not use the Azure intermediate at a CA-issuers URL"
                    ),
                }
            }
        }
    }

    fn have_issuer_of(&self, subject: &X509Ref) -> bool {
        self.fetched
            .read()
            .map(|certs| {
                certs
                    .iter()
                    .any(|cert| cert.issued(subject) == X509VerifyResult::OK)
            })
            .unwrap_or(false)
    }

    fn first_attempt_in_a_while(&mut self, url: &str) -> bool {
        let now = Instant::now();
        if self
            .attempted
            .get(url)
            .is_some_and(|at| now.duration_since(*at) < RETRY_URL_AFTER)
        {
            return false;
        }
        if self.attempted.len() >= MAX_REMEMBERED_URLS {
            self.attempted
                .retain(|_, at| now.duration_since(*at) < RETRY_URL_AFTER);
            if self.attempted.len() >= MAX_REMEMBERED_URLS {
                return false;
            }
        }
        self.attempted.insert(url.to_owned(), now);
        true
    }

    fn keep(&self, cert: X509) {
        if let Ok(mut certs) = self.fetched.write() {
            if certs.len() >= MAX_FETCHED {
                certs.remove(0);
            }
            certs.push(cert);
        }
    }

    async fn fetch_and_check(&self, url: &str, subject: &X509Ref) -> anyhow::Result<X509> {
        let body = tokio::time::timeout(FETCH_TIMEOUT, fetch(url, self.reach))
            .await
            .context("timed out")??;
        let cert = X509::from_der(&body)
            .or_else(|_| X509::from_pem(&body))
            .context("the response is not a DER or PEM certificate")?;
        let key = cert.public_key()?;
        anyhow::ensure!(
            cert.issued(subject) == X509VerifyResult::OK && subject.verify(&key).unwrap_or(false),
            "{:?} did not issue the certificate that needed it",
            common_name(&cert)
        );
        anyhow::ensure!(
            chains_to_pinned_roots(&cert, &self.trust, &self.fetched_now())?,
            "{:?} does not chain to a pinned Azure root",
            common_name(&cert)
        );
        Ok(cert)
    }

    fn fetched_now(&self) -> Vec<X509> {
        self.fetched
            .read()
            .map(|certs| certs.clone())
            .unwrap_or_default()
    }
}

/// Whether `cert` chains to a pinned root through the known intermediates. Dates are not
/// checked here: every request's chain is verified at its own time anyway.
fn chains_to_pinned_roots(
    cert: &X509Ref,
    trust: &AzureTrust,
    fetched: &[X509],
) -> anyhow::Result<bool> {
    let mut builder = X509StoreBuilder::new()?;
    for root in &trust.roots {
        builder.add_cert(root.clone())?;
    }
    let mut param = X509VerifyParam::new()?;
    param.set_purpose(X509PurposeId::ANY)?;
    param.set_flags(X509VerifyFlags::NO_CHECK_TIME)?;
    builder.set_param(&param)?;
    let store = builder.build();
    let mut untrusted = Stack::new()?;
    for known in trust.intermediates.iter().chain(fetched) {
        untrusted.push(known.clone())?;
    }
    let mut context = X509StoreContext::new()?;
    Ok(context.init(&store, cert, &untrusted, |ctx| ctx.verify_cert())?)
}

/// GETs `url` after checking it, resolving its host once and connecting only to the checked
/// addresses; the body, at most [`MAX_CERTIFICATE_BYTES`].
async fn fetch(url: &str, reach: Reach) -> anyhow::Result<Vec<u8>> {
    let (host, port) = check_url(url, reach).map_err(anyhow::Error::msg)?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    anyhow::ensure!(!addresses.is_empty(), "{host} resolves to no address");
    if let Some(refused) = addresses.iter().find(|a| !address_allowed(a.ip(), reach)) {
        anyhow::bail!(
            "{host} resolves to {}, which is not a public address",
            refused.ip()
        );
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .resolve_to_addrs(&host, &addresses)
        .build()
        .context("building the HTTP client")?;
    let mut response = client.get(url).send().await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::OK,
        "answered {}",
        response.status()
    );
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        anyhow::ensure!(
            body.len() + chunk.len() <= MAX_CERTIFICATE_BYTES,
            "the response exceeds {MAX_CERTIFICATE_BYTES} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_microsoft_and_digicert_hosts_on_ports_80_and_443() {
        for good in [
            "http://www.microsoft.com/pkiops/certs/Microsoft%20TLS%20G2%20RSA%20CA%20OCSP%2002.crt",
            "http://caissuers.microsoft.com/pkiops/certs/x.crt",
            "https://cacerts.digicert.com/DigiCertGlobalRootG2.crt",
            "http://www.microsoft.com:80/x.crt",
            "http://WWW.Microsoft.COM./x.crt",
        ] {
            assert!(check_url(good, Reach::Public).is_ok(), "{good}");
        }
        for bad in [
            "http://microsoft.com.evil.com/x.crt",
            "http://evilmicrosoft.com/x.crt",
            "http://www.microsoft.com:8080/x.crt",
            "ftp://www.microsoft.com/x.crt",
            "ldap://www.microsoft.com/x.crt",
            "http://127.0.0.1/x.crt",
            "http://169.254.169.254/metadata",
            "http://[::1]/x.crt",
            "http://user:pw@www.microsoft.com/x.crt",
            "not a url",
        ] {
            assert!(check_url(bad, Reach::Public).is_err(), "{bad}");
        }
        // The test seam reaches loopback only, and production never reaches it.
        assert!(check_url("http://127.0.0.1:4567/ca.crt", Reach::Loopback).is_ok());
        assert!(check_url("http://127.0.0.1:4567/ca.crt", Reach::Public).is_err());
        assert!(check_url("http://www.microsoft.com/x.crt", Reach::Loopback).is_err());
    }

    #[test]
    fn only_public_addresses_are_reached() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2001:db8::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            let ip: IpAddr = private.parse().expect("ip");
            assert!(!is_public(ip), "{private}");
            assert!(!address_allowed(ip, Reach::Public), "{private}");
        }
        for public in ["13.107.246.1", "2620:1ec:bdf::1", "::ffff:13.107.246.1"] {
            let ip: IpAddr = public.parse().expect("ip");
            assert!(is_public(ip), "{public}");
        }
        assert!(address_allowed(
            "127.0.0.1".parse().expect("ip"),
            Reach::Loopback
        ));
        assert!(!address_allowed(
            "13.107.246.1".parse().expect("ip"),
            Reach::Loopback
        ));
    }

    #[test]
    fn reads_the_ca_issuers_urls_of_a_real_signer() {
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            include_str!("../../../tests/fixtures/azure/real/regular.signature.b64")
                .trim()
                .as_bytes(),
        )
        .expect("base64");
        let pkcs7 = openssl::pkcs7::Pkcs7::from_der(&der).expect("pkcs7");
        let certs = pkcs7
            .signed()
            .and_then(|s| s.certificates())
            .expect("certificates");
        let urls = ca_issuers(&certs[0]);
        assert_eq!(urls.len(), 2, "{urls:?}");
        assert!(
            urls.iter().all(|u| check_url(u, Reach::Public).is_ok()),
            "{urls:?}"
        );
    }
}
