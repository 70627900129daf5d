//! Email channels: the analysis as a plain-text + HTML message, sent over
//! SMTP (`[sender.smtp]`) with lettre on rustls: STARTTLS (required, not
//! opportunistic), implicit TLS, or plain for local relays and tests.
//!
//! The SMTP server is the operator's own configuration, not a user's
//! input, so the SSRF guard does not apply to it. SMTP replies are judged
//! as SMTP defines them: 5xx permanent, 4xx and connection failures
//! transient. Error texts carry the server's reply, never the password.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::delivery::engine::CustomResult;
use crate::delivery::policy::Outcome;

use super::format::Email;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig, timeout: Duration) -> Result<Mailer, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("sender.smtp.from: {e}"))?;
        let tls = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(path) = &cfg.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("sender.smtp.ca_file: cannot read {}: {e}", path.display())
                })?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("sender.smtp.ca_file: {e}"))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| format!("sender.smtp: TLS: {e}"))
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host).tls(
            match cfg.security {
                // Required: a server that does not offer STARTTLS is an
                // error, never a silent fall back to plain text.
                SmtpSecurity::Starttls => Tls::Required(tls()?),
                SmtpSecurity::Tls => Tls::Wrapper(tls()?),
                SmtpSecurity::None => Tls::None,
            },
        );
        let mut builder = builder.port(cfg.port).timeout(Some(timeout));
        if let Some(user) = &cfg.username {
            let password = match &cfg.password {
                Some(p) => {
                    let p = p
                        .resolve()
                        .map_err(|e| format!("sender.smtp.password: {e}"))?;
                    String::from_utf8(p.expose().to_vec())
                        .map_err(|_| "sender.smtp.password: must be UTF-8".to_string())?
                }
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `mail` to `to`; one attempt, judged as SMTP says.
    pub async fn send(&self, to: &[String], mail: Email) -> CustomResult {
        let message = match self.message(to, mail) {
            Ok(m) => m,
            Err(e) => {
                return CustomResult {
                    outcome: Outcome::Permanent,
                    code: None,
                    error: Some(e),
                }
            }
        };
        match self.transport.send(message).await {
            Ok(r) => CustomResult {
                outcome: Outcome::Success,
                code: Some(u16::from(r.code())),
                error: None,
            },
            Err(e) => CustomResult {
                outcome: if e.is_permanent() {
                    Outcome::Permanent
                } else {
                    Outcome::Transient
                },
                code: e.status().map(u16::from),
                error: Some(format!("smtp: {e}")),
            },
        }
    }

    fn message(&self, to: &[String], mail: Email) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject);
        for addr in to {
            let mb: Mailbox = addr
                .parse()
                .map_err(|_| "a recipient is not a valid address".to_string())?;
            b = b.to(mb);
        }
        b.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(mail.text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(mail.html),
                ),
        )
        .map_err(|e| format!("cannot build the message: {e}"))
    }
}
