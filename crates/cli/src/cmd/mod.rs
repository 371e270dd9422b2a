//! One module per verb.

pub mod access;
pub mod check;
pub mod dlq;
pub mod overview;
pub mod rebuild;
pub mod replay;
pub mod services;
pub mod stuck;
pub mod tap;
pub mod timeline;
pub mod topics;
