//! What a caught panic said, for the log or an error: the one reading of a panic's payload.

use std::any::Any;

/// The message a panic carried (`panic!("…")` gives a `&str` or a `String`).
pub fn message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(not a string)"
    }
}
