//! What a forwarded request carries (SPEC §5.2): nothing a client could impersonate with, the
//! session cookie removed, `X-Forwarded-*` set, and the request id kept.
//!
//! Order matters: the client's hop-by-hop headers (and every header its `Connection` names) go
//! first, so that `Connection: x-request-id, x-forwarded-for` cannot remove what the gateway sets
//! afterwards.

use std::net::{IpAddr, SocketAddr};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use ipnet::IpNet;

use super::upgrade;
use super::upstream::strip_hop_by_hop;
use crate::gateway::auth::Authenticated;
use crate::gateway::auth::session::{cookie_pieces, is_session_cookie, last_session_cookie};
use crate::gateway::rate_limit::{X_FORWARDED_FOR, client_ip, ip_text};
use crate::http::request_id::X_REQUEST_ID;
use crate::identity::context::strip_identity_headers;

// Names made once, not parsed from text on every request.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Sanitizes the request's headers in place before it leaves the gateway.
pub fn prepare(request: &mut Request, peer: SocketAddr, trusted: &[IpNet]) {
    let request_id = request_id_value(request);
    let headers = request.headers_mut();
    let websocket = upgrade::is_websocket(headers);
    strip_hop_by_hop(headers);
    if websocket {
        upgrade::keep(headers);
    }
    if let Some(value) = request_id {
        headers.insert(X_REQUEST_ID, value);
    }
    strip_identity_headers(headers);
    remove_session_cookie(headers);
    let peer_trusted = trusted.iter().any(|net| net.contains(&peer.ip()));
    let client = client_ip(peer.ip(), headers, trusted);
    let peer_value = ip_value(peer.ip());
    set_forwarded(headers, peer.ip(), peer_value.clone(), peer_trusted);
    // `Forwarded` (RFC 7239) and `X-Real-IP` say who the client is as much as `X-Forwarded-For`
    // does: believed from a trusted proxy only, else replaced.
    if !peer_trusted {
        headers.remove(header::FORWARDED);
    }
    let client_value = if client == peer.ip() {
        peer_value
    } else {
        ip_value(client)
    };
    if let Some(value) = client_value {
        headers.insert(X_REAL_IP, value);
    }
}

/// The request id the gateway assigned: the request's `X-Request-Id`, which the shared conventions
/// made valid (`request_id::assign_to`) before anything was routed.
fn request_id_value(request: &Request) -> Option<HeaderValue> {
    request.headers().get(X_REQUEST_ID).cloned()
}

/// An address as a header value, formatted without a heap string.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&ip_text(ip)).ok()
}

/// Drops every `forma.sid` from `Cookie`, as the session layer would find it, keeping any other
/// cookie. The usual request carries the session cookie alone, and loses its `Cookie` header
/// without anything being rebuilt.
fn remove_session_cookie(headers: &mut HeaderMap) {
    let mut kept = String::new();
    for piece in cookie_pieces(headers) {
        let piece = piece.trim();
        if piece.is_empty() || is_session_cookie(piece) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(piece);
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        // From bytes: a cookie's value may be UTF-8, which the session layer reads too.
        if let Ok(value) = HeaderValue::from_bytes(kept.as_bytes()) {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// A client's own `X-Forwarded-*` are believed only from a trusted proxy; otherwise the gateway is
/// the first hop and says so. `peer_value` is `peer` as a header value.
fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: Option<HeaderValue>,
    peer_trusted: bool,
) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|prior| peer_trusted && !prior.trim().is_empty());
    let chain = match prior {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {peer}")).ok(),
        None => peer_value,
    };
    if let Some(value) = chain {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// What keeps a client on one instance under consistent hashing: who it is signed in as — its
/// bearer token's family, else its session cookie, else the user. Never the Socket.IO `sid`: a
/// handshake has none yet, so keying polls by it would place them apart from their handshake.
pub fn affinity(headers: &HeaderMap, auth: Option<&Authenticated>) -> Option<String> {
    if let Some(family) = auth.and_then(|a| a.token_family) {
        return Some(format!("token:{family}"));
    }
    let session = last_session_cookie(headers).map(|cookie| cookie.value().to_owned());
    session.or_else(|| auth.map(|a| format!("user:{}", a.context.user_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri("/api/v1/orders?sid=abc&x=1");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    const PEER: &str = "203.0.113.7:5000";

    #[test]
    fn impersonation_headers_and_the_session_cookie_are_removed() {
        let mut req = request(&[
            ("x-user-id", "forged"),
            ("x-tenant-id", "forged"),
            ("x-is-super-admin", "true"),
            ("x-internal-key", "guess"),
            ("x-user-context-signature", "00"),
            ("cookie", "theme=dark; forma.sid=secret-session; lang=nl"),
            ("x-request-id", "keep"),
        ]);
        prepare(&mut req, PEER.parse().unwrap(), &[]);
        let h = req.headers();
        for gone in [
            "x-user-id",
            "x-tenant-id",
            "x-is-super-admin",
            "x-internal-key",
            "x-user-context-signature",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["cookie"], "theme=dark; lang=nl");
        assert_eq!(h["x-request-id"], "keep");
    }

    #[test]
    fn a_request_with_only_the_session_cookie_leaves_without_a_cookie_header() {
        let mut req = request(&[("cookie", "forma.sid=secret-session")]);
        prepare(&mut req, PEER.parse().unwrap(), &[]);
        assert!(!req.headers().contains_key("cookie"));
    }

    #[test]
    fn every_cookie_the_session_layer_reads_as_the_session_is_removed_and_no_other() {
        // Percent-encoded, a name is still `forma.sid` to the session layer; a value may be UTF-8.
        let mut req = request(&[
            ("cookie", "theme=dark; forma%2Esid=first; a%2Eb=1"),
            ("cookie", " forma.sid=second ;lang=nl"),
        ]);
        req.headers_mut().append(
            "cookie",
            HeaderValue::from_bytes("name=Zoë".as_bytes()).unwrap(),
        );
        assert_eq!(
            last_session_cookie(req.headers()).unwrap().value(),
            "second"
        );
        prepare(&mut req, PEER.parse().unwrap(), &[]);
        let cookies: Vec<&[u8]> = req
            .headers()
            .get_all("cookie")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(
            cookies,
            ["theme=dark; a%2Eb=1; lang=nl; name=Zoë".as_bytes()]
        );
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_is_named_as_each_header_names_it() {
        let mut req = request(&[]);
        prepare(&mut req, "[::ffff:203.0.113.7]:5000".parse().unwrap(), &[]);
        // The hop as it connected; the client as the rate limiter counts it.
        assert_eq!(req.headers()["x-forwarded-for"], "::ffff:203.0.113.7");
        assert_eq!(req.headers()["x-real-ip"], "203.0.113.7");
    }

    #[test]
    fn forwarded_headers_from_untrusted_clients_are_replaced() {
        let mut req = request(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("host", "forma.example"),
        ]);
        prepare(&mut req, PEER.parse().unwrap(), &[]);
        assert_eq!(req.headers()["x-forwarded-for"], "203.0.113.7");
        assert_eq!(req.headers()["x-forwarded-proto"], "http");
        assert_eq!(req.headers()["x-forwarded-host"], "forma.example");
    }

    #[test]
    fn a_client_connection_header_cannot_remove_what_the_gateway_sets() {
        let mut req = request(&[
            (
                "connection",
                "x-request-id, x-forwarded-for, x-real-ip, keep-alive",
            ),
            ("x-request-id", "req-7"),
            ("x-real-ip", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9;proto=https"),
        ]);
        prepare(&mut req, PEER.parse().unwrap(), &[]);
        let h = req.headers();
        assert_eq!(h["x-request-id"], "req-7");
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert!(
            !h.contains_key("forwarded"),
            "untrusted Forwarded is dropped"
        );
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_extended() {
        let mut req = request(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let trusted = ["203.0.113.0/24".parse().unwrap()];
        prepare(&mut req, PEER.parse().unwrap(), &trusted);
        assert_eq!(
            req.headers()["x-forwarded-for"],
            "198.51.100.1, 203.0.113.7"
        );
        assert_eq!(req.headers()["x-forwarded-proto"], "https");
        assert_eq!(req.headers()["x-real-ip"], "198.51.100.1");
    }

    #[test]
    fn a_sockets_handshake_and_its_polls_share_one_affinity_key() {
        let at = |uri: &str| {
            Request::builder()
                .uri(uri)
                .header("cookie", "a=b; forma.sid=s1")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let key = |request: Request| affinity(request.headers(), None);
        let handshake = key(at("/socket.io/?EIO=4&transport=polling"));
        let poll = key(at("/socket.io/?EIO=4&transport=polling&sid=abc"));
        let upgrade = key(at("/socket.io/?EIO=4&transport=websocket&sid=abc"));
        assert_eq!(handshake.as_deref(), Some("s1"));
        assert_eq!(poll, handshake);
        assert_eq!(upgrade, handshake);
    }

    #[test]
    fn a_bearer_client_is_keyed_by_its_token_family() {
        let user = crate::identity::users::User::in_memory(uuid::Uuid::nil());
        let mut auth = Authenticated::new(user, vec![]);
        let req = request(&[]);
        assert_eq!(
            affinity(req.headers(), Some(&auth)).as_deref(),
            Some("user:00000000-0000-0000-0000-000000000000")
        );
        let family = uuid::Uuid::new_v4();
        auth.token_family = Some(family);
        assert_eq!(
            affinity(req.headers(), Some(&auth)),
            Some(format!("token:{family}"))
        );
    }
}
