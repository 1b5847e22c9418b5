//! The shared HTTP stack, driven over loopback with routes that exercise each convention.

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Json;
use super::stack;
use crate::config::Config;
use crate::http::request_id::X_REQUEST_ID;
use crate::testing::client;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Login {
    email: String,
    password: String,
}

async fn echo_login(Json(login): Json<Login>) -> Json<Value> {
    Json(json!({ "email": login.email }))
}

async fn echo_bytes(body: Bytes) -> String {
    body.len().to_string()
}

async fn boom() -> &'static str {
    panic!("handler bug")
}

async fn current_id() -> String {
    super::request_id::current()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default()
}

/// Serves the stack with a 1 KiB body limit (4 KiB for webhooks) on a loopback port.
async fn serve() -> String {
    serve_with_limits(1024, 4096).await
}

/// Serves the stack with these body limits (default, webhooks) on a loopback port.
async fn serve_with_limits(default: usize, webhooks: usize) -> String {
    let router = Router::new()
        .route("/login", post(echo_login))
        .route("/upload", post(echo_bytes))
        .route("/api/v1/webhooks/shopify", post(echo_bytes))
        .route("/boom", get(boom))
        .route("/current-id", get(current_id))
        .fallback(super::error::not_found);
    let mut config = Config::default();
    config.server.body_limit_bytes = default;
    config.server.webhook_body_limit_bytes = webhooks;
    let app = stack(router, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn body(response: reqwest::Response) -> Value {
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "errors are JSON"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn unknown_route_is_a_nest_style_404() {
    let base = serve().await;
    let response = client()
        .get(format!("{base}/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        body(response).await,
        json!({"statusCode": 404, "message": "Cannot GET /api/v1/nothing-here", "error": "Not Found"})
    );
}

#[tokio::test]
async fn wrong_method_is_a_405_in_the_error_shape_with_allow() {
    let base = serve().await;
    let response = client()
        .delete(format!("{base}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body = body(response).await;
    assert_eq!(body["statusCode"], 405);
    assert_eq!(body["error"], "Method Not Allowed");
}

#[tokio::test]
async fn malformed_json_is_a_400_naming_the_problem() {
    let base = serve().await;
    let response = client()
        .post(format!("{base}/login"))
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b", "password": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = body(response).await;
    assert_eq!(body["error"], "Bad Request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Malformed JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_400_with_a_message_list() {
    let base = serve().await;
    let response = client()
        .post(format!("{base}/login"))
        .json(&json!({"email": "a@b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = body(response).await;
    let messages = body["message"]
        .as_array()
        .expect("validation errors are a list");
    assert!(messages[0].as_str().unwrap().contains("password"), "{body}");
}

#[tokio::test]
async fn json_without_its_content_type_is_a_415() {
    let base = serve().await;
    let response = client()
        .post(format!("{base}/login"))
        .body(r#"{"email": "a@b", "password": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(body(response).await["statusCode"], 415);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_a_413() {
    let base = serve().await;
    let response = client()
        .post(format!("{base}/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body = body(response).await;
    assert_eq!(body["error"], "Payload Too Large");
    assert_eq!(
        body["message"],
        "Request body is larger than the limit of 1024 bytes"
    );
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_a_413_even_without_content_length() {
    let base = serve().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'x'; 512])).collect();
    let stream = futures::stream::iter(chunks);
    let response = client()
        .post(format!("{base}/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(body(response).await["statusCode"], 413);
}

#[tokio::test]
async fn webhooks_get_the_larger_limit() {
    let base = serve().await;
    let client = client();
    let url = format!("{base}/api/v1/webhooks/shopify");
    let ok = client
        .post(&url)
        .body(vec![b'x'; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "3000");
    let too_big = client
        .post(&url)
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
}

/// axum's body extractors have a default limit of their own (2 MiB), below the webhooks' 5 MiB:
/// the configured limits replace it.
#[tokio::test]
async fn a_configured_limit_above_the_extractors_default_is_the_one_that_holds() {
    let mib = 1024 * 1024;
    let base = serve_with_limits(mib, 5 * mib).await;
    let response = client()
        .post(format!("{base}/api/v1/webhooks/shopify"))
        .body(vec![b'x'; 3 * mib])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), (3 * mib).to_string());
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_in_the_error_shape() {
    let base = serve().await;
    let response = client().get(format!("{base}/boom")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        body(response).await,
        json!({"statusCode": 500, "message": "Internal server error", "error": "Internal Server Error"})
    );
}

#[tokio::test]
async fn a_valid_request_id_is_kept_and_echoed() {
    let base = serve().await;
    let response = client()
        .get(format!("{base}/nothing"))
        .header(X_REQUEST_ID, "trace-abc_123.4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[X_REQUEST_ID], "trace-abc_123.4");
}

#[tokio::test]
async fn an_invalid_request_id_is_replaced_by_a_fresh_uuid() {
    let base = serve().await;
    for bad in ["has spaces in it", &"x".repeat(200), "quote\"d"] {
        let response = client()
            .get(format!("{base}/nothing"))
            .header(X_REQUEST_ID, bad)
            .send()
            .await
            .unwrap();
        let id = response.headers()[X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    }
}

#[tokio::test]
async fn every_response_gets_a_request_id() {
    let base = serve().await;
    let response = client().get(format!("{base}/boom")).send().await.unwrap();
    let id = response.headers()[X_REQUEST_ID].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

/// The log lines written while `during` runs on this thread, as JSON objects: the production
/// format (`observability::logging::init` with JSON), at info level.
async fn logged_during<F: std::future::Future<Output = ()>>(during: F) -> Vec<Value> {
    use std::sync::{Arc, Mutex, PoisonError};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            lines.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    {
        // The test's runtime runs the server on this thread, so it logs to this subscriber.
        let _default = tracing::subscriber::set_default(subscriber);
        during.await;
    }
    let bytes = lines
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Sends `request` and checks that its answer is `status` in the error shape, with a request id
/// and the security headers.
async fn assert_an_error_with_id_and_security_headers(
    request: reqwest::RequestBuilder,
    status: u16,
) {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key(X_REQUEST_ID));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(body(response).await["statusCode"], status);
}

fn lines_with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

/// The one "finished processing request" line of `lines`.
fn the_finished_line(lines: &[Value]) -> &Value {
    let finished = lines_with_message(lines, "finished processing request");
    assert_eq!(finished.len(), 1, "{lines:#?}");
    finished[0]
}

#[tokio::test]
async fn every_request_is_logged_once_in_its_span_with_status_and_latency() {
    let lines = logged_during(async {
        let base = serve().await;
        let response = client()
            .post(format!("{base}/upload"))
            .header(X_REQUEST_ID, "logged-1")
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    })
    .await;
    let line = the_finished_line(&lines);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 200);
    assert!(
        line["latency"].as_str().is_some_and(|l| l.ends_with(" ms")),
        "{line}"
    );
    assert_eq!(line["span"]["name"], "request");
    assert_eq!(line["span"]["request_id"], "logged-1");
    assert_eq!(line["span"]["method"], "POST");
    assert_eq!(line["span"]["path"], "/upload");
    assert!(lines_with_message(&lines, "response failed").is_empty());
}

#[tokio::test]
async fn a_server_error_is_logged_as_failed_too() {
    let lines = logged_during(async {
        let base = serve().await;
        let response = client().get(format!("{base}/boom")).send().await.unwrap();
        assert_eq!(response.status(), 500);
    })
    .await;
    assert_eq!(the_finished_line(&lines)["status"], 500);
    let failed = lines_with_message(&lines, "response failed");
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["level"], "ERROR");
    assert_eq!(
        failed[0]["classification"],
        "Status code: 500 Internal Server Error"
    );
    assert_eq!(failed[0]["span"]["path"], "/boom");
    // The panic's own line, in the same span.
    let internal = lines_with_message(&lines, "internal error");
    assert_eq!(internal.len(), 1, "{lines:#?}");
    assert_eq!(internal[0]["error"], "handler panicked: handler bug");
    assert_eq!(internal[0]["span"]["path"], "/boom");
}

#[tokio::test]
async fn a_body_over_the_limit_is_logged_and_shaped_in_the_requests_span() {
    let lines = logged_during(async {
        let base = serve().await;
        let request = client()
            .post(format!("{base}/upload"))
            .body(vec![b'x'; 2048]);
        assert_an_error_with_id_and_security_headers(request, 413).await;
    })
    .await;
    assert_eq!(the_finished_line(&lines)["status"], 413);
}

#[tokio::test]
async fn a_path_not_in_normal_form_is_refused_before_it_is_handled_or_logged() {
    let lines = logged_during(async {
        let base = serve().await;
        let request = client().get(format!("{base}/current-id%2F..%2Fboom"));
        assert_an_error_with_id_and_security_headers(request, 400).await;
        // One request handled in the same capture, so that the refused one's missing line is
        // not a capture that saw nothing.
        let handled = client().get(format!("{base}/current-id")).send().await;
        assert_eq!(handled.unwrap().status(), 200);
    })
    .await;
    assert_eq!(the_finished_line(&lines)["span"]["path"], "/current-id");
}

#[tokio::test]
async fn the_handler_runs_with_its_request_id_current() {
    let base = serve().await;
    for sent in [Some("current-7"), None] {
        let mut request = client().get(format!("{base}/current-id"));
        if let Some(id) = sent {
            request = request.header(X_REQUEST_ID, id);
        }
        let response = request.send().await.unwrap();
        let echoed = response.headers()[X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned();
        let seen = response.text().await.unwrap();
        assert_eq!(seen, echoed);
        if let Some(id) = sent {
            assert_eq!(seen, id);
        }
    }
}
