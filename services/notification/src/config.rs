use std::path::{Path, PathBuf};

use auth_kit::AuthSettings;
use platform::config::{ConfigError, ServiceSettings};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

pub const SERVICE: &str = "notification";
pub const DEFAULT_PORT: u16 = 8086;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub service: ServiceSettings,
    pub auth: AuthSettings,
    pub mail: MailSettings,
    pub delivery: DeliverySettings,
}

/// Where e-mails go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailSettings {
    pub transport: MailTransport,
    /// The sender, e.g. `Bazaar <orders@bazaar.localhost>`. Its domain also ends every
    /// Message-ID.
    pub from: String,
    pub file: FileSettings,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// One `.eml` file per message in `mail.file.dir`: works with no mail server at all.
    File,
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSettings {
    /// Relative paths are relative to the working directory (`make run` starts services in the
    /// checkout, so the default lands in `.run/mail/`).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Empty: no authentication.
    pub username: String,
    #[serde(serialize_with = "serialize_secret")]
    pub password: SecretString,
    /// Per connection attempt and per SMTP command.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: only for a mail server on the same host or a test sink.
    None,
    /// STARTTLS, refusing to continue without it (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The sender worker, which delivers pending e-mails outside any transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverySettings {
    /// E-mails claimed, and sent concurrently, per round.
    pub batch_size: i64,
    /// How long a claimed e-mail is reserved for one worker. A send is abandoned after half of
    /// it, so no other instance picks the e-mail up while it is still being sent.
    pub lease_ms: u64,
    /// Fallback poll interval when no database notification arrives.
    pub poll_ms: u64,
    /// The delay after a failed attempt doubles from this...
    pub retry_initial_ms: u64,
    /// ...up to this, and then stays there until the mail server takes the message.
    pub retry_max_ms: u64,
}

impl Config {
    pub fn defaults() -> Self {
        Self {
            service: ServiceSettings::local_defaults(SERVICE, DEFAULT_PORT),
            auth: AuthSettings::default(),
            mail: MailSettings {
                transport: MailTransport::File,
                from: "Bazaar <orders@bazaar.localhost>".into(),
                file: FileSettings {
                    dir: PathBuf::from(".run/mail"),
                },
                smtp: SmtpSettings {
                    host: "127.0.0.1".into(),
                    port: 25,
                    tls: SmtpTls::Starttls,
                    username: String::new(),
                    password: SecretString::from(String::new()),
                    timeout_ms: 10_000,
                },
            },
            delivery: DeliverySettings {
                batch_size: 16,
                lease_ms: 120_000,
                poll_ms: 1_000,
                retry_initial_ms: 1_000,
                retry_max_ms: 300_000,
            },
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        platform::config::load(&Self::defaults(), file)
    }
}

/// Defaults are serialized into the first configuration layer, so the secret has to be written
/// out there; `Debug` still redacts it.
fn serialize_secret<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_write_files_into_the_run_folder() {
        let defaults = platform::config::load(&Config::defaults(), None).expect("defaults load");
        assert_eq!(defaults.mail.transport, MailTransport::File);
        assert_eq!(defaults.mail.file.dir, PathBuf::from(".run/mail"));
        assert_eq!(defaults.mail.smtp.tls, SmtpTls::Starttls);
        assert_eq!(defaults.service.http.port, DEFAULT_PORT);
    }

    #[test]
    fn a_file_switches_to_smtp_with_credentials() {
        let dir =
            std::env::temp_dir().join(format!("bazaar-notification-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notification.toml");
        std::fs::write(
            &path,
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"mail.example.com\"\nport = 587\n\
             username = \"bazaar\"\npassword = \"s3cret\"\n[delivery]\nretry_max_ms = 5000\n",
        )
        .expect("write");
        let loaded = Config::load(Some(&path)).expect("file load");
        assert_eq!(loaded.mail.transport, MailTransport::Smtp);
        assert_eq!(loaded.mail.smtp.host, "mail.example.com");
        assert_eq!(loaded.mail.smtp.port, 587);
        assert_eq!(loaded.mail.smtp.password.expose_secret(), "s3cret");
        assert!(
            !format!("{loaded:?}").contains("s3cret"),
            "Debug redacts it"
        );
        assert_eq!(loaded.delivery.retry_max_ms, 5000);
        assert_eq!(
            loaded.delivery.retry_initial_ms, 1000,
            "the rest keeps its default"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
