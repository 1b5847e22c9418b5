//! A shipment (SPEC §6.4): the parcel of one order at Sendcloud, and what the carrier says of it.

pub mod repository;
pub mod routes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How many hex digits of the order's id end its Sendcloud order number: 48 random bits.
const ORDER_NUMBER_ID_CHARS: usize = 12;

/// Where a shipment is. `PENDING` until Sendcloud has its parcel; then as the carrier reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    /// Asked for; the parcel is not created at Sendcloud yet (not connected, or it failed and is
    /// tried again).
    Pending,
    /// The parcel exists and has its label; not with the carrier yet.
    Announced,
    InTransit,
    Delivered,
    /// The carrier could not announce or deliver it.
    Exception,
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Announced,
        Self::InTransit,
        Self::Delivered,
        Self::Exception,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Announced => "ANNOUNCED",
            Self::InTransit => "IN_TRANSIT",
            Self::Delivered => "DELIVERED",
            Self::Exception => "EXCEPTION",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Nothing moves a delivered or cancelled shipment again (a late webhook of an earlier status
    /// is recorded as it is, not applied).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled)
    }

    /// What Sendcloud's parcel status id means for the shipment. Sendcloud has dozens of ids;
    /// those not named here are on their way.
    pub fn from_sendcloud(status_id: i64) -> Self {
        match status_id {
            // No label yet, being announced, announced, ready to send; and a cancellation
            // requested, which the carrier may still refuse: the parcel is where it was until
            // Sendcloud says it is cancelled (2000) or moving.
            999 | 1001 | 1 | 1000 | 1999 => Self::Announced,
            11 => Self::Delivered,
            2000 => Self::Cancelled,
            // Unable to deliver, announcement failed.
            80 | 1002 => Self::Exception,
            _ => Self::InTransit,
        }
    }
}

/// A shipment as the API shows it (SPEC §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub sendcloud_parcel_id: Option<i64>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub label_url: Option<String>,
    pub status: ShipmentStatus,
    /// Why the parcel could not be created yet, while it is `PENDING`.
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a parcel is made of: asked for by the order side (or by the shipping side's own reaction
/// to `order.ready-for-fulfillment`), kept with the shipment until Sendcloud takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentRequest {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    /// The shop's order number, e.g. `#1001`.
    pub order_number: String,
    pub recipient: Recipient,
    pub items: Vec<ShipmentItem>,
}

/// The parcel's addressee.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub name: String,
    pub company: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address1: String,
    pub address2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `NL`.
    pub country_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentItem {
    pub sku: String,
    pub description: String,
    pub quantity: u32,
    /// Decimal string, per unit.
    pub unit_price: String,
}

impl ShipmentRequest {
    /// What is missing for a parcel: Sendcloud refuses a parcel without these.
    pub fn problems(&self) -> Vec<String> {
        let r = &self.recipient;
        let mut problems = Vec::new();
        for (value, what) in [
            (&r.name, "recipient.name"),
            (&r.address1, "recipient.address1"),
            (&r.city, "recipient.city"),
            (&r.postal_code, "recipient.postalCode"),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{what} is required"));
            }
        }
        if r.country_code.len() != 2 || !r.country_code.chars().all(|c| c.is_ascii_alphabetic()) {
            problems.push("recipient.countryCode must be an ISO 3166-1 alpha-2 code".to_owned());
        }
        if self.items.is_empty() {
            problems.push("items must not be empty".to_owned());
        }
        problems
    }

    /// The order number forma gives Sendcloud: the shop's number and the random end of forma's
    /// order id, so a parcel can be found again by it (a crash between creating the parcel and
    /// storing its id must not lead to a second parcel). Every tenant shares the one Sendcloud
    /// account, and every shop numbers from #1001, so the number must be this order's alone: the
    /// id's start is its creation time (UUIDv7), the same for every order of the same minute, and
    /// a parcel found by a number two orders share would be adopted by the wrong one.
    pub fn sendcloud_order_number(&self) -> String {
        let id = self.order_id.simple().to_string();
        let number = self.order_number.trim_start_matches('#');
        format!("{number}-{}", &id[id.len() - ORDER_NUMBER_ID_CHARS..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendcloud_statuses_map_to_where_the_parcel_is() {
        for (id, status) in [
            (1000, ShipmentStatus::Announced),
            (1, ShipmentStatus::Announced),
            (3, ShipmentStatus::InTransit),
            (22, ShipmentStatus::InTransit),
            (11, ShipmentStatus::Delivered),
            (80, ShipmentStatus::Exception),
            (1999, ShipmentStatus::Announced),
            (2000, ShipmentStatus::Cancelled),
        ] {
            assert_eq!(ShipmentStatus::from_sendcloud(id), status, "{id}");
        }
        for status in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn a_request_names_what_a_parcel_lacks() {
        let request = ShipmentRequest {
            tenant_id: Uuid::new_v4(),
            order_id: Uuid::new_v4(),
            order_number: "#1001".into(),
            recipient: Recipient {
                country_code: "Netherlands".into(),
                ..Recipient::default()
            },
            items: Vec::new(),
        };
        assert_eq!(request.problems().len(), 6, "{:?}", request.problems());
        assert!(request.sendcloud_order_number().starts_with("1001-"));
    }

    /// Two shops' #1001 of the same minute (UUIDv7 ids that share their time) are two numbers.
    #[test]
    fn orders_of_the_same_number_and_minute_have_their_own_sendcloud_numbers() {
        let request = |order_id| ShipmentRequest {
            tenant_id: Uuid::new_v4(),
            order_id,
            order_number: "#1001".into(),
            recipient: Recipient::default(),
            items: Vec::new(),
        };
        let same_minute = |second: u64| {
            Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                1_800_000_000 + second,
                0,
            ))
        };
        let (first, second) = (same_minute(0), same_minute(30));
        assert_eq!(
            first.simple().to_string()[..8],
            second.simple().to_string()[..8]
        );
        let (a, b) = (
            request(first).sendcloud_order_number(),
            request(second).sendcloud_order_number(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), "1001-".len() + ORDER_NUMBER_ID_CHARS, "{a}");
    }
}
