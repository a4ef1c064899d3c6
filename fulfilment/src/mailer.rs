//! Sending an outbox email over SMTP (`lettre`), with its stable `Message-ID`.

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::emails::Email;

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message cannot be built (e.g. an address the mail library refuses): retrying
    /// will not help.
    #[error("unsendable message: {0}")]
    Unsendable(String),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl MailError {
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Unsendable(_) => true,
            MailError::Smtp(e) => e.is_permanent(),
        }
    }
}

impl Mailer {
    pub fn new(smtp_url: &SecretString, from: &str) -> anyhow::Result<Self> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url.expose_secret())?.build();
        let from = from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM `{from}` is not a mailbox: {e}"))?;
        Ok(Self { transport, from })
    }

    pub async fn send(&self, email: &Email) -> Result<(), MailError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| MailError::Unsendable(format!("recipient `{}`: {e}", email.to)))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .message_id(Some(format!("<{}>", email.message_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| MailError::Unsendable(e.to_string()))?;
        self.transport.send(message).await?;
        Ok(())
    }
}
