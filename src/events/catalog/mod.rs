//! The cross-service event catalog (SPEC §8.1).
//!
//! The wire format is the old system's (`seeds/002_5ca7b485915c61ab.txt`, "Cross-Service Events"):
//! one flat camelCase JSON object per event, the envelope fields next to the event's own fields, the
//! variant chosen by `eventType`. Services still written against that catalog must be able to read
//! what we publish and vice versa, so field names, `null`s and timestamp formatting are kept exactly.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The event type names, which are also the bus queue names. Code refers to these constants, never
/// to the literals, so that a renamed queue cannot be missed at one call site.
pub mod names {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_READY_FOR_FULFILLMENT: &str = "order.ready-for-fulfillment";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const PRINT_JOB_COMPLETED: &str = "print-job.completed";
    pub const PRINT_JOB_FAILED: &str = "print-job.failed";
    pub const PRINT_JOB_STATUS_CHANGED: &str = "print-job.status-changed";
    pub const PRINT_JOB_CANCELLED: &str = "print-job.cancelled";
    pub const SHIPMENT_CREATED: &str = "shipment.created";
    pub const SHIPMENT_STATUS_CHANGED: &str = "shipment.status-changed";
    pub const GRIDFLOCK_MAPPING_READY: &str = "gridflock.mapping-ready";
    pub const GRIDFLOCK_PIPELINE_FAILED: &str = "gridflock.pipeline-failed";
    pub const STOCK_REPLENISHMENT_SCHEDULED: &str = "inventory.stock-replenishment-scheduled";
    pub const STOCK_BATCH_COMPLETED: &str = "inventory.stock-batch-completed";
    pub const INTEGRATION_SIMPLYPRINT_CHANGED: &str = "integration.simplyprint-changed";
    pub const INTEGRATION_SENDCLOUD_CHANGED: &str = "integration.sendcloud-changed";

    /// Every event type, for declaring one queue per type (and per subscribing service) up front.
    pub const ALL: [&str; 15] = [
        ORDER_CREATED,
        ORDER_READY_FOR_FULFILLMENT,
        ORDER_CANCELLED,
        PRINT_JOB_COMPLETED,
        PRINT_JOB_FAILED,
        PRINT_JOB_STATUS_CHANGED,
        PRINT_JOB_CANCELLED,
        SHIPMENT_CREATED,
        SHIPMENT_STATUS_CHANGED,
        GRIDFLOCK_MAPPING_READY,
        GRIDFLOCK_PIPELINE_FAILED,
        STOCK_REPLENISHMENT_SCHEDULED,
        STOCK_BATCH_COMPLETED,
        INTEGRATION_SIMPLYPRINT_CHANGED,
        INTEGRATION_SENDCLOUD_CHANGED,
    ];
}

/// Timestamps on the wire always look like JavaScript's `toISOString()`
/// (`2026-11-23T10:15:30.000Z`): chrono's default drops a zero fraction and writes up to nine
/// digits, which consumers comparing or sorting the strings would trip over.
mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Any RFC 3339 timestamp is accepted (other offsets, other precisions): be liberal in what is
    /// read, strict in what is written.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(deserializer)
    }
}

/// The fields every event carries. Readable from any event document, including one whose type this
/// build does not know, so that deduplication and dead-letter inspection never depend on the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// UUID v4; handlers deduplicate on it because delivery is at-least-once.
    pub event_id: Uuid,
    pub event_type: String,
    /// The publishing service (e.g. `order-service`), for tracing a flow across services.
    pub source: String,
    /// A string in the catalog, not a UUID, so it is kept as an opaque string.
    pub tenant_id: String,
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// One event as it travels on the bus: the envelope and the payload serialize side by side into one
/// flat JSON object, and `eventType` (written by the payload's tag) selects the payload on reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: Uuid,
    pub source: String,
    pub tenant_id: String,
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(flatten)]
    pub payload: EventPayload,
}

impl Event {
    /// A fresh event: a new v4 id (SPEC §8.1) and the current time, truncated to milliseconds so
    /// the value read back from the wire equals the value published.
    pub fn new(source: &str, tenant_id: impl Into<String>, payload: EventPayload) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            source: source.to_owned(),
            tenant_id: tenant_id.into(),
            timestamp: Utc::now().trunc_subsecs(3),
            correlation_id: None,
            payload,
        }
    }

    /// The event's tenant and the entity id `id` it names, both as UUIDs; `None` (logged) when
    /// either is not one, which a handler acknowledges and ignores: retrying cannot fix it.
    pub fn tenant_and(&self, id: &str) -> Option<(Uuid, Uuid)> {
        let parsed = Uuid::parse_str(&self.tenant_id)
            .ok()
            .zip(Uuid::parse_str(id).ok());
        if parsed.is_none() {
            tracing::warn!(event_id = %self.event_id, event_type = self.event_type(), "an event names a non-UUID tenant or entity; ignored");
        }
        parsed
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    pub fn envelope(&self) -> Envelope {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type().to_owned(),
            source: self.source.clone(),
            tenant_id: self.tenant_id.clone(),
            timestamp: self.timestamp,
            correlation_id: self.correlation_id.clone(),
        }
    }
}

/// The event-specific part of an event, tagged by `eventType`. The renames repeat the constants in
/// [`names`] because serde attributes only take literals; the tests check that they agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum EventPayload {
    #[serde(rename = "order.created")]
    OrderCreated(OrderCreated),
    #[serde(rename = "order.ready-for-fulfillment")]
    OrderReadyForFulfillment(OrderReadyForFulfillment),
    #[serde(rename = "order.cancelled")]
    OrderCancelled(OrderCancelled),
    #[serde(rename = "print-job.completed")]
    PrintJobCompleted(PrintJobCompleted),
    #[serde(rename = "print-job.failed")]
    PrintJobFailed(PrintJobFailed),
    #[serde(rename = "print-job.status-changed")]
    PrintJobStatusChanged(PrintJobStatusChanged),
    #[serde(rename = "print-job.cancelled")]
    PrintJobCancelled(PrintJobCancelled),
    #[serde(rename = "shipment.created")]
    ShipmentCreated(ShipmentCreated),
    #[serde(rename = "shipment.status-changed")]
    ShipmentStatusChanged(ShipmentStatusChanged),
    #[serde(rename = "gridflock.mapping-ready")]
    GridflockMappingReady(GridflockMappingReady),
    #[serde(rename = "gridflock.pipeline-failed")]
    GridflockPipelineFailed(GridflockPipelineFailed),
    #[serde(rename = "inventory.stock-replenishment-scheduled")]
    StockReplenishmentScheduled(StockReplenishmentScheduled),
    #[serde(rename = "inventory.stock-batch-completed")]
    StockBatchCompleted(StockBatchCompleted),
    #[serde(rename = "integration.simplyprint-changed")]
    IntegrationSimplyprintChanged(IntegrationChanged),
    #[serde(rename = "integration.sendcloud-changed")]
    IntegrationSendcloudChanged(IntegrationChanged),
}

impl EventPayload {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::OrderCreated(_) => names::ORDER_CREATED,
            Self::OrderReadyForFulfillment(_) => names::ORDER_READY_FOR_FULFILLMENT,
            Self::OrderCancelled(_) => names::ORDER_CANCELLED,
            Self::PrintJobCompleted(_) => names::PRINT_JOB_COMPLETED,
            Self::PrintJobFailed(_) => names::PRINT_JOB_FAILED,
            Self::PrintJobStatusChanged(_) => names::PRINT_JOB_STATUS_CHANGED,
            Self::PrintJobCancelled(_) => names::PRINT_JOB_CANCELLED,
            Self::ShipmentCreated(_) => names::SHIPMENT_CREATED,
            Self::ShipmentStatusChanged(_) => names::SHIPMENT_STATUS_CHANGED,
            Self::GridflockMappingReady(_) => names::GRIDFLOCK_MAPPING_READY,
            Self::GridflockPipelineFailed(_) => names::GRIDFLOCK_PIPELINE_FAILED,
            Self::StockReplenishmentScheduled(_) => names::STOCK_REPLENISHMENT_SCHEDULED,
            Self::StockBatchCompleted(_) => names::STOCK_BATCH_COMPLETED,
            Self::IntegrationSimplyprintChanged(_) => names::INTEGRATION_SIMPLYPRINT_CHANGED,
            Self::IntegrationSendcloudChanged(_) => names::INTEGRATION_SENDCLOUD_CHANGED,
        }
    }
}

// Payloads. None of them denies unknown fields: under `#[serde(flatten)]` they would see the
// envelope's fields as unknown, and tolerating additions lets publishers add fields first.

/// A new order was ingested from Shopify (backfill included). Published by the order service;
/// the print service subscribes to create the print jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: String,
    pub line_items: Vec<OrderCreatedLineItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreatedLineItem {
    pub line_item_id: String,
    pub product_sku: String,
    pub quantity: u32,
}

/// All print jobs of an order are complete. Published by the order service; the shipping service
/// subscribes to create the shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderReadyForFulfillment {
    pub order_id: String,
}

/// An order was cancelled. Published by the order service; the print and shipping services
/// subscribe to cancel their work for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: String,
}

/// Published by the print service; the order service subscribes and re-reads the print job from
/// its database rather than trusting this summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobCompleted {
    pub print_job_id: String,
    pub order_id: String,
    pub line_item_id: String,
}

/// Published by the print service; the order service subscribes (orchestration of the failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobFailed {
    pub print_job_id: String,
    pub order_id: String,
    pub line_item_id: String,
    pub error_message: String,
}

/// Published by the print service; the order service subscribes and forwards it to orchestration
/// (a terminal → active transition revives the order). Statuses are the print service's own
/// strings, not an enum here, so a new status there does not break this consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobStatusChanged {
    pub print_job_id: String,
    pub order_id: String,
    pub line_item_id: String,
    pub previous_status: String,
    pub new_status: String,
}

/// Published by the print service; the order service subscribes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobCancelled {
    pub print_job_id: String,
    pub order_id: String,
    pub line_item_id: String,
}

/// Published by the shipping service; the order service subscribes to create the Shopify
/// fulfillment. The tracking fields are `string | null` in the catalog, not optional: they are
/// always present and written as `null` when Sendcloud has not assigned them yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentCreated {
    pub shipment_id: String,
    pub order_id: String,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub carrier: Option<String>,
}

/// Published by the shipping service (from Sendcloud webhooks and reconciliation); the order
/// service subscribes to update the order's shipment status. Statuses are Sendcloud's strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentStatusChanged {
    pub shipment_id: String,
    pub order_id: String,
    pub previous_status: String,
    pub new_status: String,
}

/// The GridFlock pipeline (STL → slice → upload → mapping) finished, or a mapping already existed.
/// Published by the GridFlock service; the order service subscribes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridflockMappingReady {
    pub order_id: String,
    pub line_item_id: String,
    /// e.g. `GRID-2x3-MAG-NONE`.
    pub sku: String,
}

/// Published by the GridFlock service; the order service subscribes and marks the line item
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridflockPipelineFailed {
    pub order_id: String,
    pub line_item_id: String,
    pub sku: String,
    pub error_message: String,
    pub failed_step: GridflockPipelineStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GridflockPipelineStep {
    StlGeneration,
    Slicing,
    SimplyprintUpload,
    MappingCreation,
}

/// The stock replenishment scheduler created a print job for stock (one event per job of the
/// batch). Published by the order service; the print service subscribes to create the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReplenishmentScheduled {
    pub print_job_id: String,
    /// `string | null` in the catalog: present, `null` when there is no file.
    pub file_id: Option<String>,
    pub purpose: PrintJobPurpose,
    pub stock_batch_id: String,
}

/// Only `STOCK` travels on the bus; an enum rather than a string so that anything else is
/// rejected on reading instead of creating a print job of an unknown purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrintJobPurpose {
    #[serde(rename = "STOCK")]
    Stock,
}

/// Every print job of a stock batch completed, so the stock is incremented. Published by the order
/// service; informational, consumed by monitoring and logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockBatchCompleted {
    pub stock_batch_id: String,
    pub product_mapping_id: String,
    pub total_jobs: u32,
}

/// Integration credentials were connected or disconnected, so consumers re-initialize their API
/// clients without a restart. Shared by both integration events: `integration.simplyprint-changed`
/// is published by the print service and `integration.sendcloud-changed` by the shipping service;
/// the order service subscribes to both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationChanged {
    pub action: IntegrationAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationAction {
    Connected,
    Disconnected,
}

#[cfg(test)]
mod tests;
