//! Configuration: parsing, the start-up guards, redaction, and that the documentation
//! (`config.example.toml`) and the deployment (`docker-compose.yml`) agree with the code.

use std::collections::{BTreeMap, BTreeSet};

use clap::ValueEnum;

use super::*;

fn parse(toml_text: &str) -> Result<Config, String> {
    toml::from_str::<Config>(toml_text).map_err(|e| e.to_string())
}

fn check(config: &Config, role: Role) -> Result<(), String> {
    validate::validate(config, role).map_err(|e| e.to_string())
}

fn production_gateway() -> Config {
    parse(
        r#"
        environment = "production"
        [database]
        url = "postgres://forma:pw@db:5432/forma"
        [redis]
        url = "redis://redis:6379"
        [internal]
        key = "0123456789abcdef0123456789abcdef"
        [session]
        secret = "fedcba9876543210fedcba9876543210"
        [services]
        order_url = "http://order:3001"
        "#,
    )
    .unwrap()
}

#[test]
fn defaults_run_the_embedded_ports_on_the_role_ports() {
    let config = Config::default();
    assert_eq!(config.port_for(Role::All), 3000);
    assert_eq!(config.port_for(Role::Gateway), 3000);
    assert_eq!(config.port_for(Role::Order), 3001);
    assert_eq!(config.database.url.expose(), "sqlite://./data/forma.db");
    assert!(config.redis.url.is_none());
    assert_eq!(config.order_urls(), vec![DEV_ORDER_URL.to_owned()]);
    assert!(check(&config, Role::All).is_ok());
}

#[test]
fn service_urls_take_one_a_comma_list_or_an_array() {
    let one = parse("[services]\norder_url = \"http://a:1/\"").unwrap();
    assert_eq!(one.services.order_url.0, vec!["http://a:1"]);
    let list = parse("[services]\norder_url = \"http://a:1, http://b:2\"").unwrap();
    assert_eq!(list.services.order_url.0, vec!["http://a:1", "http://b:2"]);
    let array = parse("[services]\norder_url = [\"http://a:1\", \"http://b:2\"]").unwrap();
    assert_eq!(array.services.order_url, list.services.order_url);
}

#[test]
fn every_list_setting_takes_an_array_or_a_comma_separated_string() {
    let strings = parse(
        r#"
        [cors]
        origins = "https://a.example, https://b.example"
        [rate_limit]
        trusted_proxies = "10.0.0.0/8, 192.168.1.1"
        [proxy]
        public_paths = "/health*, /api/v1/webhooks/**"
        "#,
    )
    .unwrap();
    let arrays = parse(
        r#"
        [cors]
        origins = ["https://a.example", "https://b.example"]
        [rate_limit]
        trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
        [proxy]
        public_paths = ["/health*", "/api/v1/webhooks/**"]
        "#,
    )
    .unwrap();
    assert_eq!(
        strings.cors.origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(strings.cors.origins, arrays.cors.origins);
    assert_eq!(
        strings.rate_limit.trusted_proxies,
        arrays.rate_limit.trusted_proxies
    );
    assert_eq!(strings.proxy.public_paths, arrays.proxy.public_paths);
    assert_eq!(strings.rate_limit.trusted_proxies.len(), 2);
}

#[test]
fn durations_out_of_range_stop_start_up_by_name() {
    let huge = parse("[proxy]\nbreaker_open_secs = 9223372036854775807").unwrap();
    let problem = check(&huge, Role::Gateway).unwrap_err();
    assert!(
        problem.contains("proxy.breaker_open_secs must be at most"),
        "{problem}"
    );
    let slow = parse("[services]\ntimeout_ms = 99999999999999").unwrap();
    assert!(
        check(&slow, Role::All)
            .unwrap_err()
            .contains("services.timeout_ms")
    );
    let zero = parse("[server]\nheader_read_timeout_secs = 0").unwrap();
    assert!(
        check(&zero, Role::All)
            .unwrap_err()
            .contains("header_read_timeout_secs")
    );
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let error = parse("[server]\nprot = 3000").unwrap_err();
    assert!(error.contains("prot"), "{error}");
}

#[test]
fn a_complete_production_gateway_passes_the_guards() {
    assert_eq!(check(&production_gateway(), Role::Gateway), Ok(()));
}

#[test]
fn production_gateway_without_redis_names_the_setting_and_its_variable() {
    let mut config = production_gateway();
    config.redis.url = None;
    let error = check(&config, Role::Gateway).unwrap_err();
    assert!(
        error.contains("redis.url is required in production for --role gateway"),
        "{error}"
    );
    assert!(error.contains("FORMA_REDIS__URL"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
}

#[test]
fn production_gateway_needs_its_session_secret_and_internal_key() {
    let mut config = production_gateway();
    config.session.secret = None;
    config.internal.key = None;
    let error = check(&config, Role::Gateway).unwrap_err();
    assert!(error.contains("session.secret"), "{error}");
    assert!(error.contains("internal.key"), "{error}");
}

#[test]
fn production_all_needs_its_session_secret_and_nothing_a_replica_needs() {
    let mut config = Config {
        environment: Environment::Production,
        ..Config::default()
    };
    let error = check(&config, Role::All).unwrap_err();
    assert!(
        error.contains("session.secret is required in production for --role all"),
        "{error}"
    );
    assert!(error.contains("FORMA_SESSION__SECRET"), "{error}");
    // A single node on SQLite, without Redis, is what `all` is for.
    config.session.secret = Some(Secret::new("s".repeat(32)));
    assert_eq!(check(&config, Role::All), Ok(()));
}

#[test]
fn production_secrets_must_be_long() {
    let mut config = production_gateway();
    config.internal.key = Some(Secret::new("short"));
    let error = check(&config, Role::Gateway).unwrap_err();
    assert!(
        error.contains("internal.key must be at least 32 characters"),
        "{error}"
    );
}

#[test]
fn production_replicas_need_postgresql() {
    let mut config = production_gateway();
    config.database.url = SecretUrl::new("sqlite://./data/forma.db");
    let error = check(&config, Role::Order).unwrap_err();
    assert!(
        error.contains("database.url must point to PostgreSQL"),
        "{error}"
    );
}

#[test]
fn split_roles_need_the_internal_key_even_in_development() {
    let config = Config::default();
    let error = check(&config, Role::Order).unwrap_err();
    assert!(error.contains("internal.key is required"), "{error}");
    assert!(error.contains("FORMA_INTERNAL__KEY"), "{error}");
}

#[test]
fn role_all_with_an_http_upstream_needs_the_internal_key() {
    let mut config = Config::default();
    config.services.print_url = UrlList(vec!["http://print:3002".into()]);
    let error = check(&config, Role::All).unwrap_err();
    assert!(
        error.contains("internal.key is required when services.print_url"),
        "{error}"
    );
    config.internal.key = Some(Secret::new("k"));
    assert_eq!(check(&config, Role::All), Ok(()));
}

#[test]
fn malformed_urls_are_refused_by_key() {
    let config = parse(
        "[database]\nurl = \"mysql://x\"\n[services]\norder_url = \"ftp://nope\"\n[redis]\nurl = \"http://r\"",
    )
    .unwrap();
    let error = check(&config, Role::All).unwrap_err();
    assert!(error.contains("database.url must start with"), "{error}");
    assert!(
        error.contains("services.order_url must be an http"),
        "{error}"
    );
    assert!(error.contains("redis.url must start with"), "{error}");
}

#[test]
fn production_refuses_shopify_installs_without_a_key_for_their_tokens() {
    let mut config = production_gateway();
    config.shopify.api_key = Some("app-key".into());
    config.shopify.api_secret = Some(Secret::new("app-secret"));
    for role in [Role::Order, Role::All] {
        let error = check(&config, role).unwrap_err();
        assert!(
            error.contains("shopify.token_key is required in production")
                && error.contains("FORMA_SHOPIFY__TOKEN_KEY"),
            "{error}"
        );
    }
    // The gateway never sees a token; development refuses installs at the endpoint instead.
    assert_eq!(check(&config, Role::Gateway), Ok(()));
    let mut development = config.clone();
    development.environment = Environment::Development;
    assert!(
        !check(&development, Role::All)
            .err()
            .unwrap_or_default()
            .contains("token_key")
    );
    config.shopify.token_key = Some(Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
    assert!(
        !check(&config, Role::Order)
            .err()
            .unwrap_or_default()
            .contains("token_key")
    );
}

#[test]
fn sendcloud_keys_need_a_shipping_method_where_parcels_are_made() {
    let mut config = Config::default();
    config.sendcloud.public_key = Some("public".into());
    config.sendcloud.secret_key = Some(Secret::new("secret"));
    for role in [Role::Order, Role::All] {
        let error = check(&config, role).unwrap_err();
        assert!(
            error.contains("sendcloud.shipping_method_id is required")
                && error.contains("FORMA_SENDCLOUD__SHIPPING_METHOD_ID"),
            "{error}"
        );
    }
    assert!(
        !check(&config, Role::Gateway)
            .err()
            .unwrap_or_default()
            .contains("sendcloud"),
        "the gateway makes no parcel"
    );
    config.sendcloud.shipping_method_id = Some(0);
    assert!(
        check(&config, Role::All)
            .unwrap_err()
            .contains("at least 1")
    );
    config.sendcloud.shipping_method_id = Some(8);
    assert_eq!(check(&config, Role::All), Ok(()));
}

#[test]
fn the_push_timeout_is_checked_like_the_other_timeouts() {
    let mut config = Config::default();
    config.push.timeout_ms = Some(0);
    let error = check(&config, Role::All).unwrap_err();
    assert!(
        error.contains("push.timeout_ms must be at least 1"),
        "{error}"
    );
    config.push.timeout_ms = Some(u64::MAX);
    let error = check(&config, Role::All).unwrap_err();
    assert!(error.contains("push.timeout_ms must be at most"), "{error}");
    config.push.timeout_ms = Some(2_500);
    assert_eq!(check(&config, Role::All), Ok(()));
}

#[test]
fn a_shopify_token_key_must_be_32_bytes_of_base64_and_the_app_url_a_url() {
    let mut config = Config::default();
    for bad in [
        "not base64!",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd",
        "",
    ] {
        config.shopify.token_key = Some(Secret::new(bad));
        let error = check(&config, Role::All).unwrap_err();
        assert!(
            error.contains("shopify.token_key must be 32 random bytes"),
            "{bad}: {error}"
        );
    }
    config.shopify.token_key = Some(Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
    assert_eq!(
        config.shopify.token_key_bytes().unwrap().map(|k| k[31]),
        Some(31)
    );
    config.shopify.app_url = Some("forma.example.com".into());
    let error = check(&config, Role::All).unwrap_err();
    assert!(error.contains("shopify.app_url must be an http"), "{error}");
    config.shopify.app_url = Some("https://forma.example.com".into());
    assert_eq!(check(&config, Role::All), Ok(()));
}

#[test]
fn redacted_output_hides_every_secret_and_masks_url_passwords() {
    let mut config = production_gateway();
    config.shopify.webhook_secret = Some(Secret::new("shopify-shh"));
    config.smtp.url = Some(SecretUrl::new("smtp://mailer:mail-pw@smtp.test:587"));
    config.redis.url = Some(SecretUrl::new(
        "rediss://cache.test:6380/0?protocol=resp3&auth_token=redis-pw&sslPassword=cert-pw",
    ));
    config.services.print_url = UrlList(vec![
        "http://print-1:3002".into(),
        "http://forma:print-pw@print-2:3002".into(),
    ]);
    let text = config.to_redacted_toml();
    for secret in [
        "0123456789abcdef",
        "fedcba98",
        "shopify-shh",
        ":pw@",
        "mail-pw",
        "redis-pw",
        "cert-pw",
        "print-pw",
    ] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(
        text.contains("postgres://forma:***@db:5432/forma"),
        "{text}"
    );
    assert!(text.contains("smtp://mailer:***@smtp.test:587"), "{text}");
    assert!(text.contains("protocol=resp3"), "{text}");
    assert!(text.contains("http://forma:***@print-2:3002/"), "{text}");
    assert!(text.contains("http://print-1:3002/"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
    assert_eq!(format!("{:?}", Secret::new("x")), "[redacted]");
}

#[test]
fn env_var_names_follow_the_section_key_convention() {
    assert_eq!(env_var_for("rate_limit.per_ip"), "FORMA_RATE_LIMIT__PER_IP");
    assert_eq!(env_var_for("internal.key"), "FORMA_INTERNAL__KEY");
}

// --- The documentation and the deployment agree with the code. ---

const EXAMPLE: &str = include_str!("../../config.example.toml");
const COMPOSE: &str = include_str!("../../docker-compose.yml");
const EDGE: &str = include_str!("../../deploy/nginx.conf");
const REQUIRED_MARK: &str = "# Required in production by:";

/// Every `key = value` line of the example, commented out or not, as `section.key`, with the roles
/// its "Required in production by" line names.
fn documented_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut keys = BTreeMap::new();
    let mut section = String::new();
    let mut required_by = BTreeSet::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if let Some(roles) = line.strip_prefix(REQUIRED_MARK) {
            required_by = roles.split(',').map(|r| r.trim().to_owned()).collect();
            continue;
        }
        let assignment = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = assignment.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let path = if section.is_empty() {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        keys.insert(path, std::mem::take(&mut required_by));
    }
    keys
}

/// Every key of the configuration, from the code: JSON keeps `None` fields as `null`.
fn code_keys() -> BTreeSet<String> {
    let value = serde_json::to_value(Config::default()).unwrap();
    let mut keys = BTreeSet::new();
    for (name, v) in value.as_object().unwrap() {
        match v.as_object() {
            Some(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
            None => {
                keys.insert(name.clone());
            }
        }
    }
    keys
}

/// The compose deployment's gateways trust every private network as a proxy (the load balancer's
/// address is not fixed there), so the load balancer in front must not pass on an
/// X-Forwarded-For a client began: it writes the client's own address, and a client cannot pick
/// the address its sign-in attempts and rate limits are counted against.
/// The gateways trust the edge, so every `X-Forwarded-*` header it passes on is its own: a client
/// that writes one (a spoofed address, host or scheme) is overwritten, never believed.
#[test]
fn the_edge_load_balancer_writes_the_forwarded_headers_itself() {
    assert!(COMPOSE.contains("FORMA_RATE_LIMIT__TRUSTED_PROXIES"));
    let forwarded: Vec<&str> = EDGE
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("proxy_set_header X-Forwarded-"))
        .collect();
    assert_eq!(
        forwarded,
        [
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "proxy_set_header X-Forwarded-Host $host;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
        ]
    );
}

#[test]
fn the_edge_balances_on_the_session_cookies_value() {
    // An nginx variable name ends at the first character outside [A-Za-z0-9_]: `$cookie_forma.sid`
    // is the cookie `forma` and then the text ".sid", the same key for every client.
    assert!(!EDGE.contains("$cookie_forma"), "{EDGE}");
    let hash = EDGE.lines().map(str::trim).find(|l| l.starts_with("hash "));
    assert_eq!(hash, Some("hash $forma_session consistent;"));
    assert!(EDGE.contains("map $http_cookie $forma_session {"), "{EDGE}");
    assert!(
        EDGE.contains(r#""~(?:^|;\s*)forma\.sid=(?<sid>[^;]+)" $sid;"#),
        "{EDGE}"
    );
}

#[test]
fn the_example_documents_every_key_and_nothing_else() {
    let documented: BTreeSet<String> = documented_keys().into_keys().collect();
    assert_eq!(documented, code_keys());
}

#[test]
fn the_example_parses_as_is_and_with_every_commented_key_enabled() {
    let as_is = parse(EXAMPLE).unwrap();
    assert_eq!(
        as_is.server.body_limit_bytes,
        ServerConfig::default().body_limit_bytes
    );
    let enabled: String = EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let full = parse(&enabled).unwrap();
    assert!(
        full.redis.url.is_some() && full.smtp.url.is_some() && full.push.vapid_subject.is_some()
    );
}

#[test]
fn the_example_marks_exactly_the_settings_the_guards_require() {
    let documented = documented_keys();
    for role in [Role::All, Role::Gateway, Role::Order] {
        let marked: BTreeSet<&str> = documented
            .iter()
            .filter(|(_, roles)| roles.contains(role.as_str()))
            .map(|(key, _)| key.as_str())
            .collect();
        let required: BTreeSet<&str> = required_settings(role).iter().map(|s| s.key).collect();
        assert_eq!(marked, required, "--role {}", role.as_str());
    }
}

/// The environment variables that can set `key`.
fn variables_for(key: &str) -> Vec<String> {
    let mut names = vec![env_var_for(key)];
    match key {
        "database.url" => names.push("DATABASE_URL".into()),
        "redis.url" => names.push("REDIS_URL".into()),
        _ => {}
    }
    names
}

#[test]
fn compose_sets_every_required_setting_for_each_role() {
    let mut compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(COMPOSE).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let mut seen_roles = BTreeSet::new();
    for (name, service) in services {
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let Some(role) = command.windows(2).find(|w| w[0] == "--role").map(|w| w[1]) else {
            continue;
        };
        let role = Role::from_str(role, true).unwrap();
        seen_roles.insert(role.as_str());
        let environment = service["environment"]
            .as_mapping()
            .expect("environment as a map");
        let set: BTreeSet<&str> = environment.keys().filter_map(|k| k.as_str()).collect();
        assert!(
            set.contains("FORMA_ENVIRONMENT"),
            "{name:?} runs in production"
        );
        for setting in required_settings(role) {
            assert!(
                variables_for(setting.key)
                    .iter()
                    .any(|v| set.contains(v.as_str())),
                "{name:?} (--role {}) does not set {}",
                role.as_str(),
                setting.key
            );
        }
    }
    assert_eq!(seen_roles, BTreeSet::from(["gateway", "order"]));
}

#[test]
fn compose_runs_two_gateway_replicas_behind_a_load_balancer() {
    let mut compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(COMPOSE).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let gateways = services
        .values()
        .filter(|s| {
            s["command"]
                .as_sequence()
                .is_some_and(|c| c.iter().any(|v| v.as_str() == Some("gateway")))
        })
        .count();
    assert_eq!(gateways, 2);
    for name in ["postgres", "redis", "order", "loadbalancer"] {
        assert!(services.contains_key(name), "{name}");
        assert!(
            services[name]["healthcheck"].is_mapping(),
            "{name} has a healthcheck"
        );
    }
}
