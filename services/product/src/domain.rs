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

/// A product as an administrator describes it, before it has an id.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductDraft {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub variants: Vec<VariantDraft>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VariantDraft {
    pub sku: String,
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub price_minor: i64,
    pub currency: Currency,
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
