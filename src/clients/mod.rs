//! The traits one service calls another through (SPEC §1): each has an in-process implementation
//! (role `all`) and an HTTP one (split roles); `roles` picks one at start-up.

pub mod http;
pub mod order;
pub mod print;
pub mod shipping;
