//! The simulated push service refuses what a real one refuses: a test that passes against it
//! proves the request was signed and encrypted right.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::order::notifications::push::keys::VapidKeys;

struct Push {
    authorization: String,
    ttl: Option<&'static str>,
    body: Vec<u8>,
}

fn encrypted_for(browser: &BrowserSubscription, message: &[u8]) -> Vec<u8> {
    let p256dh = URL_SAFE_NO_PAD.decode(&browser.keys.p256dh).unwrap();
    let auth: [u8; 16] = URL_SAFE_NO_PAD
        .decode(&browser.keys.auth)
        .unwrap()
        .try_into()
        .unwrap();
    web_push_native::encrypt(
        message.to_vec(),
        &p256::PublicKey::from_sec1_bytes(&p256dh).unwrap(),
        &web_push_native::Auth::from(auth),
    )
    .unwrap()
}

/// A push as forma sends it, signed for `origin` at `signed_at`.
fn push(
    browser: &BrowserSubscription,
    origin: &str,
    subject: &str,
    signed_at: chrono::DateTime<Utc>,
) -> Push {
    let (keys, _) = VapidKeys::generate().unwrap();
    Push {
        authorization: keys.authorization(origin, subject, signed_at).unwrap(),
        ttl: Some("60"),
        body: encrypted_for(browser, br#"{"type":"order.created"}"#),
    }
}

async fn send(browser: &BrowserSubscription, push: Push) -> u16 {
    let mut request = crate::testing::client()
        .post(&browser.endpoint)
        .header("authorization", push.authorization)
        .header("content-encoding", "aes128gcm")
        .body(push.body);
    if let Some(ttl) = push.ttl {
        request = request.header("ttl", ttl);
    }
    request.send().await.unwrap().status().as_u16()
}

fn origin_of(browser: &BrowserSubscription) -> String {
    url::Url::parse(&browser.endpoint)
        .unwrap()
        .origin()
        .ascii_serialization()
}

#[tokio::test]
async fn a_signed_and_encrypted_push_is_taken_and_decrypted() {
    let stop = CancellationToken::new();
    let sim = PushServiceSim::start(stop.clone()).await.unwrap();
    let browser = sim.subscribe();
    let good = push(
        &browser,
        &origin_of(&browser),
        "mailto:ops@example.com",
        Utc::now(),
    );
    assert_eq!(send(&browser, good).await, 201, "{:?}", sim.refusals());
    let delivered = sim.delivered_to(&browser.endpoint);
    assert_eq!(delivered[0].payload["type"], "order.created");
    assert_eq!(delivered[0].ttl, 60);
    stop.cancel();
}

#[tokio::test]
async fn a_push_with_a_wrong_token_is_refused() {
    let stop = CancellationToken::new();
    let sim = PushServiceSim::start(stop.clone()).await.unwrap();
    let browser = sim.subscribe();
    let origin = origin_of(&browser);
    let now = Utc::now();
    let cases = [
        (
            "another origin",
            push(&browser, "http://127.0.0.1", "mailto:a@b.c", now),
        ),
        (
            "expired",
            push(
                &browser,
                &origin,
                "mailto:a@b.c",
                now - TimeDelta::hours(13),
            ),
        ),
        (
            "exp over 24 h away",
            push(
                &browser,
                &origin,
                "mailto:a@b.c",
                now + TimeDelta::hours(13),
            ),
        ),
        ("sub not a contact", push(&browser, &origin, "ops", now)),
    ];
    for (case, bad) in cases {
        assert_eq!(send(&browser, bad).await, 401, "{case}");
    }
    // Signed by one key, presented with another.
    let mut forged = push(&browser, &origin, "mailto:a@b.c", now);
    let (other, _) = VapidKeys::generate().unwrap();
    let k = forged.authorization.rsplit_once("k=").unwrap().0.to_owned();
    forged.authorization = format!("{k}k={}", other.public_key());
    assert_eq!(send(&browser, forged).await, 401, "another k=");
    assert_eq!(sim.refusals().len(), 5, "{:?}", sim.refusals());
    assert!(sim.delivered().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_push_the_browser_cannot_decrypt_or_without_ttl_is_refused() {
    let stop = CancellationToken::new();
    let sim = PushServiceSim::start(stop.clone()).await.unwrap();
    let (browser, stranger) = (sim.subscribe(), sim.subscribe());
    let origin = origin_of(&browser);
    let mut for_stranger = push(&browser, &origin, "mailto:a@b.c", Utc::now());
    for_stranger.body = encrypted_for(&stranger, b"{}");
    assert_eq!(send(&browser, for_stranger).await, 400);
    let mut no_ttl = push(&browser, &origin, "mailto:a@b.c", Utc::now());
    no_ttl.ttl = None;
    assert_eq!(send(&browser, no_ttl).await, 400);
    assert!(sim.delivered().is_empty());
    stop.cancel();
}
