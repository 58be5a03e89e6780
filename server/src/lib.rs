//! One qron cluster node: configuration, the Raft node and its gRPC network,
//! the leader's scheduler and dispatcher, the HTTP API, and the wiring in
//! [`node::run`].
//!
//! Modules import only from the levels below them (STYLE 15; checked in
//! `docs/architecture.md`, "Module layers"):
//!
//! 1. ground: [`clock`], [`config`], [`peers`], [`raft`] (network, service,
//!    `propose`/`barrier`), [`role`] (the pure role decision);
//! 2. [`context`]: the node handle every subsystem takes;
//! 3. [`discovery`]: who leads, for `Acquire`, `/server/acquire` and hints;
//! 4. [`scheduler`], [`dispatch`] and [`retention`] (each with a pure
//!    planning part), dispatch with the gRPC worker service on top of its sessions;
//! 5. [`api`]: the HTTP handlers and the forwarding middleware;
//! 6. [`leadership`]: starts and stops the leader's work;
//! 7. [`node`]: composes a node; `main.rs` parses.
#![forbid(unsafe_code)]
// openraft's error types (StorageError, RaftError) are large by design and are what its
// traits require us to return; boxing them at every call would only add noise.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod clock;
pub mod config;
pub mod context;
pub mod discovery;
pub mod dispatch;
pub mod leadership;
pub mod node;
pub mod peers;
pub mod raft;
pub mod retention;
pub mod role;
pub mod scheduler;
