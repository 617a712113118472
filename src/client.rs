//! Who is asking: the one place a request's client address is decided, for the request span,
//! the authentication log line and the rate limiter alike.
//!
//! The client is the socket peer unless that peer is a trusted proxy (`--trusted-proxies`).
//! Then `X-Forwarded-For` is walked from the right, skipping trusted hops: the first untrusted
//! address is the client (everything left of it was written by that client and proves
//! nothing); when every hop is trusted, the leftmost. `Forwarded` (RFC 7239) is never read: a
//! proxy that maintains only `X-Forwarded-For` passes a client's own `Forwarded` through
//! untouched, so trusting it would let any client choose its address.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderValue;
use actix_web::{HttpMessage as _, HttpRequest, web};
use ipnet::IpNet;

/// The header trusted proxies append the address they received a request from to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// At most this much of a malformed header goes into the warning about it.
const LOGGED_HEADER_BYTES: usize = 256;

/// The networks whose connections may speak for a client through `X-Forwarded-For`. Empty (the
/// default): the header is ignored and the peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// `--trusted-proxies` entries: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses. An
    /// empty or malformed entry is an error naming it, never "trust nothing".
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        let networks = entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                anyhow::ensure!(!entry.is_empty(), "--trusted-proxies holds an empty entry");
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|network| canonical_network(network.trunc()))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--trusted-proxies: {entry:?} is not an address or CIDR (e.g. 10.0.0.0/8)"
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { networks })
    }

    /// Comma-separated, for the start-up log line; `none` when empty.
    pub(crate) fn describe(&self) -> String {
        if self.networks.is_empty() {
            return "none".to_owned();
        }
        self.networks
            .iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(&ip))
    }

    /// The client a connection from `peer` speaks for, given the `X-Forwarded-For` lines it
    /// sent, in order. `Err` when a hop the walk has to read is not an address: the header
    /// cannot be trusted.
    fn client_of(&self, peer: IpAddr, forwarded_for: &[&HeaderValue]) -> Result<IpAddr, Malformed> {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return Ok(client);
        }
        for line in forwarded_for.iter().rev() {
            // Split the raw bytes: a client may write bytes that are not text (obs-text) to the
            // left of what the proxy appends, and those are never read.
            for hop in line.as_bytes().rsplit(|byte| *byte == b',') {
                client = std::str::from_utf8(hop)
                    .ok()
                    .and_then(hop_address)
                    .ok_or(Malformed)?;
                if !self.trusts(client) {
                    return Ok(client);
                }
            }
        }
        Ok(client)
    }
}

/// A header the walk could not read.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

/// An IPv4-mapped network matches the IPv4 addresses peers are canonicalised to.
fn canonical_network(network: IpNet) -> IpNet {
    match network {
        IpNet::V6(v6) => match (v6.addr().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), prefix @ 96..) => {
                IpNet::new(IpAddr::V4(v4), prefix - 96).map_or(network, |v4| v4.trunc())
            }
            _ => network,
        },
        IpNet::V4(_) => network,
    }
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`) or bracketed, as some proxies write it.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip| ip.to_canonical())
}

/// A request's socket peer and the client it was resolved to (the same address unless the peer
/// is a trusted proxy). `None` only for requests without a socket (in-process test requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress {
    pub(crate) client: Option<IpAddr>,
    pub(crate) peer: Option<IpAddr>,
}

impl ClientAddress {
    /// `request`'s addresses, decided once per request (the first call stores them with the
    /// request) with the application's [`TrustedProxies`].
    pub(crate) fn of(request: &HttpRequest) -> Self {
        if let Some(known) = request.extensions().get::<Self>() {
            return *known;
        }
        let resolved = Self::resolve(request);
        request.extensions_mut().insert(resolved);
        resolved
    }

    fn resolve(request: &HttpRequest) -> Self {
        let Some(peer) = request.peer_addr().map(|addr| addr.ip().to_canonical()) else {
            return Self {
                client: None,
                peer: None,
            };
        };
        let Some(trusted) = request.app_data::<web::Data<TrustedProxies>>() else {
            return Self {
                client: Some(peer),
                peer: Some(peer),
            };
        };
        let lines: Vec<&HeaderValue> = request.headers().get_all(X_FORWARDED_FOR).collect();
        let client = trusted.client_of(peer, &lines).unwrap_or_else(|Malformed| {
            let header = lines
                .iter()
                .map(|line| String::from_utf8_lossy(line.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ");
            // The end of the header is what the proxies wrote, so that is the part shown.
            let skip = header.chars().count().saturating_sub(LOGGED_HEADER_BYTES);
            let shown: String = header.chars().skip(skip).collect();
            tracing::warn!(
                network.peer.address = %peer,
                x_forwarded_for = %shown,
                "malformed X-Forwarded-For from a trusted proxy ignored; the proxy's address is the client"
            );
            peer
        });
        Self {
            client: Some(client),
            peer: Some(peer),
        }
    }

    /// For log fields: the address, or empty when there is none.
    pub(crate) fn show(ip: Option<IpAddr>) -> String {
        ip.map(|ip| ip.to_string()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn client(proxies: &TrustedProxies, peer: &str, lines: &[&str]) -> Result<IpAddr, Malformed> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|line| HeaderValue::from_str(line).expect("header"))
            .collect();
        let values: Vec<&HeaderValue> = values.iter().collect();
        proxies.client_of(ip(peer), &values)
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "127.0.0.1", &["10.0.0.4"]),
            Ok(ip("127.0.0.1"))
        );
        assert_eq!(
            client(&none, "127.0.0.1", &["garbage"]),
            Ok(ip("127.0.0.1"))
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client(&proxies, "192.0.2.9", &["10.0.0.4"]),
            Ok(ip("192.0.2.9"))
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // A forged leftmost hop does not win over the one the trusted proxy appended.
        assert_eq!(
            client(&proxies, "10.1.1.1", &["203.0.113.5, 198.51.100.7"]),
            Ok(ip("198.51.100.7"))
        );
        // Trusted hops are skipped, across header lines, right to left.
        assert_eq!(
            client(
                &proxies,
                "127.0.0.1",
                &["203.0.113.5, 198.51.100.7", "10.2.2.2,10.3.3.3"]
            ),
            Ok(ip("198.51.100.7"))
        );
        // Everything trusted: the leftmost.
        assert_eq!(
            client(&proxies, "127.0.0.1", &["10.9.9.9, 10.2.2.2"]),
            Ok(ip("10.9.9.9"))
        );
        // No header: the proxy itself.
        assert_eq!(client(&proxies, "127.0.0.1", &[]), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn hops_may_carry_ports_brackets_and_mapped_addresses() {
        let proxies = trusted(&["127.0.0.1/32"]);
        for (hop, want) in [
            ("192.0.2.1:4711", "192.0.2.1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
            ("::ffff:192.0.2.3", "192.0.2.3"),
        ] {
            assert_eq!(client(&proxies, "127.0.0.1", &[hop]), Ok(ip(want)), "{hop}");
        }
        // A mapped peer is the IPv4 proxy it is.
        assert_eq!(
            client(&proxies, "::ffff:127.0.0.1", &["192.0.2.1"]),
            Ok(ip("192.0.2.1"))
        );
    }

    #[test]
    fn a_hop_the_walk_must_read_that_is_no_address_is_malformed() {
        let proxies = trusted(&["127.0.0.0/8"]);
        for header in ["", "unknown", "192.0.2.1,,127.0.0.2", "nonsense, 127.0.0.5"] {
            assert_eq!(
                client(&proxies, "127.0.0.1", &[header]),
                Err(Malformed),
                "{header:?}"
            );
        }
        // Garbage left of the client is the client's own and never read.
        assert_eq!(
            client(&proxies, "127.0.0.1", &["nonsense, 192.0.2.1"]),
            Ok(ip("192.0.2.1"))
        );
        // Even bytes that are not text (which HTTP allows in a header value).
        let raw = HeaderValue::from_bytes(b"\xff\xfe, 192.0.2.9").expect("obs-text is allowed");
        assert_eq!(
            proxies.client_of(ip("127.0.0.1"), &[&raw]),
            Ok(ip("192.0.2.9"))
        );
        let raw = HeaderValue::from_bytes(b"192.0.2.9, \xff").expect("obs-text is allowed");
        assert_eq!(
            proxies.client_of(ip("127.0.0.1"), &[&raw]),
            Err(Malformed),
            "a hop the walk reads must be an address"
        );
    }

    #[test]
    fn entries_are_cidrs_or_addresses_and_nothing_else() {
        assert_eq!(
            trusted(&["10.1.2.3/8", "192.0.2.1", "::ffff:127.0.0.0/104"]).describe(),
            "10.0.0.0/8,192.0.2.1/32,127.0.0.0/8"
        );
        assert_eq!(TrustedProxies::default().describe(), "none");
        for (entry, error) in [
            ("", "--trusted-proxies holds an empty entry"),
            (" ", "--trusted-proxies holds an empty entry"),
            ("10.0.0.0/33", "\"10.0.0.0/33\" is not an address or CIDR"),
            (
                "proxy.internal",
                "\"proxy.internal\" is not an address or CIDR",
            ),
        ] {
            let err = TrustedProxies::parse(&[entry.to_owned()]).expect_err(entry);
            assert!(err.to_string().contains(error), "{entry:?}: {err}");
        }
    }
}
