//! The one state machine (SPEC §6.1, §6.4): the statuses of orders, line items and print jobs,
//! which moves between them are legal, and how a line item's and an order's status follow from
//! their print jobs. Every status change in forma goes through [`Status::transition`]; nothing
//! else decides.
//!
//! Invariants:
//! - Staying put is not a transition and always allowed (a repeated webhook changes nothing).
//! - A move missing from a status's table is illegal: a request asking for it is a 409, a derived
//!   one is refused and logged (it would mean the derivation and the table disagree).
//! - Shipped and fulfilled orders no longer follow their jobs; a cancelled order follows them only
//!   when one of its jobs is revived (terminal → active), which is what "revival" means.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::ApiError;

/// A status with a transition table.
pub trait Status: Copy + Eq + std::fmt::Debug + 'static {
    /// What has this status, for messages: `order`, `line item`, `print job`.
    const ENTITY: &'static str;
    const ALL: &'static [Self];
    /// Every legal move `(from, to)`, `from != to`.
    const TRANSITIONS: &'static [(Self, Self)];

    fn as_str(self) -> &'static str;

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == text)
    }

    fn can_become(self, to: Self) -> bool {
        self == to || Self::TRANSITIONS.contains(&(self, to))
    }

    /// `to`, if `self` may move there.
    fn transition(self, to: Self) -> Result<Self, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition {
                entity: Self::ENTITY,
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }
}

/// A move the table does not allow: a 409 in the §4 shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Cannot move {entity} from {from} to {to}")]
pub struct IllegalTransition {
    pub entity: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl From<IllegalTransition> for ApiError {
    fn from(e: IllegalTransition) -> Self {
        ApiError::conflict(e.to_string())
    }
}

macro_rules! status_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Processing,
    ReadyForFulfillment,
    Shipped,
    Fulfilled,
    PartiallyCompleted,
    Failed,
    Cancelled,
}

status_names!(OrderStatus {
    Pending => "PENDING",
    Processing => "PROCESSING",
    ReadyForFulfillment => "READY_FOR_FULFILLMENT",
    Shipped => "SHIPPED",
    Fulfilled => "FULFILLED",
    PartiallyCompleted => "PARTIALLY_COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl Status for OrderStatus {
    const ENTITY: &'static str = "order";
    const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Processing,
        Self::ReadyForFulfillment,
        Self::Shipped,
        Self::Fulfilled,
        Self::PartiallyCompleted,
        Self::Failed,
        Self::Cancelled,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use OrderStatus::*;
        &[
            (Pending, Processing),
            // Every line served from stock (inventory) needs no printing at all.
            (Pending, ReadyForFulfillment),
            (Pending, Failed),
            (Pending, Cancelled),
            (Processing, ReadyForFulfillment),
            (Processing, PartiallyCompleted),
            (Processing, Failed),
            (Processing, Cancelled),
            // Waiting on unmapped lines only, once the mapped ones were re-planned away.
            (Processing, Pending),
            (PartiallyCompleted, Processing),
            (PartiallyCompleted, Cancelled),
            (Failed, Processing),
            (Failed, Cancelled),
            // A retried job completed before the order heard it was queued again.
            (PartiallyCompleted, ReadyForFulfillment),
            (Failed, ReadyForFulfillment),
            (ReadyForFulfillment, Shipped),
            (ReadyForFulfillment, Cancelled),
            (Shipped, Fulfilled),
            // Revival: a job of a cancelled order is active again.
            (Cancelled, Processing),
        ]
    };

    fn as_str(self) -> &'static str {
        self.name()
    }
}

impl OrderStatus {
    /// Whether the order can still be cancelled (nothing has left the building).
    pub fn is_cancellable(self) -> bool {
        self.can_become(OrderStatus::Cancelled) && self != OrderStatus::Cancelled
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineItemStatus {
    Pending,
    Unmapped,
    Printing,
    Completed,
    Failed,
    Cancelled,
}

status_names!(LineItemStatus {
    Pending => "PENDING",
    Unmapped => "UNMAPPED",
    Printing => "PRINTING",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl Status for LineItemStatus {
    const ENTITY: &'static str = "line item";
    const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Unmapped,
        Self::Printing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use LineItemStatus::*;
        &[
            (Pending, Unmapped),
            (Pending, Printing),
            (Pending, Completed),
            (Pending, Failed),
            (Pending, Cancelled),
            (Unmapped, Pending),
            (Unmapped, Cancelled),
            (Printing, Pending),
            (Printing, Completed),
            (Printing, Failed),
            (Printing, Cancelled),
            // A failed or cancelled line is re-planned or its jobs retried; its jobs may be past
            // queued by the time the order hears of it.
            (Failed, Pending),
            (Failed, Printing),
            (Failed, Completed),
            (Failed, Cancelled),
            (Cancelled, Pending),
            (Cancelled, Printing),
            (Cancelled, Completed),
        ]
    };

    fn as_str(self) -> &'static str {
        self.name()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrintJobStatus {
    Queued,
    Printing,
    Completed,
    Failed,
    Cancelled,
}

status_names!(PrintJobStatus {
    Queued => "QUEUED",
    Printing => "PRINTING",
    Completed => "COMPLETED",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl Status for PrintJobStatus {
    const ENTITY: &'static str = "print job";
    const ALL: &'static [Self] = &[
        Self::Queued,
        Self::Printing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use PrintJobStatus::*;
        &[
            (Queued, Printing),
            // A print can be reported done without its start having been seen.
            (Queued, Completed),
            (Queued, Failed),
            (Queued, Cancelled),
            (Printing, Completed),
            (Printing, Failed),
            (Printing, Cancelled),
            (Failed, Queued),
            // Given up on: a failed stock job's batch then stops counting as in production.
            (Failed, Cancelled),
            (Cancelled, Queued),
        ]
    };

    fn as_str(self) -> &'static str {
        self.name()
    }
}

impl PrintJobStatus {
    /// Still to be printed or printing.
    pub fn is_active(self) -> bool {
        matches!(self, PrintJobStatus::Queued | PrintJobStatus::Printing)
    }

    /// A move back from a terminal status to an active one: what revives an order.
    pub fn is_revival(from: Self, to: Self) -> bool {
        matches!(from, PrintJobStatus::Failed | PrintJobStatus::Cancelled) && to.is_active()
    }
}

/// A line item's status as its current print jobs say. `mapped`: whether the line has an active
/// product mapping (without one it waits as UNMAPPED).
pub fn line_item_status(
    current: LineItemStatus,
    mapped: bool,
    jobs: &[PrintJobStatus],
) -> LineItemStatus {
    use PrintJobStatus as J;
    if jobs.is_empty() {
        return match current {
            // Nothing to print: served from stock, or cancelled before planning. Or refused when
            // planned (more prints than a line can need): failed until someone retries it.
            LineItemStatus::Completed | LineItemStatus::Cancelled | LineItemStatus::Failed => {
                current
            }
            _ if mapped => LineItemStatus::Pending,
            _ => LineItemStatus::Unmapped,
        };
    }
    let count = |s: J| jobs.iter().filter(|j| **j == s).count();
    if count(J::Printing) > 0 {
        LineItemStatus::Printing
    } else if count(J::Completed) == jobs.len() {
        LineItemStatus::Completed
    } else if count(J::Queued) > 0 {
        if count(J::Completed) > 0 {
            LineItemStatus::Printing
        } else {
            LineItemStatus::Pending
        }
    } else if count(J::Cancelled) == jobs.len() {
        LineItemStatus::Cancelled
    } else {
        // Nothing active, and some job failed or was cancelled: the line cannot be complete.
        LineItemStatus::Failed
    }
}

/// An order's status as its line items say, from `current`. `revived`: a job of the order just
/// went from a terminal status back to an active one.
pub fn order_status(current: OrderStatus, items: &[LineItemStatus], revived: bool) -> OrderStatus {
    use LineItemStatus as L;
    match current {
        OrderStatus::Shipped | OrderStatus::Fulfilled => return current,
        OrderStatus::Cancelled if !revived => return current,
        _ => {}
    }
    if items.is_empty() {
        return current;
    }
    let any = |f: fn(L) -> bool| items.iter().any(|i| f(*i));
    let all = |f: fn(L) -> bool| items.iter().all(|i| f(*i));
    if any(|i| matches!(i, L::Pending | L::Printing)) {
        OrderStatus::Processing
    } else if all(|i| i == L::Completed) {
        OrderStatus::ReadyForFulfillment
    } else if !any(|i| i == L::Completed) {
        if any(|i| matches!(i, L::Failed | L::Cancelled)) {
            OrderStatus::Failed
        } else {
            // Only unmapped lines: waiting for a mapping, nothing failed.
            OrderStatus::Pending
        }
    } else {
        OrderStatus::PartiallyCompleted
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
