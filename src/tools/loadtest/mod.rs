//! `instauth loadtest`: drives a running instauth with a request corpus for a bounded time and
//! reports what the clients saw next to what the server's `/metrics` says it did meanwhile.
//!
//! - [`driver`]: the clients (closed loop at a fixed concurrency, or open loop at a fixed rate
//!   with latency corrected for coordinated omission);
//! - [`scrape`]: reads `/metrics` before, during (peak connections in use) and after the run;
//! - [`storm`]: `--storm N`, a fleet of N agents reconnecting at once and retrying like Coder's
//!   agent until each holds its token;
//! - [`threads`]: where both run, one single-threaded runtime per core, as wrk's threads;
//! - [`report`]: the table and the JSON.
//!
//! Targets must be loopback addresses unless `--allow-non-loopback` is given: a load test is
//! meant for a server the tester runs, never for someone else's.

mod driver;
mod report;
mod scrape;
mod storm;
mod threads;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use crate::metrics::names;
use crate::tools::corpus;
use driver::{Plan, Progress, Target};
pub use report::Report;
use scrape::Scrape;
pub use scrape::ServerDeltas;
pub use storm::StormReport;

/// Longest run accepted: load tests here are bounded.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How often the progress line and the peak in-use sample are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// Base URL of the instauth under test.
    #[arg(
        long,
        env = "INSTAUTH_LOADTEST_TARGET",
        default_value = "http://127.0.0.1:3000"
    )]
    pub target: String,
    /// Request corpus (JSON lines), as written by `instauth seed`.
    #[arg(long, default_value = ".instauth/seed/corpus.jsonl")]
    pub corpus: PathBuf,
    /// Clients sending at once (closed loop), or most requests in flight (open loop).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// How long to send (at most 1h), e.g. 10s, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: start this many requests per second whatever the answers' pace, and measure
    /// latency from each request's scheduled start.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Longest wait for one answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Allow a target that does not resolve to loopback addresses only.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// A fleet storm instead of a steady load: this many distinct agents (the corpus's first
    /// lines) start at once, one connection each, and retry every answer but 200 like Coder's
    /// agent (100 ms doubling to 10 s, no jitter, Retry-After ignored, 30 s per request) until
    /// each holds its token, within --duration. --concurrency, --rate and --timeout do not apply.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with = "rate")]
    pub storm: Option<u32>,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value).map_err(|err| err.to_string())?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err("must be more than 0 and at most 1h".to_owned());
    }
    Ok(duration)
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.storm.is_some() {
        let report = execute_storm(&args).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
        return Ok(());
    }
    let report = execute(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Runs the load and returns the report.
pub async fn execute(args: &LoadtestArgs) -> anyhow::Result<Report> {
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of requests per second"
        );
    }
    let base_url = args.target.trim_end_matches('/').to_owned();
    let target = check_target(&base_url, args.allow_non_loopback).await?;
    let corpus = corpus::read(&args.corpus)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let metrics_url = format!("{base_url}/metrics");

    let before = scrape(&client, &metrics_url).await;
    if before.is_none() {
        tracing::warn!(url = %metrics_url, "cannot read /metrics: the report will lack server figures");
    }
    let progress = Arc::new(Progress::default());
    let concurrency = usize::try_from(args.concurrency).unwrap_or(1);
    let plan = Plan {
        target,
        concurrency,
        duration: args.duration,
        rate: args.rate,
        timeout: args.timeout,
    };
    let (stop, stopped) = oneshot::channel();
    let monitor = tokio::spawn(monitor(
        client.clone(),
        metrics_url.clone(),
        progress.clone(),
        args.duration,
        before.is_some(),
        stopped,
    ));
    let results = driver::drive(plan, &corpus, progress).await;
    // The monitor may already be gone only if it panicked; the peak is then unknown.
    let _ = stop.send(());
    let peak_in_use = monitor.await.ok().flatten();
    let results = results?;
    let after = scrape(&client, &metrics_url).await;
    let server = match (&before, &after) {
        (Some(before), Some(after)) => Some(ServerDeltas::between(before, after, peak_in_use)),
        _ => None,
    };
    Ok(Report::new(
        base_url,
        concurrency,
        args.rate,
        &results,
        server,
    ))
}

/// Runs a fleet storm (`--storm N`) and returns its report.
pub async fn execute_storm(args: &LoadtestArgs) -> anyhow::Result<StormReport> {
    let agents = usize::try_from(args.storm.unwrap_or(1)).unwrap_or(1);
    let base_url = args.target.trim_end_matches('/').to_owned();
    let target = check_target(&base_url, args.allow_non_loopback).await?;
    let corpus = corpus::read(&args.corpus)?;
    anyhow::ensure!(
        corpus.len() >= agents,
        "--storm {agents} needs as many distinct agents, but {} holds {} lines",
        args.corpus.display(),
        corpus.len()
    );
    let requests = driver::prepare(&target, &corpus[..agents])?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let metrics_url = format!("{base_url}/metrics");
    let before = scrape(&client, &metrics_url).await;
    let (agents, seen) = storm::storm(&target, requests, args.duration).await?;
    let after = scrape(&client, &metrics_url).await;
    let server = match (&before, &after) {
        (Some(before), Some(after)) => Some(ServerDeltas::between(before, after, None)),
        _ => None,
    };
    StormReport::new(base_url, agents, &seen, server)
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<Scrape> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(Scrape::parse(&response.text().await.ok()?))
}

/// Shows progress while the run lasts and samples the server's in-use connections until
/// `stop` fires; returns the highest sample.
async fn monitor(
    client: reqwest::Client,
    metrics_url: String,
    progress: Arc<Progress>,
    duration: Duration,
    sample_server: bool,
    mut stop: oneshot::Receiver<()>,
) -> Option<f64> {
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut peak: Option<f64> = None;
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let elapsed = started.elapsed();
        let done = progress.completed.load(Ordering::Relaxed);
        bar.set_position(u64::try_from(elapsed.min(duration).as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{done} requests, {:.0} req/s",
            done as f64 / elapsed.as_secs_f64().max(1e-3)
        ));
        if sample_server
            && let Some(in_use) = scrape(&client, &metrics_url)
                .await
                .and_then(|s| s.gauge(names::POOL_IN_USE))
        {
            peak = Some(peak.map_or(in_use, |p| p.max(in_use)));
        }
    }
    bar.finish_and_clear();
    peak
}

/// Refuses targets that are not loopback, unless allowed. Returns where the clients connect
/// and what they name in `Host` and in front of each path.
async fn check_target(base_url: &str, allow_non_loopback: bool) -> anyhow::Result<Target> {
    let url = reqwest::Url::parse(base_url).with_context(|| format!("parsing {base_url}"))?;
    anyhow::ensure!(
        url.scheme() == "http",
        "only http:// targets are supported (a load test runs against a local server)"
    );
    let host = url
        .host_str()
        .with_context(|| format!("{base_url} has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect(),
    };
    let loopback = addresses.iter().all(|address| address.ip().is_loopback());
    anyhow::ensure!(
        loopback || allow_non_loopback,
        "{host} is not a loopback address; pass --allow-non-loopback to load a server you run elsewhere"
    );
    anyhow::ensure!(!addresses.is_empty(), "{host} resolves to no address");
    Ok(Target {
        addresses,
        authority,
        path_prefix: url.path().trim_end_matches('/').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_keeps_its_path_and_names_its_authority() {
        let target = check_target("http://127.0.0.1:3000/behind/proxy/", false)
            .await
            .expect("loopback");
        assert_eq!(target.path_prefix, "/behind/proxy");
        assert_eq!(target.authority, "127.0.0.1:3000");
        assert_eq!(target.addresses, ["127.0.0.1:3000".parse().expect("addr")]);

        let bare = check_target("http://[::1]:3000", false)
            .await
            .expect("loopback");
        assert_eq!(bare.path_prefix, "");
        assert_eq!(bare.authority, "[::1]:3000");
    }

    #[tokio::test]
    async fn a_target_off_loopback_needs_permission() {
        let refused = check_target("http://192.0.2.1:3000", false).await;
        assert!(refused.is_err());
        assert!(check_target("http://192.0.2.1:3000", true).await.is_ok());
        assert!(check_target("https://127.0.0.1:3000", false).await.is_err());
    }
}
