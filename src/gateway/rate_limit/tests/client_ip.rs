//! Which address a request counts against.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::gateway::rate_limit::client_ip;
use crate::gateway::rate_limit::client_ip::{bucket, ip_text};

fn xff(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_str(value).expect("a header"),
    );
    headers
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().expect("a network")).collect()
}

#[test]
fn an_untrusted_peer_cannot_pick_its_address_with_x_forwarded_for() {
    let trusted = nets(&["10.0.0.0/8"]);
    let headers = xff("1.2.3.4, 10.0.0.1");
    assert_eq!(
        client_ip(ip("203.0.113.5"), &headers, &trusted),
        ip("203.0.113.5")
    );
    assert_eq!(
        client_ip(ip("203.0.113.5"), &headers, &[]),
        ip("203.0.113.5")
    );
}

#[test]
fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
    let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"]);
    // The client wrote 6.6.6.6 itself; the proxies appended what they saw.
    let headers = xff("6.6.6.6, 198.51.100.20, 192.168.1.1");
    assert_eq!(
        client_ip(ip("10.1.2.3"), &headers, &trusted),
        ip("198.51.100.20")
    );
    assert_eq!(
        client_ip(ip("fd00::1"), &headers, &trusted),
        ip("198.51.100.20")
    );

    let mut split = xff("6.6.6.6");
    split.append("x-forwarded-for", HeaderValue::from_static("198.51.100.21"));
    assert_eq!(
        client_ip(ip("10.0.0.2"), &split, &trusted),
        ip("198.51.100.21")
    );

    let all_trusted = xff("10.9.9.9, 10.8.8.8");
    assert_eq!(
        client_ip(ip("10.0.0.2"), &all_trusted, &trusted),
        ip("10.9.9.9")
    );
    assert_eq!(
        client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
        ip("10.0.0.2")
    );
}

#[test]
fn garbage_forwarded_entries_are_skipped() {
    let trusted = nets(&["10.0.0.0/8"]);
    let headers = xff("198.51.100.30, unknown, 999.1.1.1, , \"[2001:db8::7]:443\", nonsense");
    assert_eq!(
        client_ip(ip("10.0.0.1"), &headers, &trusted),
        ip("2001:db8::7")
    );
    let ported = xff("198.51.100.31:5555, _hidden");
    assert_eq!(
        client_ip(ip("10.0.0.1"), &ported, &trusted),
        ip("198.51.100.31")
    );
    let nothing = xff("unknown, , ,");
    assert_eq!(
        client_ip(ip("10.0.0.1"), &nothing, &trusted),
        ip("10.0.0.1")
    );
    let mut binary = HeaderMap::new();
    binary.insert(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes"),
    );
    assert_eq!(client_ip(ip("10.0.0.1"), &binary, &trusted), ip("10.0.0.1"));
}

#[test]
fn ipv4_mapped_peers_match_ipv4_trusted_ranges() {
    let trusted = nets(&["10.0.0.0/8"]);
    let headers = xff("::ffff:198.51.100.40");
    assert_eq!(
        client_ip(ip("::ffff:10.0.0.1"), &headers, &trusted),
        ip("198.51.100.40")
    );
}

#[test]
fn an_ipv6_client_is_counted_per_64_block() {
    assert_eq!(
        bucket(ip("2001:db8:1:2:aaaa::1")),
        bucket(ip("2001:db8:1:2:bbbb::2"))
    );
    assert_ne!(bucket(ip("2001:db8:1:2::1")), bucket(ip("2001:db8:1:3::1")));
    assert_eq!(bucket(ip("192.0.2.1")), "192.0.2.1");
}

#[test]
fn an_address_is_written_as_display_writes_it() {
    let mut addresses: Vec<IpAddr> = [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.0.1",
        "192.168.100.20",
        "::",
        "::1",
        "::ffff:203.0.113.7",
        "2001:db8::8a2e:370:7334",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    .iter()
    .map(|text| ip(text))
    .collect();
    // Every octet value in every position.
    addresses.extend((0..=255u8).map(|n| IpAddr::from([n, 255 - n, n / 2, n / 10])));
    for address in addresses {
        assert_eq!(ip_text(address).as_str(), address.to_string());
    }
}
