//! Bazaar payment gateway simulator: a card processor with a Stripe-like API (payment intents,
//! refunds, `Idempotency-Key`), test card tokens, and injectable latency, failures and timeouts.
//!
//! It is a simulator: everything it knows lives in memory and is gone after a restart.

pub mod config;
pub mod domain;
pub mod faults;
pub mod http;
pub mod ledger;
pub mod startup;
pub mod wire;
