//! Keeping Google's JWKS current when it comes from a URL (no `--google-jwks` file).
//!
//! Fetches happen only here, in one background task, never on a request: a request that names
//! an unknown `kid` merely asks for an early refresh and gets its 401 (the agent retries within
//! seconds and then finds the new key). The schedule follows the response's
//! `Cache-Control: max-age` minus `Age` (1 h when absent), with at least
//! [`RefreshPolicy::min_interval`] between fetches, so a flood of unknown `kid`s costs at most
//! one fetch a minute. A failed fetch keeps the last good keys, for at most
//! [`RefreshPolicy::max_stale`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::FutureExt as _;
use reqwest::header::{AGE, CACHE_CONTROL, HeaderMap};
use tokio::time::Instant;

use super::jwks::{JwksStore, KeySet};

/// Google's JWKS for ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Largest JWKS response read (Google's is about 1 KiB).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest a fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// When to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Least time between two fetches, whatever asks for them.
    pub min_interval: Duration,
    /// Lifetime of a response that states none.
    pub default_ttl: Duration,
    /// Longest lifetime honoured, whatever the response states.
    pub max_ttl: Duration,
    /// Wait before retrying a failed fetch.
    pub retry: Duration,
    /// Keys older than this are dropped when refreshing keeps failing.
    pub max_stale: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(60),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(60),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

/// One successful fetch.
#[derive(Debug)]
pub struct Fetched {
    pub keys: KeySet,
    /// How long the response says it stays fresh.
    pub max_age: Option<Duration>,
}

/// Something that produces a JWKS: [`HttpJwks`] in production, in-memory doubles in tests.
pub trait FetchJwks: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = anyhow::Result<Fetched>> + Send;
}

/// Fetches a JWKS over HTTP(S) with a timeout and a size cap.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    client: reqwest::Client,
    url: String,
}

impl HttpJwks {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("--google-jwks-url {url:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "https" | "http"),
            "--google-jwks-url must be http(s), not {:?}",
            parsed.scheme()
        );
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .context("building the JWKS HTTP client")?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }
}

impl FetchJwks for HttpJwks {
    async fn fetch(&self) -> anyhow::Result<Fetched> {
        let mut response = self.client.get(&self.url).send().await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::OK,
            "JWKS endpoint answered {}",
            response.status()
        );
        let max_age = freshness(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_RESPONSE_BYTES,
                "JWKS response exceeds {MAX_RESPONSE_BYTES} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            keys: KeySet::parse(&body)?,
            max_age,
        })
    }
}

/// `max-age` minus `Age`, when `Cache-Control` states one.
pub fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let max_age = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            directive
                .trim()
                .strip_prefix("max-age=")
                .and_then(|secs| secs.trim_matches('"').parse::<u64>().ok())
        })?;
    let age = headers
        .get(AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(Duration::from_secs(max_age.saturating_sub(age)))
}

/// The background task; aborted when dropped (with the application).
#[derive(Debug)]
pub struct RefreshTask(tokio::task::JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches once now (so keys are there before the first request when Google is reachable),
/// then keeps refreshing in the background. A failed first fetch is logged and retried: the
/// service still serves AWS and Azure, and Google requests get 401 until keys arrive.
pub async fn start<F: FetchJwks>(
    store: Arc<JwksStore>,
    fetcher: F,
    policy: RefreshPolicy,
) -> RefreshTask {
    let mut state = Refresher {
        store,
        fetcher,
        policy,
        last_attempt: None,
        last_success: None,
    };
    let wait = state.refresh().await;
    RefreshTask(tokio::spawn(state.run(wait)))
}

struct Refresher<F> {
    store: Arc<JwksStore>,
    fetcher: F,
    policy: RefreshPolicy,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

impl<F: FetchJwks> Refresher<F> {
    async fn run(mut self, mut wait: Duration) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.store.refresh_requested() => {
                    // An unknown kid: fetch early, but not sooner than min_interval after the
                    // previous fetch. Requests arriving meanwhile are folded into this one.
                    if let Some(last) = self.last_attempt {
                        tokio::time::sleep_until(last + self.policy.min_interval).await;
                    }
                    // The first request woke this wait; the ones after it left a permit that
                    // would cost a second fetch for the same keys.
                    let _ = self.store.refresh_requested().now_or_never();
                }
            }
            wait = self.refresh().await;
        }
    }

    /// One fetch; returns how long to wait before the next scheduled one.
    async fn refresh(&mut self) -> Duration {
        self.last_attempt = Some(Instant::now());
        let result = self.fetcher.fetch().await;
        let now = Instant::now();
        match result {
            Ok(fetched) => {
                tracing::info!(keys = fetched.keys.len(), max_age = ?fetched.max_age, "Google JWKS refreshed");
                self.store.replace(fetched.keys);
                self.last_success = Some(now);
                fetched
                    .max_age
                    .unwrap_or(self.policy.default_ttl)
                    .clamp(self.policy.min_interval, self.policy.max_ttl)
            }
            Err(err) => {
                let stale = self
                    .last_success
                    .is_none_or(|at| now.duration_since(at) >= self.policy.max_stale);
                if stale && !self.store.snapshot().is_empty() {
                    tracing::error!(error = %format!("{err:#}"), "Google JWKS refresh failed and the last keys are too old; Google tokens are rejected until a refresh succeeds");
                    self.store.replace(KeySet::default());
                } else {
                    tracing::warn!(error = %format!("{err:#}"), "Google JWKS refresh failed; keeping the last good keys");
                }
                self.policy.retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use openssl::rsa::Rsa;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    /// Built from one key generated once, so a scripted fetch is quick and timings measure
    /// the schedule, not key generation.
    fn key_set(kids: &[&str]) -> KeySet {
        static RSA: std::sync::OnceLock<Rsa<openssl::pkey::Private>> = std::sync::OnceLock::new();
        let rsa = RSA.get_or_init(|| Rsa::generate(2048).expect("rsa"));
        let keys: Vec<_> = kids
            .iter()
            .map(|kid| {
                json!({
                    "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
                    "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
                })
            })
            .collect();
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).expect("key set")
    }

    /// Answers from a script (`Some(kids)` a good response, `None` or the end a failure) and
    /// records when each fetch started.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Option<Vec<&'static str>>>>>,
        started: Arc<Mutex<Vec<Instant>>>,
    }

    impl Scripted {
        fn new(answers: Vec<Option<Vec<&'static str>>>) -> Self {
            Self {
                answers: Arc::new(Mutex::new(answers.into())),
                started: Arc::default(),
            }
        }
        fn calls(&self) -> usize {
            self.started.lock().expect("lock").len()
        }
        fn started(&self) -> Vec<Instant> {
            self.started.lock().expect("lock").clone()
        }
    }

    impl FetchJwks for Scripted {
        async fn fetch(&self) -> anyhow::Result<Fetched> {
            self.started.lock().expect("lock").push(Instant::now());
            let next = self.answers.lock().expect("lock").pop_front().flatten();
            match next {
                Some(kids) => Ok(Fetched {
                    keys: key_set(&kids),
                    max_age: None,
                }),
                None => Err(anyhow::anyhow!("scripted failure")),
            }
        }
    }

    fn fast() -> RefreshPolicy {
        RefreshPolicy {
            min_interval: Duration::from_millis(50),
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(3600),
            retry: Duration::from_millis(20),
            max_stale: Duration::from_secs(3600),
        }
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn the_first_fetch_happens_before_start_returns() {
        let store = Arc::new(JwksStore::default());
        let fetcher = Scripted::new(vec![Some(vec!["a"])]);
        let _task = start(Arc::clone(&store), fetcher.clone(), fast()).await;
        assert!(store.snapshot().get("a").is_some());
        assert_eq!(fetcher.calls(), 1);
    }

    /// Paused time: the runtime jumps to the next timer whenever it is idle, so "ten
    /// `min_interval`s later" is a fact about the schedule, not a bet on the machine's speed.
    async fn ten_intervals_later() {
        tokio::time::sleep(fast().min_interval * 10).await;
    }

    /// Ten requests before the refresher first runs: one early fetch, `min_interval` after
    /// the first, and no other within ten intervals.
    #[tokio::test(start_paused = true)]
    async fn an_unknown_kid_triggers_one_rate_limited_fetch() {
        let store = Arc::new(JwksStore::default());
        let fetcher = Scripted::new(vec![Some(vec!["a"]), Some(vec!["a", "b"]), Some(vec!["c"])]);
        let _task = start(Arc::clone(&store), fetcher.clone(), fast()).await;
        for _ in 0..10 {
            store.request_refresh();
        }
        eventually("the new key", || store.snapshot().get("b").is_some()).await;
        ten_intervals_later().await;
        let started = fetcher.started();
        assert_eq!(started.len(), 2, "{started:?}");
        assert_eq!(started[1] - started[0], fast().min_interval);
        assert!(store.snapshot().get("c").is_none(), "no third fetch");
    }

    /// Ten requests while the refresher already waits for one: the first wakes it, the nine
    /// arriving during its `min_interval` wait are folded into the same fetch.
    #[tokio::test(start_paused = true)]
    async fn requests_during_the_wait_are_folded_into_its_fetch() {
        let store = Arc::new(JwksStore::default());
        let fetcher = Scripted::new(vec![Some(vec!["a"]), Some(vec!["a", "b"]), Some(vec!["c"])]);
        let _task = start(Arc::clone(&store), fetcher.clone(), fast()).await;
        // Let the refresher reach its wait, so the first request wakes it.
        tokio::task::yield_now().await;
        store.request_refresh();
        tokio::task::yield_now().await;
        for _ in 0..9 {
            store.request_refresh();
        }
        eventually("the new key", || store.snapshot().get("b").is_some()).await;
        ten_intervals_later().await;
        let started = fetcher.started();
        assert_eq!(started.len(), 2, "{started:?}");
        assert_eq!(started[1] - started[0], fast().min_interval);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_keys_until_they_are_too_old() {
        let store = Arc::new(JwksStore::default());
        let fetcher = Scripted::new(vec![Some(vec!["a"]), None, None]);
        let policy = RefreshPolicy {
            max_stale: Duration::from_secs(1),
            ..fast()
        };
        let _task = start(Arc::clone(&store), fetcher.clone(), policy).await;
        store.request_refresh();
        eventually("a failed refresh", || fetcher.calls() >= 2).await;
        assert!(store.snapshot().get("a").is_some(), "kept after a failure");
        // Failures go on (retry every 20 ms, the script answers None from now on); after
        // max_stale the keys are dropped rather than trusted forever.
        eventually("stale keys dropped", || store.snapshot().is_empty()).await;
    }

    #[tokio::test]
    async fn a_failed_first_fetch_is_retried() {
        let store = Arc::new(JwksStore::default());
        let fetcher = Scripted::new(vec![None, Some(vec!["a"])]);
        let _task = start(Arc::clone(&store), fetcher.clone(), fast()).await;
        assert!(store.snapshot().is_empty());
        eventually("the retry", || store.snapshot().get("a").is_some()).await;
    }

    #[test]
    fn freshness_is_max_age_minus_age() {
        let mut headers = HeaderMap::new();
        assert_eq!(freshness(&headers), None);
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=19714, must-revalidate, no-transform"),
        );
        assert_eq!(freshness(&headers), Some(Duration::from_secs(19714)));
        headers.insert(AGE, HeaderValue::from_static("714"));
        assert_eq!(freshness(&headers), Some(Duration::from_secs(19000)));
        headers.insert(AGE, HeaderValue::from_static("99999"));
        assert_eq!(freshness(&headers), Some(Duration::ZERO));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert_eq!(freshness(&headers), None);
    }
}
