//! The plumbing every Bazaar process shares, written once.
//!
//! A service's `main.rs` goes config → telemetry → database → HTTP app, and each step lives here:
//! [`config::load`], [`telemetry::init`], [`db::connect_and_migrate`] and [`app::Application`].
//! [`fanout`] delivers PostgreSQL notifications to the tasks waiting on one key.

pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod shutdown;
pub mod telemetry;
