//! A socket does not outlive the sign-in that opened it: the real `socket.io-client` connects
//! through the gateway, the session (or token, or user) is revoked, and the client is
//! disconnected; its other sessions' sockets are not. In role `all`, and split (two gateways, two
//! order services, PostgreSQL and Redis), where the revocation is made on one gateway and the
//! socket is held by the other.

use std::time::Duration;

use serde_json::json;

use crate::identity::roles::UserRole;
use crate::order::flow_tests::{Deployment, SHOP, deliver, line};
use crate::order::realtime::test_client::{Client, Transport};
use crate::simulators::shopify::{self, Delivery};
use crate::testing::{ADMIN_PASSWORD, TestApp, eventually};

/// How soon a revoked socket must be gone: generous for a busy machine, far below the 25 s after
/// which a long-poll would end by itself.
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

async fn session(gateway: &TestApp, email: &str, password: &str) -> String {
    gateway.login(email, password).await.1
}

async fn refresh(gateway: &TestApp, refresh_token: &str) -> u16 {
    crate::testing::client()
        .post(gateway.url("/api/v1/auth/refresh"))
        .json(&json!({"refreshToken": refresh_token}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn sign_out(gateway: &TestApp, credential: (&str, String)) {
    let response = crate::testing::client()
        .post(gateway.url("/api/v1/auth/logout"))
        .header(credential.0, credential.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

fn cookie(value: &str) -> (&'static str, String) {
    ("cookie", format!("forma.sid={value}"))
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn connect(name: &str, gateway: &TestApp, transport: Transport, cookie: &str) -> Client {
    Client::start(name, &gateway.url(""), transport, Some(cookie))
        .await
        .connected()
        .await
}

async fn assert_disconnected(client: &mut Client) {
    let name = client.name.clone();
    client
        .wait_for(CLOSED_WITHIN, |v| v["type"] == "disconnect")
        .await
        .unwrap_or_else(|| panic!("{name} is still connected after its sign-in was revoked"));
}

/// A socket nobody revoked still hears of the tenant's next order.
async fn assert_still_hears(deployment: &Deployment, client: &mut Client, number: u64) {
    let document = shopify::order_document(6_300_000 + number, number, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(
        deployment.gateway(0),
        &Delivery::new("orders/create", SHOP, &document),
    )
    .await;
    assert_eq!(status, 200);
    let heard = client
        .wait_for(CLOSED_WITHIN, |v| {
            v["event"] == "order:created" && v["data"]["orderNumber"] == format!("#{number}")
        })
        .await;
    assert!(
        heard.is_some(),
        "{} no longer hears its tenant",
        client.name
    );
    assert!(
        client
            .wait_for(Duration::ZERO, |v| v["type"] == "disconnect")
            .await
            .is_none(),
        "{} was disconnected",
        client.name
    );
}

#[tokio::test]
async fn signing_out_disconnects_the_sockets_of_that_sign_in_in_role_all() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let mut sockets = Vec::new();
    for (name, transport) in [
        ("websocket", Transport::Websocket),
        ("polling upgraded to websocket", Transport::Upgrading),
        ("polling", Transport::Polling),
    ] {
        let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
        sockets.push((connect(name, gateway, transport, &cookie).await, cookie));
    }
    let (token, _) = gateway.admin_tokens().await;
    let mut with_token =
        Client::with_bearer("bearer", &gateway.url(""), Transport::Websocket, &token)
            .await
            .connected()
            .await;
    let untouched = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let mut bystander = connect("another session", gateway, Transport::Websocket, &untouched).await;

    for (client, value) in &mut sockets {
        sign_out(gateway, cookie(value)).await;
        assert_disconnected(client).await;
    }
    sign_out(gateway, bearer(&token)).await;
    assert_disconnected(&mut with_token).await;
    assert_still_hears(&deployment, &mut bystander, 6301).await;
}

/// A socket that goes away is forgotten: its lease, which holds what ends the socket on a
/// revocation, is released with it. (A polling-only socket whose client vanishes is let go by
/// engine.io at its next missed ping, about 45 s on: too slow for this test.)
#[tokio::test]
async fn sockets_that_go_away_leave_nothing_held_in_role_all() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let held = || async { gateway.metric("gateway_held_connections").await };
    let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let lost = connect("websocket", gateway, Transport::Websocket, &cookie).await;
    let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let leaving = connect("upgraded", gateway, Transport::Upgrading, &cookie).await;
    // One each: the upgraded socket holds its handshake's lease, and its websocket needs none.
    eventually("a connection held per socket", CLOSED_WITHIN, || async {
        held().await.filter(|&count| count == 2.0)
    })
    .await;

    // One client leaves as a closed page does; the other's process is killed, as a lost network
    // ends it.
    leaving.close().await;
    drop(lost);
    eventually("nothing held", CLOSED_WITHIN, || async {
        held().await.filter(|&count| count == 0.0)
    })
    .await;
}

#[tokio::test]
async fn a_deactivated_users_socket_is_disconnected_in_role_all() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let user = gateway
        .create_user("ops@localhost", "ops-password-1", UserRole::Operator)
        .await;
    let theirs = session(gateway, "ops@localhost", "ops-password-1").await;
    let mut socket = connect("deactivated user", gateway, Transport::Websocket, &theirs).await;
    let mine = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let mut bystander = connect("the admin", gateway, Transport::Websocket, &mine).await;

    let response = crate::testing::client()
        .patch(gateway.url(&format!("/api/v1/users/{}", user.id)))
        .header("cookie", format!("forma.sid={mine}"))
        .json(&json!({"isActive": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_disconnected(&mut socket).await;
    assert_still_hears(&deployment, &mut bystander, 6302).await;
}

/// Both gateways listen to the revocations published on Redis.
async fn gateways_listening(deployment: &Deployment) {
    let redis = deployment.gateway(0).ctx.redis.clone().expect("Redis");
    let channel = redis.key(super::super::live::CHANNEL);
    eventually(
        "both gateways listen to revocations",
        CLOSED_WITHIN,
        || async {
            let mut conn = redis.connection().await.ok()?;
            let (_, listeners): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .ok()?;
            (listeners >= 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn signing_out_on_one_gateway_disconnects_sockets_held_by_another_split() {
    let deployment = Deployment::split().await;
    gateways_listening(&deployment).await;
    let (here, there) = (deployment.gateway(0), deployment.gateway(1));

    let on_here = session(here, "admin@localhost", ADMIN_PASSWORD).await;
    let mut spliced_here = connect(
        "websocket on this gateway",
        here,
        Transport::Websocket,
        &on_here,
    )
    .await;
    let on_there = session(here, "admin@localhost", ADMIN_PASSWORD).await;
    let mut spliced_there = connect(
        "websocket on the other gateway",
        there,
        Transport::Websocket,
        &on_there,
    )
    .await;
    // Access tokens are checked by the gateway that signed them (no shared secret here); a reused
    // refresh token revokes the family wherever it is presented.
    let (token, refresh_token) = there.admin_tokens().await;
    let mut with_token = Client::with_bearer(
        "bearer on the other gateway",
        &there.url(""),
        Transport::Websocket,
        &token,
    )
    .await
    .connected()
    .await;
    let untouched = session(there, "admin@localhost", ADMIN_PASSWORD).await;
    let mut bystander = connect("another session", there, Transport::Websocket, &untouched).await;

    sign_out(here, cookie(&on_here)).await;
    assert_disconnected(&mut spliced_here).await;
    sign_out(here, cookie(&on_there)).await;
    assert_disconnected(&mut spliced_there).await;
    assert_eq!(refresh(here, &refresh_token).await, 200);
    assert_eq!(
        refresh(here, &refresh_token).await,
        401,
        "a reused refresh token"
    );
    assert_disconnected(&mut with_token).await;
    assert_still_hears(&deployment, &mut bystander, 6303).await;
}

/// Split, a polling client's polls go through the gateway one by one: once signed out, the next
/// one is refused and the client is disconnected (the poll in flight ends at the latest with the
/// order service's next ping; an event flushes it sooner).
#[tokio::test]
async fn a_signed_out_sessions_next_poll_is_refused_split() {
    let deployment = Deployment::split().await;
    let gateway = deployment.gateway(1);
    let value = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let mut polling = connect("polling", gateway, Transport::Polling, &value).await;
    sign_out(deployment.gateway(0), cookie(&value)).await;
    let document = shopify::order_document(6_300_304, 6304, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    assert_disconnected(&mut polling).await;
}

/// Engine.io over a raw websocket, speaking Socket.IO's packets by hand as a client may: it can
/// leave `/events` and join it again on one connection.
struct RawSocket(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>);

impl RawSocket {
    async fn open(gateway: &TestApp, cookie: &str) -> Self {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gateway.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("cookie", format!("forma.sid={cookie}").parse().unwrap());
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        let mut socket = Self(socket);
        let open = socket.next().await;
        assert!(open.starts_with('0'), "{open}");
        socket
    }

    async fn send(&mut self, packet: &str) {
        use futures::SinkExt;
        let message = tokio_tungstenite::tungstenite::Message::text(packet);
        self.0.send(message).await.unwrap();
    }

    /// The next packet that is not a ping (answered).
    async fn next(&mut self) -> String {
        self.next_within(CLOSED_WITHIN)
            .await
            .expect("a packet in time")
    }

    /// The next packet that is not a ping (answered), if one comes `within`.
    async fn next_within(&mut self, within: Duration) -> Option<String> {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.0.next())
                .await
                .ok()?
                .expect("the connection is open")
                .unwrap();
            let text = message.to_text().unwrap().to_owned();
            if text == "2" {
                self.send("3").await;
                continue;
            }
            return Some(text);
        }
    }

    /// Asks to join `/events`, again while no answer comes (the server ignores a join that
    /// arrives while it is still closing the connection's previous socket); the answer.
    async fn join(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + CLOSED_WITHIN;
        while tokio::time::Instant::now() < deadline {
            self.send("40/events,").await;
            if let Some(answer) = self.next_within(Duration::from_secs(1)).await {
                return answer;
            }
        }
        panic!("no answer to joining /events");
    }
}

/// A client may leave `/events` and join it again on one connection. Whichever socket it has when
/// its sign-in is revoked is ended, and it cannot join again on that connection.
#[tokio::test]
async fn a_revoked_sign_in_cannot_join_events_again_on_its_connection() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let session = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let mut socket = RawSocket::open(gateway, &session).await;
    for _ in 0..3 {
        let joined = socket.join().await;
        assert!(joined.starts_with("40/events,{"), "{joined}");
        socket.send("41/events,").await;
    }
    let joined = socket.join().await;
    assert!(joined.starts_with("40/events,{"), "{joined}");

    sign_out(gateway, cookie(&session)).await;
    assert_eq!(socket.next().await, "41/events,", "the socket is ended");
    let refused = socket.join().await;
    assert!(refused.starts_with("44/events,"), "joined again: {refused}");
}
