//! The Shopify app's install over loopback HTTP, against the simulated Shopify, on both databases.

use base64::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::config::Role;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::simulators::shopify::{Delivery, OAuthApp, ShopifyAdminSim};
use crate::testing::{self, ADMIN_PASSWORD, TestApp};

pub const API_KEY: &str = "app-api-key-for-tests";
pub const API_SECRET: &str = "app-api-secret-for-tests";
/// The token the simulated Shopify grants at every install.
pub const TOKEN: &str = "shpat_oauth-granted-token-for-tests";
pub const SHOP: &str = "oauth-test.myshopify.com";
pub const APP_URL: &str = "https://forma.test";
pub const TOKEN_KEY: [u8; 32] = [42; 32];

/// forma with the app configured against the simulated Shopify, and a signed-in admin whose
/// client does not follow redirects (they lead to Shopify and back to `APP_URL`).
pub struct InstallSetup {
    pub app: TestApp,
    pub shopify: ShopifyAdminSim,
    pub admin: reqwest::Client,
    /// The state cookie the last install set in the admin's browser, as `name=value`. It is kept
    /// here rather than in the client's jar: `APP_URL` is HTTPS, so the cookie is `Secure`, and
    /// the tests reach forma over plain HTTP.
    state_cookie: std::sync::Mutex<Option<String>>,
    _stop: tokio_util::sync::DropGuard,
}

/// A client keeping cookies and showing redirects instead of following them.
pub fn browser() -> reqwest::Client {
    crate::infra::tls::http_client()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> reqwest::Client {
    let client = browser();
    let response = client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {email}");
    client
}

/// The app's settings, pointed at `shopify`.
pub fn app_settings(config: &mut crate::config::Config, shopify: &ShopifyAdminSim) {
    config.rate_limit.per_ip = 1_000_000;
    config.rate_limit.per_user = 1_000_000;
    config.shopify.api_key = Some(API_KEY.to_owned());
    config.shopify.api_secret = Some(Secret::new(API_SECRET));
    config.shopify.app_url = Some(APP_URL.to_owned());
    config.shopify.base_url = Some(shopify.base_url());
    config.shopify.token_key = Some(Secret::new(
        base64::engine::general_purpose::STANDARD.encode(TOKEN_KEY),
    ));
}

impl InstallSetup {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(&mut crate::config::Config),
    ) -> Self {
        let stop = CancellationToken::new();
        let shopify = ShopifyAdminSim::start(TOKEN, stop.clone()).await.unwrap();
        shopify.set_app(OAuthApp {
            api_key: API_KEY.to_owned(),
            api_secret: API_SECRET.to_owned(),
            shop: SHOP.to_owned(),
        });
        let app = TestApp::spawn_with(Role::All, backend, |c| {
            app_settings(c, &shopify);
            configure(c);
        })
        .await;
        let admin = sign_in(&app, "admin@localhost", ADMIN_PASSWORD).await;
        Self {
            app,
            shopify,
            admin,
            state_cookie: std::sync::Mutex::new(None),
            _stop: stop.drop_guard(),
        }
    }

    /// `GET /api/v1/shopify/install?shop=` as the admin.
    pub async fn install(&self, shop: &str) -> reqwest::Response {
        let mut url = url::Url::parse(&self.app.url("/api/v1/shopify/install")).unwrap();
        url.query_pairs_mut().append_pair("shop", shop);
        let response = self.admin.get(url).send().await.unwrap();
        if let Some(cookie) = response.headers().get("set-cookie") {
            let pair = cookie.to_str().unwrap().split(';').next().unwrap();
            *self.state_cookie.lock().unwrap() = Some(pair.to_owned());
        }
        response
    }

    /// Begins an install and follows it to Shopify's consent screen, which redirects to the
    /// callback: the callback's query, as Shopify made it.
    pub async fn approved_callback(&self) -> String {
        let install = self.install(SHOP).await;
        assert_eq!(install.status(), 302);
        let authorize = location(&install);
        let consent = browser().get(&authorize).send().await.unwrap();
        assert_eq!(consent.status(), 302, "{:?}", consent.text().await);
        let back = location(&consent);
        let query = back
            .strip_prefix(&format!("{APP_URL}{CALLBACK_PATH}?"))
            .unwrap_or_else(|| panic!("{back} goes back to the callback"));
        query.to_owned()
    }

    /// Shopify's redirect arriving at forma in the browser that began the install (no session:
    /// the callback is public; the state's cookie only).
    pub async fn callback(&self, query: &str) -> (u16, String) {
        let cookie = self.state_cookie.lock().unwrap().clone();
        let (status, _, body) = self.callback_in(query, cookie.as_deref()).await;
        (status, body)
    }

    /// Shopify's redirect arriving at forma in a browser sending `cookie`: the status, the
    /// `Set-Cookie` and the body.
    pub async fn callback_in(
        &self,
        query: &str,
        cookie: Option<&str>,
    ) -> (u16, Option<String>, String) {
        let url = self.app.url(&format!("{CALLBACK_PATH}?{query}"));
        let mut request = testing::client().get(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", format!("theme=dark; {cookie}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, set_cookie, response.text().await.unwrap())
    }

    /// A whole install of `SHOP`.
    pub async fn connect(&self) {
        let query = self.approved_callback().await;
        let (status, page) = self.callback(&query).await;
        assert_eq!(status, 200, "{page}");
    }

    pub async fn shops(&self) -> Value {
        let response = self
            .admin
            .get(self.app.url("/api/v1/shopify/shops"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        on_pool!(&self.app.ctx.db, pool => {
            sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await
        })
        .unwrap()
    }

    pub async fn default_tenant(&self) -> Uuid {
        crate::identity::tenants::find_by_slug(
            &self.app.ctx.db,
            crate::identity::tenants::DEFAULT_SLUG,
        )
        .await
        .unwrap()
        .unwrap()
        .id
    }
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

fn pairs_of(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `pairs` with `name` set to `value`, signed again with `secret`.
fn resigned(query: &str, name: &str, value: &str, secret: &str) -> String {
    let mut pairs: Vec<(String, String)> = pairs_of(query)
        .into_iter()
        .filter(|(k, _)| k != "hmac" && k != name)
        .collect();
    pairs.push((name.to_owned(), value.to_owned()));
    let hmac = sign_query(secret.as_bytes(), &pairs);
    pairs.push(("hmac".to_owned(), hmac));
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn shopifys_documented_callback_signature_verifies() {
    // The example of Shopify's OAuth documentation, signed with the secret "hush".
    let query = "code=0907a61c0c8d55e99db179b68161bc00\
                 &hmac=700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf\
                 &shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173";
    let pairs = pairs_of(query);
    assert!(query_is_signed(b"hush", &pairs));
    assert!(!query_is_signed(b"other", &pairs));
    let without_state: Vec<_> = pairs
        .iter()
        .filter(|(k, _)| k != "state")
        .cloned()
        .collect();
    assert!(!query_is_signed(b"hush", &without_state));
    assert_eq!(
        sign_query(
            b"hush",
            &pairs_of(
                "timestamp=1337178173&shop=some-shop.myshopify.com&code=0907a61c0c8d55e99db179b68161bc00"
            )
        ),
        "4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26fa3c4d20"
    );
    assert!(!query_is_signed(
        b"hush",
        &pairs_of("shop=a.myshopify.com&hmac=zz")
    ));
    assert!(!query_is_signed(b"hush", &pairs_of("shop=a.myshopify.com")));
}

#[test]
fn only_a_shops_own_domain_is_a_shop() {
    for shop in [
        "example.myshopify.com",
        "a.myshopify.com",
        "0-shop-9.myshopify.com",
    ] {
        assert!(is_shop_domain(shop), "{shop}");
    }
    for shop in [
        "",
        ".myshopify.com",
        "-x.myshopify.com",
        "Example.myshopify.com",
        "example.myshopify.com.evil.com",
        "evil.com",
        "a.b.myshopify.com",
        "https://example.myshopify.com",
        "example.myshopify.com/",
        "exa mple.myshopify.com",
        "example.myshopify.com:443",
    ] {
        assert!(!is_shop_domain(shop), "{shop}");
    }
}

each_database! {
    async fn the_app_installs_through_oauth_with_its_token_sealed_and_its_webhooks_registered(backend: Backend) {
        let setup = InstallSetup::start(backend).await;
        let install = setup.install(SHOP).await;
        assert_eq!(install.status(), 302);
        assert_eq!(install.headers()["cache-control"], "no-store");
        let authorize = url::Url::parse(&location(&install)).unwrap();
        assert_eq!(authorize.path(), "/admin/oauth/authorize");
        assert!(authorize.as_str().starts_with(&setup.shopify.base_url()));
        let params: std::collections::HashMap<String, String> =
            authorize.query_pairs().into_owned().collect();
        assert_eq!(params["client_id"], API_KEY);
        assert_eq!(params["redirect_uri"], format!("{APP_URL}/api/v1/shopify/callback"));
        let scopes: Vec<&str> = params["scope"].split(',').collect();
        for scope in ["read_orders", "write_fulfillments", "read_fulfillments"] {
            assert!(scopes.contains(&scope), "{scopes:?}");
        }
        assert_eq!(params["state"].len(), 64);
        // The state, in a cookie only the callback receives, of this browser alone.
        let set_cookie = install.headers()["set-cookie"].to_str().unwrap();
        let mut attributes: Vec<&str> = set_cookie.split("; ").collect();
        attributes.sort();
        let mut expected = vec![
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/api/v1/shopify/callback",
            "Max-Age=600",
        ];
        let pair = format!("{STATE_COOKIE}={}", params["state"]);
        expected.push(&pair);
        expected.sort();
        assert_eq!(attributes, expected);

        // Shopify's consent screen sends the browser back to the callback, which connects the shop.
        let consent = browser().get(authorize).send().await.unwrap();
        assert_eq!(consent.status(), 302);
        let back = location(&consent);
        let query = back.strip_prefix(&format!("{APP_URL}{CALLBACK_PATH}?")).unwrap();
        let cookie = setup.state_cookie.lock().unwrap().clone();
        let (status, set_cookie, page) = setup.callback_in(query, cookie.as_deref()).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains(&format!("{SHOP} is connected to forma")), "{page}");
        let removed = set_cookie.unwrap_or_default();
        assert!(removed.starts_with(&format!("{STATE_COOKIE}=;")) && removed.contains("Max-Age=0"), "{removed}");

        let shops = setup.shops().await;
        assert_eq!(shops["total"], 1, "{shops}");
        let shop = &shops["items"][0];
        assert_eq!(shop["domain"], SHOP);
        assert_eq!(shop["connected"], true);
        assert!(shop["installedAt"].is_string() && shop["uninstalledAt"].is_null(), "{shop}");
        assert!(shop["scopes"].as_array().unwrap().contains(&json!("read_orders")), "{shop}");
        assert!(!shops.to_string().contains(TOKEN), "{shops}");

        // At rest the token is sealed: not in its row, not in the database's files.
        let db = &setup.app.ctx.db;
        let sealed = on_pool!(db, pool => {
            sqlx::query_scalar::<_, Vec<u8>>("SELECT access_token_ciphertext FROM shops WHERE domain = $1")
                .bind(SHOP)
                .fetch_one(pool)
                .await
        })
        .unwrap();
        assert!(!sealed.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        assert_eq!(TokenCipher::new(&TOKEN_KEY).open(SHOP, &sealed).unwrap().expose(), TOKEN);
        if backend == Backend::Sqlite {
            let file = setup.app.database.url.trim_start_matches("sqlite://").to_owned();
            for path in [file.clone(), format!("{file}-wal")] {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "{path}");
            }
        }
        let tenant = setup.default_tenant().await;
        let installed = tokens::installed(db, &TokenCipher::new(&TOKEN_KEY), tenant, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((installed.domain.as_str(), installed.token.expose()), (SHOP, TOKEN));

        // The webhooks forma acts on, at forma's public address, registered with the new token.
        let mut registered: Vec<(String, String)> = setup
            .shopify
            .webhooks()
            .into_iter()
            .map(|w| (w.topic, w.address))
            .collect();
        registered.sort();
        let address = format!("{APP_URL}/api/v1/webhooks/shopify");
        let mut expected: Vec<(String, String)> =
            WEBHOOK_TOPICS.iter().map(|t| (t.to_string(), address.clone())).collect();
        expected.sort();
        assert_eq!(registered, expected);
        assert!(setup
            .shopify
            .requests()
            .iter()
            .filter(|r| r.path.contains("webhooks.json"))
            .all(|r| r.access_token.as_deref() == Some(TOKEN)));

        let audit: Value = setup
            .admin
            .get(setup.app.url("/api/v1/audit-logs?targetType=shopify-shop"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entry = &audit["items"][0];
        assert_eq!(entry["action"], "shopify.shop.connected", "{audit}");
        assert_eq!(entry["actorEmail"], "admin@localhost", "{audit}");
        assert!(!audit.to_string().contains(TOKEN));

        // Installing again (a reinstall) keeps one shop, with the webhooks already there.
        setup.connect().await;
        assert_eq!(setup.shops().await["total"], 1);
        assert_eq!(setup.shopify.webhooks().len(), WEBHOOK_TOPICS.len());
    }
}

each_database! {
    async fn forged_replayed_expired_and_foreign_callbacks_are_refused_and_store_nothing(backend: Backend) {
        let setup = InstallSetup::start(backend).await;
        let shops = "SELECT COUNT(*) FROM shops";

        for shop in ["evil.com", "example.myshopify.com.evil.com", "-x.myshopify.com", ""] {
            let (status, body) = error_of(setup.install(shop).await).await;
            assert_eq!(status, 400, "{shop}: {body}");
            assert_eq!(body["error"], "Bad Request");
        }
        let (status, _) = error_of(
            setup.admin.get(setup.app.url("/api/v1/shopify/install")).send().await.unwrap(),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(setup.count("SELECT COUNT(*) FROM shopify_oauth_states").await, 0);

        let query = setup.approved_callback().await;
        let refused = |status: u16, message: &'static str| move |(got, body): (u16, String)| {
            assert_eq!(got, status, "{message}: {body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["statusCode"], status, "{message}: {body}");
        };

        // A forged signature, or a parameter changed under a good one.
        let forged: String = query.replace("hmac=", "hmac=00");
        refused(401, "forged")(setup.callback(&forged).await);
        let other_code = query.replacen("code=", "code=0", 1);
        refused(401, "tampered")(setup.callback(&other_code).await);
        let wrong_secret = resigned(&query, "code", "whatever", "not-the-secret");
        refused(401, "wrong secret")(setup.callback(&wrong_secret).await);
        // Signed, but not a shop's domain, an unknown state, or the state of another shop.
        refused(400, "bad shop")(setup.callback(&resigned(&query, "shop", "evil.example.com", API_SECRET)).await);
        let unknown = resigned(&query, "state", "unknown", API_SECRET);
        let (status, _, body) = setup.callback_in(&unknown, Some(&format!("{STATE_COOKIE}=unknown"))).await;
        refused(403, "unknown state")((status, body));
        refused(403, "another shop's state")(
            setup.callback(&resigned(&query, "shop", "other.myshopify.com", API_SECRET)).await,
        );
        assert_eq!(setup.count(shops).await, 0);
        assert_eq!(setup.count("SELECT COUNT(*) FROM shopify_oauth_states WHERE used_at IS NULL").await, 1);

        // The real callback in a browser that did not begin the install: a link to the consent
        // screen sent to a shop's merchant by someone else, which would connect the merchant's
        // shop to the sender's tenant. Refused, and the state is not spent.
        let other_state = format!("{STATE_COOKIE}={}", "0".repeat(64));
        for cookie in [None, Some("theme=dark"), Some(other_state.as_str())] {
            let (status, _, body) = setup.callback_in(&query, cookie).await;
            refused(403, "another browser")((status, body));
        }
        assert_eq!(setup.count(shops).await, 0);
        assert_eq!(setup.count("SELECT COUNT(*) FROM shopify_oauth_states WHERE used_at IS NULL").await, 1);

        // The real one connects; the same callback again finds its state used.
        let (status, page) = setup.callback(&query).await;
        assert_eq!(status, 200, "{page}");
        refused(403, "replayed")(setup.callback(&query).await);
        assert_eq!(setup.count(shops).await, 1);

        // A state older than ten minutes is expired.
        let tenant = setup.default_tenant().await;
        on_pool!(&setup.app.ctx.db, pool => {
            sqlx::query("INSERT INTO shopify_oauth_states (nonce, tenant_id, shop, created_at) VALUES ('old', $1, $2, $3)")
                .bind(tenant)
                .bind(SHOP)
                .bind(chrono::Utc::now() - STATE_TTL - chrono::TimeDelta::seconds(5))
                .execute(pool)
                .await
                .map(drop)
        })
        .unwrap();
        let expired = resigned(&query, "state", "old", API_SECRET);
        let (status, _, body) = setup.callback_in(&expired, Some(&format!("{STATE_COOKIE}=old"))).await;
        refused(403, "expired")((status, body));
    }
}

#[tokio::test]
async fn a_shop_of_another_tenant_is_neither_taken_over_nor_shown() {
    let setup = InstallSetup::start(Backend::Sqlite).await;
    let db = &setup.app.ctx.db;
    let acme = crate::identity::tenants::ensure(db, "acme", "Acme")
        .await
        .unwrap();
    let sealed = TokenCipher::new(&TOKEN_KEY)
        .seal(SHOP, &Secret::new("shpat_acme"))
        .unwrap();
    let theirs = tokens::connect(
        db,
        &Installation {
            tenant_id: acme.id,
            domain: SHOP,
            sealed_token: &sealed,
            scopes: "read_orders",
        },
    )
    .await
    .unwrap()
    .unwrap();

    let query = setup.approved_callback().await;
    let (status, body) = setup.callback(&query).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(setup.shops().await["total"], 0);
    let delete = setup
        .admin
        .delete(setup.app.url(&format!("/api/v1/shopify/shops/{theirs}")))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let kept = tokens::installed(db, &TokenCipher::new(&TOKEN_KEY), acme.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.token.expose(), "shpat_acme");
}

each_database! {
    async fn a_shop_is_disconnected_by_a_user_and_by_uninstalling_the_app(backend: Backend) {
        let setup = InstallSetup::start(backend).await;
        setup.connect().await;
        let shops = setup.shops().await;
        let id = shops["items"][0]["id"].as_str().unwrap().to_owned();
        let tenant = setup.default_tenant().await;
        let cipher = TokenCipher::new(&TOKEN_KEY);
        let db = &setup.app.ctx.db;

        let unknown = setup
            .admin
            .delete(setup.app.url(&format!("/api/v1/shopify/shops/{}", Uuid::new_v4())))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(unknown).await.0, 404);
        let bad = setup.admin.delete(setup.app.url("/api/v1/shopify/shops/nope")).send().await.unwrap();
        assert_eq!(error_of(bad).await.0, 400);

        let delete = setup
            .admin
            .delete(setup.app.url(&format!("/api/v1/shopify/shops/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 204);
        let shop = setup.shops().await["items"][0].clone();
        assert_eq!((shop["connected"].clone(), shop["uninstalledAt"].is_string()), (json!(false), true), "{shop}");
        assert_eq!(setup.count("SELECT COUNT(*) FROM shops WHERE access_token_ciphertext IS NOT NULL").await, 0);
        assert!(tokens::installed(db, &cipher, tenant, None).await.unwrap().is_none());
        let audit: Value = setup
            .admin
            .get(setup.app.url("/api/v1/audit-logs?action=shopify.shop.disconnected"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(audit.to_string().contains("shopify.shop.disconnected"), "{audit}");

        // Installed again, then uninstalled in Shopify: the webhook forgets the token.
        setup.connect().await;
        assert_eq!(setup.shops().await["items"][0]["connected"], true);
        assert!(tokens::installed(db, &cipher, tenant, None).await.unwrap().is_some());
        // An order's signed document sent again as app/uninstalled (the topic is not signed):
        // refused, and the shop stays connected.
        let order = crate::simulators::shopify::order_document(7, 1007, &[]);
        let replayed = Delivery::new("app/uninstalled", SHOP, &order);
        let response = replayed
            .send(&testing::client(), &setup.app.url("/api/v1/webhooks/shopify"), API_SECRET.as_bytes())
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(setup.shops().await["items"][0]["connected"], true);
        let uninstalled = Delivery::new("app/uninstalled", SHOP, &json!({"id": 1, "domain": SHOP}));
        let response = uninstalled
            .send(&testing::client(), &setup.app.url("/api/v1/webhooks/shopify"), API_SECRET.as_bytes())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let shop = setup.shops().await["items"][0].clone();
        assert_eq!((shop["connected"].clone(), shop["uninstalledAt"].is_string()), (json!(false), true), "{shop}");
        assert_eq!(setup.count("SELECT COUNT(*) FROM shops WHERE access_token_ciphertext IS NOT NULL").await, 0);
        assert!(tokens::installed(db, &cipher, tenant, None).await.unwrap().is_none());

        // Installed again at once. Shopify then delivers that uninstall again (its answer was
        // lost), and another uninstall from before the reinstall arrives late: the shop stays
        // connected.
        let mut late = Delivery::new("app/uninstalled", SHOP, &json!({"id": 1, "domain": SHOP}));
        late.triggered_at = (chrono::Utc::now() - chrono::TimeDelta::seconds(1)).to_rfc3339();
        setup.connect().await;
        for (delivery, outcome) in [(&uninstalled, "duplicate"), (&late, "unchanged")] {
            let response = delivery
                .send(&testing::client(), &setup.app.url("/api/v1/webhooks/shopify"), API_SECRET.as_bytes())
                .await
                .unwrap();
            let ack: Value = response.json().await.unwrap();
            assert_eq!(ack["outcome"], outcome, "{ack}");
        }
        assert_eq!(setup.shops().await["items"][0]["connected"], true);
        assert!(tokens::installed(db, &cipher, tenant, None).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn installs_need_the_permission_and_the_app_settings() {
    let setup = InstallSetup::start_with(Backend::Sqlite, |c| c.shopify.token_key = None).await;
    let (status, body) = error_of(setup.install(SHOP).await).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("shopify.token_key") && message.contains("FORMA_SHOPIFY__TOKEN_KEY"),
        "{message}"
    );
    assert!(!message.contains("shopify.api_key"), "{message}");
    let (status, _) = setup.callback("shop=x.myshopify.com").await;
    assert_eq!(status, 503);

    setup
        .app
        .create_user("ops@example.com", "a-long-password", UserRole::Operator)
        .await;
    let operator = sign_in(&setup.app, "ops@example.com", "a-long-password").await;
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/api/v1/shopify/install?shop=a.myshopify.com",
        ),
        (reqwest::Method::GET, "/api/v1/shopify/shops"),
        (
            reqwest::Method::DELETE,
            &format!("/api/v1/shopify/shops/{}", Uuid::new_v4()),
        ),
    ] {
        let response = operator
            .request(method.clone(), setup.app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response).await.0, 403, "{method} {path}");
    }
    let anonymous = testing::client()
        .get(setup.app.url("/api/v1/shopify/shops"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

each_database! {
    /// The configured shop (`shopify.shop_domain`, its token) is tenant default's: another
    /// tenant without a shop of its own gets no credentials, never that shop's token to fulfill or
    /// import with.
    async fn the_configured_shop_acts_for_its_own_tenant_only(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let db = &app.ctx.db;
        let shopify = crate::config::ShopifyConfig {
            shop_domain: Some("configured.myshopify.com".to_owned()),
            access_token: Some(crate::config::Secret::new("shpat_configured")),
            ..Default::default()
        };
        let default = crate::identity::tenants::find_by_slug(db, crate::identity::tenants::DEFAULT_SLUG)
            .await.unwrap().unwrap();
        let acme = crate::identity::tenants::ensure(db, "acme", "Acme").await.unwrap();
        let of = |tenant| tokens::credentials_of(db, &shopify, None, tenant, None);
        let own = of(default.id).await.unwrap().map(|c| c.domain);
        assert_eq!(own.as_deref(), Some("configured.myshopify.com"));
        assert!(of(acme.id).await.unwrap().is_none(), "another tenant's shop");
        let named = tokens::credentials_of(db, &shopify, None, default.id, Some("other.myshopify.com"));
        assert!(named.await.unwrap().is_none(), "a shop that is not the configured one");
    }
}
