//! librdkafka properties from the environment, for tuning a deployment without a rebuild:
//! `BAZAAR_RDKAFKA_PRODUCER_LINGER_MS=5` sets `linger.ms` on the relay's producer,
//! `BAZAAR_RDKAFKA_CONSUMER_FETCH_WAIT_MAX_MS=100` sets `fetch.wait.max.ms` on saga consumers.
//! The name after the role is the property with `_` for `.` (librdkafka's names have no `_`).
//! Applied last, so it overrides Bazaar's own choices; every override is logged.

/// Which clients an override applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Self::Producer => "BAZAAR_RDKAFKA_PRODUCER_",
            Self::Consumer => "BAZAAR_RDKAFKA_CONSUMER_",
        }
    }
}

/// The overrides for `role` among `variables`, as (property, value).
fn overrides(
    role: Role,
    variables: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = variables
        .filter_map(|(name, value)| {
            let property = name.strip_prefix(role.prefix())?;
            (!property.is_empty()).then(|| (property.to_lowercase().replace('_', "."), value))
        })
        .collect();
    found.sort();
    found
}

/// Applies this process's overrides for `role` to `config`.
pub fn apply(config: &mut rdkafka::ClientConfig, role: Role) {
    for (property, value) in overrides(role, std::env::vars()) {
        tracing::info!(
            ?role,
            property,
            value,
            "librdkafka property set from the environment"
        );
        config.set(property, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_of_the_role_become_dotted_properties() {
        let variables = [
            ("BAZAAR_RDKAFKA_PRODUCER_LINGER_MS", "5"),
            ("BAZAAR_RDKAFKA_PRODUCER_COMPRESSION_TYPE", "none"),
            ("BAZAAR_RDKAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "100"),
            ("BAZAAR_RDKAFKA_PRODUCER_", "ignored"),
            ("PATH", "/bin"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        assert_eq!(
            overrides(Role::Producer, variables.clone().into_iter()),
            vec![
                ("compression.type".to_owned(), "none".to_owned()),
                ("linger.ms".to_owned(), "5".to_owned()),
            ]
        );
        assert_eq!(
            overrides(Role::Consumer, variables.into_iter()),
            vec![("fetch.wait.max.ms".to_owned(), "100".to_owned())]
        );
    }
}
