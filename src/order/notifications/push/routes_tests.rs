//! `/api/v1/push` over loopback HTTP through the gateway, on both databases.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::keys::{self, VapidKeys};
use super::subscriptions;
use crate::config::Role;
use crate::config::Secret;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::simulators::push::PushServiceSim;
use crate::testing::{TestApp, TestDatabase};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn subscription_count(app: &TestApp) -> i64 {
    crate::on_pool!(&app.ctx.db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM push_subscriptions")
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

each_database! {
    async fn a_browser_subscription_is_kept_once_per_endpoint_and_removed_by_its_owner(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let url = app.url("/api/v1/push/subscriptions");
        let browser = service.subscribe();

        let (status, first) = send(admin.post(&url).json(&browser)).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["endpoint"], browser.endpoint.as_str());
        let (status, again) = send(admin.post(&url).json(&browser)).await;
        assert_eq!(status, 200, "the same endpoint again: {again}");
        assert_eq!(again["id"], first["id"], "one subscription per endpoint");
        assert_eq!(subscription_count(&app).await, 1);

        let endpoint = json!({"endpoint": browser.endpoint});
        assert_eq!(admin.delete(&url).json(&endpoint).send().await.unwrap().status(), 204);
        let (status, gone) = send(admin.delete(&url).json(&endpoint)).await;
        assert_eq!(status, 404, "{gone}");
        assert_eq!(gone, json!({"statusCode": 404, "message": "Push subscription not found", "error": "Not Found"}));
        assert_eq!(subscription_count(&app).await, 0);
        stop.cancel();
    }
}

each_database! {
    async fn an_invalid_subscription_is_refused_with_every_problem_listed(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let url = app.url("/api/v1/push/subscriptions");

        let (status, body) = send(admin.post(&url).json(&json!({}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "Bad Request");
        assert_eq!(body["message"].as_array().map(Vec::len), Some(3), "{body}");

        let (status, body) = send(admin.post(&url).json(&json!({
            "endpoint": "http://push.example.com/abc",
            "keys": {"p256dh": "BAAA", "auth": "c2hvcnQ"}
        }))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["message"], json!([
            "endpoint must be an https URL",
            "keys.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)",
            "keys.auth must be 16 bytes in base64url"
        ]));

        let (status, body) = send(admin.post(&url).json(&json!({"endpoint": 42}))).await;
        assert_eq!((status, &body["error"]), (400, &json!("Bad Request")), "{body}");
        let (status, body) = send(admin.post(&url).header("content-type", "application/json").body("{\"endpoint\":")).await;
        assert_eq!((status, &body["error"]), (400, &json!("Bad Request")), "{body}");
        let (status, body) = send(admin.delete(&url).json(&json!({"endpoint": " "}))).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(subscription_count(&app).await, 0);
    }
}

each_database! {
    async fn subscriptions_belong_to_a_signed_in_user_and_the_key_is_public(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let url = app.url("/api/v1/push/subscriptions");
        let browser = service.subscribe();

        let (status, body) = send(app.client.post(&url).json(&browser)).await;
        assert_eq!(status, 401, "{body}");
        let (status, key) = send(app.client.get(app.url("/api/v1/push/vapid-public-key"))).await;
        assert_eq!(status, 200, "no session needed: {key}");
        let public = key["publicKey"].as_str().unwrap();
        assert_eq!(subscriptions::decode(public).map(|k| k.len()), Some(65));

        let admin = app.admin().await;
        assert_eq!(admin.post(&url).json(&browser).send().await.unwrap().status(), 201);
        app.create_user("viewer@example.com", "viewer-password-1", UserRole::Viewer).await;
        let (viewer, _) = app.login("viewer@example.com", "viewer-password-1").await;
        let endpoint = json!({"endpoint": browser.endpoint});
        assert_eq!(viewer.delete(&url).json(&endpoint).send().await.unwrap().status(), 404, "not theirs");
        assert_eq!(subscription_count(&app).await, 1);

        // The browser changes hands: the endpoint is now the viewer's, no longer the admin's.
        assert_eq!(viewer.post(&url).json(&browser).send().await.unwrap().status(), 201);
        assert_eq!(admin.delete(&url).json(&endpoint).send().await.unwrap().status(), 404);
        assert_eq!(viewer.delete(&url).json(&endpoint).send().await.unwrap().status(), 204);
        stop.cancel();
    }
}

each_database! {
    async fn the_generated_vapid_key_is_the_same_for_every_replica_and_restart(backend: Backend) {
        let database = std::sync::Arc::new(TestDatabase::create(backend).await);
        let first = TestApp::spawn_on(Role::Order, database.clone(), |_| {}).await;
        let config = first.ctx.config.clone();
        // Replicas racing for the first key all end up with one.
        let loads = (0..8).map(|_| keys::load(&config.push, &first.ctx.db));
        let loaded: Vec<String> = futures::future::join_all(loads)
            .await
            .into_iter()
            .map(|keys| keys.unwrap().public_key().to_owned())
            .collect();
        assert!(loaded.iter().all(|k| *k == loaded[0]), "{loaded:?}");

        let second = TestApp::spawn_on(Role::Order, database.clone(), |_| {}).await;
        let (_, served) = send(second.client.get(second.url("/api/v1/push/vapid-public-key"))).await;
        assert_eq!(served["publicKey"], loaded[0].as_str());
        first.stop().await.unwrap();
        let restarted = TestApp::spawn_on(Role::Order, database, |_| {}).await;
        let (_, served) = send(restarted.client.get(restarted.url("/api/v1/push/vapid-public-key"))).await;
        assert_eq!(served["publicKey"], loaded[0].as_str());
    }
}

#[tokio::test]
async fn a_configured_vapid_key_is_the_one_served() {
    let (keys, private) = VapidKeys::generate().unwrap();
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |config| {
        config.push.vapid_private_key = Some(Secret::new(private));
    })
    .await;
    let (status, served) = send(app.client.get(app.url("/api/v1/push/vapid-public-key"))).await;
    assert_eq!(status, 200);
    assert_eq!(served["publicKey"], keys.public_key());
}

#[tokio::test]
async fn a_malformed_configured_vapid_key_stops_the_start_naming_the_setting() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut config = crate::testing::config(&database.url);
    config.push.vapid_private_key = Some(Secret::new("not-a-key"));
    let ctx = crate::app::AppContext::start(Role::Order, config)
        .await
        .unwrap();
    let error = crate::roles::router(Role::Order, ctx)
        .unwrap_err()
        .to_string();
    assert!(error.contains("push.vapid_private_key"), "{error}");
}

each_database! {
    /// A user has at most `MAX_PER_USER` browsers subscribed: one more replaces the oldest.
    async fn a_users_browsers_are_bounded_and_the_oldest_goes_first(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let url = app.url("/api/v1/push/subscriptions");
        let bound = usize::try_from(subscriptions::MAX_PER_USER).unwrap();
        let browsers: Vec<_> = (0..bound + 2).map(|_| service.subscribe()).collect();
        for browser in &browsers {
            let (status, body) = send(admin.post(&url).json(browser)).await;
            assert_eq!(status, 201, "{body}");
        }
        let mut endpoints: Vec<String> = crate::on_pool!(&app.ctx.db, pool => {
            sqlx::query_scalar("SELECT endpoint FROM push_subscriptions")
                .fetch_all(pool)
                .await
                .unwrap()
        });
        endpoints.sort_unstable();
        let mut newest: Vec<String> = browsers[2..].iter().map(|b| b.endpoint.clone()).collect();
        newest.sort_unstable();
        assert_eq!(endpoints, newest);
        stop.cancel();
    }
}

each_database! {
    /// Whoever held a user's session could have subscribed a browser of theirs: when the user's
    /// sessions end, so do their browsers' subscriptions.
    async fn a_users_browsers_are_forgotten_when_their_sessions_end(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let url = app.url("/api/v1/push/subscriptions");
        let mut operators = Vec::new();
        let mut clients = Vec::new();
        for name in ["ada", "bob", "cy", "dee"] {
            let email = format!("{name}@example.com");
            let user = app.create_user(&email, "a-long-password-1", UserRole::Operator).await;
            let (client, _) = app.login(&email, "a-long-password-1").await;
            let (status, body) = send(client.post(&url).json(&service.subscribe())).await;
            assert_eq!(status, 201, "{body}");
            operators.push(user.id);
            clients.push(client);
        }
        let (status, body) = send(admin.post(&url).json(&service.subscribe())).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(subscription_count(&app).await, 5);

        let deactivated = admin
            .patch(app.url(&format!("/api/v1/users/{}", operators[0])))
            .json(&json!({"isActive": false}));
        assert_eq!(deactivated.send().await.unwrap().status(), 200);
        assert_eq!(subscription_count(&app).await, 4, "the deactivated user's browser is gone");

        let deleted = admin.delete(app.url(&format!("/api/v1/users/{}", operators[1])));
        assert_eq!(deleted.send().await.unwrap().status(), 204);
        assert_eq!(subscription_count(&app).await, 3, "the deleted user's browser is gone");

        let changed = clients[2]
            .post(app.url("/api/v1/auth/change-password"))
            .json(&json!({"currentPassword": "a-long-password-1", "newPassword": "another-long-password-2"}));
        assert_eq!(changed.send().await.unwrap().status(), 204);
        assert_eq!(subscription_count(&app).await, 2, "a new password forgets the browsers");

        let reset = admin
            .patch(app.url(&format!("/api/v1/users/{}", operators[3])))
            .json(&json!({"password": "a-reset-long-password-3"}));
        assert_eq!(reset.send().await.unwrap().status(), 200);
        assert_eq!(subscription_count(&app).await, 1, "only the admin's browser is left");

        let renamed = admin
            .patch(app.url(&format!("/api/v1/users/{}", operators[2])))
            .json(&json!({"name": "Cy"}));
        assert_eq!(renamed.send().await.unwrap().status(), 200);
        let (status, body) = send(clients[2].post(&url).json(&service.subscribe())).await;
        assert_eq!(status, 201, "{body}");
        let renamed = admin
            .patch(app.url(&format!("/api/v1/users/{}", operators[2])))
            .json(&json!({"name": "Cy again"}));
        assert_eq!(renamed.send().await.unwrap().status(), 200);
        assert_eq!(subscription_count(&app).await, 2, "a change that ends no session keeps them");
        stop.cancel();
    }
}
