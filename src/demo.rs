//! `forma serve --role all --demo` (SPEC §6.4): forma as it runs in production, talking over HTTP
//! to simulated Shopify, SimplyPrint and Sendcloud and over SMTP to a simulated mail server
//! ([`crate::simulators`]), all started in the same process, and a driver that plays the shop's
//! customers, the print farm and the carrier, so a new user watches orders flow from the webhook
//! to FULFILLED with one command, and reads the failure reports forma e-mails on the way.
//!
//! Nothing here is a shortcut through forma: the driver only sends what the real services send
//! (signed webhooks) and only creates product mappings through forma's own API. The database is
//! the user's (the embedded SQLite file by default), so demo orders stay there after a restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::config::{Config, Secret};
use crate::gateway::auth::tokens;
use crate::identity::bootstrap::ADMIN_EMAIL;
use crate::identity::users;
use crate::infra::db::Db;
use crate::server;
use crate::shipping::sendcloud::status;
use crate::simulators::sendcloud::SendcloudSim;
use crate::simulators::shopify::{self, Delivery, Line, ShopifyAdminSim};
use crate::simulators::simplyprint::{Item, SimplyPrintSim};
use crate::simulators::smtp::SmtpSim;

// The demo's numbers.
/// A new order arrives this often; the first one at once.
const ORDER_EVERY: Duration = Duration::from_secs(5);
/// Lines per order, and units per line, drawn at random from these ranges.
const LINES_PER_ORDER: std::ops::RangeInclusive<usize> = 1..=3;
const UNITS_PER_LINE: std::ops::RangeInclusive<u32> = 1..=2;
/// How often the farm and the carrier look at their queues.
const TICK: Duration = Duration::from_millis(500);
/// How long a print takes on the simulated farm.
const PRINT_TIME: Duration = Duration::from_secs(3);
/// The share of prints that fail, once the first order reached the carrier (so a new user sees
/// FULFILLED first). A failed job waits for an operator's retry, which the farm then prints.
const FAILURE_RATE: f64 = 0.1;
/// The carrier picks a parcel up this long after forma created it, and delivers it this long after.
const PICKUP_AFTER: Duration = Duration::from_secs(5);
const DELIVERY_AFTER: Duration = Duration::from_secs(10);
/// How often forma asks the simulated farm about jobs whose webhook it may have missed.
const RECONCILE_SECS: u64 = 5;
/// Every simulated webhook comes from loopback, as the user's own browser does: the webhook limit
/// per IP is raised to at least this, so a busy farm is not throttled.
const WEBHOOKS_PER_WINDOW: u32 = 10_000;
/// Shopify's first order number in a new shop.
const FIRST_ORDER_NUMBER: u64 = 1001;
const SHOP: &str = "forma-demo.myshopify.com";
const SIMPLYPRINT_COMPANY: &str = "1";
/// Where the demo's failure reports go, set only while the tenant has no recipients of its own. A
/// `.test` domain (RFC 2606) never reaches a real mailbox, should the settings outlive the demo.
pub const DEMO_RECIPIENT: &str = "farm-ops@forma-demo.test";

/// A product of the demo shop and the files it is printed from.
struct Product {
    sku: &'static str,
    name: &'static str,
    price: &'static str,
    /// forma's `printFiles`.
    files: fn() -> Value,
}

const PRODUCTS: [Product; 3] = [
    Product {
        sku: "CUBE",
        name: "Calibration cube",
        price: "4.50",
        files: || json!([{"fileId": "demo-cube", "fileName": "cube.gcode", "unitsPerPrint": 2}]),
    },
    Product {
        sku: "VASE",
        name: "Spiral vase",
        price: "24.00",
        files: || {
            json!([
                {"fileId": "demo-vase-body", "fileName": "vase-body.gcode"},
                {"fileId": "demo-vase-base", "fileName": "vase-base.gcode", "printProfile": "0.2mm PETG"}
            ])
        },
    },
    Product {
        sku: "PLANTER",
        name: "Hexagon planter",
        price: "18.90",
        files: || json!([{"fileId": "demo-planter", "fileName": "planter.gcode"}]),
    },
];

/// Runs `serve --role all` against the simulators, with the driver, until a shutdown signal.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    let simulators_stop = CancellationToken::new();
    // The simulators outlive the server's shutdown, so forma's last calls still get answers.
    let _simulators_stop = simulators_stop.clone().drop_guard();
    let simulators = Simulators::start(&simulators_stop).await?;
    simulators.configure(&mut config);
    let admin_password = config.admin_password.clone();

    let (ctx, listener) = server::start(Role::All, config).await?;
    let forma = base_url(listener.local_addr()?);
    simulators
        .carrier
        .set_webhook(Some(&format!("{forma}/api/v1/webhooks/sendcloud")));
    tracing::info!(
        shopify = %simulators.shop.base_url(),
        simplyprint = %simulators.farm.base_url(),
        sendcloud = %simulators.carrier.base_url(),
        smtp = %simulators.mail.url(),
        "demo: simulated Shopify, SimplyPrint, Sendcloud and a mail server are running; forma talks to them"
    );

    let driving = simulators_stop.child_token();
    let driver = Driver {
        forma,
        http: crate::infra::tls::http_client()
            .timeout(Duration::from_secs(10))
            .build()?,
        db: ctx.db.clone(),
        admin_password,
        simulators,
        order_numbers: Mutex::new(HashMap::new()),
    };
    tokio::spawn(driver.run(driving.clone()));
    let shutdown = async move {
        server::shutdown_signal().await;
        driving.cancel();
    };
    server::run(ctx, listener, shutdown).await
}

/// The simulated services and the secrets forma and they share.
struct Simulators {
    shop: ShopifyAdminSim,
    farm: SimplyPrintSim,
    carrier: SendcloudSim,
    mail: SmtpSim,
    shopify_webhook_secret: String,
    farm_webhook_token: String,
}

impl Simulators {
    async fn start(stop: &CancellationToken) -> anyhow::Result<Self> {
        let fresh = || uuid::Uuid::new_v4().simple().to_string();
        let sims = Self {
            shop: ShopifyAdminSim::start(&format!("shpat_{}", fresh()), stop.clone())
                .await
                .context("starting the simulated Shopify")?,
            farm: SimplyPrintSim::start(SIMPLYPRINT_COMPANY, &fresh(), stop.clone())
                .await
                .context("starting the simulated SimplyPrint")?,
            carrier: SendcloudSim::start(stop.clone())
                .await
                .context("starting the simulated Sendcloud")?,
            mail: SmtpSim::start(stop.clone())
                .await
                .context("starting the simulated mail server")?,
            shopify_webhook_secret: fresh(),
            farm_webhook_token: fresh(),
        };
        // Ids the simulators give out never repeat those of an earlier run on the same database.
        let first = chrono::Utc::now().timestamp_millis();
        sims.farm.number_from(u64::try_from(first).unwrap_or(1_000));
        sims.carrier.number_from(first);
        Ok(sims)
    }

    /// Points forma's integrations at the simulators; everything else stays the user's.
    fn configure(&self, config: &mut Config) {
        let shopify = &mut config.shopify;
        shopify.webhook_secret = Some(Secret::new(self.shopify_webhook_secret.clone()));
        shopify.shop_domain = Some(SHOP.to_owned());
        shopify.base_url = Some(self.shop.base_url());
        shopify.access_token = Some(Secret::new(self.shop.access_token.clone()));
        let simplyprint = &mut config.simplyprint;
        simplyprint.api_key = Some(Secret::new(self.farm.api_key.clone()));
        simplyprint.company_id = Some(self.farm.company_id.clone());
        simplyprint.base_url = Some(self.farm.base_url());
        simplyprint.webhook_secret = Some(Secret::new(self.farm_webhook_token.clone()));
        simplyprint.reconcile_secs = Some(RECONCILE_SECS);
        config.sendcloud = self.carrier.config();
        self.mail.configure(&mut config.smtp);
        // 0 means unlimited and stays so.
        if config.rate_limit.webhooks != 0 {
            config.rate_limit.webhooks = config.rate_limit.webhooks.max(WEBHOOKS_PER_WINDOW);
        }
    }
}

/// Where the driver reaches forma: the listening address, on loopback when it listens on all.
fn base_url(listening: SocketAddr) -> String {
    let ip = match listening.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listening.port()))
}

/// Plays the shop's customers, the print farm and the carrier. Every failure is logged and the
/// next tick tries again; forma's reconciliations catch up on a webhook that did not arrive.
struct Driver {
    forma: String,
    http: reqwest::Client,
    db: Db,
    admin_password: Option<Secret>,
    simulators: Simulators,
    /// Shopify order id → order number, for the story's log lines.
    order_numbers: Mutex<HashMap<u64, u64>>,
}

impl Driver {
    async fn run(self, stop: CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => {}
            () = self.drive() => {}
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.forma)
    }

    async fn drive(&self) {
        self.wait_until_live().await;
        let first_number = self.set_up_shop().await;
        tokio::join!(
            self.place_orders(first_number),
            self.play_farm(),
            self.play_carrier(),
            self.read_mail()
        );
    }

    async fn wait_until_live(&self) {
        let url = self.url("/health/live");
        loop {
            match self.http.get(&url).send().await {
                Ok(response) if response.status().is_success() => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Maps the demo products (a 409 means an earlier demo did) and returns the next order number.
    async fn set_up_shop(&self) -> u64 {
        let token = match self.sign_in().await {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "demo: cannot sign in as {ADMIN_EMAIL}; no product mappings, orders wait UNMAPPED");
                return FIRST_ORDER_NUMBER;
            }
        };
        for product in &PRODUCTS {
            let body = json!({"sku": product.sku, "productName": product.name, "printFiles": (product.files)()});
            let sent = self
                .http
                .post(self.url("/api/v1/product-mappings"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            match sent.map(|r| r.status().as_u16()) {
                Ok(201) => {
                    tracing::info!(sku = product.sku, files = %body["printFiles"], "demo: mapped a product to its print files");
                }
                Ok(409) => tracing::info!(sku = product.sku, "demo: the product is mapped already"),
                Ok(status) => tracing::warn!(
                    sku = product.sku,
                    status,
                    "demo: forma refused the product mapping"
                ),
                Err(e) => {
                    tracing::warn!(sku = product.sku, error = %e, "demo: the product mapping did not reach forma")
                }
            }
        }
        self.name_recipient(&token).await;
        let existing = self.order_count(&token).await;
        // Revokes the demo's token family: it leaves no live credentials behind.
        if let Err(e) = self
            .http
            .post(self.url("/api/v1/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await
        {
            tracing::debug!(error = %e, "demo: signing out failed");
        }
        FIRST_ORDER_NUMBER + existing
    }

    /// An access token of the admin: with the configured password when it signs in, otherwise
    /// (the password was generated and only logged) through a refresh token made in-process.
    async fn sign_in(&self) -> anyhow::Result<String> {
        let password = self.admin_password.as_ref().map(Secret::expose);
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            let body = json!({"email": ADMIN_EMAIL, "password": password});
            let response = self
                .http
                .post(self.url("/api/v1/auth/token"))
                .json(&body)
                .send()
                .await?;
            if response.status().is_success() {
                tracing::info!(
                    email = ADMIN_EMAIL,
                    "demo: signed in with the configured admin password"
                );
                return access_token(response).await;
            }
            tracing::info!(
                status = response.status().as_u16(),
                "demo: the configured admin password does not sign in"
            );
        }
        let user = users::find_by_email(&self.db, ADMIN_EMAIL)
            .await?
            .filter(|u| u.is_active)
            .with_context(|| format!("{ADMIN_EMAIL} does not exist or is deactivated"))?;
        let (_family, refresh_token) = tokens::start_family(&self.db, &user).await?;
        let response = self
            .http
            .post(self.url("/api/v1/auth/refresh"))
            .json(&json!({"refreshToken": refresh_token}))
            .send()
            .await?;
        tracing::info!(
            email = ADMIN_EMAIL,
            "demo: signed in as the admin from inside the process"
        );
        access_token(response).await
    }

    /// Names [`DEMO_RECIPIENT`] for the tenant's failure reports, unless it names recipients of its
    /// own: a new user sees forma's e-mails without setting anything up.
    async fn name_recipient(&self, token: &str) {
        let url = self.url("/api/v1/notifications/settings");
        let named = async {
            let settings: Value = self
                .http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if settings["recipients"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                return Ok::<_, reqwest::Error>(false);
            }
            let mut settings = settings;
            settings["recipients"] = json!([DEMO_RECIPIENT]);
            self.http
                .put(&url)
                .bearer_auth(token)
                .json(&settings)
                .send()
                .await?
                .error_for_status()?;
            Ok(true)
        };
        match named.await {
            Ok(true) => tracing::info!(
                recipient = DEMO_RECIPIENT,
                "demo: failure reports are e-mailed to the simulated mail server (PUT /api/v1/notifications/settings names others)"
            ),
            Ok(false) => tracing::info!(
                "demo: failure reports are e-mailed to the recipients the notification settings name"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "demo: cannot name a recipient for failure reports; they are not e-mailed")
            }
        }
    }

    async fn order_count(&self, token: &str) -> u64 {
        let page = async {
            let response = self
                .http
                .get(self.url("/api/v1/orders?pageSize=1"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?;
            response.json::<Value>().await
        };
        match page.await {
            Ok(page) => page["total"].as_u64().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "demo: cannot count the orders; numbering from {FIRST_ORDER_NUMBER}");
                0
            }
        }
    }

    /// The shop's customers: a signed `orders/create` every [`ORDER_EVERY`], registered first with
    /// the simulated Admin API so forma can fulfill it there.
    async fn place_orders(&self, first_number: u64) {
        let mut ticks = tokio::time::interval(ORDER_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_id = 0;
        for number in first_number.. {
            ticks.tick().await;
            // Unique across restarts on the same database: Shopify ids never repeat.
            let id = u64::try_from(chrono::Utc::now().timestamp_millis())
                .unwrap_or_default()
                .max(last_id + 1);
            last_id = id;
            self.place_order(id, number).await;
        }
    }

    async fn place_order(&self, id: u64, number: u64) {
        let lines = random_lines(id);
        let quantities: Vec<(u64, u32)> = lines.iter().map(|l| (l.id, l.quantity)).collect();
        self.simulators.shop.add_order(id, &quantities);
        self.order_numbers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, number);
        let summary = lines
            .iter()
            .map(|l| format!("{}× {}", l.quantity, l.sku))
            .collect::<Vec<_>>()
            .join(", ");
        let delivery = Delivery::new(
            "orders/create",
            SHOP,
            &shopify::order_document(id, number, &lines),
        );
        let sent = delivery
            .send(
                &self.http,
                &self.url("/api/v1/webhooks/shopify"),
                self.simulators.shopify_webhook_secret.as_bytes(),
            )
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let outcome = answer["outcome"].as_str().unwrap_or("?");
                tracing::info!(order = %format!("#{number}"), lines = %summary, outcome, "demo: Shopify sent orders/create for a new order");
            }
            Ok(response) => {
                tracing::warn!(order = %format!("#{number}"), status = response.status().as_u16(), "demo: forma refused the order webhook");
            }
            Err(e) => {
                tracing::warn!(order = %format!("#{number}"), error = %e, "demo: the order webhook did not reach forma");
            }
        }
    }

    /// The print farm: starts every queued item, and finishes it after [`PRINT_TIME`].
    async fn play_farm(&self) {
        let farm = &self.simulators.farm;
        let mut started: HashMap<u64, Instant> = HashMap::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for item in farm.items() {
                match item.status.as_str() {
                    "queued" => {
                        started.insert(item.id, Instant::now());
                        self.report(&item, "job.started", "demo: the farm started a print")
                            .await;
                    }
                    "printing" => {
                        let since = *started.entry(item.id).or_insert_with(Instant::now);
                        if since.elapsed() < PRINT_TIME {
                            continue;
                        }
                        started.remove(&item.id);
                        let reached_carrier = !self.simulators.carrier.parcels().is_empty();
                        if reached_carrier && rand::random_bool(FAILURE_RATE) {
                            self.report(&item, "job.failed", "demo: a print failed; POST /api/v1/print-jobs/<job>/retry prints it again").await;
                        } else {
                            self.report(&item, "job.done", "demo: the farm finished a print")
                                .await;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Moves `item` as `event` says and tells forma, as SimplyPrint does.
    async fn report(&self, item: &Item, event: &str, story: &str) {
        let farm = &self.simulators.farm;
        let url = self.url("/api/v1/webhooks/simplyprint");
        match farm
            .report(item.id, event, &url, &self.simulators.farm_webhook_token)
            .await
        {
            Ok(200..=299) => {
                tracing::info!(job = %item.note, file = %item.file_id, farm_id = item.id, "{story}");
            }
            Ok(status) => {
                tracing::warn!(job = %item.note, event, status, "demo: forma refused the farm's webhook");
            }
            Err(e) => {
                tracing::warn!(job = %item.note, event, error = %e, "demo: the farm's webhook did not reach forma")
            }
        }
    }

    /// The carrier: picks up every parcel forma created, then delivers it; and tells the story of
    /// each fulfillment forma made at the simulated Shopify.
    async fn play_carrier(&self) {
        let carrier = &self.simulators.carrier;
        let mut last_move: HashMap<i64, Instant> = HashMap::new();
        let mut fulfillments_told = 0;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for parcel in carrier.parcels() {
                let since = *last_move.entry(parcel.id).or_insert_with(|| {
                    tracing::info!(parcel = parcel.id, order = %parcel.order_number, tracking = %parcel.tracking_number, carrier = %parcel.carrier, "demo: Sendcloud has a new parcel from forma");
                    Instant::now()
                });
                let next = match parcel.status_id {
                    status::READY_TO_SEND if since.elapsed() >= PICKUP_AFTER => Some((
                        status::EN_ROUTE_TO_SORTING_CENTER,
                        "En route to sorting center",
                    )),
                    status::EN_ROUTE_TO_SORTING_CENTER if since.elapsed() >= DELIVERY_AFTER => {
                        Some((status::DELIVERED, "Delivered"))
                    }
                    _ => None,
                };
                let Some((status_id, message)) = next else {
                    continue;
                };
                last_move.insert(parcel.id, Instant::now());
                match carrier.advance(parcel.id, status_id, message).await {
                    Ok(Some(200..=299)) => {
                        tracing::info!(parcel = parcel.id, order = %parcel.order_number, status = message, "demo: the carrier moved a parcel");
                    }
                    Ok(answer) => {
                        tracing::warn!(parcel = parcel.id, answer = ?answer, "demo: forma refused the carrier's webhook");
                    }
                    Err(e) => {
                        tracing::warn!(parcel = parcel.id, error = %format!("{e:#}"), "demo: the carrier's webhook did not reach forma")
                    }
                }
            }
            let fulfillments = self.simulators.shop.fulfillments();
            for fulfillment in fulfillments.iter().skip(fulfillments_told) {
                let number = self
                    .order_numbers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&fulfillment.order_id)
                    .copied();
                tracing::info!(
                    order = %number.map(|n| format!("#{n}")).unwrap_or_else(|| fulfillment.order_id.to_string()),
                    tracking = fulfillment.tracking_number.as_deref().unwrap_or_default(),
                    "demo: Shopify has forma's fulfillment with the tracking number; the order is FULFILLED"
                );
            }
            fulfillments_told = fulfillments.len();
        }
    }

    /// The mail server: tells the story of every e-mail forma sent it.
    async fn read_mail(&self) {
        let mut told = 0;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for mail in self.simulators.mail.mails_from(told) {
                told += 1;
                tracing::info!(
                    to = %mail.to.join(", "),
                    subject = mail.header("Subject").unwrap_or_default(),
                    "demo: forma e-mailed a failure report"
                );
            }
        }
    }
}

/// 1 to 3 different products, 1 or 2 units each; line ids unique under the order's id.
fn random_lines(order_id: u64) -> Vec<Line> {
    let mut products: Vec<&Product> = PRODUCTS.iter().collect();
    products.shuffle(&mut rand::rng());
    let count = rand::random_range(LINES_PER_ORDER);
    products
        .into_iter()
        .take(count)
        .zip(1..)
        .map(|(product, n)| Line {
            id: order_id * 10 + n,
            sku: product.sku.to_owned(),
            name: product.name.to_owned(),
            quantity: rand::random_range(UNITS_PER_LINE),
            price: product.price.to_owned(),
        })
        .collect()
}

async fn access_token(response: reqwest::Response) -> anyhow::Result<String> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["accessToken"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("forma answered {status} without an access token: {body}"))
}
