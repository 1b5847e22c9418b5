//! Events (SPEC §8): the cross-service catalog carried by the bus, one Rust type per event so that
//! publishers and subscribers agree on the wire format at compile time rather than by convention.
//!
//! - [`catalog`]: the 15 bus events and their names.
//! - [`publish`]: the port the bus implements ([`publish::EventPublisher`]).
//! - [`outbox`]: events written with the change that causes them, relayed to the bus.
//! - [`idempotency`]: consumers handle each event once, deduplicated with their own writes.
//! - [`outage`]: handlers wait out a database outage rather than spend their attempts on it.
//! - [`internal`]: typed in-process events and their dispatcher.
//! - [`bridge`]: the one table of internal ↔ bus names, and the conversions.

pub mod bridge;
pub mod bus;
pub mod catalog;
#[cfg(test)]
mod crash_tests;
pub mod idempotency;
pub mod internal;
pub mod outage;
pub mod outbox;
pub mod publish;
