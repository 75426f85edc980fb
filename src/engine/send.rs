//! The transports: the only place pushwerk talks to targets. An HTTP
//! request goes out with reqwest (one pooled client), an SMTP mail with
//! lettre (a transport per send: access tokens are short-lived).

use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::SmtpTls;
use crate::dispatch::smtp::classify_reply;
use crate::dispatch::{HttpRequest, Outcome, Response, RetryDelay, SmtpLogin, SmtpMail};

/// Most of a response body kept for classification and the delivery log.
const MAX_BODY: usize = 64 * 1024;

/// Sends prepared requests.
#[derive(Clone, Debug)]
pub struct Sender {
    http: reqwest::Client,
    timeout: Duration,
}

/// The result of sending: an answer to classify, or an outcome already
/// known (the connection failed, an SMTP server replied).
#[derive(Debug)]
pub enum Sent {
    /// An HTTP answer, to be classified by the target's dispatcher.
    Http(Response),
    /// The outcome is known without classification.
    Known(Outcome),
}

impl Sender {
    /// A sender whose requests give up after `timeout` (unless a target sets its own).
    pub fn new(timeout: Duration) -> Sender {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pushwerk/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            // A redirect would carry headers (developer tokens, API keys,
            // signatures) and the body to another host: a 3xx is an answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds");
        Sender { http, timeout }
    }

    /// Sends an HTTP request; a transport error is a retry.
    pub async fn send_http(&self, request: &HttpRequest, timeout: Option<Duration>) -> Sent {
        let method = match reqwest::Method::from_bytes(request.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Sent::Known(Outcome::Failed {
                    status: None,
                    code: None,
                    message: format!("invalid method {}", request.method),
                    items: Vec::new(),
                    reference: None,
                })
            }
        };
        let mut builder = self
            .http
            .request(method, &request.url)
            .timeout(timeout.unwrap_or(self.timeout));
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Sent::Known(transport_retry(&e)),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room == 0 {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Sent::Known(transport_retry(&e)),
            }
        }
        Sent::Http(Response {
            status,
            headers,
            body,
        })
    }

    /// Sends a mail; the server's reply decides the outcome.
    pub async fn send_smtp(&self, mail: &SmtpMail, timeout: Option<Duration>) -> Outcome {
        let timeout = timeout.unwrap_or(self.timeout);
        let builder = match mail.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.host),
            SmtpTls::Starttls | SmtpTls::Tls => {
                let params = match TlsParameters::new(mail.host.clone()) {
                    Ok(p) => p,
                    Err(e) => return failed(format!("TLS setup for {}: {e}", mail.host)),
                };
                let tls = if mail.tls == SmtpTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                };
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.host).tls(tls)
            }
        };
        let mut builder = builder.port(mail.port).timeout(Some(timeout));
        let xoauth2 = matches!(mail.login, Some(SmtpLogin::Xoauth2 { .. }));
        match &mail.login {
            None => {}
            Some(SmtpLogin::Password { username, password }) => {
                builder = builder
                    .credentials(Credentials::new(username.clone(), password.clone()))
                    .authentication(vec![Mechanism::Plain, Mechanism::Login]);
            }
            Some(SmtpLogin::Xoauth2 {
                username, token, ..
            }) => {
                builder = builder
                    .credentials(Credentials::new(username.clone(), token.clone()))
                    .authentication(vec![Mechanism::Xoauth2]);
            }
        }
        let transport = builder.build();
        let envelope = match lettre::address::Envelope::new(
            mail.envelope_from.parse().ok(),
            mail.envelope_to
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
        ) {
            Ok(e) => e,
            Err(e) => return failed(format!("envelope: {e}")),
        };
        match transport.send_raw(&envelope, &mail.message).await {
            Ok(response) => {
                let code: u16 = response.code().to_string().parse().unwrap_or(250);
                classify_reply(
                    code,
                    &response.message().collect::<Vec<_>>().join(" "),
                    xoauth2,
                )
            }
            Err(e) => match e.status() {
                Some(code) => {
                    let code: u16 = code.to_string().parse().unwrap_or(554);
                    classify_reply(code, &e.to_string(), xoauth2)
                }
                None => Outcome::Retry {
                    delay: RetryDelay::Backoff,
                    status: None,
                    reason: format!("SMTP connection to {}:{}: {e}", mail.host, mail.port),
                    reference: None,
                },
            },
        }
    }
}

fn failed(message: String) -> Outcome {
    Outcome::Failed {
        status: None,
        code: None,
        message,
        items: Vec::new(),
        reference: None,
    }
}

fn transport_retry(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    // Without the URL: a query could carry a templated secret.
    let detail = reqwest_error_without_url(e);
    Outcome::Retry {
        delay: RetryDelay::Backoff,
        status: None,
        reason: format!("{kind}: {detail}"),
        reference: None,
    }
}

fn reqwest_error_without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}
