//! Black-box tests of the real `forma` binary: its commands, and its roles as separate processes
//! talking over loopback.

mod cli;
mod crash;
mod demo;
mod processes;
mod support;
