//! End-to-end test support: a real OTLP receiver (gRPC and HTTP/protobuf) and a harness that
//! runs the real `taskman-server` binary.
//!
//! [`receiver::Receiver`] is an in-process OTLP/gRPC trace collector whose
//! behaviour (accept, error codes, hang, refuse connections) can be switched at
//! run time; [`server::TaskmanServer`] starts the built server as a separate
//! process on a free port. Neither knows how the server works inside: tests
//! observe it only through its HTTP API, its signals and what reaches the
//! receiver. [`postgres::Postgres`] is a throw-away PostgreSQL cluster for the
//! tests of the PostgreSQL store. The crate is never published.
//!
//! For `cargo xtask bench`, [`load`] is a small HTTP load generator and
//! [`process_stats`] reads a process's CPU time and memory; the
//! `outage-bench` binary drives the server through telemetry outages with
//! them.

pub mod load;
pub mod postgres;
pub mod process_stats;
pub mod receiver;
pub mod server;
