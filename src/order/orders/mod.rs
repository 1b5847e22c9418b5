//! Orders and their line items (SPEC §6.1): the model, the one state machine ([`state`]), the
//! repository, ingestion from Shopify and the API.

pub mod cancellation;
pub mod ingest;
pub mod replanning;
pub mod repository;
pub mod retry;
pub mod routes;
#[cfg(test)]
mod routes_tests;
pub mod state;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::order::mappings::PrintFile;
pub use state::{LineItemStatus, OrderStatus, PrintJobStatus};

/// Where the parcel goes (Shopify's `shipping_address`, camelCase).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddress {
    pub name: Option<String>,
    pub company: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub province_code: Option<String>,
    pub zip: Option<String>,
    pub country: Option<String>,
    pub country_code: Option<String>,
    pub phone: Option<String>,
}

/// A line of an order (SPEC §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub id: Uuid,
    pub shopify_line_item_id: String,
    pub sku: String,
    pub product_name: String,
    /// Units ordered, as Shopify has them now (its `current_quantity`): 0 once an order edit
    /// removed the line, which is then CANCELLED.
    pub quantity: u32,
    /// Decimal string, e.g. `"12.50"`.
    pub unit_price: String,
    pub status: LineItemStatus,
    pub product_mapping_id: Option<Uuid>,
}

/// An order (SPEC §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub shopify_order_id: String,
    /// The Shopify shop the order came from; it is fulfilled through that shop. Absent for orders
    /// stored before forma kept it.
    #[schema(example = "example.myshopify.com")]
    pub shop_domain: Option<String>,
    pub order_number: String,
    pub customer_name: String,
    pub customer_email: Option<String>,
    pub shipping_address: Option<ShippingAddress>,
    pub status: OrderStatus,
    /// Decimal string, e.g. `"49.90"`.
    pub total_price: String,
    pub currency: String,
    pub line_items: Vec<LineItem>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub carrier: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A line as the order service keeps it: the public line plus how it is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRecord {
    pub item: LineItem,
    /// The mapping's print files when the line was planned; `None` while unmapped.
    pub print_files: Option<Vec<PrintFile>>,
    /// Which plan of the line its current print jobs belong to.
    pub plan_generation: u32,
    /// Units served from stock (SPEC §6.5b): only the rest is printed.
    pub stock_units: u32,
}

impl LineRecord {
    /// Whether Shopify removed the line from the order (an order edit left it no units). It is
    /// kept, CANCELLED with quantity 0 as Shopify keeps it, and counts for nothing in its order's
    /// status: the rest of the order ships without it.
    pub fn is_removed(&self) -> bool {
        self.item.quantity == 0
    }
}

/// An order as the order service keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub order: Order,
    pub lines: Vec<LineRecord>,
    /// The version of the job snapshot the status was last derived from.
    pub jobs_version: i64,
}

impl OrderRecord {
    /// The public order, its lines included.
    pub fn into_order(self) -> Order {
        let mut order = self.order;
        order.line_items = self.lines.into_iter().map(|l| l.item).collect();
        order
    }
}

/// A new order's line, as read from Shopify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLineItem {
    pub shopify_line_item_id: String,
    pub sku: String,
    pub product_name: String,
    pub quantity: u32,
    pub unit_price: String,
}

/// A new order, as read from Shopify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub tenant_id: Uuid,
    pub shopify_order_id: String,
    /// The shop the order came from (`example.myshopify.com`).
    pub shop_domain: Option<String>,
    pub order_number: String,
    pub customer_name: String,
    pub customer_email: Option<String>,
    pub shipping_address: Option<ShippingAddress>,
    pub total_price: String,
    pub currency: String,
    pub line_items: Vec<NewLineItem>,
    /// When the order last changed in Shopify, as the document says: an older document is not
    /// applied over a newer one.
    pub shopify_updated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
impl NewOrder {
    /// Order `#A1` of `tenant_id`, with no lines: for a test that stores an order directly.
    pub fn bare(tenant_id: Uuid) -> Self {
        Self {
            tenant_id,
            shopify_order_id: "acme-1".into(),
            shop_domain: None,
            order_number: "#A1".into(),
            customer_name: "Acme".into(),
            customer_email: None,
            shipping_address: None,
            total_price: "1.00".into(),
            currency: "EUR".into(),
            line_items: vec![],
            shopify_updated_at: None,
        }
    }
}

/// An order with what other services hold about it (`GET /api/v1/orders/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: Order,
    pub print_jobs: Vec<crate::print::jobs::PrintJob>,
    /// The order's shipment, once the shipping service has one.
    pub shipment: Option<crate::shipping::shipments::Shipment>,
}
