//! Who may write: registering a schema, deleting a subject or version, and changing a
//! compatibility setting need HTTP basic auth with one of the configured writers
//! (`auth.writers`), as Confluent's registry asks for with `authentication.method=BASIC`.
//! Reads need nothing.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::error::RegistryError;

/// The writers' credentials, each password kept only as its SHA-256, so that comparing takes
/// the same time whatever the guess.
#[derive(Clone)]
pub struct Writers {
    credentials: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self
            .credentials
            .iter()
            .map(|(user, _)| user.as_str())
            .collect();
        f.debug_struct("Writers").field("users", &users).finish()
    }
}

impl Writers {
    /// `user:password` pairs separated by commas; a pair without a colon or with an empty user
    /// name is refused, so a typo cannot leave a writer nobody can be.
    pub fn parse(settings: &AuthSettings) -> anyhow::Result<Self> {
        let mut credentials = Vec::new();
        for pair in settings.writers.expose_secret().split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let Some((user, password)) = pair.split_once(':') else {
                anyhow::bail!("auth.writers: an entry has no `:` between user and password");
            };
            anyhow::ensure!(!user.is_empty(), "auth.writers: an entry has no user name");
            credentials.push((user.to_owned(), digest(password)));
        }
        Ok(Self { credentials })
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.credentials.iter().map(|(user, _)| user.as_str())
    }

    /// Whether `headers` carry `Authorization: Basic` credentials of a writer.
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let presented = digest(&password);
        // Every entry is compared in full: no early exit tells a guesser how close it was.
        self.credentials
            .iter()
            .fold(false, |admitted, (known, expected)| {
                let same_password = presented
                    .iter()
                    .zip(expected)
                    .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
                    == 0;
                admitted | (same_password & (*known == user))
            })
    }
}

fn digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

/// The user and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A handler that takes a `Writer` runs only for a request from one of the writers; any other
/// gets 401 with a `WWW-Authenticate` challenge before the body is read.
#[derive(Debug)]
pub struct Writer;

impl FromRequest for Writer {
    type Error = RegistryError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let admitted = request
            .app_data::<web::Data<Writers>>()
            .is_some_and(|writers| writers.admit(request.headers()));
        ready(if admitted {
            Ok(Self)
        } else {
            Err(RegistryError::Unauthorized)
        })
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn writers(text: &str) -> Writers {
        Writers::parse(&AuthSettings {
            writers: text.into(),
        })
        .expect("valid writers")
    }

    fn basic(user_info: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(user_info));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&value).expect("header value"),
        );
        headers
    }

    #[test]
    fn only_a_listed_user_with_its_password_is_a_writer() {
        let writers = writers("ci:old-secret, ci:new-secret ,ops:p:with:colons");
        assert!(writers.admit(&basic("ci:old-secret")));
        assert!(writers.admit(&basic("ci:new-secret")));
        assert!(writers.admit(&basic("ops:p:with:colons")));
        assert!(!writers.admit(&basic("ci:wrong")));
        assert!(!writers.admit(&basic("ops:old-secret")));
        assert!(!writers.admit(&basic("ci")));
        assert!(!writers.admit(&HeaderMap::new()));
    }

    #[test]
    fn no_writers_admit_nobody_and_a_malformed_entry_is_refused() {
        assert!(!writers("").admit(&basic(":")));
        assert!(
            Writers::parse(&AuthSettings {
                writers: "nocolon".into()
            })
            .is_err()
        );
        assert!(
            Writers::parse(&AuthSettings {
                writers: ":secret".into()
            })
            .is_err()
        );
    }

    #[test]
    fn debug_output_names_users_only() {
        let printed = format!("{:?}", writers("ci:hunter2"));
        assert!(
            printed.contains("ci") && !printed.contains("hunter2"),
            "{printed}"
        );
    }
}
