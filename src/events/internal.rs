//! Internal events (SPEC §8.2): typed, in-process notifications between the modules of the order
//! role, replacing the old EventEmitter2 layer. They feed Socket.IO, web push, the event log and
//! notifications; the ones other services care about cross to the bus through [`super::bridge`].
//!
//! Payloads are deliberately small (ids, tenant, the change): subscribers that need the whole
//! entity read it from the database, as the old subscribers did, so an event never carries a stale
//! copy. Statuses are the owning module's status strings until those modules define their enums.

use serde::Serialize;
use uuid::Uuid;

mod dispatcher;

pub use dispatcher::Dispatcher;

/// The internal event names, as in the seed catalog ("Internal Events (EventEmitter2)"). They
/// differ from the bus names in places (`printjob.completed` vs `print-job.completed`); the one
/// translation table is [`super::bridge::NAMES`].
pub mod names {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_STATUS_CHANGED: &str = "order.status_changed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_READY_FOR_FULFILLMENT: &str = "order.ready-for-fulfillment";
    pub const ORDER_FULFILLED: &str = "order.fulfilled";
    pub const ORDER_FAILED: &str = "order.failed";
    pub const ORDER_LINES_UNMAPPED: &str = "order.lines-unmapped";
    pub const PRINT_JOB_CREATED: &str = "printjob.created";
    pub const PRINT_JOB_STATUS_CHANGED: &str = "printjob.status-changed";
    pub const PRINT_JOB_COMPLETED: &str = "printjob.completed";
    pub const PRINT_JOB_FAILED: &str = "printjob.failed";
    pub const PRINT_JOB_CANCELLED: &str = "printjob.cancelled";
    pub const PRINT_JOB_RETRY_REQUESTED: &str = "printjob.retry-requested";
    pub const SHIPMENT_CREATED: &str = "shipment.created";
    /// Sendcloud's status updates kept the old system's name (`SENDCLOUD_WEBHOOK_EVENTS`); on the
    /// bus this is `shipment.status-changed`.
    pub const SHIPMENT_STATUS_CHANGED: &str = "sendcloud.shipment.status_changed";
    pub const FULFILLMENT_CREATED: &str = "fulfillment.created";
    pub const FULFILLMENT_FAILED: &str = "fulfillment.failed";
    pub const FULFILLMENT_RETRYING: &str = "fulfillment.retrying";

    /// Subscribing to this name receives every event (Socket.IO, the event log).
    pub const ANY: &str = "*";

    pub const ALL: [&str; 18] = [
        ORDER_CREATED,
        ORDER_STATUS_CHANGED,
        ORDER_CANCELLED,
        ORDER_READY_FOR_FULFILLMENT,
        ORDER_FULFILLED,
        ORDER_FAILED,
        ORDER_LINES_UNMAPPED,
        PRINT_JOB_CREATED,
        PRINT_JOB_STATUS_CHANGED,
        PRINT_JOB_COMPLETED,
        PRINT_JOB_FAILED,
        PRINT_JOB_CANCELLED,
        PRINT_JOB_RETRY_REQUESTED,
        SHIPMENT_CREATED,
        SHIPMENT_STATUS_CHANGED,
        FULFILLMENT_CREATED,
        FULFILLMENT_FAILED,
        FULFILLMENT_RETRYING,
    ];
}

/// One internal event. Serializes to its payload alone (camelCase), e.g. as the event log's
/// details; the name comes from [`InternalEvent::name`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum InternalEvent {
    OrderCreated(OrderCreated),
    OrderStatusChanged(StatusChanged),
    OrderCancelled(OrderCancelled),
    OrderReadyForFulfillment(OrderRef),
    OrderFulfilled(OrderRef),
    OrderFailed(OrderFailed),
    OrderLinesUnmapped(OrderLinesUnmapped),
    PrintJobCreated(PrintJobRef),
    PrintJobStatusChanged(PrintJobStatusChanged),
    PrintJobCompleted(PrintJobRef),
    PrintJobFailed(PrintJobFailed),
    PrintJobCancelled(PrintJobRef),
    PrintJobRetryRequested(PrintJobRef),
    ShipmentCreated(ShipmentCreated),
    ShipmentStatusChanged(ShipmentStatusChanged),
    FulfillmentCreated(OrderRef),
    FulfillmentFailed(FulfillmentFailed),
    FulfillmentRetrying(FulfillmentRetrying),
}

impl InternalEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::OrderCreated(_) => names::ORDER_CREATED,
            Self::OrderStatusChanged(_) => names::ORDER_STATUS_CHANGED,
            Self::OrderCancelled(_) => names::ORDER_CANCELLED,
            Self::OrderReadyForFulfillment(_) => names::ORDER_READY_FOR_FULFILLMENT,
            Self::OrderFulfilled(_) => names::ORDER_FULFILLED,
            Self::OrderFailed(_) => names::ORDER_FAILED,
            Self::OrderLinesUnmapped(_) => names::ORDER_LINES_UNMAPPED,
            Self::PrintJobCreated(_) => names::PRINT_JOB_CREATED,
            Self::PrintJobStatusChanged(_) => names::PRINT_JOB_STATUS_CHANGED,
            Self::PrintJobCompleted(_) => names::PRINT_JOB_COMPLETED,
            Self::PrintJobFailed(_) => names::PRINT_JOB_FAILED,
            Self::PrintJobCancelled(_) => names::PRINT_JOB_CANCELLED,
            Self::PrintJobRetryRequested(_) => names::PRINT_JOB_RETRY_REQUESTED,
            Self::ShipmentCreated(_) => names::SHIPMENT_CREATED,
            Self::ShipmentStatusChanged(_) => names::SHIPMENT_STATUS_CHANGED,
            Self::FulfillmentCreated(_) => names::FULFILLMENT_CREATED,
            Self::FulfillmentFailed(_) => names::FULFILLMENT_FAILED,
            Self::FulfillmentRetrying(_) => names::FULFILLMENT_RETRYING,
        }
    }

    /// Every event belongs to one tenant: Socket.IO sends it to that tenant's room only.
    pub fn tenant_id(&self) -> Uuid {
        self.order().tenant_id
    }

    /// Every event concerns one order (the event log is filtered by it).
    pub fn order_id(&self) -> Uuid {
        self.order().order_id
    }

    fn order(&self) -> OrderRef {
        let (tenant_id, order_id) = match self {
            Self::OrderCreated(e) => (e.tenant_id, e.order_id),
            Self::OrderStatusChanged(e) => (e.tenant_id, e.order_id),
            Self::OrderCancelled(e) => (e.tenant_id, e.order_id),
            Self::OrderReadyForFulfillment(e)
            | Self::OrderFulfilled(e)
            | Self::FulfillmentCreated(e) => (e.tenant_id, e.order_id),
            Self::OrderFailed(e) => (e.tenant_id, e.order_id),
            Self::OrderLinesUnmapped(e) => (e.tenant_id, e.order_id),
            Self::PrintJobCreated(e)
            | Self::PrintJobCompleted(e)
            | Self::PrintJobCancelled(e)
            | Self::PrintJobRetryRequested(e) => (e.tenant_id, e.order_id),
            Self::PrintJobStatusChanged(e) => (e.job.tenant_id, e.job.order_id),
            Self::PrintJobFailed(e) => (e.job.tenant_id, e.job.order_id),
            Self::ShipmentCreated(e) => (e.tenant_id, e.order_id),
            Self::ShipmentStatusChanged(e) => (e.tenant_id, e.order_id),
            Self::FulfillmentFailed(e) => (e.tenant_id, e.order_id),
            Self::FulfillmentRetrying(e) => (e.tenant_id, e.order_id),
        };
        OrderRef {
            tenant_id,
            order_id,
        }
    }
}

/// An event about an order that needs nothing but the order (ready for fulfillment, fulfilled,
/// fulfillment created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRef {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
}

/// A new order with its line items (what the print service needs to plan print jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub line_items: Vec<OrderLineItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItem {
    pub line_item_id: Uuid,
    pub product_sku: String,
    pub quantity: u32,
}

/// An order moved from one status to another (the state machine's transitions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanged {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub previous_status: String,
    pub new_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderFailed {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub reason: String,
}

/// Lines of an order wait for a product mapping (a new order, or Shopify changed its lines): the
/// SKUs they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLinesUnmapped {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub skus: Vec<String>,
}

/// Identifies a print job and what it prints for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobRef {
    pub tenant_id: Uuid,
    pub print_job_id: Uuid,
    pub order_id: Uuid,
    pub line_item_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobStatusChanged {
    #[serde(flatten)]
    pub job: PrintJobRef,
    pub previous_status: String,
    pub new_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobFailed {
    #[serde(flatten)]
    pub job: PrintJobRef,
    pub error_message: String,
}

/// A parcel exists; tracking is `None` until the carrier assigns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentCreated {
    pub tenant_id: Uuid,
    pub shipment_id: Uuid,
    pub order_id: Uuid,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub carrier: Option<String>,
}

/// Sendcloud reported a new parcel status (webhook or reconciliation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentStatusChanged {
    pub tenant_id: Uuid,
    pub shipment_id: Uuid,
    pub order_id: Uuid,
    pub previous_status: String,
    pub new_status: String,
}

/// Creating the Shopify fulfillment failed; the call went to the retry queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentFailed {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub error_message: String,
}

/// The retry queue is trying the Shopify fulfillment again; `attempt` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentRetrying {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub attempt: u32,
}

#[cfg(test)]
#[path = "internal_tests.rs"]
pub(super) mod tests;
