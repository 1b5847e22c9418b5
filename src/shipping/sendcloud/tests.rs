//! The Sendcloud client against the Sendcloud simulator, over real HTTP both ways.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{Config, Secret};
use crate::simulators::sendcloud::SendcloudSim;

/// A simulator that stops when the test ends.
struct Fixture {
    sim: SendcloudSim,
    _stop: tokio_util::sync::DropGuard,
}

async fn simulator() -> Fixture {
    let stop = CancellationToken::new();
    let sim = SendcloudSim::start(stop.clone()).await.unwrap();
    Fixture {
        sim,
        _stop: stop.drop_guard(),
    }
}

fn config_for(sim: &SendcloudSim) -> Config {
    let mut config = Config::default();
    config.sendcloud = sim.config();
    config
}

fn client(sim: &SendcloudSim) -> Sendcloud {
    Sendcloud::from_config(&config_for(sim))
        .unwrap()
        .expect("credentials are set")
}

fn request(order_number: &str) -> ParcelRequest {
    ParcelRequest {
        name: "Ada Lovelace".into(),
        company_name: Some("Analytical Engines".into()),
        address: "Stadhuisplein 10".into(),
        house_number: Some("10".into()),
        address_2: None,
        city: "Eindhoven".into(),
        postal_code: "5611 EM".into(),
        country: "NL".into(),
        telephone: Some("+31 6 12345678".into()),
        email: Some("ada@example.com".into()),
        order_number: order_number.into(),
        items: vec![ParcelItem {
            description: "Gridfinity bin 2x3".into(),
            quantity: 2,
            sku: Some("BIN-2X3".into()),
            value: "12.50".into(),
            weight_kg: "0.150".into(),
        }],
        weight_kg: Some("0.400".into()),
    }
}

#[test]
fn sendcloud_is_disconnected_without_both_keys() {
    let mut config = Config::default();
    assert!(Sendcloud::from_config(&config).unwrap().is_none());
    config.sendcloud.public_key = Some("public".into());
    assert!(Sendcloud::from_config(&config).unwrap().is_none());
    config.sendcloud.secret_key = Some(Secret::new(""));
    assert!(Sendcloud::from_config(&config).unwrap().is_none());
    config.sendcloud.secret_key = Some(Secret::new("secret"));
    assert!(Sendcloud::from_config(&config).unwrap().is_some());
}

#[test]
fn a_sendcloud_parcel_request_is_written_as_sendcloud_expects() {
    let mut without_extras = request("FORMA-1");
    without_extras.company_name = None;
    without_extras.items[0].sku = None;
    without_extras.weight_kg = None;
    let body = without_extras.to_json();
    let parcel = &body["parcel"];
    assert_eq!(parcel["request_label"], true);
    assert_eq!(parcel["order_number"], "FORMA-1");
    assert_eq!(parcel["country"], "NL");
    assert_eq!(parcel["house_number"], "10");
    assert!(parcel.get("company_name").is_none(), "{body}");
    assert!(parcel.get("address_2").is_none(), "{body}");
    assert!(parcel.get("weight").is_none(), "{body}");
    let item = &parcel["parcel_items"][0];
    assert_eq!(item["quantity"], 2);
    assert_eq!(item["value"], "12.50", "money stays a decimal string");
    assert_eq!(item["weight"], "0.150");
    assert!(item.get("sku").is_none(), "{body}");
}

#[test]
fn a_sendcloud_parcel_is_read_leniently() {
    let parcel = Parcel::from_json(&serde_json::json!({
        "id": "77",
        "tracking_number": "",
        "tracking_url": null,
        "status": {"id": 1000, "message": "Ready to send"},
        "label": {"normal_printer": ["https://labels/a4"], "label_printer": ""},
        "order_number": 1234,
    }))
    .unwrap();
    assert_eq!(parcel.id, 77);
    assert_eq!(
        parcel.tracking_number, None,
        "Sendcloud's empty string is no number"
    );
    assert_eq!(parcel.tracking_url, None);
    assert_eq!(parcel.carrier, None);
    assert_eq!(parcel.label_url.as_deref(), Some("https://labels/a4"));
    assert_eq!(parcel.order_number.as_deref(), Some("1234"));
    assert!(Parcel::from_json(&serde_json::json!({"status": {"id": 1}})).is_none());
    let bare = Parcel::from_json(&serde_json::json!({"id": 5})).unwrap();
    assert_eq!((bare.status_id, bare.status.as_str()), (0, ""));
}

#[tokio::test]
async fn a_sendcloud_parcel_is_created_then_found_by_order_number_then_read() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let sendcloud = client(sim);

    let created = sendcloud
        .create_parcel(&request("FORMA-1001"))
        .await
        .unwrap();
    assert_eq!(created.status_id, status::READY_TO_SEND);
    assert_eq!(created.status, "Ready to send");
    assert_eq!(created.carrier.as_deref(), Some("postnl"));
    assert_eq!(created.order_number.as_deref(), Some("FORMA-1001"));
    assert_eq!(
        created.tracking_number,
        Some(format!("3SFORMA{:08}", created.id))
    );
    assert!(created.tracking_url.is_some());
    let label_url = created.label_url.clone().unwrap();
    assert!(label_url.starts_with(&sim.base_url()), "{label_url}");

    let stored = sim.parcels();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].country, "NL");
    assert_eq!(stored[0].items[0].value, "12.50");
    assert_eq!(stored[0].items[0].sku.as_deref(), Some("BIN-2X3"));
    let recorded = sim.requests();
    assert_eq!(
        recorded[0].public_key.as_deref(),
        Some(sim.public_key.as_str())
    );
    assert_eq!(recorded[0].body["parcel"]["request_label"], true);

    sendcloud
        .create_parcel(&request("FORMA-1002"))
        .await
        .unwrap();
    let found = sendcloud.find_by_order_number("FORMA-1001").await.unwrap();
    assert_eq!(found, vec![created.clone()]);
    assert!(
        sendcloud
            .find_by_order_number("FORMA-9999")
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        sendcloud.parcel(created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(sendcloud.parcel(424_242).await.unwrap(), None);

    let label = crate::testing::client()
        .get(&label_url)
        .send()
        .await
        .unwrap();
    assert_eq!(label.status(), 200);
    assert!(label.bytes().await.unwrap().starts_with(b"%PDF"));
}

/// Sendcloud makes a label only with a shipping method: each parcel names the configured one, and
/// lets the integration's shipping rules choose when asked to.
#[tokio::test]
async fn a_parcel_is_announced_with_the_configured_shipping_method() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let mut config = config_for(sim);
    config.sendcloud.shipping_method_id = None;
    let without = Sendcloud::from_config(&config).unwrap().unwrap();
    let refused = without.create_parcel(&request("FORMA-2001")).await;
    assert!(
        matches!(&refused, Err(SendcloudError::Rejected(m)) if m.contains("shipment")),
        "{refused:?}"
    );

    config.sendcloud.shipping_method_id = Some(crate::simulators::sendcloud::SHIPPING_METHOD_ID);
    config.sendcloud.apply_shipping_rules = true;
    let sendcloud = Sendcloud::from_config(&config).unwrap().unwrap();
    sendcloud
        .create_parcel(&request("FORMA-2002"))
        .await
        .unwrap();
    let parcels = sim.parcels();
    assert_eq!(parcels.len(), 1, "the refused one was not made");
    assert_eq!(
        parcels[0].shipping_method_id,
        crate::simulators::sendcloud::SHIPPING_METHOD_ID
    );
    let sent = sim
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST")
        .expect("the create");
    assert_eq!(
        sent.body["parcel"]["apply_shipping_rules"], true,
        "{}",
        sent.body
    );
}

#[tokio::test]
async fn a_sendcloud_parcel_is_cancelled_until_the_carrier_has_it() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let sendcloud = client(sim);
    let first = sendcloud
        .create_parcel(&request("FORMA-2001"))
        .await
        .unwrap();
    sendcloud.cancel_parcel(first.id).await.unwrap();
    let cancelled = sendcloud.parcel(first.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status_id, status::CANCELLED);
    sendcloud.cancel_parcel(first.id).await.unwrap();
    sendcloud.cancel_parcel(424_242).await.unwrap();

    let second = sendcloud
        .create_parcel(&request("FORMA-2002"))
        .await
        .unwrap();
    sim.advance(
        second.id,
        status::EN_ROUTE_TO_SORTING_CENTER,
        "En route to sorting center",
    )
    .await
    .unwrap();
    let refused = sendcloud.cancel_parcel(second.id).await.unwrap_err();
    assert_eq!(
        refused,
        SendcloudError::Rejected(
            "Shipped parcels, or parcels being shipped, can no longer be cancelled.".into()
        )
    );
}

#[tokio::test]
async fn a_failing_sendcloud_is_unavailable_and_a_refusal_carries_its_message() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let sendcloud = client(sim);

    sim.fail_next(1);
    let failed = sendcloud
        .create_parcel(&request("FORMA-3001"))
        .await
        .unwrap_err();
    assert!(
        matches!(failed, SendcloudError::Unavailable(_)),
        "{failed:?}"
    );
    assert!(sim.parcels().is_empty());

    sim.set_failing(true);
    for _ in 0..2 {
        let failed = sendcloud
            .find_by_order_number("FORMA-3001")
            .await
            .unwrap_err();
        assert!(
            matches!(failed, SendcloudError::Unavailable(_)),
            "{failed:?}"
        );
    }
    sim.set_failing(false);
    assert!(
        sendcloud
            .find_by_order_number("FORMA-3001")
            .await
            .unwrap()
            .is_empty()
    );

    let mut nowhere = request("FORMA-3002");
    nowhere.country = "Narnia".into();
    let refused = sendcloud.create_parcel(&nowhere).await.unwrap_err();
    assert_eq!(
        refused,
        SendcloudError::Rejected("country: \"Narnia\" is not a valid choice.".into())
    );
    let mut nameless = request("FORMA-3003");
    nameless.name = String::new();
    let refused = sendcloud.create_parcel(&nameless).await.unwrap_err();
    assert_eq!(
        refused,
        SendcloudError::Rejected("name: This field is required.".into())
    );
    assert!(sim.parcels().is_empty());
}

#[tokio::test]
async fn a_slow_sendcloud_is_unavailable_once_the_client_gives_up() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let sendcloud = Sendcloud::with_timeouts(
        &config_for(sim),
        Duration::from_secs(3),
        Duration::from_millis(200),
    )
    .unwrap()
    .unwrap();
    // Far beyond the client's patience: the answer never arrives within the test.
    sim.set_delay(Duration::from_secs(600));
    let failed = sendcloud.parcel(1).await.unwrap_err();
    let SendcloudError::Unavailable(message) = failed else {
        panic!("a timeout is worth trying again: {failed:?}");
    };
    assert!(message.contains("timed out"), "{message}");
    assert!(!message.contains(&sim.addr.to_string()), "{message}");
}

#[tokio::test]
async fn wrong_sendcloud_credentials_are_told_apart_from_a_refused_call() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let mut config = config_for(sim);
    config.sendcloud.secret_key = Some(Secret::new("not-the-secret"));
    let sendcloud = Sendcloud::from_config(&config).unwrap().unwrap();
    let refused = sendcloud
        .create_parcel(&request("FORMA-4001"))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        SendcloudError::Unauthorized("Invalid username/password.".into())
    );
    assert!(sim.parcels().is_empty());
}

#[test]
fn a_sendcloud_signature_matches_sendclouds_documented_example() {
    // The example in Sendcloud's webhook documentation.
    let body = br#"{"key": "value"}"#;
    let expected = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a";
    assert_eq!(sign(b"secretkey", body), expected);
    assert!(verify_signature(b"secretkey", body, expected));
    assert!(verify_signature(
        b"secretkey",
        body,
        &expected.to_uppercase()
    ));
    assert!(!verify_signature(b"secretkey", body, ""));
    assert!(!verify_signature(b"secretkey", body, "zz"));
    assert!(!verify_signature(b"secretkey", body, &expected[..62]));
    assert!(
        !verify_signature(b"", body, &sign(b"", body)),
        "no secret, no trust"
    );
}

/// A stand-in for forma's webhook endpoint: hands each delivery's signature and raw body to the
/// test.
async fn receiver(stop: CancellationToken) -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (sender, received) = mpsc::unbounded_channel();
    let router = Router::new().route(
        "/api/v1/webhooks/sendcloud",
        post(move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            async move {
                let signature = headers
                    .get(SENDCLOUD_SIGNATURE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = sender.send((signature, body));
                "ok"
            }
        }),
    );
    let addr = crate::simulators::serve_on_loopback(router, stop)
        .await
        .unwrap();
    (format!("http://{addr}/api/v1/webhooks/sendcloud"), received)
}

#[tokio::test]
async fn a_sendcloud_webhook_is_signed_over_its_exact_bytes_and_parses() {
    let fixture = simulator().await;
    let sim = &fixture.sim;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (url, mut received) = receiver(stop).await;
    let parcel = client(sim)
        .create_parcel(&request("FORMA-5001"))
        .await
        .unwrap();

    assert_eq!(
        sim.advance(parcel.id, status::DELIVERED, "Delivered")
            .await
            .unwrap(),
        None,
        "nothing is delivered before a webhook URL is set"
    );
    sim.set_webhook(Some(&url));
    let answered = sim
        .advance(
            parcel.id,
            status::EN_ROUTE_TO_SORTING_CENTER,
            "En route to sorting center",
        )
        .await
        .unwrap();
    assert_eq!(answered, Some(200));
    let (signature, body) = received.recv().await.unwrap();

    let secret = sim.webhook_secret.as_bytes();
    assert!(verify_signature(secret, &body, &signature));
    assert!(!verify_signature(b"another-secret", &body, &signature));
    let mut tampered = body.to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(!verify_signature(secret, &tampered, &signature));

    let WebhookEvent::ParcelStatusChanged {
        parcel: reported,
        sent_at,
    } = parse_webhook(&body).unwrap()
    else {
        panic!("a status change");
    };
    assert!(sent_at.is_some_and(|at| (chrono::Utc::now() - at).num_seconds().abs() < 60));
    assert_eq!(reported.id, parcel.id);
    assert_eq!(reported.status_id, status::EN_ROUTE_TO_SORTING_CENTER);
    assert_eq!(reported.status, "En route to sorting center");
    assert_eq!(reported.tracking_number, parcel.tracking_number);
    assert_eq!(reported.tracking_url, parcel.tracking_url);
    assert_eq!(reported.carrier.as_deref(), Some("postnl"));
    assert_eq!(reported.label_url, parcel.label_url);
    assert_eq!(reported.order_number.as_deref(), Some("FORMA-5001"));
}

#[test]
fn a_sendcloud_webhook_of_another_action_or_an_unreadable_one_is_told_apart() {
    assert_eq!(
        parse_webhook(br#"{"action": "integration_connected", "timestamp": 1}"#),
        Ok(WebhookEvent::Other("integration_connected".into()))
    );
    assert!(parse_webhook(b"not json").is_err());
    assert!(parse_webhook(br#"{"timestamp": 1}"#).is_err());
    assert!(parse_webhook(br#"{"action": "parcel_status_changed", "parcel": {}}"#).is_err());
}
