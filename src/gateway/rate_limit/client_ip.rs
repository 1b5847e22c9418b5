//! Which address a request is counted against.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use arrayvec::ArrayString;
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Made once, not parsed from text on every request.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address. `X-Forwarded-For` is believed only when the peer is a trusted proxy:
/// anyone else could write any address there and dodge their limit. Entries are appended by each
/// proxy on the way, so the right-most entry not written by a trusted proxy is the client; the
/// entries left of it are whatever the client sent. When every entry is trusted, the left-most
/// one is as close to the client as the chain lets us see. Malformed entries are skipped.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let entries: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(parse_entry)
        .collect();
    entries
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or_else(|| entries.first())
        .copied()
        .unwrap_or(peer)
}

/// `ip` as text, on the stack. Every proxied request writes its client's address twice (its
/// rate-limit key, its forwarding headers), and `Ipv4Addr`'s `Display` runs the formatter once
/// per octet: an IPv4 address is written digit by digit here instead. IPv6 as `Display` writes it.
pub fn ip_text(ip: IpAddr) -> ArrayString<IP_TEXT_MAX> {
    let mut text = ArrayString::new();
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = text.try_push('.');
                }
                let _ = text.try_push_str(itoa::Buffer::new().format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
    text
}

/// The longest address text: IPv6 with an embedded IPv4 tail.
pub const IP_TEXT_MAX: usize = 45;

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, optionally quoted.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim().trim_matches('"');
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse::<IpAddr>().ok())
        })?;
    // A dual-stack proxy may write an IPv4 client as `::ffff:a.b.c.d`.
    Some(ip.to_canonical())
}

/// The part of the address one client controls: IPv6 hosts routinely get a whole /64 and can
/// pick any address in it, so counting per /128 would let one client multiply its limit. Rate
/// limits and the sign-in lockout both count by this.
pub fn bucket(ip: IpAddr) -> String {
    Bucket(ip).to_string()
}

/// [`bucket`] as `Display`: the rate limiter writes its keys without a heap string.
pub struct Bucket(pub IpAddr);

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(_) => f.write_str(&ip_text(self.0)),
            IpAddr::V6(v6) => {
                let segments = v6.segments();
                write!(
                    f,
                    "{:x}:{:x}:{:x}:{:x}::/64",
                    segments[0], segments[1], segments[2], segments[3]
                )
            }
        }
    }
}
