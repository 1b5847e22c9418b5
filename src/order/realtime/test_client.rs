//! The real `socket.io-client` 4.x (tests/socketio, installed by scripts/test's `npm ci`) in a
//! Node process, for tests of Socket.IO as a browser meets it: it connects to `/events` with a
//! session cookie, a bearer token or nothing, and reports what happens as JSON lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// How long a client may take to connect or be refused (a Node process starting on a busy machine).
pub const CONNECTING: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Websocket,
    Polling,
    /// A browser's default: long-polling first, then the upgrade to websocket.
    Upgrading,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Polling => "polling",
            Transport::Upgrading => "polling,websocket",
        }
    }
}

/// A `socket.io-client` in a Node process, reporting what happens as JSON lines.
pub struct Client {
    pub name: String,
    lines: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    process: tokio::process::Child,
}

fn fixture() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "the Socket.IO test client is not installed: run scripts/test (it runs `npm ci` in {})",
        dir.display()
    );
    dir
}

impl Client {
    /// A client sending the session cookie `cookie`, or no credential at all.
    pub async fn start(name: &str, base: &str, transport: Transport, cookie: Option<&str>) -> Self {
        let credential = cookie.map(|c| ["--cookie".to_owned(), format!("forma.sid={c}")]);
        Self::spawn(name, base, transport, credential).await
    }

    /// A client sending `Authorization: Bearer {token}` (scripts, integrations).
    pub async fn with_bearer(name: &str, base: &str, transport: Transport, token: &str) -> Self {
        let credential = ["--bearer".to_owned(), token.to_owned()];
        Self::spawn(name, base, transport, Some(credential)).await
    }

    async fn spawn(
        name: &str,
        base: &str,
        transport: Transport,
        credential: Option<[String; 2]>,
    ) -> Self {
        let dir = fixture();
        let mut command = tokio::process::Command::new("node");
        command
            .current_dir(&dir)
            .arg("client.js")
            .arg(base)
            .args(["--transport", transport.as_str()])
            .args(credential.into_iter().flatten());
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/test says how to install it)");
        let stdout = process.stdout.take().expect("a piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value =
                    serde_json::from_str(&line).unwrap_or(json!({"type": "raw", "line": line}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_owned(),
            lines,
            seen: Vec::new(),
            process,
        }
    }

    /// The first line matching `wanted`, waiting at most `within`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(found) = self.seen.iter().find(|v| wanted(v)) {
            return Some(found.clone());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            self.seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    /// Connected, or refused: the first of `connect` and `connect_error`.
    pub async fn outcome(&mut self) -> Value {
        let name = self.name.clone();
        self.wait_for(CONNECTING, |v| {
            v["type"] == "connect" || v["type"] == "connect_error"
        })
        .await
        .unwrap_or_else(|| panic!("{name}: neither connected nor refused"))
    }

    pub async fn connected(mut self) -> Self {
        let outcome = self.outcome().await;
        assert_eq!(outcome["type"], "connect", "{}: {outcome}", self.name);
        self
    }

    /// Leaves as a closed page does: the client sends engine.io's close and exits. (Dropping a
    /// client kills it instead, as a lost network would.)
    pub async fn close(mut self) {
        drop(self.process.stdin.take());
        let exited = tokio::time::timeout(CONNECTING, self.process.wait()).await;
        assert!(exited.is_ok(), "{}: still running after closing", self.name);
    }

    /// Every event received so far, without waiting.
    pub fn events(&mut self) -> Vec<Value> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
            .iter()
            .filter(|v| v["type"] == "event")
            .cloned()
            .collect()
    }
}
