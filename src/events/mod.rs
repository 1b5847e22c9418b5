//! Events (SPEC §8): the cross-service catalog carried by the bus, one Rust type per event so that
//! publishers and subscribers agree on the wire format at compile time rather than by convention.

pub mod catalog;
