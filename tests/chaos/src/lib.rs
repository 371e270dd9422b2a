//! Proof under fire: Bazaar broken on purpose under a steady stream of checkouts, then checked
//! against its global invariants (`bazaar-invariants`).
//!
//! The in-process test stack cannot SIGKILL a service, so this harness runs the real binaries:
//! [`cluster::Cluster`] starts every service as a child process ([`process::Process`]) on free
//! ports, each with a fresh database, all on a topic prefix and consumer groups of their own and
//! a payment gateway simulator of their own, logging to `.run/chaos/<tag>/<service>.log`. It can
//! SIGKILL, SIGSTOP, SIGCONT, stop and restart any of them, and restart those that exit on their
//! own (the runtime's crash points, `messaging::fault`). [`infra`] breaks the shared broker and
//! PostgreSQL server and always restores them; [`load`] keeps checkouts coming; [`scenarios`]
//! holds the eight scenarios of issue 8.
//!
//! `tests/chaos.rs` runs a short subset in `make test` and every scenario in `make chaos`.

pub mod cluster;
pub mod groups;
pub mod infra;
pub mod load;
pub mod process;
pub mod scale;
pub mod scenarios;
