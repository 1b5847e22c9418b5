//! What a forwarded request carries (SPEC §5.2): nothing a client could impersonate with, the
//! session cookie removed, `X-Forwarded-*` set, and the request id kept.
//!
//! Order matters: the client's hop-by-hop headers (and every header its `Connection` names) go
//! first, so that `Connection: x-request-id, x-forwarded-for` cannot remove what the gateway sets
//! afterwards.

use std::net::{IpAddr, SocketAddr};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;

use super::upgrade;
use super::upstream::strip_hop_by_hop;
use crate::gateway::auth::Authenticated;
use crate::gateway::auth::session::COOKIE_NAME;
use crate::gateway::rate_limit::client_ip;
use crate::http::request_id::{RequestId, X_REQUEST_ID};
use crate::identity::context::strip_identity_headers;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

pub const X_REAL_IP: &str = "x-real-ip";

/// Sanitizes the request's headers in place before it leaves the gateway.
pub fn prepare(request: &mut Request, peer: SocketAddr, trusted: &[IpNet]) {
    let request_id = request.extensions().get::<RequestId>().cloned();
    let headers = request.headers_mut();
    let websocket = upgrade::is_websocket(headers);
    strip_hop_by_hop(headers);
    if websocket {
        upgrade::keep(headers);
    }
    if let Some(value) = request_id.and_then(|RequestId(id)| HeaderValue::from_str(&id).ok()) {
        headers.insert(X_REQUEST_ID, value);
    }
    strip_identity_headers(headers);
    remove_session_cookie(headers);
    let peer_trusted = trusted.iter().any(|net| net.contains(&peer.ip()));
    let client = client_ip(peer.ip(), headers, trusted);
    set_forwarded(headers, peer.ip(), peer_trusted);
    // `Forwarded` (RFC 7239) and `X-Real-IP` say who the client is as much as `X-Forwarded-For`
    // does: believed from a trusted proxy only, else replaced.
    if !peer_trusted {
        headers.remove(header::FORWARDED);
    }
    if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
        headers.insert(X_REAL_IP, value);
    }
}

/// Drops `forma.sid` from `Cookie`, keeping any other cookie.
fn remove_session_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split('=').next().map(str::trim) != Some(COOKIE_NAME))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// A client's own `X-Forwarded-*` are believed only from a trusted proxy; otherwise the gateway is
/// the first hop and says so.
fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, peer_trusted: bool) {
    let prior = headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| peer_trusted)
        .map(str::to_owned);
    let chain = match prior {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_HOST)) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// What keeps a client on one instance under consistent hashing: who it is signed in as — its
/// bearer token's family, else its session cookie, else the user. Never the Socket.IO `sid`: a
/// handshake has none yet, so keying polls by it would place them apart from their handshake.
pub fn affinity(request: &Request) -> Option<String> {
    let auth = request.extensions().get::<Authenticated>();
    if let Some(family) = auth.and_then(|a| a.token_family) {
        return Some(format!("token:{family}"));
    }
    let session = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE_NAME}="))
                .map(str::to_owned)
        });
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
        req.extensions_mut().insert(RequestId("req-7".into()));
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
        let handshake = affinity(&at("/socket.io/?EIO=4&transport=polling"));
        let poll = affinity(&at("/socket.io/?EIO=4&transport=polling&sid=abc"));
        let upgrade = affinity(&at("/socket.io/?EIO=4&transport=websocket&sid=abc"));
        assert_eq!(handshake.as_deref(), Some("s1"));
        assert_eq!(poll, handshake);
        assert_eq!(upgrade, handshake);
    }

    #[test]
    fn a_bearer_client_is_keyed_by_its_token_family() {
        use crate::identity::users::User;
        let user = User {
            id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            email: "a@b.c".into(),
            name: "a".into(),
            password_hash: String::new(),
            is_super_admin: false,
            is_active: true,
            session_epoch: 0,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let mut auth = Authenticated::new(user, vec![]);
        let mut req = request(&[]);
        req.extensions_mut().insert(auth.clone());
        assert_eq!(
            affinity(&req).as_deref(),
            Some("user:00000000-0000-0000-0000-000000000000")
        );
        let family = uuid::Uuid::new_v4();
        auth.token_family = Some(family);
        req.extensions_mut().insert(auth);
        assert_eq!(affinity(&req), Some(format!("token:{family}")));
    }
}
