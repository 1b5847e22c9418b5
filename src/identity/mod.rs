//! Who is who: tenants, users, their roles and the permissions those grant (SPEC §5.1).

pub mod bootstrap;
pub mod context;
pub mod email;
pub mod lease;
pub mod password;
pub mod roles;
pub mod tenants;
pub mod users;

#[cfg(test)]
mod tests;
