//! The real `instauth` binary run as a child process, its stdout and stderr collected line by
//! line (and drained to the end, so it never writes into a closed pipe). A [`Running`] dropped
//! before its child exited (a test that failed half-way) stops and reaps it, so no `serve` (or
//! embedded cluster) outlives the test.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub struct Running {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

/// `instauth ARGS` with no database URL from the environment and `RUST_LOG=debug`.
pub fn instauth(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_instauth"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("INSTAUTH_DATABASE_URL")
        // Never the internet: without this, `serve` fetches Google's real JWKS at start.
        // Nothing listens on port 1, so the fetch fails at once and Google tokens are 401.
        .env("INSTAUTH_GOOGLE_JWKS_URL", "http://127.0.0.1:1/certs")
        .env("RUST_LOG", "debug");
    command
}

/// A free loopback address to bind.
pub fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

impl Running {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn instauth");
        let (sender, lines) = std::sync::mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for stream in streams {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Collects lines until one contains `needle` (60 s at most).
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {needle:?} in the output: {:#?}", self.seen),
            }
        }
    }

    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
    }

    pub fn sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|err| panic!("{signal}: {err}"));
    }

    /// Waits at most `limit` for the exit (then kills the process and returns `None`); returns
    /// it with every line printed.
    pub fn finish_within(mut self, limit: Duration) -> (Option<ExitStatus>, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                self.kill();
                break None;
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(line);
            }
        };
        let (_, lines) = self.finish();
        (status, lines)
    }

    /// Waits for the exit; returns it with every line printed.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let status = self.child.wait().expect("exits");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// How long a dropped child gets to stop after SIGTERM (serve drains and stops its embedded
/// cluster) before it is killed.
const STOP_ON_DROP: Duration = Duration::from_secs(10);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + STOP_ON_DROP;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
