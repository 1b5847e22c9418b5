//! Sendcloud (SPEC §6.4): the API client forma creates, reads and cancels parcels with
//! ([`client`]), the parcel as asked for and as reported ([`parcel`]), and the signed webhooks
//! that report a parcel's progress ([`webhook`]).
//!
//! Without `sendcloud.public_key` and `sendcloud.secret_key` the integration is disconnected:
//! [`Sendcloud::from_config`] gives no client and parcels wait.

pub mod client;
pub mod parcel;
pub mod webhook;

#[cfg(test)]
mod tests;

pub use client::*;
pub use parcel::*;
pub use webhook::*;
