//! Which part of forma a process runs (SPEC §1, §3 `--role`). It lives with the configuration
//! because the configuration is read for a role (ports, required settings); `roles.rs` decides
//! what each role mounts.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Gateway and order service in one process, on one port.
    All,
    /// The API gateway.
    Gateway,
    /// The order service.
    Order,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Order => "order",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Role::All | Role::Gateway => 3000,
            Role::Order => 3001,
        }
    }
}
