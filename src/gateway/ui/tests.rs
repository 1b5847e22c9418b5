//! How the operator page's files are served: without a session, by the gateway in roles `all` and
//! `gateway` and not by the order role, with their content types, revalidation and a CSP that the
//! page keeps (no inline script, nothing from another origin).

use reqwest::header;

use crate::config::Role;
use crate::infra::db::Backend;
use crate::testing::TestApp;

const FILES: [(&str, &str); 4] = [
    ("/ui/", "text/html; charset=utf-8"),
    ("/ui/app.js", "text/javascript; charset=utf-8"),
    ("/ui/style.css", "text/css; charset=utf-8"),
    ("/ui/socket.io.min.js", "text/javascript; charset=utf-8"),
];

#[tokio::test]
async fn the_page_and_its_files_are_served_without_a_session_in_both_gateway_roles() {
    for role in [Role::All, Role::Gateway] {
        let app = TestApp::spawn(role, Backend::Sqlite).await;
        for (path, content_type) in FILES {
            let response = app.get(path).await;
            assert_eq!(response.status(), 200, "{path} in {role:?}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!response.bytes().await.unwrap().is_empty(), "{path}");
        }
    }
}

#[tokio::test]
async fn the_page_loads_only_its_own_files_and_no_inline_script() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let html = app.get("/ui/").await.text().await.unwrap();
    for script in [
        r#"<script src="socket.io.min.js" defer></script>"#,
        r#"<script src="app.js" defer></script>"#,
    ] {
        assert!(html.contains(script), "{script}");
    }
    assert_eq!(
        html.matches("<script").count(),
        2,
        "every script is a file: {html}"
    );
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "nothing from another origin"
    );
    let client = app.get("/ui/socket.io.min.js").await.text().await.unwrap();
    assert!(
        client.starts_with("/*!\n * Socket.IO v4."),
        "the vendored socket.io-client 4.x keeps its licence header"
    );
}

#[tokio::test]
async fn an_unchanged_file_is_revalidated_with_a_304() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let first = app.get("/ui/app.js").await;
    let etag = first.headers()[header::ETAG].clone();
    let again = app
        .client
        .get(app.url("/ui/app.js"))
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()[header::ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    // Another file's validator does not match this one.
    let style_etag = app.get("/ui/style.css").await.headers()[header::ETAG].clone();
    let other = app
        .client
        .get(app.url("/ui/app.js"))
        .header(header::IF_NONE_MATCH, style_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn ui_without_its_slash_redirects_and_an_unknown_file_is_a_404() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()[header::LOCATION], "/ui/");

    let response = app.get("/ui/missing.js").await;
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 404);
    assert_eq!(body["error"], "Not Found");
}

#[tokio::test]
async fn the_order_role_does_not_serve_the_page() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    assert_eq!(app.get("/ui/").await.status(), 404);
}
