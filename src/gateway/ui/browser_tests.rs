//! The operator page in a real headless Chromium (SPEC §6.6), driven over WebDriver by
//! chromedriver: an operator signs in, a Shopify order arrives, and the order and its print job
//! appear on the open page, pushed over Socket.IO, without a reload; then the operator signs out.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them); a test never
//! downloads a browser. `FORMA_TEST_CHROMIUM` and `FORMA_TEST_CHROMEDRIVER` point elsewhere.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::config::Role;
use crate::infra::db::Backend;
use crate::order::flow_tests::{self, SHOP, line};
use crate::simulators::shopify::{Delivery, order_document};
use crate::testing::{ADMIN_PASSWORD, TestApp, eventually, free_port};

/// How long the page may take to show what the test waits for (a loaded CI machine is slow; the
/// waits end as soon as the page shows it).
const WAIT: Duration = Duration::from_secs(60);

const REFUSAL: &str =
    "//p[@id='message' and not(@hidden) and contains(., 'Wrong e-mail or password')]";
const NEW_ORDER: &str = "//tbody[@id='orders']/tr[td[1]='#7701']";
const NEW_JOB: &str =
    "//tbody[@id='jobs']/tr[td[1]='ui-cube.gcode' and td[2]='#7701' and td[3]='QUEUED']";
/// The status of `GET /api/v1/auth/me` as the page's own session sees it.
const ME_STATUS: &str = "const done = arguments[arguments.length - 1];
    fetch('/api/v1/auth/me').then((r) => done(r.status), () => done(0));";

fn program(env: &str, default: &str) -> String {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver packages (scripts/test does), or set {env}"
    );
    path
}

/// chromedriver and the Chromium session it runs, with a fresh profile of its own.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        let chromium = program("FORMA_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("FORMA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        eventually("chromedriver listens", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Containers give /dev/shm little room; Chromium then crashes tabs.
            "--disable-dev-shm-usage",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `scenario`, then ends the browser session whatever happened, so no Chromium outlives
    /// the test; a failure of the scenario fails the test after that.
    async fn run<F: Future<Output = ()>>(self, scenario: impl FnOnce(Client) -> F) {
        let outcome = AssertUnwindSafe(scenario(self.client.clone()))
            .catch_unwind()
            .await;
        let _ = self.client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

async fn wait_for(
    browser: &Client,
    what: &str,
    locator: Locator<'_>,
) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Whether the element is rendered visibly (not only present in the document).
async fn shown(browser: &Client, css: &str) -> bool {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn wait_shown(browser: &Client, what: &str, css: &str) {
    eventually(what, WAIT, || async {
        shown(browser, css).await.then_some(())
    })
    .await;
}

async fn click(browser: &Client, css: &str) {
    let element = browser.find(Locator::Css(css)).await.unwrap();
    element.click().await.unwrap();
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

#[tokio::test]
async fn an_operator_signs_in_and_sees_a_new_order_and_its_print_job_appear_live() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        flow_tests::integrations(c, None)
    })
    .await;
    let admin = app.admin().await;
    flow_tests::map(
        &admin,
        &app,
        "UI-CUBE",
        json!([{"fileId": "f-ui-cube", "fileName": "ui-cube.gcode"}]),
    )
    .await;
    let page = app.url("/ui/");

    Browser::start()
        .await
        .run(|browser| async move {
            browser.goto(&page).await.unwrap();
            wait_shown(&browser, "the sign-in form", "#sign-in").await;
            assert!(
                !shown(&browser, "#dashboard").await,
                "no lists before signing in"
            );
            assert!(!shown(&browser, "#sign-out").await, "no sign-out either");

            type_into(&browser, "#email", "admin@localhost").await;
            type_into(&browser, "#password", "not-the-password").await;
            click(&browser, "#sign-in button").await;
            let refusal = wait_for(
                &browser,
                "a refused sign-in is said",
                Locator::XPath(REFUSAL),
            )
            .await;
            let role = refusal.attr("role").await.unwrap();
            assert_eq!(role.as_deref(), Some("alert"), "screen readers announce it");

            type_into(&browser, "#password", ADMIN_PASSWORD).await;
            click(&browser, "#sign-in button").await;
            wait_shown(&browser, "the dashboard", "#dashboard").await;
            assert!(
                !shown(&browser, "#sign-in").await,
                "the form goes once signed in"
            );
            let who = browser.find(Locator::Css("#who")).await.unwrap();
            assert_eq!(who.text().await.unwrap(), "admin@localhost");
            // Connected to the tenant's stream: from here on, only the stream changes the lists.
            wait_for(
                &browser,
                "the live stream",
                Locator::Css("#live[data-state='live']"),
            )
            .await;
            let script = "window.formaTestMark = 'the same page'; return true;";
            browser.execute(script, vec![]).await.unwrap();

            let document = order_document(7_700_001, 7701, &[line(1, "UI-CUBE", 1)]);
            let delivery = Delivery::new("orders/create", SHOP, &document);
            let (status, ack) = flow_tests::deliver(&app, &delivery).await;
            assert_eq!(status, 200, "{ack}");
            assert_eq!(ack["outcome"], "created", "{ack}");

            let order = wait_for(
                &browser,
                "the new order on the page",
                Locator::XPath(NEW_ORDER),
            )
            .await;
            let cells = order.find_all(Locator::Css("td")).await.unwrap();
            assert_eq!(cells[1].text().await.unwrap(), "Ada Customer 7701");
            assert_eq!(cells[3].text().await.unwrap(), "12.50 EUR");
            wait_for(
                &browser,
                "its print job on the page",
                Locator::XPath(NEW_JOB),
            )
            .await;
            let script = "return window.formaTestMark || null;";
            let mark = browser.execute(script, vec![]).await.unwrap();
            assert_eq!(mark, json!("the same page"), "the page was not reloaded");

            click(&browser, "#sign-out").await;
            wait_shown(&browser, "the sign-in form again", "#sign-in").await;
            assert!(
                !shown(&browser, "#dashboard").await,
                "the lists go on signing out"
            );
            let orders_left = browser.find_all(Locator::Css("#orders tr")).await.unwrap();
            assert!(
                orders_left.is_empty(),
                "nothing of the tenant stays on the page"
            );
            // The session is gone on the server, not only on the page.
            let status = browser.execute_async(ME_STATUS, vec![]).await.unwrap();
            assert_eq!(status, json!(401));
        })
        .await;
}
