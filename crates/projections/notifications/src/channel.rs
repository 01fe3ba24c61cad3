//! Where notifications go.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use projection::EffectError;
use reqwest::StatusCode;

use crate::Message;

/// Email through an SMTP relay: one message per notification, its `Message-ID` the
/// notification's id (so a mailbox that sees it twice after a crash can tell).
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The recipient's address: `{user}` is replaced by the notified subject.
    to: String,
}

pub enum Channel {
    /// One structured log line per notification (the offline default).
    Log,
    /// An HTTP POST of the JSON message, with `Idempotency-Key`; a 2xx is success.
    Http {
        url: String,
        client: reqwest::Client,
    },
    /// An email per notification (see [`Email`]).
    Email(Box<Email>),
}

impl Channel {
    /// An HTTP channel to `url` (an absolute `http` or `https` URL).
    pub fn http(url: String, timeout: Duration) -> Result<Channel, String> {
        let parsed = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("scheme {} is not http or https", parsed.scheme()));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A notification endpoint that redirects is misconfigured, not to be followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Channel::Http { url, client })
    }

    /// An email channel: `url` is the relay (`smtp://host:25`, `smtp://host:587?tls=required`,
    /// `smtps://user:password@host:465`), `from` the sender, `to` the recipient's address
    /// with `{user}` for the notified subject (`{user}` alone when subjects are addresses).
    pub fn email(url: &str, from: &str, to: String, timeout: Duration) -> Result<Channel, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("the SMTP URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("the sender {from:?}: {e}"))?;
        if !to.contains("{user}") {
            return Err("the recipient template must contain {user}".into());
        }
        Ok(Channel::Email(Box::new(Email {
            transport,
            from,
            to,
        })))
    }

    pub(crate) async fn send(&self, message: &Message<'_>) -> Result<(), EffectError> {
        match self {
            Channel::Email(email) => email.send(message).await,
            Channel::Log => {
                tracing::info!(
                    notification_id = %message.id,
                    tenant_id = message.tenant_id,
                    recipient = %message.notification.recipient,
                    kind = message.notification.kind.as_str(),
                    subject = %message.notification.subject,
                    "notification"
                );
                Ok(())
            }
            Channel::Http { url, client } => {
                let sent = client
                    .post(url)
                    .header("idempotency-key", message.id.to_string())
                    .json(message)
                    .send()
                    .await;
                let response = match sent {
                    Ok(r) => r,
                    // Unreachable, refused, timed out: the endpoint is unavailable.
                    Err(e) => return Err(EffectError::Unavailable(format!("POST {url}: {e}"))),
                };
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let reason = format!("POST {url} answered {status}");
                if matches!(
                    status,
                    StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    Err(EffectError::Unavailable(reason))
                } else {
                    Err(EffectError::Rejected(reason))
                }
            }
        }
    }
}

impl Email {
    async fn send(&self, message: &Message<'_>) -> Result<(), EffectError> {
        let n = message.notification;
        let address = self.to.replace("{user}", &n.recipient);
        // A subject that is no address cannot be mailed: not worth retrying.
        let to: Mailbox = address
            .parse()
            .map_err(|e| EffectError::Rejected(format!("recipient {address:?}: {e}")))?;
        let mut body = format!("{}\n\nkind: {}\n", n.subject, n.kind.as_str());
        for (name, id) in [
            ("conversation", n.conversation_id),
            ("document", n.document_id),
            ("webhook endpoint", n.endpoint_id),
        ] {
            if let Some(id) = id {
                body.push_str(&format!("{name}: {id}\n"));
            }
        }
        let email = lettre::Message::builder()
            .message_id(Some(format!("<{}@threadline>", message.id)))
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| EffectError::Rejected(format!("building the email: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            // 5xx: the relay refuses this message for good.
            Err(e) if e.is_permanent() => Err(EffectError::Rejected(format!("SMTP: {e}"))),
            // 4xx, a connection refused or cut, a timeout: the relay is unavailable.
            Err(e) => Err(EffectError::Unavailable(format!("SMTP: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_make_a_channel() {
        let t = Duration::from_secs(1);
        assert!(Channel::http("https://hooks.example.com/n".into(), t).is_ok());
        for bad in [
            "",
            "hooks.example.com/n",
            "ftp://hooks.example.com/n",
            "file:///etc/passwd",
        ] {
            assert!(Channel::http(bad.into(), t).is_err(), "{bad}");
        }
    }
}
