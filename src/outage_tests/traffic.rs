//! Steady traffic through a gateway while a dependency comes and goes, as users and Shopify keep
//! sending it: a signed-in read, the health check and a new Shopify order at a steady pace,
//! however slowly the answers come. Every answer is kept for the test to judge afterwards.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::order::flow_tests::{SHOP, SHOPIFY_SECRET, line};
use crate::simulators::shopify::{self, Delivery};
use crate::testing;

/// Longer than this without an answer is a hang: an outage must be answered, not waited out.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The pace of the traffic: one of each request per tick, whether or not earlier ones answered.
const TICK: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /api/v1/orders` with a session cookie.
    SignedInRead,
    /// `GET /health`.
    Health,
    /// A Shopify `orders/create` for a new order.
    Webhook,
}

/// What one request got: its status, or `None` when nothing came within [`ANSWER_WITHIN`] (the
/// body then says why), and its JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The order the requests were sent in.
    pub sent: usize,
    pub request: Request,
    pub status: Option<u16>,
    pub body: Value,
    /// The Shopify order it delivered, for [`Request::Webhook`].
    pub delivery: Option<Delivery>,
}

/// The running traffic.
pub struct Traffic {
    stop: CancellationToken,
    task: JoinHandle<Vec<Answer>>,
}

impl Traffic {
    /// Starts sending to the gateway at `base`, reading with `session` (a signed-in client); new
    /// orders are numbered from `first_order` on.
    pub fn start(base: String, session: reqwest::Client, first_order: u64) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let plain = testing::client();
            let mut sent = JoinSet::new();
            let mut tick = tokio::time::interval(TICK);
            let mut number = first_order;
            let mut seq = 0;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let read = session
                    .get(format!("{base}/api/v1/orders?pageSize=1"))
                    .send();
                sent.spawn(answer(seq, Request::SignedInRead, None, read));
                let health = plain.get(format!("{base}/health")).send();
                sent.spawn(answer(seq + 1, Request::Health, None, health));
                let delivery = order_delivery(number);
                let post = {
                    let (delivery, plain, url) = (
                        delivery.clone(),
                        plain.clone(),
                        format!("{base}/api/v1/webhooks/shopify"),
                    );
                    async move { delivery.send(&plain, &url, SHOPIFY_SECRET.as_bytes()).await }
                };
                sent.spawn(answer(seq + 2, Request::Webhook, Some(delivery), post));
                number += 1;
                seq += 3;
            }
            let mut answers = sent.join_all().await;
            answers.sort_by_key(|a| a.sent);
            answers
        });
        Self { stop, task }
    }

    /// Stops sending and returns every answer in the order the requests were sent, once the last
    /// request has its own.
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.cancel();
        self.task.await.expect("the traffic runs to its end")
    }
}

/// `orders/create` for a new order numbered `number`, of one cube.
pub fn order_delivery(number: u64) -> Delivery {
    let document = shopify::order_document(number * 10, number, &[line(1, "CUBE", 1)]);
    Delivery::new("orders/create", SHOP, &document)
}

async fn answer(
    sent: usize,
    request: Request,
    delivery: Option<Delivery>,
    response: impl Future<Output = reqwest::Result<reqwest::Response>>,
) -> Answer {
    let answered = async {
        let response = response.await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(ANSWER_WITHIN, answered).await {
        Ok(Ok((status, body))) => (Some(status), body),
        Ok(Err(e)) => (None, Value::String(format!("no answer: {e}"))),
        Err(_) => (
            None,
            Value::String(format!("no answer within {ANSWER_WITHIN:?}")),
        ),
    };
    Answer {
        sent,
        request,
        status,
        body,
        delivery,
    }
}

/// Every request got an answer, and each the outage could explain is a 503 in the SPEC §4 shape
/// with one of `messages` (what forma says, never a driver's error); none is a 500. The health
/// check says `down` exactly when it answers 503. At least one request saw the outage, and the
/// last of each kind was served again (forma recovered by itself).
pub fn assert_well_answered(answers: &[Answer], messages: &[&str]) {
    let mut saw_outage = false;
    for answer in answers {
        let Some(status) = answer.status else {
            panic!("{:?} got {}", answer.request, answer.body);
        };
        let body = &answer.body;
        match (answer.request, status) {
            (Request::Health, 200) => assert_ne!(body["status"], "down", "{body}"),
            (Request::Health, 503) => {
                assert_eq!(body["status"], "down", "{body}");
                saw_outage = true;
            }
            (Request::SignedInRead | Request::Webhook, 200) => {}
            (Request::SignedInRead | Request::Webhook, 503) => {
                assert_eq!(body["statusCode"], 503, "{body}");
                assert_eq!(body["error"], "Service Unavailable", "{body}");
                let message = body["message"].as_str().unwrap_or_default();
                assert!(
                    messages.contains(&message),
                    "{:?}: 503 saying {body}",
                    answer.request
                );
                saw_outage = true;
            }
            (request, status) => panic!("{request:?} got {status}: {body}"),
        }
    }
    assert!(saw_outage, "no request saw the outage: {answers:?}");
    for request in [Request::SignedInRead, Request::Health, Request::Webhook] {
        let last = answers.iter().rev().find(|a| a.request == request);
        assert_eq!(
            last.and_then(|a| a.status),
            Some(200),
            "the last {request:?} was not served again: {last:?}"
        );
    }
}

/// The Shopify orders the traffic delivered that forma did not acknowledge: Shopify delivers
/// them again.
pub fn unacknowledged(answers: &[Answer]) -> Vec<Delivery> {
    answers
        .iter()
        .filter(|a| a.status != Some(200))
        .filter_map(|a| a.delivery.clone())
        .collect()
}

/// How many Shopify orders the traffic delivered.
pub fn orders_delivered(answers: &[Answer]) -> usize {
    answers.iter().filter(|a| a.delivery.is_some()).count()
}
