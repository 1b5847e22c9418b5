//! Running the binary: a child process with a clean `FORMA_*` environment, its JSON log read for
//! the `listening` line, stopped with a signal.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_forma");
pub const INTERNAL_KEY: &str = "process-test-internal-key-0123456789";

/// `forma` with no inherited configuration: only what the test passes applies.
pub fn forma(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("FORMA_")
            || name == "DATABASE_URL"
            || name == "REDIS_URL"
            || name == "RUST_LOG"
        {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a command to completion, feeding `stdin`; returns (success, stdout, stderr).
pub async fn run(mut command: Command, stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("forma starts");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .await
            .expect("stdin is written");
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes within a minute")
        .expect("its output is read");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `forma serve` child whose JSON log lines are collected.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: mpsc::UnboundedReceiver<Value>,
    pub startup_lines: Vec<Value>,
}

impl Server {
    /// Starts `serve --role ROLE --port 0` with `env`, and waits for its `listening` line.
    pub async fn start(dir: &Path, role: &str, env: &HashMap<&str, String>) -> Server {
        Self::start_on(dir, role, env, 0).await
    }

    /// Like [`Server::start`] on a given port (to restart a service where it was).
    pub async fn start_on(
        dir: &Path,
        role: &str,
        env: &HashMap<&str, String>,
        port: u16,
    ) -> Server {
        Self::launch(dir, role, env, port, &[]).await
    }

    /// Like [`Server::start`] with more arguments for `serve` (`--demo`).
    pub async fn start_with_args(
        dir: &Path,
        role: &str,
        env: &HashMap<&str, String>,
        args: &[&str],
    ) -> Server {
        Self::launch(dir, role, env, 0, args).await
    }

    async fn launch(
        dir: &Path,
        role: &str,
        env: &HashMap<&str, String>,
        port: u16,
        args: &[&str],
    ) -> Server {
        let mut command = forma(dir);
        command
            .args(["serve", "--role", role, "--port", &port.to_string()])
            .args(args)
            .env("FORMA_LOG__FORMAT", "json")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("forma serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, mut log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut startup_lines = Vec::new();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = log.recv().await {
                startup_lines.push(line.clone());
                if line["message"] == "listening" {
                    return line["addr"].as_str().map(str::to_owned);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("forma --role {role} did not start: {startup_lines:#?}"));
        Server {
            child,
            addr: format!("http://{addr}"),
            log,
            startup_lines,
        }
    }

    /// Sends SIGTERM (or SIGKILL) through `kill(1)`.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child is running").to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn wait(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process exits in time")
            .expect("its status is read")
            .success()
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    /// Every log line of a process that has exited: those still on their way are awaited, until
    /// its stderr ends.
    pub async fn log_to_end(&mut self, within: Duration) -> Vec<Value> {
        let mut lines = Vec::new();
        let read = tokio::time::timeout(within, async {
            while let Some(line) = self.log.recv().await {
                lines.push(line);
            }
        })
        .await;
        assert!(read.is_ok(), "the log did not end: {lines:#?}");
        lines
    }

    /// Log lines received so far.
    pub fn drain_log(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        while let Ok(line) = self.log.try_recv() {
            lines.push(line);
        }
        lines
    }
}

/// A PostgreSQL database for one test, dropped afterwards.
pub struct PgDatabase {
    pub url: String,
    admin: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = std::env::var("FORMA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("forma_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {admin} ({e}); run the suite with scripts/test"
                )
            });
        let create = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
        sqlx::Executor::execute(&mut conn, create)
            .await
            .expect("CREATE DATABASE");
        let mut url = url::Url::parse(&admin).expect("a PostgreSQL URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            admin,
            name,
        }
    }

    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let sql = sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
            let _ = sqlx::Executor::execute(&mut conn, sql).await;
        }
    }
}

/// The shared test Redis and a key prefix of this test's own.
pub fn redis_env() -> [(&'static str, String); 2] {
    let url = std::env::var("FORMA_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("forma_test_{}:", uuid::Uuid::new_v4().simple());
    [("REDIS_URL", url), ("FORMA_REDIS__KEY_PREFIX", prefix)]
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
