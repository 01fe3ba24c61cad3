//! Where notifications go.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use projection::EffectError;
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    /// `ca_pem`: certificate authorities (PEM) to trust besides the public roots, for a
    /// relay whose certificate a private CA issued; the URL must then use TLS.
    pub fn email(
        url: &str,
        from: &str,
        to: String,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Channel, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("the SMTP URL: {e}"))?
            .timeout(Some(timeout));
        if let Some(pem) = ca_pem {
            builder = builder.tls(tls_trusting(url, pem)?);
        }
        let transport = builder.build();
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

/// The TLS mode `url` asks for (lettre's reading of it: `smtps` wraps the connection,
/// `?tls=required` or `?tls=opportunistic` upgrades it with STARTTLS), trusting the
/// authorities of `pem` as well as the public roots.
fn tls_trusting(url: &str, pem: &[u8]) -> Result<Tls, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("the SMTP URL: {e}"))?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let mode: fn(TlsParameters) -> Tls = match (parsed.scheme(), tls.as_deref()) {
        ("smtps", _) => Tls::Wrapper,
        ("smtp", Some("required")) => Tls::Required,
        ("smtp", Some("opportunistic")) => Tls::Opportunistic,
        _ => {
            return Err(
                "a CA file is set but the SMTP URL does not use TLS: use smtps:// or add ?tls=required"
                    .into(),
            );
        }
    };
    let host = parsed.host_str().ok_or("the SMTP URL has no host")?;
    let mut parameters = TlsParameters::builder(host.to_owned());
    let mut count = 0;
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| format!("the CA file: {e}"))?;
        let certificate =
            Certificate::from_der(der.to_vec()).map_err(|e| format!("the CA file: {e}"))?;
        parameters = parameters.add_root_certificate(certificate);
        count += 1;
    }
    if count == 0 {
        return Err("the CA file holds no PEM certificate".into());
    }
    let parameters = parameters
        .build()
        .map_err(|e| format!("the CA file: {e}"))?;
    Ok(mode(parameters))
}

/// Whether `error` came from TLS itself (a certificate not trusted, expired or for
/// another name; a handshake the relay broke off), not from the network. lettre reports
/// a failed handshake as a connection error wrapping rustls' error in an `io::Error`,
/// whose `source` skips it, so both are looked into.
fn is_tls_failure(error: &lettre::transport::smtp::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        next = e.source();
    }
    error.is_tls()
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
            // A certificate this channel does not trust is a setting to fix, not an
            // outage to wait out: counted against the attempts, then parked (and redriven
            // once the relay's CA is set), instead of holding every notification forever.
            Err(e) if is_tls_failure(&e) => Err(EffectError::Rejected(format!("SMTP TLS: {e}"))),
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
