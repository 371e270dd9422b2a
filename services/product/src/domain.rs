//! The catalog: products, their variants, and what makes a variant valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl TryFrom<String> for Currency {
    type Error = CatalogError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(code))
        } else {
            Err(CatalogError::InvalidCurrency(code))
        }
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.0
    }
}

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("currency {0:?} is not a three-letter ISO 4217 code")]
    InvalidCurrency(String),
    #[error("SKU {0:?} must be 1-64 characters of A-Z, 0-9 and '-'")]
    InvalidSku(String),
    #[error("variant {sku}: price must not be negative")]
    NegativePrice { sku: String },
    #[error("product {slug:?} has no variants")]
    NoVariants { slug: String },
    #[error("{field} must not be blank")]
    Blank { field: &'static str },
}

/// A product as an administrator describes it, before it has an id. The schema states what
/// [`ProductDraft::validate`] and PostgreSQL (no NUL in text) accept.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ProductDraft {
    /// Unique; not blank.
    #[schema(example = "classic-tee", pattern = r"^[^\u0000]*\S[^\u0000]*$")]
    pub slug: String,
    /// Not blank.
    #[schema(example = "Classic tee", pattern = r"^[^\u0000]*\S[^\u0000]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000]*$")]
    pub description: String,
    #[schema(min_items = 1)]
    pub variants: Vec<VariantDraft>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct VariantDraft {
    /// Unique across the catalog.
    #[schema(example = "TEE-BLK-M", pattern = r"^[A-Z0-9-]{1,64}$")]
    pub sku: String,
    #[schema(example = "Black, M", pattern = r"^[^\u0000]*$")]
    pub name: String,
    #[serde(default)]
    #[schema(schema_with = attributes_schema)]
    pub attributes: BTreeMap<String, String>,
    /// Integer minor units (cents).
    #[serde(deserialize_with = "platform::http::integer")]
    #[schema(minimum = 0, example = 1999)]
    pub price_minor: i64,
    #[schema(value_type = String, pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: Currency,
}

/// Text attributes of a variant (size, colour, …); no NUL characters, which PostgreSQL refuses.
fn attributes_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[^\u0000]*$"))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(text()))
        .additional_properties(Some(AdditionalProperties::RefOr(text().build().into())))
        .examples([serde_json::json!({"size": "M", "colour": "black"})])
        .build()
}

impl ProductDraft {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.slug.trim().is_empty() {
            return Err(CatalogError::Blank { field: "slug" });
        }
        if self.name.trim().is_empty() {
            return Err(CatalogError::Blank { field: "name" });
        }
        if self.variants.is_empty() {
            return Err(CatalogError::NoVariants {
                slug: self.slug.clone(),
            });
        }
        for variant in &self.variants {
            let sku_ok = (1..=64).contains(&variant.sku.len())
                && variant
                    .sku
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
            if !sku_ok {
                return Err(CatalogError::InvalidSku(variant.sku.clone()));
            }
            if variant.price_minor < 0 {
                return Err(CatalogError::NegativePrice {
                    sku: variant.sku.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(sku: &str, price_minor: i64) -> ProductDraft {
        ProductDraft {
            slug: "tee".into(),
            name: "Tee".into(),
            description: String::new(),
            variants: vec![VariantDraft {
                sku: sku.into(),
                name: "M".into(),
                attributes: BTreeMap::new(),
                price_minor,
                currency: Currency::try_from("EUR".to_owned()).expect("valid currency"),
            }],
        }
    }

    #[test]
    fn a_well_formed_product_is_valid() {
        assert_eq!(draft("TEE-M", 1999).validate(), Ok(()));
    }

    #[test]
    fn a_negative_price_is_rejected() {
        assert_eq!(
            draft("TEE-M", -1).validate(),
            Err(CatalogError::NegativePrice {
                sku: "TEE-M".into()
            })
        );
    }

    #[test]
    fn a_lowercase_sku_is_rejected() {
        assert_eq!(
            draft("tee-m", 1).validate(),
            Err(CatalogError::InvalidSku("tee-m".into()))
        );
    }

    #[test]
    fn currencies_must_be_iso_codes() {
        assert!(Currency::try_from("eur".to_owned()).is_err());
        assert!(Currency::try_from("EURO".to_owned()).is_err());
        assert!(Currency::try_from("USD".to_owned()).is_ok());
    }
}
