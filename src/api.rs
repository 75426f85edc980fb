//! The wire types of the daemon's control API (`/v1/accounts`, sign-in,
//! `/v1/events/{id}`, previews, webhooks), shared by the server's handlers
//! and the command line's client, so that both sides agree by construction
//! and the CLI never indexes JSON by hand. None of them can hold a token.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::LogEntry;

/// How many days of refresh-token idleness make an account `expiring`:
/// Microsoft expires a refresh token unused for 90 days.
pub const IDLE_WARNING_DAYS: i64 = 80;

/// Why an account needs a new sign-in: the token endpoint's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The OAuth `error` with the AADSTS code when Microsoft gave one
    /// (`invalid_grant AADSTS70008`).
    pub code: String,
    /// The provider's description.
    pub message: String,
}

impl Problem {
    /// Splits a stored `needs_reauth` reason (`code: message`) into its parts.
    pub fn from_reason(reason: &str) -> Problem {
        match reason.split_once(": ") {
            Some((code, message)) if !code.trim().is_empty() => Problem {
                code: code.trim().to_owned(),
                message: message.trim().to_owned(),
            },
            _ => Problem {
                code: "needs_reauth".to_owned(),
                message: reason.trim().to_owned(),
            },
        }
    }
}

/// One OAuth account as the API shows it. Never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account's name (`<< oauth.NAME >>`).
    pub name: String,
    /// Whether a file in the folder defines it.
    pub configured: bool,
    /// `ok`, `expiring` (works, but its client secret expires within 30
    /// days or its refresh token has been idle for 80), `needs_reauth` or
    /// `no_tokens`.
    pub status: String,
    /// Why it needs a new sign-in (with `needs_reauth`).
    pub problem: Option<Problem>,
    /// When the stored access token expires.
    pub access_token_expires: Option<DateTime<Utc>>,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// The last successful refresh, import or sign-in.
    pub last_refresh: Option<DateTime<Utc>>,
    /// The last time a push used the token.
    pub last_use: Option<DateTime<Utc>>,
    /// The token endpoint's last error.
    pub last_error: Option<String>,
    /// When the client secret expires (`client_secret_expires`).
    pub client_secret_expires: Option<NaiveDate>,
    /// Whether token state is encrypted at rest.
    pub encrypted: bool,
    /// Things to act on.
    pub warnings: Vec<String>,
}

impl Account {
    /// The API's view of the resolver's status of one account.
    pub fn from_status(
        s: &crate::oauth::AccountStatus,
        encrypted: bool,
        now: DateTime<Utc>,
    ) -> Account {
        let idle = s
            .last_refresh
            .is_some_and(|t| (now - t).num_days() >= IDLE_WARNING_DAYS);
        let mut warnings = s.warnings.clone();
        if idle && s.state == "ok" {
            warnings.push(format!(
                "the refresh token has not been used for {} days: Microsoft expires it after 90",
                s.last_refresh
                    .map(|t| (now - t).num_days())
                    .unwrap_or_default()
            ));
        }
        let status = match s.state.as_str() {
            "ok" if !warnings.is_empty() && s.configured => "expiring".to_owned(),
            other => other.to_owned(),
        };
        Account {
            name: s.account.clone(),
            configured: s.configured,
            status,
            problem: s.reason.as_deref().map(Problem::from_reason),
            access_token_expires: s.access_token_expires,
            has_refresh_token: s.has_refresh_token,
            last_refresh: s.last_refresh,
            last_use: s.last_use,
            last_error: s.last_error.clone(),
            client_secret_expires: s.client_secret_expires,
            encrypted,
            warnings,
        }
    }

    /// Whether the account needs a person (anything but `ok`).
    pub fn needs_attention(&self) -> bool {
        self.status != "ok"
    }
}

/// `GET /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    /// Whether token state is encrypted at rest (`PUSHWERK_KEY`).
    pub encrypted_at_rest: bool,
    /// Every configured or stored account, by name.
    pub accounts: Vec<Account>,
}

/// `GET /oauth/{name}/start` (asked for JSON): where to send the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginStart {
    /// The account.
    pub account: String,
    /// The URL to open in the browser that signs in: the sign-in's
    /// single-use begin link on the daemon (`…/oauth/begin?id=…`), whose
    /// "Continue" button binds the sign-in to that browser and sends it on
    /// to the provider's authorize URL (PKCE challenge, state).
    pub authorize_url: String,
    /// Where the provider sends the browser back (register it with the app).
    pub redirect_uri: String,
    /// Until when the sign-in can be completed.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/accounts/{name}/refresh`, `PUT /v1/accounts/{name}/tokens`:
/// the account after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChanged {
    /// The account now.
    pub account: Account,
    /// Dead letters of the account's pushes re-queued (with `?requeue=true`).
    pub requeued: usize,
}

/// A queued (or retrying) job of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// The job id.
    pub job_id: u64,
    /// The push.
    pub push: String,
    /// The next attempt's number (from 1).
    pub attempt: u32,
    /// When it is due.
    pub due: DateTime<Utc>,
}

/// A dead letter of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadJob {
    /// The job id (for `replay`).
    pub job_id: u64,
    /// The push.
    pub push: String,
    /// Attempts made.
    pub attempt: u32,
    /// Why it was given up.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `GET /v1/events/{id}`: what became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHistory {
    /// The event id.
    pub id: String,
    /// Whether the id is remembered as accepted (within the event window).
    pub known: bool,
    /// Its jobs still queued or retrying.
    pub jobs: Vec<QueuedJob>,
    /// Its dead letters.
    pub dead_letters: Vec<DeadJob>,
    /// Every attempt in the delivery log, oldest first.
    pub attempts: Vec<LogEntry>,
}

impl From<crate::delivery::EventRecord> for EventHistory {
    fn from(r: crate::delivery::EventRecord) -> EventHistory {
        EventHistory {
            id: r.id,
            known: r.known,
            jobs: r
                .jobs
                .into_iter()
                .map(|job| QueuedJob {
                    job_id: job.id,
                    push: job.push,
                    attempt: job.attempt,
                    due: job.due_at,
                })
                .collect(),
            dead_letters: r
                .dead_letters
                .into_iter()
                .map(|d| DeadJob {
                    job_id: d.job.id,
                    push: d.job.push,
                    attempt: d.job.attempt,
                    reason: d.reason,
                    at: d.at,
                })
                .collect(),
            attempts: r.attempts,
        }
    }
}

/// `POST /v1/pushes/{name}/preview` request body (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The event to render with (`{id,type,time,data}`); without, a sample
    /// event whose fields the push uses are strings naming themselves.
    pub event: Option<serde_json::Value>,
    /// Render as if at this time (reproducible output).
    pub now: Option<DateTime<Utc>>,
}

/// `POST /v1/pushes/{name}/preview`: what the push would send. Tokens and
/// `${…}` secrets are placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The push.
    pub push: String,
    /// Whether the event was a generated sample.
    pub sample_event: bool,
    /// Why the push would not fire, if it would not.
    pub skipped: Option<String>,
    /// The request (`{"method","url","headers","body"}`, or the SMTP mail).
    pub request: Option<serde_json::Value>,
    /// The request as text, exactly as `dry-run` prints it.
    pub text: Option<String>,
}

/// `POST /v1/pushes/{name}/send` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The event (`{id,type,time,data}`); optional for `schedule:` pushes.
    pub event: Option<serde_json::Value>,
    /// Attempts at most (1 to 100, default 1), waiting between them as the
    /// target asks or with backoff.
    pub attempts: Option<u32>,
}

/// One attempt of `POST /v1/pushes/{name}/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// `METHOD URL` or `SMTP host:port` (no secrets).
    pub target: Option<String>,
    /// `delivered`, `retry` or `failed`.
    pub outcome: String,
    /// The outcome as `send` prints it (status, reference, reason).
    pub summary: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// `POST /v1/pushes/{name}/send`: what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The push.
    pub push: String,
    /// Why it was not sent, if the push does not apply to the event.
    pub skipped: Option<String>,
    /// The attempts made, in order.
    pub attempts: Vec<SentAttempt>,
}

/// `POST /v1/hooks/{type}`, `POST /v1/events`: what ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    /// New events stored.
    pub accepted: usize,
    /// Events seen before (nothing delivered).
    pub duplicates: usize,
    /// Jobs made.
    pub jobs: usize,
}

/// `POST /v1/hooks/{type}`: the ingest answer and the event id used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAccepted {
    /// The id given to the event (from `Idempotency-Key`, `X-Request-Id` or the body's hash).
    pub id: String,
    /// What ingest did.
    #[serde(flatten)]
    pub ingested: Ingested,
}

/// `GET /v1/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    /// Newest first.
    pub deliveries: Vec<LogEntry>,
}

/// Whether a listed job has had an attempt yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No attempt yet.
    Queued,
    /// At least one attempt failed; the next is due later.
    Retrying,
}

impl JobState {
    /// The state of a job whose next attempt has this number (from 1).
    pub fn of_attempt(attempt: u32) -> JobState {
        if attempt > 1 {
            JobState::Retrying
        } else {
            JobState::Queued
        }
    }

    /// The state's name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Retrying => "retrying",
        }
    }
}

/// A queued or retrying job, as `GET /v1/jobs` and `pushwerk jobs` show
/// it: work that waits (a `delay:`, a retry) is visible before it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id (as in the delivery log).
    pub id: u64,
    /// The push.
    pub push: String,
    /// The event.
    pub event_id: String,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The number of its next attempt, from 1.
    pub attempt: u32,
    /// When its event was accepted.
    pub accepted_at: DateTime<Utc>,
    /// `queued` (no attempt yet) or `retrying`.
    pub state: JobState,
    /// The error of its last attempt, if it had one.
    pub last_error: Option<String>,
}

/// `GET /v1/jobs`: the next due first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jobs {
    /// The jobs, at most the `limit` asked for.
    pub jobs: Vec<Job>,
    /// Whether the list was cut (more jobs wait than were listed).
    pub more: bool,
}

/// `POST /v1/replay` request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// One dead letter.
    pub job_id: Option<u64>,
    /// All dead letters of a push.
    pub push: Option<String>,
}

/// `POST /v1/replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Dead letters re-queued.
    pub replayed: usize,
    /// Dead letters that cannot be read (left in the store).
    pub damaged: usize,
}

/// Every error answer: `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// Where a running daemon's API is, written to `DATA/daemon.json` (0600)
/// while it runs, so that commands on the same data directory use the API
/// instead of the store the daemon holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The API's base URL (`http://127.0.0.1:8787`).
    pub url: String,
    /// The daemon's process id.
    pub pid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_split_into_code_and_message() {
        assert_eq!(
            Problem::from_reason("invalid_grant AADSTS70008: The refresh token has expired."),
            Problem {
                code: "invalid_grant AADSTS70008".into(),
                message: "The refresh token has expired.".into()
            }
        );
        assert_eq!(Problem::from_reason("odd").code, "needs_reauth");
    }

    fn status(state: &str, warnings: &[&str], idle_days: i64) -> crate::oauth::AccountStatus {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        crate::oauth::AccountStatus {
            account: "ms_mail".into(),
            configured: true,
            state: state.into(),
            reason: (state == "needs_reauth").then(|| "invalid_grant AADSTS70008: expired".into()),
            access_token_expires: None,
            has_refresh_token: true,
            last_refresh: Some(now - chrono::Duration::days(idle_days)),
            last_use: None,
            last_error: None,
            client_secret_expires: None,
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
        }
    }

    #[test]
    fn expiring_means_ok_with_something_to_act_on() {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let view = |s| Account::from_status(&s, true, now);
        assert_eq!(view(status("ok", &[], 1)).status, "ok");
        assert_eq!(
            view(status("ok", &["client secret expires"], 1)).status,
            "expiring"
        );
        let idle = view(status("ok", &[], 85));
        assert_eq!(idle.status, "expiring");
        assert!(idle.warnings[0].contains("85 days"), "{:?}", idle.warnings);
        let reauth = view(status("needs_reauth", &["client secret expires"], 1));
        assert_eq!(reauth.status, "needs_reauth");
        assert_eq!(reauth.problem.unwrap().code, "invalid_grant AADSTS70008");
        assert!(view(status("ok", &[], 1)).encrypted);
    }

    #[test]
    fn job_states_are_spelled_alike_on_the_wire_and_on_screen() {
        for (attempt, state) in [(1, JobState::Queued), (2, JobState::Retrying)] {
            assert_eq!(JobState::of_attempt(attempt), state);
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(JobState::Queued.as_str(), "queued");
        assert_eq!(JobState::Retrying.as_str(), "retrying");
    }
}
