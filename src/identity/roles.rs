//! Roles and the permissions they grant (SPEC §5.1): decided here and nowhere else.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A permission checked by a handler. Names are the strings of SPEC §5.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    OrdersRead,
    OrdersWrite,
    PrintJobsRead,
    PrintJobsWrite,
    ShipmentsRead,
    ShipmentsWrite,
    MappingsRead,
    MappingsWrite,
    AnalyticsRead,
    EventsRead,
    AuditRead,
    UsersManage,
    IntegrationsManage,
    RetryQueueManage,
    NotificationsManage,
    QueuesRead,
}

impl Permission {
    pub const ALL: [Permission; 16] = [
        Permission::OrdersRead,
        Permission::OrdersWrite,
        Permission::PrintJobsRead,
        Permission::PrintJobsWrite,
        Permission::ShipmentsRead,
        Permission::ShipmentsWrite,
        Permission::MappingsRead,
        Permission::MappingsWrite,
        Permission::AnalyticsRead,
        Permission::EventsRead,
        Permission::AuditRead,
        Permission::UsersManage,
        Permission::IntegrationsManage,
        Permission::RetryQueueManage,
        Permission::NotificationsManage,
        Permission::QueuesRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrdersRead => "orders.read",
            Permission::OrdersWrite => "orders.write",
            Permission::PrintJobsRead => "print-jobs.read",
            Permission::PrintJobsWrite => "print-jobs.write",
            Permission::ShipmentsRead => "shipments.read",
            Permission::ShipmentsWrite => "shipments.write",
            Permission::MappingsRead => "mappings.read",
            Permission::MappingsWrite => "mappings.write",
            Permission::AnalyticsRead => "analytics.read",
            Permission::EventsRead => "events.read",
            Permission::AuditRead => "audit.read",
            Permission::UsersManage => "users.manage",
            Permission::IntegrationsManage => "integrations.manage",
            Permission::RetryQueueManage => "retry-queue.manage",
            Permission::NotificationsManage => "notifications.manage",
            Permission::QueuesRead => "queues.read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    fn is_read(self) -> bool {
        self.as_str().ends_with(".read")
    }
}

/// A user's role within a tenant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    Admin,
    Operator,
    Viewer,
}

impl UserRole {
    pub const ALL: [UserRole; 3] = [UserRole::Admin, UserRole::Operator, UserRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Operator => "operator",
            UserRole::Viewer => "viewer",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            UserRole::Admin => "Every permission",
            UserRole::Operator => "Runs orders, print jobs, shipments and mappings day to day",
            UserRole::Viewer => "Reads everything except the audit log",
        }
    }

    /// What the role may do.
    pub fn permissions(self) -> Vec<Permission> {
        use Permission::*;
        match self {
            UserRole::Admin => Permission::ALL.to_vec(),
            UserRole::Operator => vec![
                OrdersRead,
                OrdersWrite,
                PrintJobsRead,
                PrintJobsWrite,
                ShipmentsRead,
                ShipmentsWrite,
                MappingsRead,
                MappingsWrite,
                AnalyticsRead,
                EventsRead,
            ],
            UserRole::Viewer => Permission::ALL
                .into_iter()
                .filter(|p| p.is_read() && *p != AuditRead)
                .collect(),
        }
    }
}

/// `roles` without repeats, in the order of [`UserRole::ALL`]: what a client lists twice is held
/// once (and stored once: `user_roles` has one row per user and role).
pub fn distinct(roles: &[UserRole]) -> Vec<UserRole> {
    UserRole::ALL
        .into_iter()
        .filter(|role| roles.contains(role))
        .collect()
}

/// The union of the permissions of `roles`, sorted and without duplicates.
pub fn permissions_of(roles: &[UserRole]) -> Vec<Permission> {
    let mut all: Vec<Permission> = roles.iter().flat_map(|r| r.permissions()).collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_has_every_permission() {
        assert_eq!(UserRole::Admin.permissions().len(), Permission::ALL.len());
    }

    #[test]
    fn viewer_reads_everything_but_the_audit_log_and_writes_nothing() {
        let viewer = UserRole::Viewer.permissions();
        assert!(viewer.contains(&Permission::OrdersRead));
        assert!(viewer.contains(&Permission::QueuesRead));
        assert!(!viewer.contains(&Permission::AuditRead));
        assert!(viewer.iter().all(|p| p.as_str().ends_with(".read")));
    }

    #[test]
    fn operator_has_the_ten_day_to_day_permissions() {
        let operator = UserRole::Operator.permissions();
        assert_eq!(operator.len(), 10);
        assert!(!operator.contains(&Permission::UsersManage));
        assert!(!operator.contains(&Permission::AuditRead));
    }

    #[test]
    fn repeated_roles_are_held_once() {
        use UserRole::*;
        assert_eq!(distinct(&[Operator, Viewer, Operator]), [Operator, Viewer]);
        assert_eq!(distinct(&[Viewer, Admin, Viewer, Admin]), [Admin, Viewer]);
    }

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in UserRole::ALL {
            assert_eq!(UserRole::parse(r.as_str()), Some(r));
        }
    }
}
