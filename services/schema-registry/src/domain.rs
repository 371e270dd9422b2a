//! What the registry decides without a database: which texts are valid Avro schemas, when two
//! texts are the same schema, which compatibility levels exist and what each one demands.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use sha2::{Digest, Sha256};

/// The only schema type this registry accepts; Confluent's other types (PROTOBUF, JSON) are not
/// used by Bazaar.
pub const AVRO: &str = "AVRO";

/// How a new version of a subject must relate to the versions before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatibilityLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    /// Confluent's default: consumers upgrade first and can still read what old producers wrote.
    pub const DEFAULT: Self = Self::Backward;

    pub const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// The new schema must be able to read data written with earlier versions.
    fn new_reads_old(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Earlier versions must be able to read data written with the new schema.
    fn old_reads_new(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Every earlier version counts, not only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid compatibility level {0:?}. Valid values are none, backward, backward_transitive, \
     forward, forward_transitive, full and full_transitive"
)]
pub struct InvalidCompatibilityLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = InvalidCompatibilityLevel;

    /// Case-insensitive, as Confluent's registry is (its own docs use lower case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| InvalidCompatibilityLevel(name.to_owned()))
    }
}

/// A text that parsed as an Avro schema.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    schema: Schema,
    normalised: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid schema: {0}")]
pub struct InvalidSchema(String);

impl AvroSchema {
    pub fn parse(text: &str) -> Result<Self, InvalidSchema> {
        let schema = Schema::parse_str(text).map_err(|error| InvalidSchema(describe(&error)))?;
        // Writing the parsed schema back out drops whitespace, key order and redundant spellings
        // such as {"type": "string"}, but keeps defaults, docs, aliases and logical types.
        // Parsing Canonical Form would be too coarse: it drops defaults, and a field's default
        // decides whether a change is compatible, so two schemas differing only there must not
        // share an id.
        let normalised = serde_json::to_string(&schema)
            .map_err(|error| InvalidSchema(format!("cannot be written back out: {error}")))?;
        Ok(Self { schema, normalised })
    }

    /// The form that decides whether two texts are the same schema.
    pub fn normalised(&self) -> &str {
        &self.normalised
    }

    /// SHA-256 of [`Self::normalised`]. Stored with every schema: if an apache-avro upgrade ever
    /// changes how schemas are written out, stored fingerprints must be recomputed, or schemas
    /// registered before it would get a second id.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.normalised.as_bytes()).into()
    }
}

/// A schema registered under a subject, with its version number there.
#[derive(Debug, Clone)]
pub struct RegisteredVersion {
    pub version: i32,
    pub schema: AvroSchema,
}

/// Why `candidate` may not become the next version after `history` (oldest first) under
/// `level`, one message per violated rule; empty when it may.
pub fn incompatibilities(
    level: CompatibilityLevel,
    candidate: &AvroSchema,
    history: &[RegisteredVersion],
) -> Vec<String> {
    let compared = if level.is_transitive() {
        history
    } else {
        history.last().map(std::slice::from_ref).unwrap_or_default()
    };
    let mut problems = Vec::new();
    // Newest first: the version a client most likely compared against is reported first.
    for earlier in compared.iter().rev() {
        if level.new_reads_old()
            && let Err(reason) = can_read(&earlier.schema, candidate)
        {
            problems.push(format!(
                "the new schema cannot read data written with version {}: {reason}",
                earlier.version
            ));
        }
        if level.old_reads_new()
            && let Err(reason) = can_read(candidate, &earlier.schema)
        {
            problems.push(format!(
                "version {} cannot read data written with the new schema: {reason}",
                earlier.version
            ));
        }
    }
    problems
}

/// Avro schema resolution from `writer` to `reader`. Partial resolution (the writer allows union
/// branches or enum symbols the reader lacks) counts as incompatible, as in Confluent's registry:
/// it would fail only once such a value is written, long after the schema was accepted.
fn can_read(writer: &AvroSchema, reader: &AvroSchema) -> Result<(), String> {
    match SchemaCompatibility::can_read(&writer.schema, &reader.schema) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "the writer's schema allows union branches or enum symbols that the reader's schema \
             cannot resolve"
                .to_owned(),
        ),
        Err(error) => Err(describe(&error)),
    }
}

/// An error with its causes, which apache-avro keeps out of the top-level message.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A version in a URL: a number or `latest` (`-1` is Confluent's alias for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "The specified version '{0}' is not a valid version id. Allowed values are between \
     [1, 2^31-1] and the string \"latest\""
)]
pub struct InvalidVersion(pub String);

impl FromStr for VersionSelector {
    type Err = InvalidVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("latest") || text == "-1" {
            return Ok(Self::Latest);
        }
        match text.parse::<i32>() {
            Ok(number) if number >= 1 => Ok(Self::Number(number)),
            _ => Err(InvalidVersion(text.to_owned())),
        }
    }
}

/// Subjects are free-form names (usually `<topic>-key` / `<topic>-value`); control characters
/// are refused because they cannot be shown or typed back reliably.
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.trim().is_empty() && !subject.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> AvroSchema {
        AvroSchema::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn history(texts: &[&str]) -> Vec<RegisteredVersion> {
        texts
            .iter()
            .zip(1..)
            .map(|(text, version)| RegisteredVersion {
                version,
                schema: schema(text),
            })
            .collect()
    }

    const V1: &str = r#"{"type":"record","name":"Order","namespace":"bazaar","fields":[
        {"name":"id","type":"string"}]}"#;
    const WITH_DEFAULT: &str = r#"{"type":"record","name":"Order","namespace":"bazaar","fields":[
        {"name":"id","type":"string"},{"name":"note","type":"string","default":""}]}"#;
    const WITHOUT_DEFAULT: &str = r#"{"type":"record","name":"Order","namespace":"bazaar",
        "fields":[{"name":"id","type":"string"},{"name":"note","type":"string"}]}"#;

    fn compatible(level: CompatibilityLevel, candidate: &str, earlier: &[&str]) -> bool {
        incompatibilities(level, &schema(candidate), &history(earlier)).is_empty()
    }

    #[test]
    fn levels_parse_case_insensitively_and_print_in_upper_case() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse(), Ok(level));
            assert_eq!(level.as_str().to_lowercase().parse(), Ok(level));
        }
        assert_eq!(
            "full_transitive".parse::<CompatibilityLevel>(),
            Ok(CompatibilityLevel::FullTransitive)
        );
        assert_eq!(CompatibilityLevel::DEFAULT.to_string(), "BACKWARD");
        assert_eq!(
            "SIDEWAYS".parse::<CompatibilityLevel>(),
            Err(InvalidCompatibilityLevel("SIDEWAYS".into()))
        );
        assert!("".parse::<CompatibilityLevel>().is_err());
    }

    #[test]
    fn adding_a_field_without_a_default_breaks_backward_but_not_forward() {
        use CompatibilityLevel::*;
        assert!(!compatible(Backward, WITHOUT_DEFAULT, &[V1]));
        assert!(!compatible(Full, WITHOUT_DEFAULT, &[V1]));
        assert!(compatible(Forward, WITHOUT_DEFAULT, &[V1]));
        assert!(compatible(None, WITHOUT_DEFAULT, &[V1]));
        let problems = incompatibilities(Backward, &schema(WITHOUT_DEFAULT), &history(&[V1]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("version 1") && problems[0].contains("'note'"),
            "{problems:?}"
        );
    }

    #[test]
    fn adding_a_field_with_a_default_is_fully_compatible() {
        for level in CompatibilityLevel::ALL {
            assert!(compatible(level, WITH_DEFAULT, &[V1]), "{level}");
        }
    }

    #[test]
    fn removing_a_field_without_a_default_breaks_forward_but_not_backward() {
        use CompatibilityLevel::*;
        assert!(compatible(Backward, V1, &[WITHOUT_DEFAULT]));
        assert!(!compatible(Forward, V1, &[WITHOUT_DEFAULT]));
        assert!(!compatible(Full, V1, &[WITHOUT_DEFAULT]));
        // With a default, old readers fill the removed field in.
        assert!(compatible(Full, V1, &[WITH_DEFAULT]));
    }

    #[test]
    fn widening_a_type_is_backward_but_not_forward_compatible() {
        let int = r#"{"type":"record","name":"Stock","fields":[{"name":"qty","type":"int"}]}"#;
        let long = r#"{"type":"record","name":"Stock","fields":[{"name":"qty","type":"long"}]}"#;
        assert!(compatible(CompatibilityLevel::Backward, long, &[int]));
        assert!(!compatible(CompatibilityLevel::Forward, long, &[int]));
        assert!(!compatible(CompatibilityLevel::Backward, int, &[long]));
    }

    #[test]
    fn transitive_levels_check_every_version_and_plain_ones_only_the_latest() {
        // v3 drops the default that v2 introduced: it reads v2 data, but not v1 data.
        let earlier = [V1, WITH_DEFAULT];
        assert!(compatible(
            CompatibilityLevel::Backward,
            WITHOUT_DEFAULT,
            &earlier
        ));
        let problems = incompatibilities(
            CompatibilityLevel::BackwardTransitive,
            &schema(WITHOUT_DEFAULT),
            &history(&earlier),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("version 1"), "{problems:?}");
        assert!(!compatible(
            CompatibilityLevel::FullTransitive,
            WITHOUT_DEFAULT,
            &earlier
        ));
    }

    #[test]
    fn the_first_version_is_always_compatible() {
        for level in CompatibilityLevel::ALL {
            assert!(compatible(level, WITHOUT_DEFAULT, &[]), "{level}");
        }
    }

    #[test]
    fn a_renamed_record_is_incompatible() {
        let renamed = V1.replace("\"Order\"", "\"Purchase\"");
        assert!(!compatible(CompatibilityLevel::Backward, &renamed, &[V1]));
    }

    #[test]
    fn narrowing_an_enum_is_refused_even_though_avro_calls_it_partial() {
        let wide = r#"{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}"#;
        let narrow = r#"{"type":"enum","name":"Status","symbols":["NEW","PAID"]}"#;
        assert!(!compatible(CompatibilityLevel::Backward, narrow, &[wide]));
        assert!(compatible(CompatibilityLevel::Backward, wide, &[narrow]));
        let with_default =
            r#"{"type":"enum","name":"Status","symbols":["NEW","PAID"],"default":"NEW"}"#;
        assert!(compatible(
            CompatibilityLevel::Backward,
            with_default,
            &[wide]
        ));
    }

    #[test]
    fn formatting_does_not_change_identity_but_defaults_do() {
        let spaced = r#"{
            "namespace": "bazaar", "type": "record", "name": "Order",
            "fields": [ { "type": {"type": "string"}, "name": "id" } ]
        }"#;
        assert_eq!(schema(V1).fingerprint(), schema(spaced).fingerprint());
        assert_eq!(schema(V1).normalised(), schema(spaced).normalised());
        assert_ne!(
            schema(WITH_DEFAULT).fingerprint(),
            schema(WITHOUT_DEFAULT).fingerprint()
        );
        assert_eq!(schema("\"string\"").normalised(), "\"string\"");
        assert_eq!(
            schema(r#"{"type":"string"}"#).fingerprint(),
            schema("\"string\"").fingerprint()
        );
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_reason() {
        for text in [
            "",
            "{not json",
            r#""no_such_type""#,
            r#"{"type":"record","name":"R"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}"#,
        ] {
            let error = AvroSchema::parse(text).expect_err(text);
            assert!(error.to_string().starts_with("Invalid schema: "), "{error}");
            assert!(
                error.to_string().len() > "Invalid schema: ".len(),
                "{error}"
            );
        }
    }

    #[test]
    fn versions_are_positive_numbers_or_latest() {
        assert_eq!("latest".parse(), Ok(VersionSelector::Latest));
        assert_eq!("-1".parse(), Ok(VersionSelector::Latest));
        assert_eq!("3".parse(), Ok(VersionSelector::Number(3)));
        for bad in ["0", "-2", "x", "", "2147483648", "1.5"] {
            assert_eq!(
                bad.parse::<VersionSelector>(),
                Err(InvalidVersion(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn subjects_must_be_printable_and_non_blank() {
        assert!(is_valid_subject("order-events-value"));
        assert!(is_valid_subject("bazaar.Order:v1"));
        assert!(!is_valid_subject(""));
        assert!(!is_valid_subject("  "));
        assert!(!is_valid_subject("bad\nsubject"));
    }
}
