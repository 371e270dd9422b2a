//! Bazaar auth service. Users and passwords; issues JWTs and publishes UserRegistered.

pub mod config;
pub mod consumers;
pub mod db;
pub mod domain;
pub mod http;
pub mod startup;
