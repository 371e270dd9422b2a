//! Personal data in the schemas (issue 13, part 7): which fields are personal is declared once,
//! with `"bazaar.pii"` on the field in its `.avsc`, and masking follows from it. A field whose
//! name suggests personal data must say whether it is, so a new one cannot slip through.

use apache_avro::Schema;
use events::pii::{self, ATTRIBUTE, MASK};
use events::{Event, OrderCreated, OrderLine, PostalAddress, UserRegistered};

/// Parts of a field name that suggest personal data (or a secret of a person's).
const SUSPICIOUS: [&str; 11] = [
    "email", "mail", "address", "street", "city", "postal", "zip", "token", "phone", "name",
    "tracking",
];

/// Every field, as `Event.path`, with whether it carries the attribute and its schema; not
/// the fields inside a personal one (personal as a whole).
fn fields(event: &str, schema: &Schema) -> Vec<(String, bool, Schema)> {
    fn walk(schema: &Schema, path: &str, found: &mut Vec<(String, bool, Schema)>) {
        match schema {
            Schema::Record(record) => {
                for field in &record.fields {
                    let here = format!("{path}.{}", field.name);
                    let marked = field.custom_attributes.contains_key(ATTRIBUTE);
                    found.push((here.clone(), marked, field.schema.clone()));
                    if !pii::is_personal(field) {
                        walk(&field.schema, &here, found);
                    }
                }
            }
            Schema::Array(array) => walk(&array.items, &format!("{path}[]"), found),
            Schema::Map(map) => walk(&map.types, path, found),
            Schema::Union(union) => {
                for variant in union.variants() {
                    walk(variant, path, found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(schema, event, &mut found);
    found
}

/// The fields whose name suggests personal data but that do not say whether it is.
fn unmarked(event: &str, schema: &Schema) -> Vec<String> {
    fields(event, schema)
        .into_iter()
        .filter(|(path, marked, _)| {
            let name = path.rsplit('.').next().unwrap_or_default().to_lowercase();
            !marked && SUSPICIOUS.iter().any(|word| name.contains(word))
        })
        .map(|(path, _, _)| path)
        .collect()
}

fn schemas() -> Vec<(&'static str, Schema)> {
    events::SCHEMAS
        .iter()
        .map(|(_, name, text)| {
            let schema = Schema::parse_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, schema)
        })
        .collect()
}

#[test]
fn every_field_named_like_personal_data_says_whether_it_is() {
    let missing: Vec<String> = schemas()
        .iter()
        .flat_map(|(name, schema)| unmarked(name, schema))
        .collect();
    assert!(
        missing.is_empty(),
        "add \"{ATTRIBUTE}\": true (personal) or false (not) to: {missing:?}"
    );
}

#[test]
fn the_check_finds_an_unmarked_field() {
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"E","fields":[
            {"name":"id","type":"string"},
            {"name":"contact","type":{"type":"record","name":"C","fields":[
                {"name":"work_email","type":["null","string"]},
                {"name":"city","type":"string","bazaar.pii":true}]}},
            {"name":"billing_address","type":"string","bazaar.pii":false}]}"#,
    )
    .expect("schema");
    assert_eq!(unmarked("E", &schema), ["E.contact.work_email"]);

    // Inside a field personal as a whole nothing needs marking; inside another, everything.
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"E","fields":[
            {"name":"ship_to","bazaar.pii":true,"type":{"type":"record","name":"A",
              "fields":[{"name":"street","type":"string"}]}},
            {"name":"bill_to","type":{"type":"record","name":"B",
              "fields":[{"name":"street","type":"string"}]}}]}"#,
    )
    .expect("schema");
    assert_eq!(unmarked("E", &schema), ["E.bill_to.street"]);
}

/// Whether every value a schema can hold is a string or absent: what masking can replace.
fn only_strings(schema: &Schema) -> bool {
    match schema {
        Schema::String | Schema::Null => true,
        Schema::Union(union) => union.variants().iter().all(only_strings),
        Schema::Record(record) => record
            .fields
            .iter()
            .all(|field| only_strings(&field.schema)),
        Schema::Array(array) => only_strings(&array.items),
        Schema::Map(map) => only_strings(&map.types),
        _ => false,
    }
}

#[test]
fn personal_fields_hold_only_strings_so_they_can_be_masked() {
    for (name, schema) in schemas() {
        for (path, _, field_schema) in fields(name, &schema) {
            let personal = pii::personal_fields(name)
                .iter()
                .any(|field| path == format!("{name}.{field}"));
            if !personal {
                continue;
            }
            assert!(
                only_strings(&field_schema),
                "{path} is personal but holds more than strings: {field_schema:?}"
            );
        }
    }
}

#[test]
fn the_personal_fields_are_the_ones_the_schemas_mark() {
    assert_eq!(
        pii::personal_fields("OrderCreated"),
        ["payment_token", "shipping_address", "address"]
    );
    assert_eq!(
        pii::personal_fields("UserRegistered"),
        ["email", "display_name"]
    );
    assert_eq!(
        pii::personal_fields("ShipmentScheduled"),
        ["tracking_number"]
    );
    assert!(pii::personal_fields("ProductSnapshot").is_empty());
    assert!(pii::personal_fields("PaymentSucceeded").is_empty());
}

#[test]
fn masking_replaces_the_personal_fields_and_keeps_the_rest() {
    let order: Event = OrderCreated {
        order_id: "o1".into(),
        user_id: "u1".into(),
        lines: vec![OrderLine {
            sku: "TEE-M".into(),
            quantity: 2,
            unit_price_minor: 1999,
        }],
        total_minor: 3998,
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
        shipping_address: "Ada Lovelace, 1 Main St, 12345 Springfield, DE".into(),
        address: Some(Box::new(PostalAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "DE".into(),
        })),
    }
    .into();
    let Event::OrderCreated(masked) = pii::mask(&order).expect("masks") else {
        panic!("still an OrderCreated");
    };
    assert_eq!(masked.payment_token, MASK);
    assert_eq!(masked.shipping_address, MASK);
    // The structured address is masked as a whole; an absent line stays absent.
    assert_eq!(
        masked.address.as_deref(),
        Some(&PostalAddress {
            name: MASK.into(),
            line1: MASK.into(),
            line2: None,
            city: MASK.into(),
            postal_code: MASK.into(),
            country: MASK.into(),
        })
    );
    let Event::OrderCreated(original) = order else {
        unreachable!()
    };
    assert_eq!(
        OrderCreated {
            payment_token: MASK.into(),
            shipping_address: MASK.into(),
            address: masked.address.clone(),
            ..original
        },
        masked
    );

    let user: Event = UserRegistered {
        user_id: "u1".into(),
        email: "ada@example.com".into(),
        display_name: "Ada Lovelace".into(),
        registered_at: 1_764_000_000_000,
    }
    .into();
    let Event::UserRegistered(masked) = pii::mask(&user).expect("masks") else {
        panic!("still a UserRegistered");
    };
    assert_eq!(
        (masked.email.as_str(), masked.display_name.as_str()),
        (MASK, MASK)
    );
    assert_eq!(masked.user_id, "u1");
}
