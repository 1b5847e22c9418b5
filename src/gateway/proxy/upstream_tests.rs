//! Real loopback HTTP: every upstream here is a tiny axum server on `127.0.0.1:0`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use futures::StreamExt;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::*;
use crate::config::LoadBalancing;

const PATIENCE: Duration = Duration::from_secs(5);

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    format!("http://{addr}")
}

/// An address where nothing listens: the port was bound, then released.
async fn dead_instance() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    drop(listener);
    format!("http://{addr}")
}

/// An instance answering `name` to everything and counting its hits.
async fn named_instance(name: &'static str) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { name }
    });
    (serve(router).await, hits)
}

fn upstream_with(instances: Vec<String>, configure: impl FnOnce(&mut Config)) -> HttpUpstream {
    let mut config = Config::default();
    configure(&mut config);
    HttpUpstream::new(Service::Order, instances, &config).expect("an upstream")
}

fn upstream(instances: Vec<String>) -> HttpUpstream {
    upstream_with(instances, |_| {})
}

fn request(method: Method, path: &str, body: Body) -> Request {
    Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .expect("a request")
}

async fn text(response: Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

async fn get_text(upstream: &HttpUpstream, path: &str) -> String {
    let response = upstream
        .forward(request(Method::GET, path, Body::empty()), PATIENCE, None)
        .await
        .expect("a response");
    text(response).await
}

#[tokio::test]
async fn request_reaches_the_instance_with_its_path_query_and_host() {
    let base = serve(Router::new().fallback(|request: Request| async move {
        let host = request.headers().get(header::HOST).cloned();
        format!("{} {:?}", request.uri(), host)
    }))
    .await;
    let upstream = upstream(vec![base.clone()]);
    let mut forwarded = request(Method::GET, "/api/v1/orders?page=2", Body::empty());
    forwarded
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_static("shop.example"));
    let response = upstream
        .forward(forwarded, PATIENCE, None)
        .await
        .expect("a response");
    let authority = base.trim_start_matches("http://");
    assert_eq!(
        text(response).await,
        format!("/api/v1/orders?page=2 Some(\"{authority}\")")
    );
}

#[test]
fn an_instance_gets_its_requests_in_origin_form_under_its_url_path() {
    let upstream = upstream(vec![
        "http://127.0.0.1:4001".into(),
        "http://127.0.0.1:4002/orders-service/".into(),
        "http://localhost".into(),
    ]);
    let connect: Vec<&str> = upstream
        .addresses
        .iter()
        .map(|a| a.connect.as_str())
        .collect();
    assert_eq!(
        connect,
        ["127.0.0.1:4001", "127.0.0.1:4002", "localhost:80"],
        "where each is connected to"
    );
    let path = PathAndQuery::from_static("/api/v1/orders?page=2");
    for (index, expected) in [
        "/api/v1/orders?page=2",
        "/orders-service/api/v1/orders?page=2",
        "/api/v1/orders?page=2",
    ]
    .into_iter()
    .enumerate()
    {
        let uri = upstream.target_uri(index, Some(&path)).expect("a URI");
        assert_eq!(uri.to_string(), expected);
    }
    assert_eq!(
        upstream.target_uri(0, None).expect("a URI").to_string(),
        "/"
    );
    assert_eq!(
        upstream.target_uri(1, None).expect("a URI").to_string(),
        "/orders-service/"
    );
}

#[test]
fn an_instance_url_that_is_not_plain_http_is_refused() {
    for url in [
        "https://127.0.0.1:4001",
        "127.0.0.1:4001",
        "http://127.0.0.1:4001/x?y=1",
    ] {
        let refused = HttpUpstream::new(Service::Order, vec![url.into()], &Config::default());
        assert!(refused.is_err(), "{url} was accepted");
    }
}

#[tokio::test]
async fn request_body_streams_to_the_upstream_byte_for_byte() {
    let base = serve(Router::new().fallback(|body: Body| async move {
        let mut frames = body.into_data_stream();
        let (mut chunks, mut length, mut digest) = (0, 0, Sha256::new());
        while let Some(Ok(chunk)) = frames.next().await {
            chunks += 1;
            length += chunk.len();
            digest.update(&chunk);
        }
        format!("{length} {} {}", chunks > 1, hex::encode(digest.finalize()))
    }))
    .await;
    let payload: Vec<u8> = (0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let expected = format!(
        "{} true {}",
        payload.len(),
        hex::encode(Sha256::digest(&payload))
    );
    let chunks: Vec<Result<Bytes, Infallible>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = Body::from_stream(futures::stream::iter(chunks));
    let response = upstream(vec![base])
        .forward(request(Method::POST, "/upload", body), PATIENCE, None)
        .await
        .expect("a response");
    assert_eq!(text(response).await, expected);
}

#[tokio::test]
async fn request_body_reaches_the_upstream_before_it_is_complete() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Bytes>();
    let base = serve(Router::new().fallback(move |body: Body| async move {
        let mut frames = body.into_data_stream();
        while let Some(Ok(chunk)) = frames.next().await {
            seen_tx.send(chunk).ok();
        }
        "done"
    }))
    .await;
    let (send, receive) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
    let body = Body::from_stream(tokio_stream_of(receive));
    let upstream = Arc::new(upstream(vec![base]));
    let forwarding = tokio::spawn({
        let upstream = upstream.clone();
        async move {
            let request = request(Method::POST, "/upload", body);
            upstream.forward(request, PATIENCE, None).await
        }
    });
    send.send(Ok(Bytes::from_static(b"first"))).expect("sent");
    let first = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("streamed");
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    send.send(Ok(Bytes::from_static(b"second"))).expect("sent");
    drop(send);
    let response = forwarding.await.expect("joined").expect("a response");
    assert_eq!(text(response).await, "done");
}

/// `Body::from_stream` wants a `Stream`; an unbounded receiver is one once polled like this.
fn tokio_stream_of<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn response_body_streams_back_before_the_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let base = serve(Router::new().fallback(move || {
        let gate = gate.clone();
        async move {
            let rest = async move {
                gate.notified().await;
                Ok::<_, Infallible>(Bytes::from_static(b"second"))
            };
            let first = futures::stream::iter([Ok(Bytes::from_static(b"first"))]);
            Body::from_stream(first.chain(futures::stream::once(rest)))
        }
    }))
    .await;
    let response = upstream(vec![base])
        .forward(
            request(Method::GET, "/download", Body::empty()),
            PATIENCE,
            None,
        )
        .await
        .expect("a response");
    let mut body = response.into_body();
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("streamed");
    let first = first
        .expect("a frame")
        .expect("no error")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"first");
    release.notify_one();
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[test]
fn hop_by_hop_headers_and_those_named_in_connection_are_stripped() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("connection", "keep-alive, X-Secret-Hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic eA=="),
        ("proxy-authenticate", "Basic"),
        ("trailer", "x-checksum"),
        ("x-kept", "yes"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    strip_hop_by_hop(&mut headers);
    assert_eq!(
        headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
        ["x-kept"]
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_in_both_directions() {
    let base = serve(Router::new().fallback(|headers: HeaderMap| async move {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        let response_headers = [
            ("connection", "x-hop-response"),
            ("x-hop-response", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-checksum"),
            ("x-kept", "yes"),
        ];
        (response_headers, names.join(","))
    }))
    .await;
    let mut forwarded = request(Method::GET, "/", Body::empty());
    for (name, value) in [
        ("connection", "x-hop-request"),
        ("x-hop-request", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic eA=="),
        ("trailer", "x-checksum"),
        ("x-kept", "yes"),
    ] {
        let name = HeaderName::from_static(name);
        forwarded
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let response = upstream(vec![base])
        .forward(forwarded, PATIENCE, None)
        .await
        .expect("a response");
    let headers = response.headers().clone();
    assert_eq!(text(response).await, "host,x-kept");
    assert_eq!(
        headers.get("x-kept").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    for gone in [
        "connection",
        "x-hop-response",
        "keep-alive",
        "proxy-authenticate",
        "trailer",
    ] {
        assert!(!headers.contains_key(gone), "{gone} crossed the proxy");
    }
}

#[tokio::test]
async fn slow_upstream_times_out() {
    let base = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        "late"
    }))
    .await;
    let started = std::time::Instant::now();
    let timeout = Duration::from_millis(200);
    let error = upstream(vec![base])
        .forward(request(Method::GET, "/", Body::empty()), timeout, None)
        .await
        .expect_err("a timeout");
    assert!(
        matches!(error, ProxyError::Timeout(t) if t == timeout),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let api = error.into_api_error(Service::Order);
    assert_eq!(api.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        api.to_string(),
        "504 Upstream order did not answer within 200ms"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let error = upstream(vec![dead_instance().await])
        .forward(request(Method::POST, "/", Body::from("{}")), PATIENCE, None)
        .await
        .expect_err("unreachable");
    assert!(matches!(error, ProxyError::Connect(_)), "{error:?}");
    let api = error.into_api_error(Service::Print);
    assert_eq!(api.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(api.to_string(), "502 Upstream print is unreachable");
}

#[tokio::test]
async fn get_is_retried_on_another_instance_after_a_refused_connection() {
    let (alive, hits) = named_instance("alive").await;
    // Round-robin starts with the first instance, the dead one.
    let upstream = upstream(vec![dead_instance().await, alive]);
    assert_eq!(get_text(&upstream, "/").await, "alive");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn post_is_never_retried() {
    let (alive, hits) = named_instance("alive").await;
    let upstream = upstream(vec![dead_instance().await, alive]);
    let error = upstream
        .forward(request(Method::POST, "/", Body::empty()), PATIENCE, None)
        .await
        .expect_err("not retried");
    assert!(matches!(error, ProxyError::Connect(_)), "{error:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn get_is_retried_at_most_twice_when_connections_are_reset() {
    // Accepts and hangs up before answering: a connection error after connecting.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let error = upstream(vec![base])
        .forward(request(Method::GET, "/", Body::empty()), PATIENCE, None)
        .await
        .expect_err("every attempt fails");
    assert!(matches!(error, ProxyError::Connect(_)), "{error:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ten_failing_requests_open_the_breaker_and_the_eleventh_fails_fast() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let base = serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { StatusCode::SERVICE_UNAVAILABLE }
    }))
    .await;
    let upstream = upstream(vec![base]);
    for _ in 0..10 {
        let response = upstream
            .forward(request(Method::GET, "/", Body::empty()), PATIENCE, None)
            .await
            .expect("the upstream's own 503");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(upstream.breaker().state().as_str(), "open");
    let error = upstream
        .forward(request(Method::GET, "/", Body::empty()), PATIENCE, None)
        .await
        .expect_err("circuit open");
    assert!(
        matches!(error, ProxyError::CircuitOpen { retry_after } if retry_after > Duration::from_secs(25))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 10);
    let response = error.into_api_error(Service::Order).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "30");
}

/// A client trickling its body past the deadline is slow itself: a 408, and the breaker hears
/// nothing of it, however many do it. Else anyone could open it, without signing in, by
/// trickling webhook bodies, and the whole service would answer 503.
#[tokio::test]
async fn slow_request_bodies_time_out_without_opening_the_breaker() {
    // As the handlers do: the whole body is read before anything is answered.
    let base = serve(Router::new().fallback(|body: Body| async move {
        let _ = body.collect().await;
        "read"
    }))
    .await;
    let upstream = upstream(vec![base]);
    let timeout = Duration::from_millis(100);
    // Kept, so the bodies never end.
    let mut senders = Vec::new();
    for _ in 0..12 {
        let (send, receive) = mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
        send.send(Ok(Bytes::from_static(b"{"))).expect("sent");
        senders.push(send);
        let body = Body::from_stream(tokio_stream_of(receive));
        let trickled = request(Method::POST, "/api/v1/webhooks/shopify", body);
        let error = upstream
            .forward(trickled, timeout, None)
            .await
            .expect_err("a timeout");
        assert!(matches!(error, ProxyError::ClientTimeout(_)), "{error:?}");
        let api = error.into_api_error(Service::Order);
        assert_eq!(api.status(), StatusCode::REQUEST_TIMEOUT);
    }
    assert_eq!(upstream.breaker().state().as_str(), "closed");
    assert_eq!(get_text(&upstream, "/").await, "read");
}

#[test]
fn circuit_open_asks_to_retry_after_at_least_a_second() {
    let error = ProxyError::CircuitOpen {
        retry_after: Duration::from_millis(200),
    };
    let response = error.into_api_error(Service::Shipping).into_response();
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn round_robin_spreads_requests_across_instances() {
    let (a, hits_a) = named_instance("a").await;
    let (b, hits_b) = named_instance("b").await;
    let upstream = upstream(vec![a, b]);
    for _ in 0..10 {
        get_text(&upstream, "/").await;
    }
    assert_eq!(hits_a.load(Ordering::SeqCst), 5);
    assert_eq!(hits_b.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_instance() {
    let (a, _) = named_instance("a").await;
    let (b, _) = named_instance("b").await;
    let (c, _) = named_instance("c").await;
    let upstream = upstream_with(vec![a, b, c], |config| {
        config.proxy.load_balancing = LoadBalancing::ConsistentHash;
    });
    let mut used = std::collections::HashSet::new();
    for key in ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10"] {
        let mut answers = std::collections::HashSet::new();
        for _ in 0..3 {
            let response = upstream
                .forward(
                    request(Method::GET, "/", Body::empty()),
                    PATIENCE,
                    Some(key),
                )
                .await
                .expect("a response");
            answers.insert(text(response).await);
        }
        // The same key given as an extension lands on the same instance.
        let mut with_extension = request(Method::GET, "/", Body::empty());
        with_extension
            .extensions_mut()
            .insert(Affinity(Some(key.to_owned())));
        let response = upstream
            .forward(with_extension, PATIENCE, None)
            .await
            .expect("a response");
        answers.insert(text(response).await);
        assert_eq!(answers.len(), 1, "key {key} moved: {answers:?}");
        used.extend(answers);
    }
    assert!(used.len() > 1, "every key hashed to {used:?}");
}

#[tokio::test]
async fn least_connections_avoids_the_busy_instance() {
    let release = Arc::new(Notify::new());
    let instance = |name: &'static str| {
        let release = release.clone();
        Router::new()
            .route(
                "/hold",
                get(move || async move {
                    release.notified().await;
                    name
                }),
            )
            .fallback(any(move || async move { name }))
    };
    let a = serve(instance("a")).await;
    let b = serve(instance("b")).await;
    let upstream = Arc::new(upstream_with(vec![a, b], |config| {
        config.proxy.load_balancing = LoadBalancing::LeastConnections;
    }));
    let held = tokio::spawn({
        let upstream = upstream.clone();
        async move { get_text(&upstream, "/hold").await }
    });
    while upstream
        .balancer
        .instances
        .iter()
        .all(|i| i.in_flight.load(Ordering::SeqCst) == 0)
    {
        tokio::task::yield_now().await;
    }
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get_text(&upstream, "/fast").await);
    }
    release.notify_one();
    let busy = held.await.expect("joined");
    assert!(
        answers.iter().all(|answer| *answer != busy),
        "{busy} got {answers:?}"
    );
}

#[tokio::test]
async fn instance_with_consecutive_connection_failures_is_ejected() {
    let (alive, hits) = named_instance("alive").await;
    let upstream = upstream(vec![dead_instance().await, alive]);
    let mut refused = 0;
    for _ in 0..10 {
        // POST, so no retry hides the dead instance.
        let outcome = upstream
            .forward(request(Method::POST, "/", Body::empty()), PATIENCE, None)
            .await;
        refused += usize::from(outcome.is_err());
    }
    assert_eq!(refused, 3);
    assert_eq!(hits.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn ejection_follows_its_settings() {
    let (alive, hits) = named_instance("alive").await;
    let upstream = upstream_with(vec![dead_instance().await, alive], |c| {
        c.proxy.eject_after_failures = 1;
        c.proxy.eject_for_ms = 60_000;
    });
    let mut refused = 0;
    for _ in 0..10 {
        let outcome = upstream
            .forward(request(Method::POST, "/", Body::empty()), PATIENCE, None)
            .await;
        refused += usize::from(outcome.is_err());
    }
    assert_eq!((refused, hits.load(Ordering::SeqCst)), (1, 9));
}

/// An instance alive as a process but not ready (its database down, say) leaves the rotation: the
/// probe asks readiness, not liveness.
#[tokio::test]
async fn health_checks_take_a_failing_instance_out_and_bring_it_back() {
    let live = Arc::new(AtomicBool::new(false));
    let flag = live.clone();
    let a = serve(
        Router::new()
            .route("/health/live", get(|| async { StatusCode::OK }))
            .route(
                "/health/ready",
                get(move || async move {
                    if flag.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }),
            )
            .fallback(|| async { "a" }),
    )
    .await;
    let (b, _) = named_instance("b").await;
    let upstream = Arc::new(upstream(vec![a, b]));
    let workers = Workers::new();
    upstream.spawn_health_checks(&workers);
    // The first probe runs at once.
    let deadline = Instant::now() + PATIENCE;
    while upstream.balancer.instances[0]
        .healthy
        .load(Ordering::SeqCst)
    {
        assert!(Instant::now() < deadline, "the probe never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..4 {
        assert_eq!(get_text(&upstream, "/").await, "b");
    }
    live.store(true, Ordering::SeqCst);
    upstream.check_health().await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get_text(&upstream, "/").await);
    }
    assert!(answers.iter().any(|answer| answer == "a"), "{answers:?}");
    assert!(workers.shutdown(PATIENCE).await, "the health worker stops");
}
