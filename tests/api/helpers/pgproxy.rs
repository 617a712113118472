//! A PostgreSQL wire-protocol proxy that counts the statements clients send, so a test can
//! prove how many statements a request costs without trusting the service's own code.
//!
//! Counted statements: each statement of a `Q` (simple query) message, which may carry several
//! separated by `;` (see [`statements_in_query`]), one per `E` (execute of an extended-protocol
//! portal) and one per `F` (function call, which runs a function without any SQL). `P` (parse) is
//! counted separately: with the statement cache it is sent once per connection, and parses
//! that name their statement (anything but the unnamed statement) are counted again apart.
//! `S` (sync) ends each round trip of the extended protocol: one per exchange the client
//! waits on, whether it carries a statement or is a bare ping.
//!
//! Connections are counted too: accepted, ended by the client, and how many of those sent a
//! Terminate (`X`) first, the polite close that leaves no "unexpected EOF" in the server log.
//!
//! [`PgProxy::stall`] stops forwarding in both directions without closing anything: a
//! database host that went silent (frozen VM, network partition).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct Counts {
    statements: AtomicUsize,
    parses: AtomicUsize,
    named_parses: AtomicUsize,
    syncs: AtomicUsize,
    /// Bind messages that arrived (forwarded or held).
    binds: AtomicUsize,
    /// Set while a test holds Bind messages back (see [`PgProxy::hold_binds`]).
    hold_binds: AtomicBool,
    stalled: AtomicBool,
    /// Client connections accepted.
    accepted: AtomicUsize,
    /// Client connections whose client side has ended.
    ended: AtomicUsize,
    /// Terminate messages seen.
    terminates: AtomicUsize,
}

impl Counts {
    async fn wait_while_stalled(&self) {
        while self.stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[derive(Debug)]
pub struct PgProxy {
    pub port: u16,
    counts: Arc<Counts>,
}

impl PgProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(Counts::default());
        let task_counts = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                task_counts.accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                // Messages are forwarded one write each: without this, Nagle's algorithm and
                // delayed ACKs add ~40 ms to clients that wait between messages (pgbench).
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(count_frontend(
                    client_read,
                    server_write,
                    task_counts.clone(),
                ));
                tokio::spawn(copy(server_read, client_write, task_counts.clone()));
            }
        });
        Self { port, counts }
    }

    /// Statements (simple queries plus portal executions) seen so far.
    pub fn statements(&self) -> usize {
        self.counts.statements.load(Ordering::SeqCst)
    }

    /// Sync messages seen so far: the client's round trips.
    pub fn syncs(&self) -> usize {
        self.counts.syncs.load(Ordering::SeqCst)
    }

    /// Holds all traffic (`true`) or lets it flow again (`false`).
    pub fn stall(&self, stalled: bool) {
        self.counts.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Parse messages seen so far.
    pub fn parses(&self) -> usize {
        self.counts.parses.load(Ordering::SeqCst)
    }

    /// Bind messages that reached the proxy so far, including one being held.
    pub fn binds(&self) -> usize {
        self.counts.binds.load(Ordering::SeqCst)
    }

    /// Holds every Bind message at the proxy until [`PgProxy::release_binds`], so a test can
    /// change what happens on the server side between a client's Parse and its Bind.
    pub fn hold_binds(&self) {
        self.counts.hold_binds.store(true, Ordering::SeqCst);
    }

    pub fn release_binds(&self) {
        self.counts.hold_binds.store(false, Ordering::SeqCst);
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Client connections open now (accepted, client side not ended).
    pub fn open_connections(&self) -> usize {
        self.connections() - self.ended_connections()
    }

    /// Client connections the client has ended so far.
    pub fn ended_connections(&self) -> usize {
        self.counts.ended.load(Ordering::SeqCst)
    }

    /// Terminate messages seen so far.
    pub fn terminates(&self) -> usize {
        self.counts.terminates.load(Ordering::SeqCst)
    }

    /// Parse messages that create a named prepared statement (it outlives the request on that
    /// server connection).
    pub fn named_parses(&self) -> usize {
        self.counts.named_parses.load(Ordering::SeqCst)
    }
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counts: Arc<Counts>) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        counts.wait_while_stalled().await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Forwards frontend traffic message by message. The first message has no type byte (startup
/// packet, or an SSL request answered with one byte and followed by the real startup packet).
async fn count_frontend(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counts: Arc<Counts>) {
    let result: std::io::Result<()> = async {
        loop {
            let len = from.read_u32().await?;
            let mut body = vec![0; (len as usize).saturating_sub(4)];
            from.read_exact(&mut body).await?;
            to.write_all(&frame(None, len, &body)).await?;
            let code = body
                .get(..4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            // 80877103 = SSLRequest, 80877104 = GSSENCRequest: another startup packet follows.
            if !matches!(code, Some(80_877_103 | 80_877_104)) {
                break;
            }
        }
        loop {
            let kind = from.read_u8().await?;
            counts.wait_while_stalled().await;
            let len = from.read_u32().await?;
            let mut body = vec![0; (len as usize).saturating_sub(4)];
            from.read_exact(&mut body).await?;
            match kind {
                b'Q' => {
                    // The body is the query string, NUL-terminated.
                    let text = body.strip_suffix(&[0]).unwrap_or(&body);
                    let sql = String::from_utf8_lossy(text);
                    counts
                        .statements
                        .fetch_add(statements_in_query(&sql), Ordering::SeqCst);
                }
                b'E' | b'F' => {
                    counts.statements.fetch_add(1, Ordering::SeqCst);
                }
                b'S' => {
                    counts.syncs.fetch_add(1, Ordering::SeqCst);
                }
                b'X' => {
                    counts.terminates.fetch_add(1, Ordering::SeqCst);
                }
                b'B' => {
                    counts.binds.fetch_add(1, Ordering::SeqCst);
                    while counts.hold_binds.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                b'P' => {
                    counts.parses.fetch_add(1, Ordering::SeqCst);
                    // The body starts with the statement name, NUL-terminated; empty = unnamed.
                    if body.first().is_some_and(|&byte| byte != 0) {
                        counts.named_parses.fetch_add(1, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
            to.write_all(&frame(Some(kind), len, &body)).await?;
        }
    }
    .await;
    drop(result);
    counts.ended.fetch_add(1, Ordering::SeqCst);
    let _ = to.shutdown().await;
}

/// One message as a single buffer, so it leaves in one write: PgBouncer refuses a startup
/// packet that arrives in pieces ("client sent partial pkt in startup phase").
fn frame(kind: Option<u8>, len: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend(kind);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// The statements of one simple-query string: the parts between `;` outside quotes, dollar
/// quotes and comments that hold anything but white space and comments. PostgreSQL runs each
/// of them; `SELECT 1; SELECT 2` is two.
pub fn statements_in_query(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut count, mut i, mut pending) = (0, 0, false);
    while i < bytes.len() {
        match bytes[i] {
            b';' => {
                count += usize::from(pending);
                pending = false;
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // Block comments nest in PostgreSQL.
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            quote @ (b'\'' | b'"') => {
                pending = true;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        // A doubled quote is an escaped one.
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                pending = true;
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                    .map(|n| i + 1 + n);
                match tag_end {
                    Some(end) if bytes[end] == b'$' && !bytes[i + 1].is_ascii_digit() => {
                        let tag = &bytes[i..=end];
                        let body = end + 1;
                        i = bytes[body..]
                            .windows(tag.len())
                            .position(|w| w == tag)
                            .map_or(bytes.len(), |n| body + n + tag.len());
                    }
                    _ => i += 1,
                }
            }
            byte => {
                pending |= !byte.is_ascii_whitespace();
                i += 1;
            }
        }
    }
    count + usize::from(pending)
}
