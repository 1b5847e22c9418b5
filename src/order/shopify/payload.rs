//! The order document of Shopify's `orders/*` webhooks (and of the Admin API), read leniently:
//! Shopify adds fields all the time and writes ids as numbers, so only what forma uses is read,
//! and every problem with it is listed for one 400.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::order::orders::{NewLineItem, NewOrder, ShippingAddress};

/// A line longer than this many units is a mistake, not an order.
const MAX_QUANTITY: i64 = 100_000;
/// Lines per order; Shopify itself stops well before.
const MAX_LINES: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct ShopifyOrder {
    pub id: Option<Value>,
    pub name: Option<String>,
    pub order_number: Option<Value>,
    pub email: Option<String>,
    pub contact_email: Option<String>,
    pub customer: Option<ShopifyCustomer>,
    pub shipping_address: Option<ShopifyAddress>,
    pub total_price: Option<Value>,
    pub currency: Option<String>,
    #[serde(default)]
    pub line_items: Vec<ShopifyLineItem>,
    pub cancelled_at: Option<String>,
    pub cancel_reason: Option<String>,
    /// `fulfilled`, `partial` or null.
    pub fulfillment_status: Option<String>,
    /// When the order last changed in Shopify (ISO 8601 with an offset).
    pub updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShopifyCustomer {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ShopifyAddress {
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
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

#[derive(Debug, Deserialize)]
pub struct ShopifyLineItem {
    pub id: Option<Value>,
    pub sku: Option<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub quantity: Option<Value>,
    /// What is still to ship (an edited order); `quantity` when absent.
    pub current_quantity: Option<Value>,
    pub price: Option<Value>,
    /// False for a digital product or a service: nothing to make or send.
    pub requires_shipping: Option<bool>,
    pub gift_card: Option<bool>,
}

/// An id or a count as Shopify writes it: a number or a string of digits.
fn text(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn integer(value: &Option<Value>) -> Option<i64> {
    match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A decimal string (`"12.50"`): digits, at most one point, an optional minus sign.
fn money(value: &Option<Value>) -> Option<String> {
    let text = text(value)?;
    let digits = text.strip_prefix('-').unwrap_or(&text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or("0");
    let numeric = |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(whole) && numeric(fraction)).then_some(text)
}

fn nonempty(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl ShopifyOrder {
    /// An order with nothing left for forma to do: cancelled, or fulfilled already. The backfill
    /// skips it, and an `orders/updated` about it never creates it.
    pub fn is_closed(&self) -> bool {
        self.is_cancelled() || self.fulfillment_status.as_deref() == Some("fulfilled")
    }

    /// Cancelled in Shopify: what every `orders/cancelled` document says.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled_at
            .as_deref()
            .is_some_and(|at| !at.trim().is_empty())
    }

    /// The order of `shop` as forma stores it, for `tenant_id`; or every problem with the
    /// document.
    pub fn to_new_order(&self, tenant_id: Uuid, shop: &str) -> Result<NewOrder, Vec<String>> {
        let mut problems = Vec::new();
        let shopify_order_id = text(&self.id).unwrap_or_else(|| {
            problems.push("id must be a number or a string".to_owned());
            String::new()
        });
        let order_number = nonempty(self.name.as_ref())
            .or_else(|| text(&self.order_number).map(|n| format!("#{n}")))
            .unwrap_or_else(|| format!("#{shopify_order_id}"));
        let total_price = money(&self.total_price).unwrap_or_else(|| {
            problems.push("total_price must be a decimal amount".to_owned());
            String::new()
        });
        let currency = nonempty(self.currency.as_ref())
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(|c| c.to_ascii_uppercase())
            .unwrap_or_else(|| {
                problems.push("currency must be an ISO 4217 code".to_owned());
                String::new()
            });
        if self.line_items.len() > MAX_LINES {
            problems.push(format!("line_items must have at most {MAX_LINES} lines"));
        }
        let mut line_items = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, line) in self.line_items.iter().enumerate().take(MAX_LINES) {
            let Some(id) = text(&line.id) else {
                problems.push(format!("line_items.{i}.id must be a number or a string"));
                continue;
            };
            if !ids.insert(id.clone()) {
                problems.push(format!(
                    "line_items.{i}.id {id} is the id of an earlier line"
                ));
                continue;
            }
            let quantity = integer(&line.current_quantity).or(integer(&line.quantity));
            let quantity = match quantity {
                Some(q @ 0..=MAX_QUANTITY) => q as u32,
                _ => {
                    problems.push(format!(
                        "line_items.{i}.quantity must be an integer from 0 to {MAX_QUANTITY}"
                    ));
                    continue;
                }
            };
            // Removed from the order (an edit), a gift card, a digital product or a service:
            // nothing to make or send. Kept, such a line would wait for a mapping for ever and
            // hold its order back.
            if quantity == 0
                || line.gift_card == Some(true)
                || line.requires_shipping == Some(false)
            {
                continue;
            }
            let unit_price = money(&line.price).unwrap_or_else(|| "0.00".to_owned());
            line_items.push(NewLineItem {
                shopify_line_item_id: id,
                sku: nonempty(line.sku.as_ref()).unwrap_or_default(),
                product_name: nonempty(line.name.as_ref())
                    .or_else(|| nonempty(line.title.as_ref()))
                    .unwrap_or_default(),
                quantity,
                unit_price,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NewOrder {
            tenant_id,
            shopify_order_id,
            shop_domain: Some(super::normalize_domain(shop)).filter(|d| !d.is_empty()),
            order_number,
            customer_name: self.customer_name(),
            customer_email: nonempty(self.email.as_ref())
                .or_else(|| nonempty(self.contact_email.as_ref()))
                .or_else(|| {
                    self.customer
                        .as_ref()
                        .and_then(|c| nonempty(c.email.as_ref()))
                }),
            shipping_address: self
                .shipping_address
                .as_ref()
                .map(ShopifyAddress::to_address),
            total_price,
            currency,
            line_items,
            // Read leniently: without a readable time, the document is applied as it comes.
            shopify_updated_at: self
                .updated_at
                .as_deref()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at.trim()).ok())
                .map(|at| at.with_timezone(&chrono::Utc)),
        })
    }

    fn customer_name(&self) -> String {
        let joined = |first: &Option<String>, last: &Option<String>| {
            let name = [first.as_deref(), last.as_deref()]
                .into_iter()
                .flatten()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (!name.is_empty()).then_some(name)
        };
        self.customer
            .as_ref()
            .and_then(|c| joined(&c.first_name, &c.last_name))
            .or_else(|| {
                self.shipping_address.as_ref().and_then(|a| {
                    nonempty(a.name.as_ref()).or_else(|| joined(&a.first_name, &a.last_name))
                })
            })
            .unwrap_or_default()
    }
}

impl ShopifyAddress {
    fn to_address(&self) -> ShippingAddress {
        let name = nonempty(self.name.as_ref()).or_else(|| {
            let parts: Vec<&str> = [self.first_name.as_deref(), self.last_name.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        });
        ShippingAddress {
            name,
            company: nonempty(self.company.as_ref()),
            address1: nonempty(self.address1.as_ref()),
            address2: nonempty(self.address2.as_ref()),
            city: nonempty(self.city.as_ref()),
            province: nonempty(self.province.as_ref()),
            province_code: nonempty(self.province_code.as_ref()),
            zip: nonempty(self.zip.as_ref()),
            country: nonempty(self.country.as_ref()),
            country_code: nonempty(self.country_code.as_ref()),
            phone: nonempty(self.phone.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(document: Value) -> Result<NewOrder, Vec<String>> {
        serde_json::from_value::<ShopifyOrder>(document)
            .unwrap()
            .to_new_order(Uuid::nil(), "example.myshopify.com")
    }

    #[test]
    fn a_shopify_order_reads_into_an_order_with_its_lines() {
        let new = order(json!({
            "id": 820982911946154508_u64, "name": "#1001", "email": "jon@example.com",
            "total_price": "49.90", "currency": "eur",
            "customer": {"first_name": "Jon", "last_name": "Snow"},
            "shipping_address": {"first_name": "Jon", "last_name": "Snow", "address1": "1 Wall St", "city": "Ghent", "zip": "9000", "country_code": "BE"},
            "line_items": [
                {"id": 466157049, "sku": "CUBE-RED", "name": "Red cube", "quantity": 3, "price": "9.95"},
                {"id": "466157050", "sku": "GONE", "title": "Removed", "quantity": 1, "current_quantity": 0, "price": "1.00"}
            ]
        }))
        .unwrap();
        assert_eq!(new.shopify_order_id, "820982911946154508");
        assert_eq!(new.order_number, "#1001");
        assert_eq!(
            (new.total_price.as_str(), new.currency.as_str()),
            ("49.90", "EUR")
        );
        assert_eq!(new.customer_name, "Jon Snow");
        assert_eq!(
            new.shipping_address.unwrap().name.as_deref(),
            Some("Jon Snow")
        );
        assert_eq!(new.line_items.len(), 1, "a removed line is not made");
        assert_eq!(new.line_items[0].quantity, 3);
        assert_eq!(new.line_items[0].sku, "CUBE-RED");
    }

    #[test]
    fn lines_with_nothing_to_make_or_send_are_left_out() {
        let new = order(json!({
            "id": 1, "total_price": "60.00", "currency": "EUR",
            "updated_at": "2026-12-01T10:05:00+02:00",
            "line_items": [
                {"id": 1, "sku": "CUBE", "quantity": 1, "price": "10.00", "requires_shipping": true},
                {"id": 2, "title": "Gift card", "quantity": 1, "price": "25.00", "gift_card": true, "requires_shipping": false},
                {"id": 3, "sku": "STL-CUBE", "quantity": 1, "price": "5.00", "requires_shipping": false},
                {"id": 4, "sku": "BALL", "quantity": 2, "price": "10.00"}
            ]
        }))
        .unwrap();
        let skus: Vec<&str> = new.line_items.iter().map(|l| l.sku.as_str()).collect();
        assert_eq!(skus, ["CUBE", "BALL"]);
        assert_eq!(
            new.shopify_updated_at.map(|at| at.to_rfc3339()).as_deref(),
            Some("2026-12-01T08:05:00+00:00")
        );
    }

    #[test]
    fn every_problem_of_a_document_is_listed() {
        let problems = order(json!({
            "total_price": "12,50", "currency": "euro",
            "line_items": [{"sku": "A", "quantity": 1}, {"id": 2, "quantity": -1},
                {"id": 3, "quantity": 1}, {"id": "3", "quantity": 2}]
        }))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "id must be a number or a string",
                "total_price must be a decimal amount",
                "currency must be an ISO 4217 code",
                "line_items.0.id must be a number or a string",
                "line_items.1.quantity must be an integer from 0 to 100000",
                "line_items.3.id 3 is the id of an earlier line",
            ]
        );
    }
}
