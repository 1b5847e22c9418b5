//! Real loopback HTTP: each upstream is an axum server on `127.0.0.1:0` that counts the
//! connections it accepts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::Barrier;

use super::*;

/// Serves `router`; returns its `host:port` and the count of connections it accepted.
async fn serve(router: Router) -> (String, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    (address, accepted)
}

fn pool(address: &str) -> ConnectionPool {
    ConnectionPool::new(vec![address.to_owned()], 0)
}

async fn get(pool: &ConnectionPool, path: &'static str) -> String {
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = path.parse().expect("a path");
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("upstream"));
    let response = pool.send(0, request).await.expect("a response");
    let body = response.into_body().collect().await.expect("a body");
    String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn requests_one_after_another_share_one_connection() {
    let (address, accepted) = serve(Router::new().fallback(|| async { "ok" })).await;
    let pool = pool(&address);
    for _ in 0..5 {
        assert_eq!(get(&pool, "/").await, "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_serves_one_exchange_at_a_time_then_is_kept_for_the_next() {
    // Neither answer comes before both requests have arrived: one connection each.
    let both = Arc::new(Barrier::new(2));
    let router = Router::new().fallback(move || {
        let both = both.clone();
        async move {
            both.wait().await;
            "ok"
        }
    });
    let (address, accepted) = serve(router).await;
    let pool = pool(&address);
    let (first, second) = tokio::join!(get(&pool, "/"), get(&pool, "/"));
    assert_eq!((first.as_str(), second.as_str()), ("ok", "ok"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // The next two are answered on the connections kept, once they are idle again.
    let (first, second) = tokio::join!(get(&pool, "/"), get(&pool, "/"));
    assert_eq!((first.as_str(), second.as_str()), ("ok", "ok"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_replaced_without_an_error() {
    let router = Router::new()
        .fallback(|| async { ([(header::CONNECTION, "close")], "closing").into_response() });
    let (address, accepted) = serve(router).await;
    let pool = pool(&address);
    for _ in 0..3 {
        assert_eq!(get(&pool, "/").await, "closing");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_unused_connection_is_let_go_after_the_idle_timeout() {
    let (address, accepted) = serve(Router::new().fallback(|| async { "ok" })).await;
    let pool = pool(&address);
    get(&pool, "/").await;
    let kept = || pool.kept_of(0).expect("instance 0").len();
    assert_eq!(kept(), 1);
    // Once its exchange is over it is idle again, and offered before the timeout.
    let idle = crate::testing::eventually("the connection is idle", Duration::from_secs(5), || {
        let sender = pool.checkout(0, Instant::now());
        async move { sender }
    })
    .await;
    pool.keep(0, idle, Instant::now());
    assert!(
        pool.checkout(0, Instant::now() + IDLE_TIMEOUT).is_none(),
        "kept past its idle timeout"
    );
    assert_eq!(kept(), 0, "and let go");
    get(&pool, "/").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_instance_nobody_listens_on_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    drop(listener);
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = "/".parse().expect("a path");
    let error = pool(&address)
        .send(0, request)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, SendError::Connect { .. }), "{error:?}");
}
