//! Sign-in, sessions and their revocation, lockout and RBAC, over loopback HTTP against the real
//! gateway.

use serde_json::{Value, json};

use crate::config::Role;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::testing::{ADMIN_PASSWORD, TestApp, client, cookie_client, session_cookie};

const PASSWORD: &str = "a-long-password";

async fn login_response(
    app: &TestApp,
    http: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    http.post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn me_with_cookie(app: &TestApp, cookie: &str) -> u16 {
    client()
        .get(app.url("/api/v1/auth/me"))
        .header("cookie", format!("forma.sid={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

each_database! {
    async fn login_returns_the_user_and_a_session_cookie_with_the_spec_flags(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let http = cookie_client();
        let response = login_response(&app, &http, "Admin@Localhost", ADMIN_PASSWORD).await;
        assert_eq!(response.status(), 200);
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("forma.sid="), "{set_cookie}");
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
            assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "not Secure unless configured: {set_cookie}");
        let body: Value = response.json().await.unwrap();
        let user = &body["user"];
        assert_eq!(user["email"], "admin@localhost");
        assert_eq!(user["roles"], json!(["admin"]));
        assert_eq!(user["isSuperAdmin"], true);
        assert!(user["tenantId"].is_string() && user["id"].is_string());
        assert!(user["permissions"].as_array().unwrap().contains(&json!("audit.read")));

        let me: Value = http.get(app.url("/api/v1/auth/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["user"], body["user"]);
    }
}

#[tokio::test]
async fn the_cookie_is_secure_when_configured() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.session.secure_cookie = Some(true)
    })
    .await;
    let response = login_response(&app, &client(), "admin@localhost", ADMIN_PASSWORD).await;
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let unknown = login_response(&app, &client(), "nobody@example.com", PASSWORD).await;
    let wrong = login_response(&app, &client(), "admin@localhost", "wrong-password").await;
    assert_eq!(
        (unknown.status(), wrong.status()),
        (401.try_into().unwrap(), 401.try_into().unwrap())
    );
    assert!(session_cookie(&unknown).is_none() && session_cookie(&wrong).is_none());
    let (a, b): (Value, Value) = (unknown.json().await.unwrap(), wrong.json().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(
        a,
        json!({"statusCode": 401, "message": "Invalid e-mail or password", "error": "Unauthorized"})
    );
}

#[tokio::test]
async fn malformed_login_input_is_a_400_listing_the_problems() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let response = login_response(&app, &client(), "not-an-email", "").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        json!(["email must be an email", "password should not be empty"])
    );
    let response = client()
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn everything_but_public_paths_needs_a_session() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    for path in [
        "/api/v1/auth/me",
        "/api/v1/orders",
        "/api/v1/audit-logs",
        "/api/v1/anything",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "Unauthorized");
    }
    let logout = client()
        .post(app.url("/api/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 401);
    for path in ["/health", "/live", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // A public webhook path reaches the service without a session: its 401 is the service's own
    // verdict on the signature, not the gateway's on the session.
    let hook = client()
        .post(app.url("/api/v1/webhooks/shopify"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let body: Value = hook.json().await.unwrap();
    assert_eq!(body["message"], "Invalid Shopify signature", "{body}");
}

#[tokio::test]
async fn the_session_id_rotates_at_login_and_the_old_one_dies() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let (http, first) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let again = login_response(&app, &http, "admin@localhost", ADMIN_PASSWORD).await;
    let second = session_cookie(&again).expect("a new cookie");
    assert_ne!(first, second);
    assert_eq!(
        me_with_cookie(&app, &first).await,
        401,
        "the pre-login id is worthless"
    );
    assert_eq!(me_with_cookie(&app, &second).await, 200);
}

each_database! {
    async fn logout_destroys_the_session_on_the_server(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let (http, cookie) = app.login("admin@localhost", ADMIN_PASSWORD).await;
        let response = http.post(app.url("/api/v1/auth/logout")).send().await.unwrap();
        assert_eq!(response.status(), 204);
        // Replaying the old cookie by hand: the server no longer knows it.
        assert_eq!(me_with_cookie(&app, &cookie).await, 401);
    }
}

each_database! {
    async fn five_failures_lock_out_the_email_and_ip_pair(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        app.create_user("ops@example.com", PASSWORD, UserRole::Operator).await;
        for _ in 0..5 {
            let r = login_response(&app, &client(), "ops@example.com", "wrong-password").await;
            assert_eq!(r.status(), 401);
        }
        let locked = login_response(&app, &client(), "ops@example.com", PASSWORD).await;
        assert_eq!(locked.status(), 429, "even the right password waits");
        let retry_after: i64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        assert_eq!(locked.json::<Value>().await.unwrap()["statusCode"], 429);

        // Unknown addresses lock out the same way: the answer reveals nothing.
        for _ in 0..5 {
            login_response(&app, &client(), "ghost@example.com", "whatever-1").await;
        }
        assert_eq!(login_response(&app, &client(), "ghost@example.com", "whatever-1").await.status(), 429);

        // Another IP (127.0.0.2 is loopback too) is not locked out.
        let other_ip = crate::infra::tls::http_client()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap();
        assert_eq!(login_response(&app, &other_ip, "ops@example.com", PASSWORD).await.status(), 200);
    }
}

each_database! {
    async fn changing_the_password_revokes_the_other_sessions(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        app.create_user("ops@example.com", PASSWORD, UserRole::Operator).await;
        let (laptop, _) = app.login("ops@example.com", PASSWORD).await;
        let (_, phone_cookie) = app.login("ops@example.com", PASSWORD).await;

        let change = |current: &str, new: &str| {
            laptop
                .post(app.url("/api/v1/auth/change-password"))
                .json(&json!({"currentPassword": current, "newPassword": new}))
                .send()
        };
        let wrong = change("not-the-password", "another-long-password").await.unwrap();
        assert_eq!(wrong.status(), 400);
        assert_eq!(wrong.json::<Value>().await.unwrap()["message"], json!(["currentPassword is incorrect"]));
        let weak = change(PASSWORD, "short").await.unwrap();
        assert_eq!(weak.status(), 400);
        assert_eq!(weak.json::<Value>().await.unwrap()["message"], json!(["newPassword must be at least 8 characters"]));

        assert_eq!(change(PASSWORD, "another-long-password").await.unwrap().status(), 204);
        assert_eq!(laptop.get(app.url("/api/v1/auth/me")).send().await.unwrap().status(), 200, "this session stays");
        assert_eq!(me_with_cookie(&app, &phone_cookie).await, 401, "the other session is revoked");
        assert_eq!(login_response(&app, &client(), "ops@example.com", PASSWORD).await.status(), 401);
        assert_eq!(login_response(&app, &client(), "ops@example.com", "another-long-password").await.status(), 200);
    }
}

/// Whoever holds a session of someone else's cannot guess their way to the account for good: the
/// current password of a password change is checked under the sign-in lockout, and an admin's
/// own password cannot be set through the user admin, which asks for no current one.
#[tokio::test]
async fn a_session_alone_cannot_take_the_account_over() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let me = crate::order::flow_tests::get_json(&admin, &app.url("/api/v1/auth/me")).await;
    let own = app.url(&format!(
        "/api/v1/users/{}",
        me["user"]["id"].as_str().unwrap()
    ));
    let refused = admin
        .patch(&own)
        .json(&json!({"password": "taken-over-for-good"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let change = |current: &str| {
        admin
            .post(app.url("/api/v1/auth/change-password"))
            .json(&json!({"currentPassword": current, "newPassword": "taken-over-for-good"}))
            .send()
    };
    for guess in 0..5 {
        assert_eq!(
            change(&format!("guess-{guess}")).await.unwrap().status(),
            400
        );
    }
    let locked = change("guess-5").await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    assert_eq!(
        change(ADMIN_PASSWORD).await.unwrap().status(),
        429,
        "not even the right one"
    );
}

#[tokio::test]
async fn a_deactivated_user_loses_their_session() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let user = app
        .create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let (http, _) = app.login("ops@example.com", PASSWORD).await;
    crate::on_pool!(&app.ctx.db, pool => {
        sqlx::query("UPDATE users SET is_active = FALSE WHERE id = $1").bind(user.id).execute(pool).await.map(|_| ())
    })
    .unwrap();
    assert_eq!(
        http.get(app.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        login_response(&app, &client(), "ops@example.com", PASSWORD)
            .await
            .status(),
        401
    );
}

each_database! {
    async fn permissions_decide_who_reads_the_audit_log(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        app.create_user("viewer@example.com", PASSWORD, UserRole::Viewer).await;
        app.create_user("ops@example.com", PASSWORD, UserRole::Operator).await;
        let admin = app.admin().await;
        let (viewer, _) = app.login("viewer@example.com", PASSWORD).await;
        let (operator, _) = app.login("ops@example.com", PASSWORD).await;
        let url = app.url("/api/v1/audit-logs");
        assert_eq!(admin.get(&url).send().await.unwrap().status(), 200);
        assert_eq!(viewer.get(&url).send().await.unwrap().status(), 403);
        assert_eq!(operator.get(&url).send().await.unwrap().status(), 403);

        let page: Value = admin.get(&url).send().await.unwrap().json().await.unwrap();
        let actions: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        assert!(actions.contains(&"auth.login.succeeded"), "{page}");
    }
}

#[tokio::test]
async fn forged_identity_headers_from_a_client_change_nothing() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    app.create_user("viewer@example.com", PASSWORD, UserRole::Viewer)
        .await;
    let (viewer, _) = app.login("viewer@example.com", PASSWORD).await;
    let response = viewer
        .get(app.url("/api/v1/audit-logs"))
        .header("x-user-permissions", "audit.read,users.manage")
        .header("x-user-roles", "admin")
        .header("x-is-super-admin", "true")
        .header("x-user-id", uuid::Uuid::new_v4().to_string())
        .header("x-internal-key", crate::testing::INTERNAL_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Without a session, forged headers do not make a user either.
    let anonymous = client()
        .get(app.url("/api/v1/audit-logs"))
        .header("x-is-super-admin", "true")
        .header("x-user-permissions", "audit.read")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn failed_and_successful_sign_ins_are_audited_with_ip_and_user_agent() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    client()
        .post(app.url("/api/v1/auth/login"))
        .header("user-agent", "audit-test/1.0")
        .json(&json!({"email": "admin@localhost", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    let admin = app.admin().await;
    let page: Value = admin
        .get(app.url("/api/v1/audit-logs?action=auth.login.failed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &page["items"][0];
    assert_eq!(entry["actorEmail"], "admin@localhost", "{page}");
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["userAgent"], "audit-test/1.0");
}

async fn tokens(app: &TestApp, email: &str, password: &str) -> Value {
    let response = client()
        .post(app.url("/api/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(session_cookie(&response).is_none(), "tokens, not a cookie");
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, token: &Value) -> reqwest::Response {
    client()
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refreshToken": token}))
        .send()
        .await
        .unwrap()
}

async fn bearer_status(app: &TestApp, token: &Value, path: &str) -> u16 {
    client()
        .get(app.url(path))
        .bearer_auth(token.as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

each_database! {
    async fn bearer_tokens_work_wherever_a_session_does_and_refresh_rotates(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let first = tokens(&app, "admin@localhost", ADMIN_PASSWORD).await;
        assert_eq!(first["expiresIn"], 900);
        assert_eq!(first["user"]["email"], "admin@localhost");
        let access = &first["accessToken"];
        assert_eq!(bearer_status(&app, access, "/api/v1/auth/me").await, 200);
        assert_eq!(bearer_status(&app, access, "/api/v1/audit-logs").await, 200, "through the proxy too");
        assert_eq!(bearer_status(&app, &json!("not.a.jwt"), "/api/v1/auth/me").await, 401);

        let second: Value = refresh(&app, &first["refreshToken"]).await.json().await.unwrap();
        assert_ne!(second["refreshToken"], first["refreshToken"]);
        assert_eq!(bearer_status(&app, &second["accessToken"], "/api/v1/auth/me").await, 200);
        let third: Value = refresh(&app, &second["refreshToken"]).await.json().await.unwrap();

        // Replaying a spent token revokes the whole family, the newest descendant included.
        let replay = refresh(&app, &first["refreshToken"]).await;
        assert_eq!(replay.status(), 401);
        assert_eq!(refresh(&app, &third["refreshToken"]).await.status(), 401);
        assert_eq!(refresh(&app, &json!("unknown-token")).await.status(), 401);
        let audit: Value = app.admin().await
            .get(app.url("/api/v1/audit-logs?action=auth.refresh.reused"))
            .send().await.unwrap().json().await.unwrap();
        assert_eq!(audit["total"], 1, "{audit}");
    }
}

#[tokio::test]
async fn a_password_change_ends_tokens_too() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    app.create_user("bot@example.com", PASSWORD, UserRole::Operator)
        .await;
    let issued = tokens(&app, "bot@example.com", PASSWORD).await;
    let (browser, _) = app.login("bot@example.com", PASSWORD).await;
    let changed = browser
        .post(app.url("/api/v1/auth/change-password"))
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "another-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    assert_eq!(
        bearer_status(&app, &issued["accessToken"], "/api/v1/auth/me").await,
        401
    );
    assert_eq!(refresh(&app, &issued["refreshToken"]).await.status(), 401);
}

#[tokio::test]
async fn the_token_endpoint_shares_the_login_lockout() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    for _ in 0..5 {
        let r = client()
            .post(app.url("/api/v1/auth/token"))
            .json(&json!({"email": "admin@localhost", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let locked = login_response(&app, &client(), "admin@localhost", ADMIN_PASSWORD).await;
    assert_eq!(locked.status(), 429);
}

#[tokio::test]
async fn a_revocation_made_elsewhere_lands_within_the_identity_cache_time() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| c.session.cache_ms = 300).await;
    let user = app
        .create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let (ops, _) = app.login("ops@example.com", PASSWORD).await;
    assert_eq!(
        ops.get(app.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // As another replica would: straight in the shared database, bypassing this gateway.
    crate::on_pool!(&app.ctx.db, pool => {
        sqlx::query("UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1")
            .bind(user.id)
            .execute(pool)
            .await
            .map(|_| ())
    })
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        ops.get(app.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// Fires `n` sign-ins with a wrong password for `email` at once, spread over `apps`; returns how
/// many got each status.
async fn burst_of_wrong_passwords(
    apps: &[&TestApp],
    email: &str,
    n: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let attempts = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        async move {
            login_response(app, &client(), email, "wrong-password")
                .await
                .status()
                .as_u16()
        }
    });
    let mut counts = std::collections::BTreeMap::new();
    for status in futures::future::join_all(attempts).await {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

each_database! {
    async fn a_burst_of_concurrent_guesses_gets_five_not_more(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        app.create_user("ops@example.com", PASSWORD, UserRole::Operator).await;
        let counts = burst_of_wrong_passwords(&[&app], "ops@example.com", 25).await;
        let checked = counts.get(&401).copied().unwrap_or_default();
        assert!(checked <= 5, "{checked} guesses reached the password check: {counts:?}");
        assert_eq!(checked + counts.get(&429).copied().unwrap_or_default(), 25, "{counts:?}");
        // Attempts the burst had in flight counted while they ran; what is left of the five
        // guesses is still there, and not one more.
        let mut later = 0;
        while login_response(&app, &client(), "ops@example.com", "wrong-password").await.status() == 401 {
            later += 1;
            assert!(later <= 5, "the lockout never came");
        }
        assert_eq!(checked + later, 5, "{counts:?}, then {later}");
        assert_eq!(
            login_response(&app, &client(), "ops@example.com", PASSWORD).await.status(),
            429,
            "the pair is locked"
        );
    }
}

#[tokio::test]
async fn two_replicas_share_one_lockout_under_a_concurrent_burst() {
    let database =
        std::sync::Arc::new(crate::testing::TestDatabase::create(Backend::Postgres).await);
    let first = TestApp::spawn_on(Role::All, database.clone(), |_| {}).await;
    let second = TestApp::spawn_on(Role::All, database, |_| {}).await;
    first
        .create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let counts = burst_of_wrong_passwords(&[&first, &second], "ops@example.com", 30).await;
    let checked = counts.get(&401).copied().unwrap_or_default();
    assert!(checked <= 5, "{counts:?}");
    let mut later = 0;
    while login_response(&second, &client(), "ops@example.com", "wrong-password")
        .await
        .status()
        == 401
    {
        later += 1;
        assert!(later <= 5, "the lockout never came");
    }
    assert_eq!(checked + later, 5, "{counts:?}, then {later}");
}

#[tokio::test]
async fn the_lockout_counts_an_ipv6_client_by_its_64() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        // Loopback is the proxy in front: its X-Forwarded-For names the client.
        c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.rate_limit.auth = 1000;
    })
    .await;
    app.create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let from = |ip: &str, password: &str| {
        client()
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .json(&json!({"email": "ops@example.com", "password": password}))
            .send()
    };
    // Six addresses of one /64, one wrong password each: the sixth is already locked out.
    let mut statuses = Vec::new();
    for host in 1..=6 {
        let ip = format!("2001:db8:1:2::{host:x}");
        statuses.push(from(&ip, "wrong-password").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    let same_64 = from("2001:db8:1:2:ffff::1", PASSWORD).await.unwrap();
    assert_eq!(same_64.status(), 429);
    let other_64 = from("2001:db8:1:3::1", PASSWORD).await.unwrap();
    assert_eq!(other_64.status(), 200, "another client is not locked out");
}

each_database! {
    async fn a_refresh_token_replayed_concurrently_leaves_no_working_successor(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        // Several rounds: the race is between the winner issuing and the losers revoking.
        for _ in 0..3 {
            let issued = tokens(&app, "admin@localhost", ADMIN_PASSWORD).await;
            let replays = (0..8).map(|_| refresh(&app, &issued["refreshToken"]));
            let mut winners = Vec::new();
            for response in futures::future::join_all(replays).await {
                if response.status() == 200 {
                    winners.push(response.json::<Value>().await.unwrap());
                } else {
                    assert_eq!(response.status(), 401);
                }
            }
            assert!(winners.len() <= 1, "{} redemptions of one token", winners.len());
            for winner in &winners {
                assert_eq!(
                    refresh(&app, &winner["refreshToken"]).await.status(),
                    401,
                    "the replay revoked the winner's successor too"
                );
                assert_eq!(bearer_status(&app, &winner["accessToken"], "/api/v1/auth/me").await, 401);
            }
        }
    }
}

#[tokio::test]
async fn signing_out_with_a_bearer_token_ends_that_token_and_its_family() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let issued = tokens(&app, "admin@localhost", ADMIN_PASSWORD).await;
    let other = tokens(&app, "admin@localhost", ADMIN_PASSWORD).await;
    let access = &issued["accessToken"];
    assert_eq!(bearer_status(&app, access, "/api/v1/auth/me").await, 200);
    let logout = client()
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(access.as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(bearer_status(&app, access, "/api/v1/auth/me").await, 401);
    assert_eq!(refresh(&app, &issued["refreshToken"]).await.status(), 401);
    // Another sign-in of the same user is another family: untouched.
    assert_eq!(
        bearer_status(&app, &other["accessToken"], "/api/v1/auth/me").await,
        200
    );
}

#[tokio::test]
async fn signing_in_again_kills_the_previous_session_id_at_once() {
    // A long identity cache: only an explicit eviction can make the old id fail at once.
    let app =
        TestApp::spawn_with(Role::All, Backend::Sqlite, |c| c.session.cache_ms = 60_000).await;
    let (http, first) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    assert_eq!(me_with_cookie(&app, &first).await, 200, "cached now");
    let again = login_response(&app, &http, "admin@localhost", ADMIN_PASSWORD).await;
    let second = session_cookie(&again).expect("a new cookie");
    assert_ne!(first, second);
    assert_eq!(me_with_cookie(&app, &first).await, 401);
    assert_eq!(me_with_cookie(&app, &second).await, 200);
}

/// A write signed in with the session cookie is refused when a page of another origin made it (a
/// sibling subdomain is the same site to `SameSite=Lax`), on the gateway's own routes and on those
/// it forwards; forma's own pages, reads and bearer tokens pass.
#[tokio::test]
async fn a_cookie_write_from_another_origins_page_is_refused() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let nobody = uuid::Uuid::new_v4();
    let own = app.url("");
    let own = own.trim_end_matches('/');
    let bearer = tokens(&app, "admin@localhost", ADMIN_PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/api/v1/users/{nobody}"),
        format!("/api/v1/product-mappings/{nobody}"),
    ] {
        let status = |request: reqwest::RequestBuilder| async move {
            request.send().await.unwrap().status().as_u16()
        };
        let url = app.url(&path);
        let foreign = "https://blog.example.com";
        assert_eq!(
            status(admin.delete(&url).header("origin", foreign)).await,
            403,
            "{path}"
        );
        assert_eq!(
            status(admin.delete(&url).header("origin", "null")).await,
            403,
            "{path}"
        );
        assert_eq!(
            status(admin.delete(&url).header("origin", own)).await,
            404,
            "{path}"
        );
        assert_eq!(
            status(admin.delete(&url)).await,
            404,
            "{path}: no Origin, no browser"
        );
        assert_eq!(
            status(admin.get(&url).header("origin", foreign)).await,
            404,
            "{path}"
        );
        let with_token = client()
            .delete(&url)
            .bearer_auth(&bearer)
            .header("origin", foreign);
        assert_eq!(status(with_token).await, 404, "{path}: a token");
    }
}
