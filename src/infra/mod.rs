//! Infrastructure ports (SPEC §2). Each has an embedded implementation for one node and a
//! distributed one for replicas, side by side in its module; the choice is made once at start-up.

pub mod connection_threads;
pub mod db;
pub mod open_files;
pub mod panics;
pub mod public_net;
pub mod redis;
pub mod sessions;
pub mod tls;
pub mod workers;
