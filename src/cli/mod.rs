//! The command line (SPEC §3).

mod commands;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::run;

use crate::config::Role;
use crate::identity::roles::UserRole;

#[derive(Debug, Parser)]
#[command(name = "forma", version, about = "The backend of a 3D-print-on-demand business", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// TOML configuration file (default: ./forma.toml when present)
    #[arg(long, env = "FORMA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a role: the gateway, the order service, or both in one process
    Serve {
        /// What runs in this process
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        #[command(flatten)]
        config: ConfigArg,
        /// Listen port (overrides server.port; default 3000, or 3001 for --role order)
        #[arg(long)]
        port: Option<u16>,
        /// Talk to built-in simulators of Shopify, SimplyPrint and Sendcloud, and play their part:
        /// orders arrive, print, ship and are fulfilled on their own (with --role all only)
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations (also done at start-up) and create the first admin if needed
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write the merged OpenAPI document
    Openapi {
        /// File to write (default: standard output)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Manage users
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage tenants
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Inspect the configuration
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Exit 0 if a running forma answers its liveness probe (for container health checks)
    Healthcheck {
        /// URL to probe (default: http://127.0.0.1:<server.port>/health/live)
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: UserRole,
        /// Tenant slug
        #[arg(long, default_value = crate::identity::tenants::DEFAULT_SLUG)]
        tenant: String,
        /// Let the user act in every tenant
        #[arg(long)]
        super_admin: bool,
        /// Display name
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant
    Create {
        /// Lower-case letters, digits and dashes
        slug: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and check it for a role
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Check the settings this role needs
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
}
