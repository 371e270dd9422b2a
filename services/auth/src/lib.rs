//! Bazaar auth service. Users and passwords; issues JWTs and publishes UserRegistered.

pub mod accounts;
pub mod addresses;
pub mod admin;
pub mod config;
pub mod consumers;
pub mod db;
pub mod domain;
pub mod http;
pub mod keys;
pub mod passwords;
pub mod sessions;
pub mod startup;
