//! Where notifications go.

use std::time::Duration;

use projection::EffectError;
use reqwest::StatusCode;

use crate::Message;

pub enum Channel {
    /// One structured log line per notification (the offline default).
    Log,
    /// An HTTP POST of the JSON message, with `Idempotency-Key`; a 2xx is success.
    Http {
        url: String,
        client: reqwest::Client,
    },
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

    pub(crate) async fn send(&self, message: &Message<'_>) -> Result<(), EffectError> {
        match self {
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
