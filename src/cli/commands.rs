//! What each command does. Every failure returns an error that `main` prints as one line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Cli, Command, ConfigCommand, TenantsCommand, UsersCommand};
use crate::config::Config;
use crate::config::Role;
use crate::identity::users::NewUser;
use crate::identity::{bootstrap, email, password, tenants, users};
use crate::infra::db::Db;
use crate::observability::logging;
use crate::{openapi, server};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            role,
            config,
            port,
            demo,
        } => {
            if demo && role != Role::All {
                bail!(
                    "--demo runs the simulated shop, print farm and carrier beside both services: \
                     use it with --role all, not --role {}",
                    role.as_str()
                );
            }
            let mut config = Config::load_for(config.config.as_deref(), role)?;
            if port.is_some() {
                config.server.port = port;
            }
            logging::init(&config.log);
            if demo {
                crate::demo::serve(config).await
            } else {
                server::serve(role, config).await
            }
        }
        Command::Migrate { config } => {
            let db = open_database(config.config.as_deref()).await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi { out } => {
            let json = openapi::document_json()?;
            match out {
                Some(path) => std::fs::write(&path, json)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(json.as_bytes())?,
            }
            Ok(())
        }
        Command::Users {
            command:
                UsersCommand::Create {
                    email,
                    role,
                    tenant,
                    super_admin,
                    name,
                    config,
                },
        } => {
            let email = email::normalize(&email).map_err(anyhow::Error::msg)?;
            let password = read_password()?;
            password::check_policy(&password)?;
            let db = open_database(config.config.as_deref()).await?;
            let Some(tenant) = tenants::find_by_slug(&db, &tenant).await? else {
                bail!(
                    "tenant '{tenant}' does not exist; create it with: forma tenants create {tenant}"
                );
            };
            let password_hash = password::hash(&password).await?;
            let created = users::create(
                &db,
                &NewUser {
                    tenant_id: tenant.id,
                    email: email.clone(),
                    name,
                    password_hash,
                    roles: vec![role],
                    is_super_admin: super_admin,
                },
            )
            .await?;
            db.close().await;
            let Some(user) = created else {
                bail!("a user with e-mail {email} already exists")
            };
            println!(
                "created user {} ({}) in tenant {} with role {}{}",
                user.email,
                user.id,
                tenant.slug,
                role.as_str(),
                if super_admin { ", super admin" } else { "" }
            );
            Ok(())
        }
        Command::Tenants {
            command: TenantsCommand::Create { slug, name, config },
        } => {
            if !tenants::is_valid_slug(&slug) {
                bail!("tenant slug '{slug}' must be 1 to 63 lower-case letters, digits and dashes");
            }
            let db = open_database(config.config.as_deref()).await?;
            if tenants::find_by_slug(&db, &slug).await?.is_some() {
                bail!("tenant '{slug}' already exists");
            }
            let tenant = tenants::ensure(&db, &slug, name.as_deref().unwrap_or(&slug)).await?;
            db.close().await;
            println!("created tenant {} ({})", tenant.slug, tenant.id);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config, role },
        } => {
            let loaded = Config::load(config.config.as_deref())?;
            print!("{}", loaded.to_redacted_toml());
            Config::load_for(config.config.as_deref(), role)?;
            eprintln!("configuration is valid for --role {}", role.as_str());
            Ok(())
        }
        Command::Healthcheck { url, config } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let config = Config::load(config.config.as_deref())?;
                    format!(
                        "http://127.0.0.1:{}/health/live",
                        config.port_for(Role::All)
                    )
                }
            };
            let response = crate::infra::tls::http_client()
                .timeout(Duration::from_secs(3))
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("{url} did not answer"))?;
            if !response.status().is_success() {
                bail!("{url} answered {}", response.status());
            }
            Ok(())
        }
    }
}

/// Connects to the configured database, applies migrations, and on an empty database creates the
/// first tenant and admin, exactly as `serve` does on its first start.
async fn open_database(config_file: Option<&Path>) -> anyhow::Result<Db> {
    let config = Config::load(config_file)?;
    logging::init(&config.log);
    let db = Db::connect(config.database.url.expose(), config.database.pool_size()).await?;
    db.migrate().await?;
    bootstrap::ensure_first_admin(&db, config.admin_password.as_ref()).await?;
    Ok(db)
}

/// One line from standard input, without its line ending. Prompts when a person is typing.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!(
            "no password on standard input (pipe it in: echo \"$PASSWORD\" | forma users create …)"
        );
    }
    Ok(password)
}
