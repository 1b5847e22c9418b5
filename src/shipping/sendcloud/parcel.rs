//! A Sendcloud parcel as forma asks for one and as Sendcloud describes one (API v2).
//!
//! Requests are written in Sendcloud's shape; answers are read leniently: Sendcloud adds fields,
//! leaves some out, and writes `""` where there is nothing (a parcel without a tracking number
//! yet), so every optional field that is missing, null or empty reads as `None`.

use serde_json::{Map, Value, json};

/// Sendcloud's parcel status ids that forma names. Others exist (announced, at the sorting
/// centre, delivery attempt failed, …) and are carried as they come.
pub mod status {
    pub const NO_LABEL: i64 = 999;
    pub const READY_TO_SEND: i64 = 1000;
    pub const BEING_ANNOUNCED: i64 = 1001;
    pub const ANNOUNCEMENT_FAILED: i64 = 1002;
    pub const EN_ROUTE_TO_SORTING_CENTER: i64 = 3;
    pub const DELIVERED: i64 = 11;
    pub const CANCELLATION_REQUESTED: i64 = 1999;
    pub const CANCELLED: i64 = 2000;

    /// Whether the carrier has announced the parcel, so it has its label and, when the carrier
    /// gives one, its tracking number. Sendcloud announces some carriers' parcels after answering
    /// the create (no label yet, being announced), and an announcement can fail. A parcel whose
    /// cancellation is requested keeps its label until the carrier agrees.
    pub fn is_labelled(status_id: i64) -> bool {
        !matches!(
            status_id,
            NO_LABEL | BEING_ANNOUNCED | ANNOUNCEMENT_FAILED | CANCELLED
        )
    }
}

/// What forma asks Sendcloud to ship. Money and weights are decimal strings (`"12.50"`,
/// `"0.350"`), passed through as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParcelRequest {
    pub name: String,
    pub company_name: Option<String>,
    pub address: String,
    pub house_number: Option<String>,
    pub address_2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub telephone: Option<String>,
    pub email: Option<String>,
    /// forma's own reference; it is how a parcel whose creation answer was lost is found again.
    pub order_number: String,
    pub items: Vec<ParcelItem>,
    /// Total weight in kg; Sendcloud uses the integration's default when absent.
    pub weight_kg: Option<String>,
}

/// One line of a parcel's contents (`parcel_items`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParcelItem {
    pub description: String,
    pub quantity: u32,
    pub sku: Option<String>,
    /// Value of one unit, decimal string.
    pub value: String,
    /// Weight of one unit in kg, decimal string.
    pub weight_kg: String,
}

impl ParcelRequest {
    /// The body of `POST /parcels`, always asking for the label so the parcel is announced.
    pub fn to_json(&self) -> Value {
        let mut parcel = Map::new();
        let mut put = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                parcel.insert(key.to_owned(), Value::String(value.to_owned()));
            }
        };
        put("name", Some(&self.name));
        put("company_name", self.company_name.as_deref());
        put("address", Some(&self.address));
        put("house_number", self.house_number.as_deref());
        put("address_2", self.address_2.as_deref());
        put("city", Some(&self.city));
        put("postal_code", Some(&self.postal_code));
        put("country", Some(&self.country));
        put("telephone", self.telephone.as_deref());
        put("email", self.email.as_deref());
        put("order_number", Some(&self.order_number));
        put("weight", self.weight_kg.as_deref());
        parcel.insert("request_label".to_owned(), Value::Bool(true));
        let items: Vec<Value> = self.items.iter().map(ParcelItem::to_json).collect();
        parcel.insert("parcel_items".to_owned(), Value::Array(items));
        json!({"parcel": parcel})
    }
}

impl ParcelItem {
    fn to_json(&self) -> Value {
        let mut item = json!({
            "description": self.description,
            "quantity": self.quantity,
            "weight": self.weight_kg,
            "value": self.value,
        });
        if let (Some(sku), Some(map)) = (&self.sku, item.as_object_mut()) {
            map.insert("sku".to_owned(), Value::String(sku.clone()));
        }
        item
    }
}

/// A parcel as Sendcloud reports it, reduced to what forma keeps on a shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    pub id: i64,
    /// `status.id`; 0 when Sendcloud sent none.
    pub status_id: i64,
    /// `status.message`, e.g. "Ready to send".
    pub status: String,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    /// `carrier.code`, e.g. `postnl`.
    pub carrier: Option<String>,
    /// The label for a label printer, else the first A4 one.
    pub label_url: Option<String>,
    pub order_number: Option<String>,
}

impl Parcel {
    /// Reads a parcel object (the value under `"parcel"`); `None` when it has no usable id.
    pub fn from_json(parcel: &Value) -> Option<Self> {
        let id = integer(parcel.get("id")?)?;
        let status = parcel.get("status");
        let label = parcel.get("label");
        let carrier = match parcel.get("carrier") {
            Some(Value::Object(carrier)) => carrier.get("code").and_then(text),
            other => other.and_then(text),
        };
        Some(Self {
            id,
            status_id: status
                .and_then(|s| s.get("id"))
                .and_then(integer)
                .unwrap_or_default(),
            status: status
                .and_then(|s| s.get("message"))
                .and_then(text)
                .unwrap_or_default(),
            tracking_number: parcel.get("tracking_number").and_then(text),
            tracking_url: parcel.get("tracking_url").and_then(text),
            carrier,
            label_url: label
                .and_then(|l| l.get("label_printer"))
                .and_then(text)
                .or_else(|| {
                    label
                        .and_then(|l| l.get("normal_printer"))
                        .and_then(Value::as_array)
                        .and_then(|urls| urls.iter().find_map(text))
                }),
            order_number: parcel.get("order_number").and_then(text),
        })
    }
}

/// A non-empty string, or a number written as one (Sendcloud is not consistent about either).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
