//! Building e-mails with lettre and handing them over: to a folder of `.eml` files, or to an
//! SMTP server.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{MailSettings, MailTransport, SmtpTls};
use crate::db::DueEmail;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// No retry can help: the message itself is wrong.
    #[error("cannot build the message: {0}")]
    Unsendable(String),
    /// The server or the folder did not take it this time.
    #[error("{0}")]
    Refused(String),
}

enum Transport {
    Folder(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Builds and delivers the service's e-mails.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.transport {
            Transport::Folder(dir) => format!("folder {}", dir.display()),
            Transport::Smtp(_) => "smtp".to_owned(),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .finish()
    }
}

impl Mailer {
    /// Checks the settings; a malformed sender or SMTP host is a startup error, not a failed
    /// e-mail later.
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .with_context(|| format!("mail.from {:?} is not an e-mail address", settings.from))?;
        let transport = match settings.transport {
            MailTransport::File => Transport::Folder(settings.file.dir.clone()),
            MailTransport::Smtp => {
                let smtp = &settings.smtp;
                let builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                            .context("mail.smtp: STARTTLS setup")?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                        .context("mail.smtp: TLS setup")?,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
                if !smtp.username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        smtp.password.expose_secret().to_owned(),
                    ));
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Self { from, transport })
    }

    /// The domain that ends every Message-ID: the sender's.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// The e-mail of a notice. Its Date is when the event happened, so every attempt builds the
    /// same message.
    pub fn build(&self, email: &DueEmail) -> Result<Message, MailError> {
        let address: Address = email.email.trim().parse().map_err(|error| {
            MailError::Unsendable(format!("recipient {:?}: {error}", email.email))
        })?;
        let name = email.display_name.trim();
        let to = Mailbox::new((!name.is_empty()).then(|| name.to_owned()), address);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .message_id(Some(email.message_id.clone()))
            .date(SystemTime::from(email.created_at))
            .header(ContentType::TEXT_PLAIN)
            .body(notification_rules::email_text(
                &email.display_name,
                &email.body,
            ))
            .map_err(|error| MailError::Unsendable(error.to_string()))
    }

    /// Hands a message over. In a folder it becomes `<file_stem>.eml`, written under a temporary
    /// name and renamed, so a reader never sees half a message and a second delivery of the same
    /// message replaces the first instead of adding a copy.
    pub async fn deliver(&self, file_stem: &str, message: &Message) -> Result<(), MailError> {
        match &self.transport {
            Transport::Folder(dir) => {
                let dir = dir.clone();
                let name = format!("{file_stem}.eml");
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
                    .await
                    .map_err(|error| MailError::Refused(error.to_string()))?
                    .map_err(|error| MailError::Refused(format!("mail folder: {error}")))
            }
            Transport::Smtp(smtp) => smtp
                .send_raw(message.envelope(), &message.formatted())
                .await
                .map(drop)
                .map_err(|error| MailError::Refused(format!("smtp: {error}"))),
        }
    }
}

fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(name))
}
