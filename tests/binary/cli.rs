//! The commands of SPEC §3, run as a user would.

use crate::support::{forma, run};

#[tokio::test]
async fn every_command_explains_itself_with_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["openapi", "--help"],
        vec!["users", "create", "--help"],
        vec!["tenants", "create", "--help"],
        vec!["config", "check", "--help"],
        vec!["healthcheck", "--help"],
    ] {
        let mut command = forma(dir.path());
        command.args(&args);
        let (ok, stdout, _) = run(command, "").await;
        assert!(ok, "{args:?}");
        assert!(stdout.contains("Usage: forma"), "{args:?}: {stdout}");
    }
}

#[tokio::test]
async fn config_check_layers_file_and_environment_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custom.toml"),
        "[rate_limit]\nper_ip = 5\nper_user = 50\n[shopify]\nwebhook_secret = \"shopify-file-secret\"\n",
    )
    .unwrap();
    let mut command = forma(dir.path());
    command
        .args(["config", "check", "--config", "custom.toml"])
        .env("FORMA_RATE_LIMIT__PER_IP", "7")
        .env("FORMA_INTERNAL__KEY", "internal-env-secret")
        .env(
            "DATABASE_URL",
            "postgres://forma:hunter2@db.test:5432/forma",
        );
    let (ok, stdout, stderr) = run(command, "").await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("per_ip = 7"),
        "the environment wins over the file:\n{stdout}"
    );
    assert!(
        stdout.contains("per_user = 50"),
        "the file wins over defaults:\n{stdout}"
    );
    assert!(
        stdout.contains("postgres://forma:***@db.test:5432/forma"),
        "{stdout}"
    );
    for secret in ["shopify-file-secret", "internal-env-secret", "hunter2"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
    assert!(
        stderr.contains("configuration is valid for --role all"),
        "{stderr}"
    );
}

#[tokio::test]
async fn production_gateway_without_redis_refuses_to_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command
        .args(["serve", "--role", "gateway"])
        .env("FORMA_ENVIRONMENT", "production")
        .env("DATABASE_URL", "postgres://forma@127.0.0.1:5432/forma")
        .env("FORMA_INTERNAL__KEY", "0123456789abcdef0123456789abcdef")
        .env("FORMA_SESSION__SECRET", "0123456789abcdef0123456789abcdef")
        .env("FORMA_SERVICES__ORDER_URL", "http://127.0.0.1:3001");
    let (ok, _, stderr) = run(command, "").await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("redis.url is required in production"),
        "{stderr}"
    );
    assert!(stderr.contains("FORMA_REDIS__URL"), "{stderr}");
}

#[tokio::test]
async fn a_missing_config_file_and_an_unknown_key_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command.args(["serve", "--config", "nope.toml"]);
    let (ok, _, stderr) = run(command, "").await;
    assert!(!ok);
    assert!(stderr.contains("nope.toml does not exist"), "{stderr}");

    std::fs::write(dir.path().join("forma.toml"), "[server]\nprot = 3000\n").unwrap();
    let mut command = forma(dir.path());
    command.args(["serve"]);
    let (ok, _, stderr) = run(command, "").await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("prot"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_a_one_line_error_naming_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command
        .args(["serve", "--port", "0"])
        .env("DATABASE_URL", "postgres://forma:pw@127.0.0.1:9/forma");
    let (ok, _, stderr) = run(command, "").await;
    assert!(!ok);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: database.url postgres://forma:***@127.0.0.1:9/forma"),
        "{stderr}"
    );
    assert!(!stderr.contains(":pw@"), "{stderr}");
}

#[tokio::test]
async fn users_create_reads_the_password_from_stdin_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let create = |email: &str, tenant: &str| {
        let mut command = forma(dir.path());
        command.args([
            "users", "create", "--email", email, "--role", "operator", "--tenant", tenant,
        ]);
        command
    };
    let (ok, stdout, stderr) = run(create("Ops@Example.COM", "default"), "a-long-password\n").await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("created user ops@example.com"), "{stdout}");
    assert!(stdout.contains("with role operator"), "{stdout}");
    assert!(
        dir.path().join("data/forma.db").exists(),
        "the embedded database is created"
    );

    let (ok, _, stderr) = run(create("ops@example.com", "default"), "a-long-password\n").await;
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");

    let (ok, _, stderr) = run(create("new@example.com", "acme"), "a-long-password\n").await;
    assert!(!ok);
    assert!(stderr.contains("tenant 'acme' does not exist"), "{stderr}");

    let (ok, _, stderr) = run(create("new@example.com", "default"), "short\n").await;
    assert!(!ok);
    assert!(stderr.contains("at least 8 characters"), "{stderr}");

    let (ok, _, stderr) = run(create("not-an-email", "default"), "a-long-password\n").await;
    assert!(!ok);
    assert!(stderr.contains("email must be an email"), "{stderr}");

    let mut tenant = forma(dir.path());
    tenant.args(["tenants", "create", "acme", "--name", "Acme"]);
    let (ok, stdout, stderr) = run(tenant, "").await;
    assert!(ok && stdout.contains("created tenant acme"), "{stderr}");
    let (ok, _, stderr) = run(create("new@example.com", "acme"), "a-long-password\n").await;
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn migrate_prepares_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command
        .arg("migrate")
        .env("FORMA_ADMIN_PASSWORD", "first-admin-password");
    let (ok, stdout, stderr) = run(command, "").await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("migrations applied"));
    assert!(
        stderr.contains("password from FORMA_ADMIN_PASSWORD"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("first-admin-password"),
        "a given password is never logged"
    );
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("openapi.json");
    let mut command = forma(dir.path());
    command.args(["openapi", "--out"]).arg(&out);
    let (ok, _, stderr) = run(command, "").await;
    assert!(ok, "{stderr}");
    let generated = std::fs::read_to_string(&out).unwrap();
    let committed = include_str!("../../openapi/openapi.json");
    assert!(
        generated == committed,
        "openapi/openapi.json is out of date: run `cargo run -- openapi --out openapi/openapi.json`"
    );
}

#[tokio::test]
async fn list_settings_from_the_environment_take_comma_separated_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command
        .args(["config", "check"])
        .env("FORMA_CORS__ORIGINS", "http://x.example, https://y.example")
        .env("FORMA_RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8")
        .env("FORMA_SERVICES__ORDER_URL", "http://a:1,http://b:2");
    let (ok, stdout, stderr) = run(command, "").await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"http://x.example\""), "{stdout}");
    assert!(stdout.contains("\"https://y.example\""), "{stdout}");
    assert!(stdout.contains("\"10.0.0.0/8\""), "{stdout}");
}
