use std::path::Path;

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "shipping";
pub const DEFAULT_PORT: u16 = 8087;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub auth: AuthSettings,
    pub shipping: ShippingSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShippingSettings {
    /// Where the shop's parcels leave from (ISO 3166-1 alpha-2): a parcel to any other country
    /// is international.
    pub home_country: String,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            shipping: ShippingSettings {
                home_country: shipping_rules::DEFAULT_HOME_COUNTRY.to_owned(),
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}
