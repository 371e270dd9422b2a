//! Exit codes, so scripts can tell a refusal or a timeout from a failure.

/// Errors that map to their own exit code; anything else exits with 1 (clap's usage errors
/// exit with 2).
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    /// A precondition does not hold (live consumers, no confirmation): nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// Waited for the services and gave up; what was requested stays requested.
    #[error("{0}")]
    TimedOut(String),
    /// Kafka, the registry or a database cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Nothing matched: no such order, parked message or event.
    #[error("{0}")]
    NotFound(String),
}

impl Exit {
    pub fn code(&self) -> u8 {
        match self {
            Self::Refused(_) => 3,
            Self::TimedOut(_) => 4,
            Self::Unavailable(_) => 5,
            Self::NotFound(_) => 6,
        }
    }
}

/// The process exit code for an error.
pub fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Exit>())
        .map_or(1, Exit::code)
}
