//! The session bypass changes what a request costs, never what it is answered: forwarded requests
//! served from the identity cache are checked here against what the session layer decides.

use serde_json::json;

use crate::config::{Role, Secret};
use crate::infra::db::Backend;
use crate::testing::{ADMIN_PASSWORD, TestApp, client};

/// What `GET path` answers with exactly this `Cookie` header.
async fn status_with_cookies(app: &TestApp, path: &str, cookies: &str) -> u16 {
    client()
        .get(app.url(path))
        .header("cookie", cookies)
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

const FORWARDED: &str = "/api/v1/orders";
/// The gateway's own: always through the session layer.
const OWN: &str = "/api/v1/auth/me";

/// Signed in, and the sign-in in the identity cache: the first forwarded request resolves it
/// through the session layer, the next ones go around it.
async fn signed_in(app: &TestApp) -> String {
    let (_, cookie) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let cookies = format!("forma.sid={cookie}");
    for _ in 0..2 {
        assert_eq!(status_with_cookies(app, FORWARDED, &cookies).await, 200);
    }
    cookie
}

#[tokio::test]
async fn a_signed_cookie_is_verified_before_its_cached_sign_in_is_used() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |config| {
        config.session.secret = Some(Secret::new("a-session-secret-of-some-length"));
    })
    .await;
    let cookie = signed_in(&app).await;
    // A signed value is the signature (44 characters of base64) followed by the session id.
    let (signature, id) = cookie.split_at(44);
    let mut forged = signature.to_owned().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ASCII");
    for (what, value) in [
        ("the id alone", id.to_owned()),
        ("another signature", format!("{forged}{id}")),
    ] {
        let cookies = format!("forma.sid={value}");
        for path in [FORWARDED, OWN] {
            assert_eq!(
                status_with_cookies(&app, path, &cookies).await,
                401,
                "{what} on {path}"
            );
        }
    }
    let cookies = format!("forma.sid={cookie}");
    assert_eq!(status_with_cookies(&app, FORWARDED, &cookies).await, 200);
}

#[tokio::test]
async fn the_last_session_cookie_is_the_one_on_both_paths() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let cookie = signed_in(&app).await;
    let (_, other) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let cases = [
        (format!("forma.sid={cookie}; forma.sid=unknown"), 401),
        (format!("forma.sid=unknown; forma.sid={cookie}"), 200),
        (format!("theme=dark; forma.sid={cookie}; lang=nl"), 200),
        (format!("forma.sid={other}; forma.sid={cookie}"), 200),
    ];
    for (cookies, expected) in cases {
        for path in [FORWARDED, OWN] {
            assert_eq!(
                status_with_cookies(&app, path, &cookies).await,
                expected,
                "{cookies} on {path}"
            );
        }
    }
    // Across two headers, as HTTP/2 clients send them.
    let split = client()
        .get(app.url(FORWARDED))
        .header("cookie", "forma.sid=unknown")
        .header("cookie", format!("forma.sid={cookie}"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(split.status(), 200);
}

#[tokio::test]
async fn signing_out_ends_a_sign_in_forwarded_requests_took_from_the_cache() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let cookie = signed_in(&app).await;
    let cookies = format!("forma.sid={cookie}");
    let out = client()
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", &cookies)
        .send()
        .await
        .expect("an answer");
    assert_eq!(out.status(), 204);
    assert_eq!(status_with_cookies(&app, FORWARDED, &cookies).await, 401);
}

#[tokio::test]
async fn a_bearer_token_is_served_around_the_session_layer_and_still_checked() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let token: serde_json::Value = client()
        .post(app.url("/api/v1/auth/token"))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("tokens");
    let access = token["accessToken"].as_str().expect("an access token");
    let with = |token: String| client().get(app.url(FORWARDED)).bearer_auth(token).send();
    for _ in 0..2 {
        assert_eq!(
            with(access.to_owned()).await.expect("an answer").status(),
            200
        );
    }
    let mut forged = access.to_owned();
    forged.push('x');
    assert_eq!(with(forged).await.expect("an answer").status(), 401);
}

/// Which way `SessionBypass` sends each request, seen from two stand-in routers: the tests above
/// would pass as well if every request went through the session layer.
#[tokio::test]
async fn only_forwarded_requests_whose_sign_in_needs_no_session_go_around_the_layer() {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Request;
    use tower::ServiceExt;
    use tower_sessions::session::Id;

    use super::{Identified, SessionBypass};
    use crate::clients::order::InProcessOrderClient;
    use crate::gateway::GatewayState;
    use crate::gateway::auth::Authenticated;
    use crate::gateway::auth::cache::CacheKey;
    use crate::identity::users::User;

    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |config| {
        config.session.cache_ms = 3_600_000;
    })
    .await;
    let order = Arc::new(InProcessOrderClient::of(&app.ctx));
    let state =
        GatewayState::new(crate::roles::gateway_ports(&app.ctx), order, None).expect("a gateway");
    let cached = Id::default();
    let someone = Authenticated::new(User::in_memory(uuid::Uuid::nil()), vec![]);
    let cache = &state.auth_cache;
    cache.put(CacheKey::Session(cached), someone.clone(), cache.changes());
    let stand_in = |name: &'static str| {
        Router::new().fallback(move |request: Request| async move {
            let identified = request.extensions().get::<Identified>().is_some();
            format!("{name}, identified: {identified}")
        })
    };
    let bypass = SessionBypass::new(state, stand_in("sessions"), stand_in("around"));
    let way = |uri: &str, headers: &[(&str, String)]| {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Body::empty()).expect("a request");
        let bypass = bypass.clone();
        async move {
            let response = bypass.oneshot(request).await.expect("infallible");
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("a body");
            String::from_utf8(body.to_vec()).expect("UTF-8")
        }
    };
    let cookie = |id: Id| ("cookie", format!("forma.sid={id}"));
    let websocket = [
        cookie(cached),
        ("connection", "upgrade".to_owned()),
        ("upgrade", "websocket".to_owned()),
    ];
    type Headers<'a> = &'a [(&'a str, String)];
    let cases: [(&str, Headers, &str); 7] = [
        (
            "/api/v1/orders",
            &[cookie(cached)],
            "around, identified: true",
        ),
        (
            "/api/v1/orders",
            &[("authorization", "Bearer whatever".to_owned())],
            "around, identified: true",
        ),
        // Not cached: resolved from its session, through the layer, with what was found.
        (
            "/api/v1/orders",
            &[cookie(Id::default())],
            "sessions, identified: true",
        ),
        ("/api/v1/orders", &[], "sessions, identified: false"),
        (
            "/api/v1/webhooks/shopify/orders/create",
            &[cookie(cached)],
            "sessions, identified: false",
        ),
        (
            "/api/v1/not-routed",
            &[cookie(cached)],
            "sessions, identified: false",
        ),
        ("/api/v1/orders", &websocket, "sessions, identified: false"),
    ];
    for (uri, headers, expected) in cases {
        assert_eq!(way(uri, headers).await, expected, "{uri} {headers:?}");
    }
    let handshake = way("/socket.io/?EIO=4&transport=polling", &[cookie(cached)]).await;
    assert_eq!(
        handshake, "sessions, identified: false",
        "a Socket.IO session is leased"
    );
}
