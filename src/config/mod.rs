//! Configuration (SPEC §2): defaults, then an optional TOML file, then `DATABASE_URL` / `REDIS_URL`,
//! then `FORMA_SECTION__KEY` environment variables. Every key is documented in `config.example.toml`.
//!
//! The key names are a contract: operators script against them.

mod role;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use role::Role;
pub use secret::{Secret, SecretUrl};
pub use validate::{RequiredSetting, env_var_for, required_settings};

/// Where a development gateway finds a separately started order service when none is configured.
pub const DEV_ORDER_URL: &str = "http://127.0.0.1:3001";

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "forma.toml";

/// The top-level keys that `FORMA_SECTION__KEY` variables may address. Other `FORMA_*` variables
/// (`FORMA_CONFIG`, test settings) are not configuration keys.
const SECTIONS: &[&str] = &[
    "environment",
    "admin_password",
    "server",
    "log",
    "database",
    "redis",
    "internal",
    "session",
    "services",
    "rate_limit",
    "proxy",
    "cors",
    "shopify",
    "simplyprint",
    "sendcloud",
    "smtp",
    "push",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub environment: Environment,
    /// Password of `admin@localhost`, created on the first start on an empty database
    /// (`FORMA_ADMIN_PASSWORD`); unset means a random one, logged once.
    pub admin_password: Option<Secret>,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub internal: InternalConfig,
    pub session: SessionConfig,
    pub services: ServicesConfig,
    pub rate_limit: RateLimitConfig,
    pub proxy: ProxyConfig,
    pub cors: CorsConfig,
    pub shopify: ShopifyConfig,
    pub simplyprint: SimplyPrintConfig,
    pub sendcloud: SendcloudConfig,
    pub smtp: SmtpConfig,
    pub push: PushConfig,
    pub inventory: InventoryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen port; when unset, the role's default (3000 for `all` and `gateway`, 3001 for `order`).
    pub port: Option<u16>,
    pub host: IpAddr,
    pub public_url: Option<String>,
    /// Largest accepted request body, in bytes (SPEC §4: 1 MiB).
    pub body_limit_bytes: usize,
    /// Largest accepted webhook body, in bytes (SPEC §4: 5 MiB).
    pub webhook_body_limit_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests and workers.
    pub shutdown_timeout_secs: u64,
    /// How long a client may take to send a request's headers, and how long an idle keep-alive
    /// connection stays open: a connection that dribbles its headers (slowloris) is closed.
    pub header_read_timeout_secs: u64,
    /// Connections served at once; past it, new ones wait in the listen backlog. A connection
    /// upgraded to a websocket counts until the websocket closes. At start the open-file limit is
    /// raised to hold them, or they are lowered to fit it (`infra::open_files`).
    pub max_connections: usize,
    /// Threads that serve connections, each with a single-threaded runtime, so that a request and
    /// the upstream connection it is forwarded on stay on one thread (see
    /// `infra::connection_threads`). Unset: one per CPU core. 0: connections are served by the
    /// shared work-stealing runtime.
    pub connection_threads: Option<usize>,
}

impl ServerConfig {
    /// `connection_threads` resolved: how many connection threads a server starts.
    pub fn connection_threads(&self) -> usize {
        self.connection_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: None,
            host: IpAddr::from([127, 0, 0, 1]),
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            webhook_body_limit_bytes: 5 * 1024 * 1024,
            shutdown_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 20_000,
            connection_threads: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when standard output is not a terminal, readable text when it is.
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `forma=debug,sqlx=warn`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (embedded default) or `postgres://…`.
    pub url: SecretUrl,
    /// The connection pool's size. Unset: 4 on SQLite, 10 on PostgreSQL.
    pub max_connections: Option<u32>,
}

/// SQLite runs one writer at a time and its readers are cheap, so a few connections serve as
/// well as many; each one open costs about half a megabyte (its schema, statements and cache).
const SQLITE_POOL: u32 = 4;
const POSTGRES_POOL: u32 = 10;

/// Whether a database URL names PostgreSQL (else it is SQLite's).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl DatabaseConfig {
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(self.url.expose())
    }

    /// `max_connections` resolved for the configured database.
    pub fn pool_size(&self) -> u32 {
        self.max_connections.unwrap_or(if self.is_postgres() {
            POSTGRES_POOL
        } else {
            SQLITE_POOL
        })
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("sqlite://./data/forma.db"),
            max_connections: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// No Redis means the embedded implementation of every port (SPEC §2).
    pub url: Option<SecretUrl>,
    /// Prefix of every Redis key forma writes, so several installs can share one Redis.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalConfig {
    /// Secret for `X-Internal-Key` and for signing the user context.
    pub key: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub secret: Option<Secret>,
    /// Mark the session cookie `Secure` and send HSTS. Unset: on in production, off in
    /// development; [`Config::secure_cookies`] decides.
    pub secure_cookie: Option<bool>,
    pub ttl_hours: u64,
    /// How long a gateway trusts an identity it resolved before asking the store again; a
    /// revocation made on another replica takes effect within this time. 0 = never cached.
    pub cache_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            secret: None,
            secure_cookie: None,
            ttl_hours: 24,
            cache_ms: 1000,
        }
    }
}

/// One URL, a comma-separated list, or a TOML array: a service may run as several instances.
/// Printed (serialized) with any credentials in them masked, as [`SecretUrl`] is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlList(pub Vec<String>);

impl UrlList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URLs, each with its credentials masked ([`SecretUrl::masked`]).
    pub fn masked(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|url| SecretUrl::new(url.as_str()).masked())
            .collect()
    }
}

impl Serialize for UrlList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.masked().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UrlList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let urls = list::deserialize(deserializer)?;
        Ok(UrlList(
            urls.into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesConfig {
    /// The order service; empty means `http://127.0.0.1:3001` in development (required in production).
    pub order_url: UrlList,
    pub print_url: UrlList,
    pub shipping_url: UrlList,
    pub gridflock_url: UrlList,
    /// Upstream request timeout in milliseconds (SPEC §5.2: 10 s).
    pub timeout_ms: u64,
    /// Timeout of one downstream health check in milliseconds.
    pub health_timeout_ms: u64,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            order_url: UrlList::default(),
            print_url: UrlList::default(),
            shipping_url: UrlList::default(),
            gridflock_url: UrlList::default(),
            timeout_ms: 10_000,
            health_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per window per client IP.
    pub per_ip: u32,
    /// Requests per window per signed-in user.
    pub per_user: u32,
    /// Requests per window per client IP on `/api/v1/webhooks/**`.
    pub webhooks: u32,
    /// Requests per window per client IP on the sign-in endpoints (`/api/v1/auth/**`).
    pub auth: u32,
    /// The window every limit is counted over, in seconds.
    pub window_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed: addresses or CIDR ranges.
    #[serde(deserialize_with = "networks::deserialize")]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_ip: 100,
            per_user: 600,
            webhooks: 300,
            auth: 30,
            window_secs: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A service behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Order,
    Print,
    Shipping,
    Gridflock,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Print => "print",
            Service::Shipping => "shipping",
            Service::Gridflock => "gridflock",
        }
    }
}

/// One entry of the gateway's route table: a path prefix under `/api/v1`, matched by whole segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub service: Service,
    /// Overrides `services.timeout_ms` for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Marks the route cacheable: signed-in GETs are answered from the gateway's response cache
    /// for at most this many seconds (less when the upstream's `Cache-Control` says so). Only for
    /// routes whose answers depend on the tenant and the caller's permissions, never on who asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    LeastConnections,
    /// A consistent hash of who is signed in (bearer token family, else session cookie), so a
    /// client stays on one instance. Socket.IO requests are placed this way whatever the policy.
    ConsistentHash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The route table (SPEC §5.2); replacing it replaces the whole table.
    pub routes: Vec<RouteConfig>,
    /// Paths served without a session: exact, or a prefix when ending in `*` or `/**`. An array,
    /// or a comma-separated string.
    #[serde(deserialize_with = "list::deserialize")]
    pub public_paths: Vec<String>,
    /// Retries of GET/HEAD on connection errors (never on a response).
    pub retries: u32,
    pub load_balancing: LoadBalancing,
    /// The circuit breaker opens when at least this share of requests failed…
    pub breaker_failure_ratio: f64,
    /// …over at least this many requests…
    pub breaker_min_requests: u32,
    /// …within this window (seconds),
    pub breaker_window_secs: u64,
    /// and lets a trial request through after this long (seconds).
    pub breaker_open_secs: u64,
    /// A signed user context older than this (seconds) is refused by the services.
    pub user_context_max_age_secs: u64,
    /// How often (ms) every instance of an HTTP upstream is asked `GET /health/ready`; one that
    /// does not answer 2xx within `health_check_timeout_ms` is out of rotation until it does.
    pub health_check_interval_ms: u64,
    pub health_check_timeout_ms: u64,
    /// Passive ejection: this many connection failures in a row take an instance out…
    pub eject_after_failures: u32,
    /// …for this long (ms).
    pub eject_for_ms: u64,
    /// The response cache of cacheable routes holds at most this many bytes, in process or (with
    /// Redis configured) in Redis, where it evicts its own oldest entries…
    pub cache_max_bytes: usize,
    /// …and no single response over this many bytes.
    pub cache_max_entry_bytes: usize,
    /// White-label domains: a host name (lower case, no port) → the slug of the tenant it serves.
    /// There, a signed-in user of another tenant finds nothing (404). A TOML table, or a string
    /// `host=slug, host=slug` (what an environment variable can hold).
    #[serde(deserialize_with = "host_map::deserialize")]
    pub tenant_hosts: BTreeMap<String, String>,
}

/// The `/shopify` routes' timeout: the OAuth callback's code exchange and webhook registrations.
pub const SHOPIFY_ROUTE_TIMEOUT_MS: u64 = 120_000;

impl Default for ProxyConfig {
    fn default() -> Self {
        let route = |prefix: &str, service| RouteConfig {
            prefix: prefix.to_owned(),
            service,
            timeout_ms: None,
            cache_ttl_secs: None,
        };
        Self {
            routes: vec![
                route("/orders", Service::Order),
                route("/analytics", Service::Order),
                route("/product-mappings", Service::Order),
                route("/events", Service::Order),
                route("/audit-logs", Service::Order),
                route("/notifications", Service::Order),
                route("/push", Service::Order),
                route("/retry-queue", Service::Order),
                // The install callback makes several Shopify calls in a row (each up to 20 s):
                // cut at the default 10 s, a slow Shopify would spend the install and connect
                // nothing.
                RouteConfig {
                    timeout_ms: Some(SHOPIFY_ROUTE_TIMEOUT_MS),
                    ..route("/shopify", Service::Order)
                },
                route("/webhooks/shopify", Service::Order),
                route("/inventory", Service::Order),
                route("/print-jobs", Service::Print),
                route("/webhooks/simplyprint", Service::Print),
                route("/shipments", Service::Shipping),
                route("/webhooks/sendcloud", Service::Shipping),
                route("/gridflock", Service::Gridflock),
            ],
            public_paths: [
                "/api/v1/auth/login",
                "/api/v1/auth/token",
                "/api/v1/auth/refresh",
                "/api/v1/webhooks/**",
                "/api/v1/shopify/callback",
                "/api/v1/push/vapid-public-key",
                "/health*",
                "/live",
                "/ready",
                "/docs*",
                "/openapi.json",
                "/metrics",
            ]
            .map(str::to_owned)
            .to_vec(),
            retries: 2,
            load_balancing: LoadBalancing::RoundRobin,
            breaker_failure_ratio: 0.5,
            breaker_min_requests: 10,
            breaker_window_secs: 30,
            breaker_open_secs: 30,
            user_context_max_age_secs: 30,
            health_check_interval_ms: 5_000,
            health_check_timeout_ms: 1_000,
            eject_after_failures: 3,
            eject_for_ms: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            cache_max_entry_bytes: 1024 * 1024,
            tenant_hosts: BTreeMap::new(),
        }
    }
}

/// The one rule for list-valued settings: a TOML array, or one string of comma-separated items
/// (what an environment variable can hold), blanks dropped.
mod list {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let items = match Raw::deserialize(deserializer)? {
            Raw::One(s) => s.split(',').map(str::to_owned).collect(),
            Raw::Many(v) => v,
        };
        Ok(items
            .into_iter()
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect())
    }
}

/// `proxy.tenant_hosts`: a TOML table, or one string of comma-separated `host=slug` pairs.
mod host_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Pairs(String),
            Table(BTreeMap<String, String>),
        }
        let pairs = match Raw::deserialize(deserializer)? {
            Raw::Table(table) => table,
            Raw::Pairs(text) => text
                .split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(host, slug)| (host.trim().to_owned(), slug.trim().to_owned()))
                        .ok_or_else(|| {
                            serde::de::Error::custom(format!("{pair:?} is not host=tenant-slug"))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(pairs)
    }
}

/// CIDR ranges or bare addresses (a bare address is its own /32 or /128).
mod networks {
    use std::net::IpAddr;

    use ipnet::IpNet;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
        let raw = super::list::deserialize(deserializer)?;
        raw.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        serde::de::Error::custom(format!("{s} is not an IP address or CIDR range"))
                    })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API with credentials: an array, or a comma-separated string.
    #[serde(deserialize_with = "list::deserialize")]
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopifyConfig {
    pub api_key: Option<String>,
    pub api_secret: Option<Secret>,
    /// The key `shop_domain`'s own webhooks (set up by hand in its admin) are signed with. It signs
    /// that shop's webhooks only: its staff can read it.
    pub webhook_secret: Option<Secret>,
    pub base_url: Option<String>,
    pub shop_domain: Option<String>,
    /// Admin API access token of `shop_domain` until the app is installed through OAuth.
    pub access_token: Option<Secret>,
    /// How long one Admin API call may take, in milliseconds (default 15 000); a fulfillment
    /// that takes longer is given up and tried again later.
    pub timeout_ms: Option<u64>,
    /// Where Shopify reaches forma (the gateway's public URL): the OAuth redirect URI is
    /// `{app_url}/api/v1/shopify/callback`, webhooks are registered at
    /// `{app_url}/api/v1/webhooks/shopify`.
    pub app_url: Option<String>,
    /// 32 random bytes in base64: the key that encrypts installed shops' access tokens at rest.
    pub token_key: Option<Secret>,
}

/// The length of `shopify.token_key`, decoded.
pub const SHOPIFY_TOKEN_KEY_LEN: usize = 32;

impl ShopifyConfig {
    /// `token_key` decoded: `None` when unset, an error naming the setting when it is not 32
    /// bytes of base64.
    pub fn token_key_bytes(&self) -> Result<Option<[u8; SHOPIFY_TOKEN_KEY_LEN]>, String> {
        use base64::Engine;
        let Some(key) = &self.token_key else {
            return Ok(None);
        };
        let problem = || {
            format!(
                "shopify.token_key must be {SHOPIFY_TOKEN_KEY_LEN} random bytes in base64 \
                 (e.g. from `openssl rand -base64 32`)"
            )
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.expose().trim())
            .map_err(|_| problem())?;
        <[u8; SHOPIFY_TOKEN_KEY_LEN]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| problem())
    }

    /// Whether the app can be installed through OAuth: `api_key` and `api_secret` are both set.
    pub fn oauth_configured(&self) -> bool {
        self.api_key
            .as_deref()
            .is_some_and(|k| !k.trim().is_empty())
            && self
                .api_secret
                .as_ref()
                .is_some_and(|s| !s.expose().is_empty())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimplyPrintConfig {
    pub api_key: Option<Secret>,
    pub company_id: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub base_url: Option<String>,
    /// How often (seconds) SimplyPrint is asked about jobs whose webhook may have been missed.
    pub reconcile_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendcloudConfig {
    pub public_key: Option<String>,
    pub secret_key: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub base_url: Option<String>,
    /// How long one call to Sendcloud may take, in milliseconds (default 10 000); a call that
    /// takes longer is given up and tried again later.
    pub timeout_ms: Option<u64>,
    /// The shipping method every parcel is announced with: its id in Sendcloud's
    /// `GET /shipping_methods`. Sendcloud makes no label without one, so it is required with the
    /// keys.
    pub shipping_method_id: Option<u64>,
    /// Lets the integration's shipping rules choose each parcel's method (and more);
    /// `shipping_method_id` is then the method where no rule decides.
    pub apply_shipping_rules: bool,
}

impl SendcloudConfig {
    /// Both keys, when both are set (the public one trimmed): forma talks to Sendcloud.
    pub fn keys(&self) -> Option<(&str, &Secret)> {
        let public_key = self
            .public_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let secret_key = self.secret_key.as_ref().filter(|k| !k.expose().is_empty());
        public_key.zip(secret_key)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://user:pass@host:port`; no URL means notifications are only logged.
    pub url: Option<SecretUrl>,
    /// The sender of notification e-mails (`forma <forma@example.com>`); required with `url`.
    pub from: Option<String>,
    /// How long sending one e-mail may take, in milliseconds (default 10 000); longer is given
    /// up and tried again later.
    pub timeout_ms: Option<u64>,
}

impl SmtpConfig {
    /// The sender of notification e-mails, which `url` requires (checked at start-up).
    pub fn from_mailbox(&self) -> Result<lettre::message::Mailbox, String> {
        let from = self
            .from
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .ok_or(
                "smtp.from is required when smtp.url is set (e.g. \"forma <forma@example.com>\")",
            )?;
        from.parse()
            .map_err(|e| format!("smtp.from {from:?} is not an e-mail address: {e}"))
    }
}

/// Stock replenishment (SPEC §6.5b).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    /// How often (seconds) the replenishment scheduler runs, across all replicas (default 60).
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The VAPID private key (P-256, 32 bytes in base64url). Unset: one is generated once and kept
    /// in the database, shared by every replica.
    pub vapid_private_key: Option<Secret>,
    /// Who push services may contact (`mailto:` or `https:`); unset: `server.public_url` when it
    /// is https, else `mailto:admin@localhost`.
    pub vapid_subject: Option<String>,
    /// How long one request to a push service may take, in milliseconds (default 10 000).
    pub timeout_ms: Option<u64>,
}

/// Why the configuration could not be loaded; the message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist (given by --config or FORMA_CONFIG)")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Whether the session cookie is `Secure` and HSTS is sent: `session.secure_cookie` when set,
    /// else on in production (served over HTTPS behind its load balancer) and off in development
    /// (where HSTS on plain HTTP would lock browsers out of localhost).
    pub fn secure_cookies(&self) -> bool {
        self.session
            .secure_cookie
            .unwrap_or(self.environment == Environment::Production)
    }
    /// Loads the layered configuration. `file` is the `--config` argument; without it,
    /// `forma.toml` in the working directory is read when present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Defaults come from `#[serde(default)]`, so secrets never pass through a serializer.
        let mut figment = Figment::new();
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_owned())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["database_url"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::raw().only(&["redis_url"]).map(|_| "redis.url".into()))
            .merge(
                Env::prefixed("FORMA_")
                    // Keys reach the filter before figment lower-cases them.
                    .filter(|key| {
                        let key = key.as_str().to_ascii_lowercase();
                        let section = key.split("__").next().unwrap_or_default();
                        SECTIONS.contains(&section)
                    })
                    .split("__"),
            );
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))
    }

    /// The port a role listens on: `server.port` if set, else the role's default.
    pub fn port_for(&self, role: Role) -> u16 {
        self.server.port.unwrap_or(role.default_port())
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The order service instances the gateway calls when split.
    pub fn order_urls(&self) -> Vec<String> {
        if self.services.order_url.is_empty() {
            vec![DEV_ORDER_URL.to_owned()]
        } else {
            self.services.order_url.0.clone()
        }
    }

    /// Loads and then checks the configuration for `role` (SPEC §2 production guards).
    pub fn load_for(file: Option<&Path>, role: Role) -> Result<Self, ConfigError> {
        let config = Self::load(file)?;
        validate::validate(&config, role)?;
        Ok(config)
    }

    /// The effective configuration as TOML with every secret redacted (`forma config check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}\n"))
    }
}

/// Figment errors name the key; phrase them as one line an operator can act on.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("configuration: {}{source}", e.kind)
            } else {
                format!("{key}: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
