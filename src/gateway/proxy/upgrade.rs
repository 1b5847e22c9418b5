//! WebSocket upgrades through the proxy (Socket.IO's websocket transport, SPEC §6.6). `Upgrade`
//! and `Connection` are hop-by-hop headers, stripped from everything forwarded; a websocket
//! handshake keeps them, the upstream's `101 Switching Protocols` goes back to the client, and
//! then both upgraded connections are spliced: bytes copied both ways until either side closes.
//! hyper performs the upgrade on both sides; no frame is parsed here.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::balancer::InFlight;
use super::upstream::strip_hop_by_hop;

/// Whether the request asks to switch to the websocket protocol.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// Puts back the two headers of a websocket handshake after the hop-by-hop headers went.
pub fn keep(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Answers the client with the upstream's `101` and splices the two connections once both
/// upgrades complete; the instance counts the connection as in flight while it lasts.
pub(super) fn splice(
    mut response: hyper::Response<Incoming>,
    client: OnUpgrade,
    in_flight: InFlight,
) -> Response {
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (client, upstream) = match tokio::join!(client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (client, upstream) => {
                tracing::debug!(
                    client = client.err().map(|e| e.to_string()),
                    upstream = upstream.err().map(|e| e.to_string()),
                    "a websocket upgrade did not complete"
                );
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "a proxied websocket ended with an error");
        }
    });
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    keep(&mut parts.headers);
    debug_assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_websocket_handshake_is_recognised_by_both_headers() {
        assert!(is_websocket(&headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ])));
        assert!(!is_websocket(&headers(&[("upgrade", "websocket")])));
        assert!(!is_websocket(&headers(&[
            ("upgrade", "h2c"),
            ("connection", "upgrade"),
        ])));
    }
}
