//! What Microsoft Graph's answers mean, for every target that posts to
//! Graph (`graph_mail`, `teams_message`): the request id that names an
//! answer, and the failures (reference §2.3–§2.7) — 429/503/504 retried
//! as the service says, 401 one refresh and one retry, another 5xx an
//! unknown outcome (the post may have happened: not resent blindly), any
//! other status failed with Graph's `code` and `message`.

use std::time::Duration;

use super::outcome::{retry_after, Outcome, Response, RetryDelay};
use super::HttpRequest;

/// The id Graph gives an answer (`request-id`, else `client-request-id`),
/// which Microsoft support asks for.
pub(crate) fn request_id(response: &Response) -> Option<String> {
    response
        .header("request-id")
        .or_else(|| response.header("client-request-id"))
        .map(str::to_owned)
}

#[derive(serde::Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(serde::Deserialize)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The outcome of an answer that is not a success. `posted` names what an
/// unknown outcome may have done ("the mail may have been sent").
pub(crate) fn classify_failure(
    response: &Response,
    retry_after_cap: Duration,
    posted: &str,
) -> Outcome {
    let reference = request_id(response);
    let (code, message) = match serde_json::from_slice::<GraphErrorBody>(&response.body) {
        Ok(b) => (
            Some(b.error.code).filter(|c| !c.is_empty()),
            b.error.message,
        ),
        Err(_) => (None, response.body_start(200)),
    };
    let status = response.status;
    match status {
        429 | 503 | 504 => Outcome::Retry {
            delay: retry_after(response, retry_after_cap)
                .map_or(RetryDelay::Backoff, RetryDelay::After),
            status: Some(status),
            reason: format!(
                "{}: {message}",
                code.as_deref().unwrap_or("throttled or unavailable")
            ),
            reference,
        },
        401 => Outcome::RefreshAndRetry {
            status,
            reason: format!(
                "{}: {message}",
                code.as_deref().unwrap_or("InvalidAuthenticationToken")
            ),
            reference,
        },
        500..=599 => Outcome::Failed {
            status: Some(status),
            code,
            message: format!("{message} (the outcome is unknown: {posted}, so it is not resent blindly; replay it if it did not arrive)"),
            items: Vec::new(),
            reference,
        },
        _ => Outcome::Failed {
            status: Some(status),
            code,
            message,
            items: Vec::new(),
            reference,
        },
    }
}

/// A JSON `POST` to Graph with the account's bearer token.
pub(crate) fn json_post(url: String, token: &str, body: Vec<u8>) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        url,
        headers: vec![
            ("Authorization".into(), format!("Bearer {token}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body,
    }
}
