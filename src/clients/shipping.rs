//! How the order service reaches the shipping service (SPEC §1, §7): in-process while shipping
//! lives in the order role, over `/internal/shipments` once it runs apart. Both implementations
//! pass one contract suite (below).

use async_trait::async_trait;
use uuid::Uuid;

use super::http::{ClientError, ServiceEndpoints, json_of};
use crate::clients::print::not_waiting;
use crate::config::Config;
use crate::http::ApiError;
use crate::order::retry_queue::RetryEntry;
use crate::shipping::shipments::{Shipment, ShipmentRequest};
use crate::shipping::{CancelError, ShippingCore, retries};

#[async_trait]
pub trait ShippingClient: Send + Sync {
    /// The order's shipment, asked for now if it has none (idempotent: one per order). An
    /// incomplete request (no address, no items) is refused (400).
    async fn request_shipment(&self, request: &ShipmentRequest) -> Result<Shipment, ClientError>;

    /// Cancels the order's shipment (idempotent); 404 when it has none, 409 when its parcel can
    /// no longer be cancelled. A parcel Sendcloud cannot be asked about now is cancelled later;
    /// the shipment comes back as it is until then.
    async fn cancel_shipment(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Shipment, ClientError>;

    /// The order's shipments.
    async fn shipments_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<Shipment>, ClientError>;

    /// The tenant's shipments whose parcel Sendcloud did not create, waiting to be tried again
    /// (the retry queue).
    async fn failed_parcels(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError>;

    /// Tries a failed parcel again now; 404 when the shipment has none waiting.
    async fn parcel_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError>;

    /// Stops trying the parcel (the shipment becomes EXCEPTION); 404 when none waits.
    async fn give_up_parcel(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError>;
}

/// Shipping in this process.
pub struct InProcessShippingClient {
    core: ShippingCore,
}

impl InProcessShippingClient {
    pub fn new(core: ShippingCore) -> Self {
        Self { core }
    }
}

fn unavailable(error: impl std::fmt::Display) -> ClientError {
    ClientError::Unavailable(format!("the shipping service's database: {error}"))
}

#[async_trait]
impl ShippingClient for InProcessShippingClient {
    async fn request_shipment(&self, request: &ShipmentRequest) -> Result<Shipment, ClientError> {
        let problems = request.problems();
        if !problems.is_empty() {
            return Err(ClientError::refused(ApiError::validation(problems)));
        }
        self.core
            .request(request)
            .await
            .map(|(shipment, _)| shipment)
            .map_err(unavailable)
    }

    async fn cancel_shipment(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Shipment, ClientError> {
        match self.core.cancel(tenant_id, order_id).await {
            Ok(Some(shipment)) => Ok(shipment),
            Ok(None) => Err(ClientError::refused(ApiError::not_found(
                "Shipment not found",
            ))),
            Err(CancelError::Sendcloud(message)) => {
                Err(ClientError::refused(ApiError::conflict(message)))
            }
            Err(CancelError::Db(e)) => Err(unavailable(e)),
        }
    }

    async fn shipments_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<Shipment>, ClientError> {
        self.core
            .of_order(tenant_id, order_id)
            .await
            .map_err(unavailable)
    }

    async fn failed_parcels(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError> {
        retries::entries(&self.core, tenant_id)
            .await
            .map_err(unavailable)
    }

    async fn parcel_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        match retries::send_now(&self.core, tenant_id, id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_waiting()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn give_up_parcel(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        match retries::give_up(&self.core, tenant_id, id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_waiting()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Shipping as a service of its own, over its internal API.
pub struct HttpShippingClient {
    endpoints: ServiceEndpoints,
}

impl HttpShippingClient {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints: ServiceEndpoints::new(instances, config)?,
        })
    }
}

#[async_trait]
impl ShippingClient for HttpShippingClient {
    async fn request_shipment(&self, request: &ShipmentRequest) -> Result<Shipment, ClientError> {
        json_of(
            self.endpoints
                .post_internal("/internal/shipments", request)
                .await?,
        )
        .await
    }

    async fn cancel_shipment(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Shipment, ClientError> {
        let path = format!("/internal/shipments/{order_id}?tenantId={tenant_id}");
        let response = self
            .endpoints
            .call_internal::<()>(reqwest::Method::DELETE, &path, None)
            .await?;
        json_of(response).await
    }

    async fn shipments_of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<Shipment>, ClientError> {
        let path = format!("/internal/shipments?tenantId={tenant_id}&orderId={order_id}");
        json_of(self.endpoints.get_internal(&path).await?).await
    }

    async fn failed_parcels(&self, tenant_id: Uuid) -> Result<Vec<RetryEntry>, ClientError> {
        let path = format!("/internal/shipments/failed-parcels?tenantId={tenant_id}");
        json_of(self.endpoints.get_internal(&path).await?).await
    }

    async fn parcel_again(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        let path = format!("/internal/shipments/parcels/{id}/send-again?tenantId={tenant_id}");
        self.endpoints
            .call_internal::<()>(reqwest::Method::POST, &path, None)
            .await
            .map(drop)
    }

    async fn give_up_parcel(&self, tenant_id: Uuid, id: Uuid) -> Result<(), ClientError> {
        let path = format!("/internal/shipments/parcels/{id}/give-up?tenantId={tenant_id}");
        self.endpoints
            .call_internal::<()>(reqwest::Method::POST, &path, None)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Role;
    use crate::shipping::shipments::{Recipient, ShipmentItem, ShipmentStatus};
    use crate::testing::{self, TestApp};

    fn request(tenant_id: Uuid, order_id: Uuid) -> ShipmentRequest {
        ShipmentRequest {
            tenant_id,
            order_id,
            order_number: "#1001".into(),
            recipient: Recipient {
                name: "Ada Lovelace".into(),
                company: None,
                email: Some("ada@example.com".into()),
                phone: None,
                address1: "Keizersgracht 1".into(),
                address2: None,
                city: "Amsterdam".into(),
                postal_code: "1015 CJ".into(),
                country_code: "NL".into(),
            },
            items: vec![ShipmentItem {
                sku: "CUBE".into(),
                description: "Cube".into(),
                quantity: 2,
                unit_price: "5.00".into(),
            }],
        }
    }

    /// What every implementation of `ShippingClient` must do (SPEC §7: one suite for both).
    /// Sendcloud is not connected here: shipments wait `PENDING`.
    async fn contract(client: &dyn ShippingClient) {
        let (tenant, order) = (Uuid::new_v4(), Uuid::new_v4());
        let shipment = client
            .request_shipment(&request(tenant, order))
            .await
            .expect("a shipment is asked for");
        assert_eq!(
            (
                shipment.order_id,
                shipment.status,
                shipment.sendcloud_parcel_id
            ),
            (order, ShipmentStatus::Pending, None)
        );
        let again = client
            .request_shipment(&request(tenant, order))
            .await
            .unwrap();
        assert_eq!(again.id, shipment.id, "one shipment per order");
        assert_eq!(
            client.shipments_of_order(tenant, order).await.unwrap(),
            vec![shipment.clone()]
        );
        assert!(
            client
                .shipments_of_order(Uuid::new_v4(), order)
                .await
                .unwrap()
                .is_empty(),
            "tenant-scoped"
        );

        let mut incomplete = request(tenant, Uuid::new_v4());
        incomplete.recipient.address1 = String::new();
        incomplete.items.clear();
        let refused = client.request_shipment(&incomplete).await.unwrap_err();
        assert!(
            matches!(&refused, ClientError::Rejected { status: 400, message } if message.contains("address1") && message.contains("items")),
            "{refused:?}"
        );

        let cancelled = client.cancel_shipment(tenant, order).await.unwrap();
        assert_eq!(
            (cancelled.id, cancelled.status),
            (shipment.id, ShipmentStatus::Cancelled)
        );
        let twice = client.cancel_shipment(tenant, order).await.unwrap();
        assert_eq!(twice.status, ShipmentStatus::Cancelled, "idempotent");
        let unknown = client
            .cancel_shipment(tenant, Uuid::new_v4())
            .await
            .unwrap_err();
        assert_eq!(
            unknown,
            ClientError::Rejected {
                status: 404,
                message: "Shipment not found".into()
            }
        );
        assert!(
            matches!(
                client.cancel_shipment(Uuid::new_v4(), order).await,
                Err(ClientError::Rejected { status: 404, .. })
            ),
            "another tenant's shipment: 404"
        );

        // The retry queue: a shipment whose parcel never failed is not in it.
        assert!(client.failed_parcels(tenant).await.unwrap().is_empty());
        for refused in [
            client.parcel_again(tenant, shipment.id).await,
            client.give_up_parcel(tenant, shipment.id).await,
        ] {
            assert_eq!(refused, Err(not_waiting()));
        }
    }

    #[tokio::test]
    async fn the_in_process_client_keeps_the_contract() {
        let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
        let core = ShippingCore::detached(app.ctx.db.clone());
        contract(&InProcessShippingClient::new(core)).await;
    }

    #[tokio::test]
    async fn the_http_client_keeps_the_contract() {
        let order = TestApp::spawn(Role::Order, crate::infra::db::Backend::Postgres).await;
        let config = testing::config(&order.database.url);
        let client = HttpShippingClient::new(vec![order.url("")], &config).unwrap();
        contract(&client).await;
        // The internal API wants the key.
        let response = testing::client()
            .post(order.url("/internal/shipments"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
}
