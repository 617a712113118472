//! `instauth delay-proxy`: a TCP forwarder that holds every chunk for a fixed delay in each
//! direction, so a benchmark can put a realistic distance (a 0.5 ms or 2 ms round trip)
//! between the service and its database on one machine, where the kernel has no netem.
//!
//! Each direction of each connection has a reader and a writer thread: the reader stamps
//! every chunk with its due time, the writer sleeps until then (the OS's nanosleep, precise to
//! tens of microseconds; tokio's timer ticks in whole milliseconds) and forwards it. Order is
//! kept and the delay does not add up across chunks: a chunk waits `delay` from its arrival,
//! not behind the previous one's wait. A round trip through the proxy grows by twice the delay.
//! Loopback only, like the load tool.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DelayProxyArgs {
    /// Where to accept connections (a loopback address).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where to forward them (a loopback address).
    #[arg(long)]
    pub upstream: SocketAddr,
    /// How long every chunk is held in each direction, e.g. 250us, 1ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Duration,
}

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// Serves until the process is stopped.
pub fn run(args: &DelayProxyArgs) -> anyhow::Result<()> {
    for address in [args.listen, args.upstream] {
        anyhow::ensure!(
            address.ip().is_loopback(),
            "{address} is not a loopback address: the delay proxy only runs between local processes"
        );
    }
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, upstream = %args.upstream, delay = ?args.delay, "delay proxy ready");
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                continue;
            }
        };
        let (upstream, delay) = (args.upstream, args.delay);
        thread::spawn(move || {
            if let Err(err) = relay(client, upstream, delay) {
                tracing::debug!(error = %err, "connection ended");
            }
        });
    }
    Ok(())
}

/// Forwards one connection both ways until either side closes.
fn relay(client: TcpStream, upstream: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    for stream in [&client, &server] {
        stream.set_nodelay(true)?;
    }
    let up = forward(client.try_clone()?, server.try_clone()?, delay);
    let down = forward(server, client, delay);
    for direction in [up, down] {
        let _ = direction.join();
    }
    Ok(())
}

/// One direction: chunks read from `from` are written to `to` `delay` after they arrived.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> thread::JoinHandle<()> {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (at, chunk) in due {
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let mut buffer = vec![0; CHUNK];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Closing the channel lets the writer finish the chunks in flight, then shut down.
        drop(chunks);
        let _ = writer.join();
        let _ = from.shutdown(Shutdown::Read);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_grow_by_twice_the_delay_and_keep_their_bytes() {
        let echo = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let echo_address = echo.local_addr().expect("address");
        thread::spawn(move || {
            if let Ok((mut stream, _)) = echo.accept() {
                let mut buffer = [0; 1024];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let proxy_address = proxy.local_addr().expect("address");
        let delay = Duration::from_millis(20);
        thread::spawn(move || {
            if let Ok((client, _)) = proxy.accept() {
                let _ = relay(client, echo_address, delay);
            }
        });
        let mut client = TcpStream::connect(proxy_address).expect("connect");
        let started = Instant::now();
        client.write_all(b"ping").expect("write");
        let mut answer = [0; 4];
        client.read_exact(&mut answer).expect("read");
        assert_eq!(&answer, b"ping");
        // A lower bound only: the delay is added, never skipped.
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
    }
}
