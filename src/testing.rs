//! The test harness: the real router of a role, served on `127.0.0.1:0` by the real server loop,
//! against a fresh database of its own (a temporary SQLite file, or a PostgreSQL database created
//! for the test and dropped after it), so tests run in parallel.
//!
//! Tests that must hold on both databases are written once with [`each_database!`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::AppContext;
use crate::config::Role;
use crate::config::{Config, Secret, SecretUrl};
use crate::infra::db::Backend;
use crate::server;

/// Where the test suite finds PostgreSQL; each test creates its own database there.
pub const POSTGRES_URL_ENV: &str = "FORMA_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Where the test suite finds Redis; each test uses its own key prefix there.
pub const REDIS_URL_ENV: &str = "FORMA_TEST_REDIS_URL";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The password of `admin@localhost` in every test database.
pub const ADMIN_PASSWORD: &str = "test-admin-password";
/// The internal key of split test deployments.
pub const INTERNAL_KEY: &str = "test-internal-key-0123456789abcdef";

/// Writes a test twice: once on SQLite, once on PostgreSQL, as `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! each_database {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::infra::db::Backend) $body

            #[tokio::test]
            async fn sqlite() {
                run($crate::infra::db::Backend::Sqlite).await
            }

            #[tokio::test]
            async fn postgres() {
                run($crate::infra::db::Backend::Postgres).await
            }
        }
    };
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("forma.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Backend::Postgres => Self::create_on(&postgres_admin_url()).await,
        }
    }

    /// A database of its own on the PostgreSQL server that `admin` (a superuser's URL) reaches:
    /// the shared one, or a [`PostgresServer`] of the test's own.
    pub async fn create_on(admin: &str) -> Self {
        let name = format!("forma_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect_postgres_admin(admin).await;
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .expect("CREATE DATABASE");
        let url = database_url(admin, &name);
        Self {
            url,
            _dir: None,
            postgres: Some((admin.to_owned(), name)),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async; a short-lived runtime on its own thread removes the database.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(sql)).await;
                }
            });
        })
        .join();
    }
}

/// Points `config` at the shared test Redis with a key prefix of its own.
pub fn use_redis(config: &mut Config) {
    let url = std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    config.redis.url = Some(SecretUrl::new(url));
    config.redis.key_prefix = format!("forma_test_{}:", uuid::Uuid::new_v4().simple());
}

pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

async fn connect_postgres_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} ({e}). Run the suite with scripts/test, which \
             starts it, or point {POSTGRES_URL_ENV} at a server."
        ),
    }
}

/// `admin` with its database name replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).expect("a valid PostgreSQL URL");
    url.set_path(name);
    url.to_string()
}

/// A configuration for tests: the given database, a known admin password, quiet defaults.
pub fn config(database_url: &str) -> Config {
    let mut config = Config::default();
    config.database.url = SecretUrl::new(database_url);
    config.database.max_connections = Some(5);
    config.admin_password = Some(Secret::new(ADMIN_PASSWORD));
    config.internal.key = Some(Secret::new(INTERNAL_KEY));
    config.server.shutdown_timeout_secs = 5;
    config
}

/// A client that keeps cookies, like a browser.
pub fn cookie_client() -> reqwest::Client {
    crate::infra::tls::http_client()
        .cookie_store(true)
        .build()
        .expect("an HTTP client")
}

/// The value of the `forma.sid` cookie a response sets.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            let v = v.to_str().ok()?;
            v.strip_prefix("forma.sid=")
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        })
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    crate::infra::tls::http_client()
        .build()
        .expect("an HTTP client")
}

/// The headers a gateway adds for `context` on a request (`method`, path and query `target`,
/// `body`) it forwards to a service, signed with the test internal key.
pub fn signed_context(
    context: &crate::identity::context::UserContext,
    method: &str,
    target: &str,
    body: &[u8],
) -> reqwest::header::HeaderMap {
    use crate::identity::context::{Binding, body_sha256};
    let digest = body_sha256(body);
    let mut headers = reqwest::header::HeaderMap::new();
    let binding = Binding {
        method,
        target,
        body_sha256: &digest,
    };
    context.write_headers(&mut headers, INTERNAL_KEY.as_bytes(), &binding);
    headers
}

/// Sends `request` as written, byte for byte, on a new connection to `addr` and returns all that
/// comes back until the server closes the connection: for requests an HTTP client library would
/// refuse or normalise (dot segments in the path). `request` should say `Connection: close`.
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Asks `check` again and again until it has an answer, and returns it; panics naming `what` if
/// none comes within `within`. For outcomes that arrive through the bus or a background worker:
/// the test waits on the outcome itself, however long the machine takes, up to a generous bound.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A `redis-server` of the test's own on `port` (tests that stop or start Redis never touch the
/// shared one), persisting every write to `dir`; killed when dropped.
pub async fn redis_server(port: u16, dir: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a client");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && ::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return child;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A PostgreSQL server of the test's own on `port` (tests that stop or start PostgreSQL never
/// touch the shared one), its cluster created in `dir`; stopped when dropped.
pub async fn postgres_server(port: u16, dir: &std::path::Path) -> PostgresServer {
    let bin = postgres_bin_dir();
    // PostgreSQL refuses to run as root: the cluster belongs to the `postgres` account then.
    if running_as_root() {
        let chown = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown runs");
        assert!(
            chown.success(),
            "{} could not be given to postgres",
            dir.display()
        );
    }
    let data = dir.join("data");
    let initdb = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("initdb runs");
    assert!(initdb.success(), "initdb failed in {}", dir.display());
    let mut server = PostgresServer {
        port,
        bin,
        dir: dir.to_owned(),
        data,
        child: None,
    };
    server.start().await;
    server
}

/// A PostgreSQL server started by [`postgres_server`].
pub struct PostgresServer {
    port: u16,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    data: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl PostgresServer {
    /// The superuser's URL, for [`TestDatabase::create_on`].
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its cluster and port; returns once it accepts connections.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the server runs already");
        let log = std::fs::File::create(self.dir.join("postgres.log")).expect("a log file");
        // Durability is not under test: no fsync keeps start, stop and every commit quick.
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let url = self.admin_url();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            use sqlx::Connection;
            if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.close().await;
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "postgres on port {} did not start ({exited:?}): {}",
                self.port,
                std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the server as an operator would (fast shutdown: open sessions are ended) and waits
    /// until it has exited.
    pub async fn stop(&mut self) {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "fast", "-w", "-t", "30", "-D"])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .expect("pg_ctl runs");
        assert!(
            status.success(),
            "postgres on port {} did not stop",
            self.port
        );
        if let Some(mut child) = self.child.take() {
            child.wait().await.expect("postgres exits");
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Immediate shutdown ends the server's own processes too; the child is killed on drop
            // if even that fails.
            let _ = as_postgres_std(&self.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
                .arg(&self.data)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The newest installed PostgreSQL's programs, else whichever are on the `PATH`.
fn postgres_bin_dir() -> std::path::PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest.map(|(_, bin)| bin).unwrap_or_default()
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, run as the `postgres` account when the tests run as root.
fn as_postgres(program: &std::path::Path) -> tokio::process::Command {
    as_postgres_std(program).into()
}

fn as_postgres_std(program: &std::path::Path) -> std::process::Command {
    if running_as_root() {
        let mut command = std::process::Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}

/// A running role.
pub struct TestApp {
    pub addr: SocketAddr,
    pub ctx: Arc<AppContext>,
    pub client: reqwest::Client,
    pub database: Arc<TestDatabase>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts `role` on a fresh database with the test configuration.
    pub async fn spawn(role: Role, backend: Backend) -> Self {
        Self::spawn_with(role, backend, |_| {}).await
    }

    /// Starts `role` on a fresh database after `configure` adjusted the test configuration.
    pub async fn spawn_with(
        role: Role,
        backend: Backend,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let database = Arc::new(TestDatabase::create(backend).await);
        Self::spawn_on(role, database, configure).await
    }

    /// Starts `role` on an existing test database (several roles sharing one database).
    pub async fn spawn_on(
        role: Role,
        database: Arc<TestDatabase>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = config(&database.url);
        configure(&mut config);
        let ctx = AppContext::start(role, config)
            .await
            .expect("the role starts");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::run(ctx.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let client = client();
        Self {
            addr,
            ctx,
            client,
            database,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The value `/metrics` shows for `series` (its name and labels as Prometheus prints them),
    /// `None` while it shows none. The recorder is the process's: tests run one per process
    /// (nextest), so its figures are this test's.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text().await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the request is answered")
    }

    /// Creates a user in the default tenant.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: crate::identity::roles::UserRole,
    ) -> crate::identity::users::User {
        use crate::identity::{password, tenants, users};
        let db = &self.ctx.db;
        let tenant = tenants::find_by_slug(db, tenants::DEFAULT_SLUG)
            .await
            .unwrap()
            .unwrap();
        let new = users::NewUser {
            tenant_id: tenant.id,
            email: email.to_owned(),
            name: email.split('@').next().unwrap_or_default().to_owned(),
            password_hash: password::hash(password).await.unwrap(),
            roles: vec![role],
            is_super_admin: false,
        };
        users::create(db, &new)
            .await
            .unwrap()
            .expect("a new address")
    }

    /// Signs in and returns a client that carries the session cookie, and the cookie's value.
    pub async fn login(&self, email: &str, password: &str) -> (reqwest::Client, String) {
        let client = cookie_client();
        let response = client
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login of {email}");
        let cookie = session_cookie(&response).expect("a session cookie");
        (client, cookie)
    }

    /// A client signed in as `admin@localhost`.
    pub async fn admin(&self) -> reqwest::Client {
        self.login("admin@localhost", ADMIN_PASSWORD).await.0
    }

    /// A token sign-in of the seeded admin: its access token and its refresh token.
    pub async fn admin_tokens(&self) -> (String, String) {
        let body: serde_json::Value = client()
            .post(self.url("/api/v1/auth/token"))
            .json(&serde_json::json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("the token endpoint answers")
            .json()
            .await
            .expect("a JSON body");
        let token = |name: &str| body[name].as_str().expect("a token").to_owned();
        (token("accessToken"), token("refreshToken"))
    }

    /// Graceful shutdown, as on SIGTERM; returns what the server loop returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
