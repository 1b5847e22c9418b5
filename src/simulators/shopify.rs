//! Shopify, simulated: order documents as Shopify writes them, and webhook deliveries with the
//! headers and HMAC signature Shopify sends.

use serde_json::{Value, json};

/// One line of a simulated order.
#[derive(Debug, Clone)]
pub struct Line {
    pub id: u64,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub price: String,
}

/// A Shopify order document (the body of `orders/create`), trimmed to what Shopify always sends
/// plus what forma reads.
pub fn order_document(id: u64, number: u64, lines: &[Line]) -> Value {
    let total: f64 = lines
        .iter()
        .map(|l| l.price.parse::<f64>().unwrap_or_default() * f64::from(l.quantity))
        .sum();
    json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "name": format!("#{number}"),
        "order_number": number,
        "email": format!("customer{number}@example.com"),
        "created_at": chrono::Utc::now().to_rfc3339(),
        "currency": "EUR",
        "total_price": format!("{total:.2}"),
        "financial_status": "paid",
        "fulfillment_status": null,
        "customer": {"id": id + 1, "first_name": "Ada", "last_name": format!("Customer {number}"), "email": format!("customer{number}@example.com")},
        "shipping_address": {
            "first_name": "Ada", "last_name": format!("Customer {number}"),
            "address1": "Veldstraat 1", "city": "Gent", "zip": "9000",
            "country": "Belgium", "country_code": "BE", "phone": "+32 9 000 00 00"
        },
        "line_items": lines.iter().map(|l| json!({
            "id": l.id, "sku": l.sku, "name": l.name, "title": l.name,
            "quantity": l.quantity, "current_quantity": l.quantity, "price": l.price,
            "requires_shipping": true
        })).collect::<Vec<_>>(),
    })
}

/// A webhook delivery as Shopify makes it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub shop_domain: String,
    pub webhook_id: String,
    pub event_id: String,
    pub body: Vec<u8>,
}

impl Delivery {
    /// A new delivery of `body` for `topic` (fresh delivery and event ids).
    pub fn new(topic: &str, shop_domain: &str, body: &Value) -> Self {
        Self {
            topic: topic.to_owned(),
            shop_domain: shop_domain.to_owned(),
            webhook_id: uuid::Uuid::new_v4().to_string(),
            event_id: uuid::Uuid::new_v4().to_string(),
            body: body.to_string().into_bytes(),
        }
    }

    /// Posts the delivery to `url`, signed with `secret`, as Shopify does; returns the response.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        url: &str,
        secret: &[u8],
    ) -> Result<reqwest::Response, reqwest::Error> {
        let signature = crate::order::shopify::sign(secret, &self.body);
        client
            .post(url)
            .header("content-type", "application/json")
            .header("x-shopify-topic", &self.topic)
            .header("x-shopify-shop-domain", &self.shop_domain)
            .header("x-shopify-webhook-id", &self.webhook_id)
            .header("x-shopify-event-id", &self.event_id)
            .header("x-shopify-api-version", "2025-10")
            .header("x-shopify-hmac-sha256", signature)
            .body(self.body.clone())
            .send()
            .await
    }
}
