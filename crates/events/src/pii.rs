//! Personal data in events: a field is personal when its schema says so, with the field
//! attribute `"bazaar.pii": true` (kept by Avro as a custom attribute, invisible to encoding
//! and to compatibility). Whatever shows events to people (`bazaar tap`, `bazaar timeline`)
//! masks those fields unless asked to reveal them; the list is never written down anywhere
//! else, so marking a field in its `.avsc` is all it takes.
//!
//! A field whose name suggests personal data must carry the attribute, `true` or `false`:
//! a test over every schema file keeps a new `email` from slipping through unmarked.

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, RecordField, ResolvedSchema};
use apache_avro::types::Value;

use crate::codec::{CodecError, record_schema};
use crate::types::Event;

/// The field attribute that marks personal data.
pub const ATTRIBUTE: &str = "bazaar.pii";

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Whether a field is marked personal.
pub fn is_personal(field: &RecordField) -> bool {
    field.custom_attributes.get(ATTRIBUTE) == Some(&serde_json::Value::Bool(true))
}

/// The personal fields of an event type, as dotted paths (`shipping_address`,
/// `lines[].note`), from its schema.
pub fn personal_fields(type_name: &str) -> Vec<String> {
    let Some(schema) = record_schema(type_name) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Ok(resolved) = ResolvedSchema::try_from(schema) {
        collect(schema, resolved.get_names(), "", &mut found);
    }
    found
}

fn collect(schema: &Schema, names: &NamesRef<'_>, path: &str, found: &mut Vec<String>) {
    match schema {
        Schema::Record(record) => {
            for field in &record.fields {
                let here = format!("{path}{}", field.name);
                if is_personal(field) {
                    found.push(here);
                } else {
                    collect(&field.schema, names, &format!("{here}."), found);
                }
            }
        }
        Schema::Array(array) => {
            let inner = format!("{}[].", path.trim_end_matches('.'));
            collect(&array.items, names, &inner, found);
        }
        Schema::Map(map) => collect(&map.types, names, path, found),
        Schema::Union(union) => {
            for variant in union.variants() {
                collect(variant, names, path, found);
            }
        }
        // A named type used again (Bazaar's events are not recursive).
        Schema::Ref { name } => {
            if let Some(named) = names.get(name) {
                collect(named, names, path, found);
            }
        }
        _ => {}
    }
}

/// `event` with each personal field's value replaced by [`MASK`] (an absent optional value
/// stays absent). A personal field holds strings only: a string, or a record, array or map of
/// them (a structured address marked as a whole), optional or not, which the schema tests
/// check; anything else fails here rather than show through.
pub fn mask(event: &Event) -> Result<Event, CodecError> {
    let type_name = event.type_name();
    let schema = record_schema(type_name)
        .ok_or_else(|| CodecError::UnknownEventType(type_name.to_owned()))?;
    let resolved = ResolvedSchema::try_from(schema)?;
    let mut value = event.to_record()?.resolve(schema)?;
    mask_value(&mut value, schema, resolved.get_names())?;
    Event::from_record(type_name, &value)
        .ok_or_else(|| CodecError::UnknownEventType(type_name.to_owned()))?
        .map_err(CodecError::from)
}

fn mask_value(value: &mut Value, schema: &Schema, names: &NamesRef<'_>) -> Result<(), CodecError> {
    match (value, schema) {
        (Value::Record(values), Schema::Record(record)) => {
            for (field, (_, value)) in record.fields.iter().zip(values.iter_mut()) {
                if is_personal(field) {
                    masked(value, &field.name)?;
                } else {
                    mask_value(value, &field.schema, names)?;
                }
            }
        }
        (Value::Array(items), Schema::Array(array)) => {
            for item in items {
                mask_value(item, &array.items, names)?;
            }
        }
        (Value::Map(entries), Schema::Map(map)) => {
            for entry in entries.values_mut() {
                mask_value(entry, &map.types, names)?;
            }
        }
        (Value::Union(index, inner), Schema::Union(union)) => {
            if let Some(variant) = usize::try_from(*index)
                .ok()
                .and_then(|index| union.variants().get(index))
            {
                mask_value(inner, variant, names)?;
            }
        }
        (value, Schema::Ref { name }) => {
            if let Some(named) = names.get(name) {
                mask_value(value, named, names)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces every string of a personal value; absent stays absent.
fn masked(value: &mut Value, field: &str) -> Result<(), CodecError> {
    match value {
        Value::String(text) => *text = MASK.to_owned(),
        Value::Null => {}
        Value::Union(_, inner) => masked(inner, field)?,
        Value::Record(fields) => {
            for (_, inner) in fields {
                masked(inner, field)?;
            }
        }
        Value::Array(items) => {
            for inner in items {
                masked(inner, field)?;
            }
        }
        Value::Map(entries) => {
            for inner in entries.values_mut() {
                masked(inner, field)?;
            }
        }
        _ => return Err(CodecError::NotMaskable(field.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_personal_record_is_masked_string_by_string_and_the_rest_is_kept() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"E","fields":[
                {"name":"id","type":"string"},
                {"name":"address","bazaar.pii":true,"type":["null",{"type":"record","name":"A",
                  "fields":[{"name":"street","type":"string"},{"name":"country","type":"string"}]}]},
                {"name":"notes","type":{"type":"array","items":{"type":"record","name":"N",
                  "fields":[{"name":"text","type":"string","bazaar.pii":true},
                            {"name":"kind","type":"string"}]}}}]}"#,
        )
        .expect("schema");
        let resolved = ResolvedSchema::try_from(&schema).expect("resolves");
        let note = |text: &str, kind: &str| {
            Value::Record(vec![
                ("text".into(), Value::String(text.into())),
                ("kind".into(), Value::String(kind.into())),
            ])
        };
        let mut value = Value::Record(vec![
            ("id".into(), Value::String("e1".into())),
            (
                "address".into(),
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![
                        ("street".into(), Value::String("7 Rue des Lilas".into())),
                        ("country".into(), Value::String("FR".into())),
                    ])),
                ),
            ),
            (
                "notes".into(),
                Value::Array(vec![note("call Ada", "phone")]),
            ),
        ]);
        mask_value(&mut value, &schema, resolved.get_names()).expect("masks");
        let expected = Value::Record(vec![
            ("id".into(), Value::String("e1".into())),
            (
                "address".into(),
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![
                        ("street".into(), Value::String(MASK.into())),
                        ("country".into(), Value::String(MASK.into())),
                    ])),
                ),
            ),
            ("notes".into(), Value::Array(vec![note(MASK, "phone")])),
        ]);
        assert_eq!(value, expected);

        let mut long = Value::Long(7);
        assert!(masked(&mut long, "n").is_err(), "a number cannot be masked");
    }
}
