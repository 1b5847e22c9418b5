//! How the gateway reaches the order service.

use std::time::Instant;

use async_trait::async_trait;

use std::sync::Arc;

use uuid::Uuid;

use super::http::{ClientError, ServiceEndpoints, json_of, json_unless_absent};
use crate::app::{AppContext, Readiness};
use crate::config::Config;
use crate::health::{CheckResult, HealthStatus};
use crate::infra::db::{Conn, Db};
use crate::order::audit::{self, AuditEntry};
use crate::order::internal::{Forgotten, InternalOrder};
use crate::order::inventory::{self, StockJobPlan};
use crate::order::notifications::push;
use crate::order::orders::{self, repository::Tracking};
use crate::print::plan::PrintPlan;

#[async_trait]
pub trait OrderClient: Send + Sync {
    /// Whether the order service is ready to serve.
    async fn health(&self) -> CheckResult;

    /// Appends a security event to the audit log (SPEC §6.5); split, `POST /internal/audit-logs`.
    async fn record_audit(&self, entry: AuditEntry) -> Result<(), ClientError>;

    /// The sessions of user `user_id` of the tenant ended (a new password, deactivated, deleted):
    /// the order service forgets how to
    /// reach them (their browsers' push subscriptions, SPEC §6.5) and says how many it removed.
    /// Split, `DELETE /internal/users/{id}/push-subscriptions?tenantId=`.
    async fn forget_user(&self, tenant_id: Uuid, user_id: Uuid) -> Result<u64, ClientError>;

    /// The tenant's order `id` with what of it should be printed now; `None` if unknown. Split,
    /// `GET /internal/orders/{id}?tenantId=`.
    async fn order(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<InternalOrder>, ClientError>;

    /// The tenant's order with Shopify's id; split, `GET /internal/orders/shopify/{id}?tenantId=`.
    async fn order_by_shopify_id(
        &self,
        tenant_id: Uuid,
        shopify_order_id: &str,
    ) -> Result<Option<InternalOrder>, ClientError>;

    /// Records the parcel's tracking on the order; split, `PATCH /internal/orders/{id}/tracking`.
    async fn update_tracking(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        tracking: &Tracking,
    ) -> Result<Option<InternalOrder>, ClientError>;

    /// Stock job `print_job_id` as the inventory scheduled it (SPEC §6.5b); `None` if unknown.
    /// Split, `GET /internal/stock-jobs/{id}?tenantId=`.
    async fn stock_job(
        &self,
        tenant_id: Uuid,
        print_job_id: Uuid,
    ) -> Result<Option<StockJobPlan>, ClientError>;

    /// What of order `id` should be printed now (the print side plans from it).
    async fn print_plan(
        &self,
        tenant_id: Uuid,
        id: Uuid,
    ) -> Result<Option<PrintPlan>, ClientError> {
        Ok(self.order(tenant_id, id).await?.map(|o| o.print_plan))
    }
}

/// The order service in this process (role `all`, and the print side inside the order role).
pub struct InProcessOrderClient {
    db: Db,
    readiness: Readiness,
}

impl InProcessOrderClient {
    /// The service on `db`; its health is the process's own `readiness`.
    pub fn new(db: Db, readiness: Readiness) -> Self {
        Self { db, readiness }
    }

    /// The service of the process `ctx` describes.
    pub fn of(ctx: &Arc<AppContext>) -> Self {
        Self::new(ctx.db.clone(), Readiness::of(ctx))
    }
}

fn unavailable(error: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable(format!("the order service's database: {error}"))
}

#[async_trait]
impl OrderClient for InProcessOrderClient {
    async fn health(&self) -> CheckResult {
        let started = Instant::now();
        let report = self.readiness.report().await;
        match report.status {
            HealthStatus::Down => {
                CheckResult::down("the order service's own dependencies are down")
            }
            HealthStatus::Ok | HealthStatus::Degraded => CheckResult::ok(started.elapsed()),
        }
        .with_message("in-process")
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), ClientError> {
        // The same refusal the internal endpoint gives, so both implementations behave alike.
        entry.validate().map_err(|problems| ClientError::Rejected {
            status: 400,
            message: problems.join("; "),
        })?;
        audit::record(&self.db, &entry)
            .await
            .map(drop)
            .map_err(|e| ClientError::Unavailable(format!("the audit log cannot be written: {e}")))
    }

    async fn forget_user(&self, tenant_id: Uuid, user_id: Uuid) -> Result<u64, ClientError> {
        push::subscriptions::remove_all_of(&self.db, tenant_id, user_id)
            .await
            .map_err(unavailable)
    }

    async fn order(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<InternalOrder>, ClientError> {
        let record = orders::repository::find(&mut Conn::Pool(&self.db), tenant_id, id)
            .await
            .map_err(unavailable)?;
        Ok(record.map(InternalOrder::from))
    }

    async fn order_by_shopify_id(
        &self,
        tenant_id: Uuid,
        shopify_order_id: &str,
    ) -> Result<Option<InternalOrder>, ClientError> {
        let record = orders::repository::find_by_shopify_id(
            &mut Conn::Pool(&self.db),
            tenant_id,
            shopify_order_id,
        )
        .await
        .map_err(unavailable)?;
        Ok(record.map(InternalOrder::from))
    }

    async fn update_tracking(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        tracking: &Tracking,
    ) -> Result<Option<InternalOrder>, ClientError> {
        let record = orders::repository::set_tracking(&self.db, tenant_id, id, tracking)
            .await
            .map_err(unavailable)?;
        Ok(record.map(InternalOrder::from))
    }

    async fn stock_job(
        &self,
        tenant_id: Uuid,
        print_job_id: Uuid,
    ) -> Result<Option<StockJobPlan>, ClientError> {
        inventory::batches::stock_job(&self.db, tenant_id, print_job_id)
            .await
            .map_err(unavailable)
    }
}

/// Split roles: the order service's instances, over HTTP.
pub struct HttpOrderClient {
    endpoints: ServiceEndpoints,
}

impl HttpOrderClient {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints: ServiceEndpoints::new(instances, config)?,
        })
    }
}

#[async_trait]
impl OrderClient for HttpOrderClient {
    async fn health(&self) -> CheckResult {
        self.endpoints.health().await
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), ClientError> {
        self.endpoints
            .post_internal("/internal/audit-logs", &entry)
            .await
            .map(drop)
    }

    async fn forget_user(&self, tenant_id: Uuid, user_id: Uuid) -> Result<u64, ClientError> {
        let path = format!("/internal/users/{user_id}/push-subscriptions?tenantId={tenant_id}");
        let response = self
            .endpoints
            .call_internal::<()>(reqwest::Method::DELETE, &path, None)
            .await?;
        let forgotten: Forgotten = json_of(response).await?;
        Ok(forgotten.removed)
    }

    async fn order(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<InternalOrder>, ClientError> {
        let path = format!("/internal/orders/{id}?tenantId={tenant_id}");
        json_unless_absent(self.endpoints.get_internal(&path).await).await
    }

    async fn order_by_shopify_id(
        &self,
        tenant_id: Uuid,
        shopify_order_id: &str,
    ) -> Result<Option<InternalOrder>, ClientError> {
        let id: String =
            url::form_urlencoded::byte_serialize(shopify_order_id.as_bytes()).collect();
        let path = format!("/internal/orders/shopify/{id}?tenantId={tenant_id}");
        json_unless_absent(self.endpoints.get_internal(&path).await).await
    }

    async fn update_tracking(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        tracking: &Tracking,
    ) -> Result<Option<InternalOrder>, ClientError> {
        let path = format!("/internal/orders/{id}/tracking?tenantId={tenant_id}");
        let answer = self
            .endpoints
            .call_internal(reqwest::Method::PATCH, &path, Some(tracking))
            .await;
        json_unless_absent(answer).await
    }

    async fn stock_job(
        &self,
        tenant_id: Uuid,
        print_job_id: Uuid,
    ) -> Result<Option<StockJobPlan>, ClientError> {
        let path = format!("/internal/stock-jobs/{print_job_id}?tenantId={tenant_id}");
        json_unless_absent(self.endpoints.get_internal(&path).await).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::config::Role;
    use crate::each_database;
    use crate::infra::db::Db;
    use crate::order::audit::{AuditFilter, actions};
    use crate::testing::{self, TestApp};

    /// What every implementation of `record_audit` must do (SPEC §7: one suite for both).
    async fn record_audit_contract(client: &dyn OrderClient, db: &Db) {
        let tenant = Uuid::new_v4();
        let mut entry = AuditEntry::new(tenant, actions::USER_ROLES_CHANGED);
        entry.actor_id = Some(Uuid::new_v4());
        entry.actor_email = Some("admin@example.com".into());
        entry.target_type = Some("user".into());
        entry.target_id = Some(Uuid::new_v4().to_string());
        entry.ip = Some("2001:db8::1".into());
        entry.user_agent = Some("forma-tests".into());
        entry.details = json!({"from": ["viewer"], "to": ["operator"]});
        client
            .record_audit(entry.clone())
            .await
            .expect("the entry is recorded");

        let (stored, total) = audit::list(db, tenant, &AuditFilter::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(stored[0].entry, entry);

        let refused = client.record_audit(AuditEntry::new(tenant, "")).await;
        assert_eq!(
            refused,
            Err(ClientError::Rejected {
                status: 400,
                message: "action must not be empty".into()
            })
        );
        let (_, total) = audit::list(db, tenant, &AuditFilter::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(total, 1, "a refused entry is not stored");
    }

    /// What every implementation of `forget_user` must do: every subscription of that user in
    /// that tenant goes, nobody else's.
    async fn forget_user_contract(client: &dyn OrderClient, db: &Db) {
        use crate::order::notifications::push::subscriptions::{self, NewSubscription};
        let (tenant, other_tenant) = (Uuid::new_v4(), Uuid::new_v4());
        let (gone, stays) = (Uuid::new_v4(), Uuid::new_v4());
        let subscribe = |tenant_id, user_id, browser: &str| {
            let new = NewSubscription {
                endpoint: format!("https://push.example/{browser}"),
                p256dh: "key".into(),
                auth: "secret".into(),
            };
            async move {
                subscriptions::upsert(db, tenant_id, user_id, &new)
                    .await
                    .unwrap()
                    .0
                    .id
            }
        };
        subscribe(tenant, gone, "laptop").await;
        subscribe(tenant, gone, "phone").await;
        let colleague = subscribe(tenant, stays, "desk").await;
        // The same user id in another tenant is another account.
        let elsewhere = subscribe(other_tenant, gone, "kiosk").await;

        assert_eq!(client.forget_user(tenant, gone).await, Ok(2));
        assert_eq!(
            subscriptions::of_tenant(db, tenant).await.unwrap(),
            [colleague]
        );
        assert_eq!(
            subscriptions::of_tenant(db, other_tenant).await.unwrap(),
            [elsewhere]
        );
        assert_eq!(client.forget_user(tenant, gone).await, Ok(0), "idempotent");
    }

    /// What every implementation of the order reads and the tracking update must do.
    async fn orders_contract(client: &dyn OrderClient, db: &Db) {
        use crate::order::mappings::PrintFile;
        use crate::order::orders::repository::{self, LinePlan, Tracking};
        use crate::order::orders::{LineItemStatus, NewLineItem, NewOrder, OrderStatus};

        let tenant = crate::identity::tenants::find_by_slug(db, "default")
            .await
            .unwrap()
            .unwrap()
            .id;
        let line = NewLineItem {
            shopify_line_item_id: "11".into(),
            sku: "CUBE".into(),
            product_name: "Cube".into(),
            quantity: 4,
            unit_price: "2.50".into(),
        };
        let new = NewOrder {
            tenant_id: tenant,
            shopify_order_id: "820982911946154508".into(),
            shop_domain: Some("example.myshopify.com".into()),
            order_number: "#1001".into(),
            customer_name: "Ada".into(),
            customer_email: Some("ada@example.com".into()),
            shipping_address: None,
            total_price: "10.00".into(),
            currency: "EUR".into(),
            line_items: vec![line.clone()],
            shopify_updated_at: None,
        };
        let plan = LinePlan {
            status: LineItemStatus::Pending,
            mapping_id: Some(Uuid::new_v4()),
            print_files: Some(vec![PrintFile {
                file_id: "f".into(),
                file_name: "cube.gcode".into(),
                quantity: 1,
                units_per_print: 1,
                print_profile: None,
            }]),
        };
        let mut tx = db.begin().await.unwrap();
        let stored = repository::insert(&mut tx, &new, OrderStatus::Processing, &[(line, plan)])
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let id = stored.order.id;

        let read = client.order(tenant, id).await.unwrap().expect("the order");
        assert_eq!(read.order.order_number, "#1001");
        assert_eq!(read.order.line_items.len(), 1);
        assert_eq!(read.print_plan.lines.len(), 1);
        assert_eq!(
            (
                read.print_plan.lines[0].quantity,
                read.print_plan.lines[0].generation
            ),
            (4, 1)
        );
        assert_eq!(
            client.order(Uuid::new_v4(), id).await.unwrap(),
            None,
            "another tenant's"
        );
        assert_eq!(client.order(tenant, Uuid::new_v4()).await.unwrap(), None);
        let by_shopify = client
            .order_by_shopify_id(tenant, "820982911946154508")
            .await
            .unwrap()
            .expect("found by Shopify's id");
        assert_eq!(by_shopify.order.id, id);
        assert_eq!(
            client
                .order_by_shopify_id(tenant, "no such id")
                .await
                .unwrap(),
            None
        );

        // A stock job the inventory scheduled, as the print service reads it to create it.
        let shortfall = inventory::batches::Shortfall {
            tenant_id: tenant,
            mapping_id: Uuid::new_v4(),
            sku: "CUBE".into(),
            print_files: vec![PrintFile {
                file_id: "f-stock".into(),
                file_name: "stock.gcode".into(),
                quantity: 1,
                units_per_print: 1,
                print_profile: Some("0.2mm PLA".into()),
            }],
            batch_size: 1,
            missing: 1,
        };
        let mut tx = db.begin().await.unwrap();
        let jobs = inventory::batches::schedule(&mut tx, &shortfall)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(jobs.len(), 1);
        let stock = client
            .stock_job(tenant, jobs[0])
            .await
            .unwrap()
            .expect("the stock job");
        assert_eq!(
            (
                stock.print_job_id,
                stock.file_id.as_str(),
                stock.file_name.as_str(),
                stock.print_profile.as_deref()
            ),
            (jobs[0], "f-stock", "stock.gcode", Some("0.2mm PLA"))
        );
        assert_eq!(
            client.stock_job(Uuid::new_v4(), jobs[0]).await.unwrap(),
            None
        );
        assert_eq!(
            client.stock_job(tenant, Uuid::new_v4()).await.unwrap(),
            None
        );

        let tracking = Tracking {
            tracking_number: Some("3SABCD0123456789".into()),
            tracking_url: Some("https://tracking.example/3SABCD0123456789".into()),
            carrier: Some("postnl".into()),
        };
        let tracked = client
            .update_tracking(tenant, id, &tracking)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            tracked.order.tracking_number.as_deref(),
            Some("3SABCD0123456789")
        );
        assert_eq!(tracked.order.carrier.as_deref(), Some("postnl"));
        let read = client.order(tenant, id).await.unwrap().unwrap();
        assert_eq!(read.order.tracking_url, tracking.tracking_url);
        assert_eq!(
            client
                .update_tracking(Uuid::new_v4(), id, &tracking)
                .await
                .unwrap(),
            None
        );
    }

    each_database! {
        async fn the_in_process_client_keeps_the_orders_contract(backend: Backend) {
            let app = TestApp::spawn(Role::All, backend).await;
            orders_contract(&InProcessOrderClient::of(&app.ctx), &app.ctx.db).await;
        }
    }

    each_database! {
        async fn the_http_client_keeps_the_orders_contract(backend: Backend) {
            let order = TestApp::spawn(Role::Order, backend).await;
            let client = http_client(&order, testing::INTERNAL_KEY);
            orders_contract(&client, &order.ctx.db).await;
        }
    }

    each_database! {
        async fn the_in_process_client_keeps_the_forget_user_contract(backend: Backend) {
            let app = TestApp::spawn(Role::All, backend).await;
            forget_user_contract(&InProcessOrderClient::of(&app.ctx), &app.ctx.db).await;
        }
    }

    each_database! {
        async fn the_http_client_keeps_the_forget_user_contract(backend: Backend) {
            let order = TestApp::spawn(Role::Order, backend).await;
            let client = http_client(&order, testing::INTERNAL_KEY);
            forget_user_contract(&client, &order.ctx.db).await;
        }
    }

    fn http_client(order: &TestApp, key: &str) -> HttpOrderClient {
        let mut config = testing::config(&order.database.url);
        config.internal.key = Some(crate::config::Secret::new(key));
        HttpOrderClient::new(vec![order.url("")], &config).unwrap()
    }

    each_database! {
        async fn the_in_process_client_keeps_the_record_audit_contract(backend: Backend) {
            let app = TestApp::spawn(Role::All, backend).await;
            let client = InProcessOrderClient::of(&app.ctx);
            record_audit_contract(&client, &app.ctx.db).await;
        }
    }

    each_database! {
        async fn the_http_client_keeps_the_record_audit_contract(backend: Backend) {
            let order = TestApp::spawn(Role::Order, backend).await;
            let client = http_client(&order, testing::INTERNAL_KEY);
            record_audit_contract(&client, &order.ctx.db).await;
        }
    }

    #[tokio::test]
    async fn the_http_client_with_a_wrong_key_is_rejected_with_401() {
        let order = TestApp::spawn(Role::Order, crate::infra::db::Backend::Sqlite).await;
        let client = http_client(&order, "a-wrong-internal-key");
        let result = client
            .record_audit(AuditEntry::new(Uuid::new_v4(), actions::LOGOUT))
            .await;
        assert_eq!(
            result,
            Err(ClientError::Rejected {
                status: 401,
                message: "Invalid internal key".into()
            })
        );
    }

    #[tokio::test]
    async fn the_http_client_tries_the_next_instance_and_reports_when_none_answers() {
        let order = TestApp::spawn(Role::Order, crate::infra::db::Backend::Sqlite).await;
        let dead = dead_instance().await;
        let mut config = testing::config(&order.database.url);
        config.internal.key = Some(crate::config::Secret::new(testing::INTERNAL_KEY));
        let entry = AuditEntry::new(Uuid::new_v4(), actions::LOGOUT);

        let failover = HttpOrderClient::new(vec![dead.clone(), order.url("")], &config).unwrap();
        failover
            .record_audit(entry.clone())
            .await
            .expect("the live instance records it");

        let nobody = HttpOrderClient::new(vec![dead.clone()], &config).unwrap();
        match nobody.record_audit(entry).await {
            Err(ClientError::Unavailable(message)) => {
                assert!(message.contains("connection refused"), "{message}");
                assert!(
                    !message.contains(testing::INTERNAL_KEY),
                    "the key never leaks"
                );
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_http_client_forwards_the_request_id_and_the_internal_key() {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::post;
        use std::sync::{Arc, Mutex};

        // A stand-in order instance that remembers what it was sent.
        let seen: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
        let remember = seen.clone();
        let fake = axum::Router::new().route(
            "/internal/audit-logs",
            post(move |headers: HeaderMap| async move {
                *remember.lock().unwrap() = Some(headers);
                StatusCode::CREATED
            }),
        );
        let order_url = serve(fake).await;

        let mut config = crate::config::Config::default();
        config.internal.key = Some(crate::config::Secret::new(testing::INTERNAL_KEY));
        let client = Arc::new(HttpOrderClient::new(vec![order_url], &config).unwrap());
        // A handler of ours, inside the conventions every role serves with, makes the call.
        let front = axum::Router::new().route(
            "/call",
            post(move || async move {
                let entry = AuditEntry::new(Uuid::new_v4(), actions::LOGOUT);
                client
                    .record_audit(entry)
                    .await
                    .map(|()| "ok")
                    .map_err(|e| e.to_string())
            }),
        );
        let front_url = serve(crate::http::stack(front, &config)).await;
        let response = testing::client()
            .post(format!("{front_url}/call"))
            .header("x-request-id", "req-from-the-browser-42")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);

        let headers = seen
            .lock()
            .unwrap()
            .take()
            .expect("the fake instance was called");
        assert_eq!(headers["x-request-id"], "req-from-the-browser-42");
        assert_eq!(headers["x-internal-key"], testing::INTERNAL_KEY);
    }

    async fn serve(app: impl crate::server::Application) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// The URL of a loopback port nothing listens on.
    async fn dead_instance() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }
}
