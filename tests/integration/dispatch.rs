//! Dispatchers against mock targets that answer as Microsoft's services do:
//! every status class classified as documented, refresh-and-retry on a
//! refused token, Retry-After honoured, partial errors mapped by index, and
//! `pushwerk send` delivering each example push.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pushwerk::backoff::Backoff;
use pushwerk::config::{Catalog, LoadOptions};
use pushwerk::engine::{Attempt, Deliverer, Delivery, Sender};
use pushwerk::event::Event;
use pushwerk::oauth::seal::Sealer;
use pushwerk::oauth::{ImportedTokens, Resolver, ResolverSettings, TokenStore};
use pushwerk::store::SledStore;
use pushwerk::targets::{Outcome, RetryDelay};

use crate::util::{folder, pushwerk_in, stdout};
use pushwerk_testkit::identity::{IdentityMock, MockConfig};
use pushwerk_testkit::microsoft::{BingMock, GraphMock, HttpReceiver, Scripted};

const GRAPH_PREFIX: &str = "mock-at.graph.microsoft.com.";
const ADS_PREFIX: &str = "mock-at.ads.microsoft.com.";

fn account(name: &str, mock: &IdentityMock, scope: &str) -> String {
    format!(
        "kind: oauth_account\nname: {name}\ntoken_url: {}\nclient_id: {}\nclient_secret: mock-secret\nscope: {scope}\n---\n",
        mock.token_url(),
        MockConfig::default().client_id
    )
}

struct World {
    identity: Arc<IdentityMock>,
    /// Kept alive: the folder and data directory live as long as the world.
    _dir: tempfile::TempDir,
    catalog: Catalog,
    deliverer: Deliverer,
}

/// A folder with `pushes` (YAML) and the accounts ms_mail, ms_ads and crm
/// at the identity mock, each imported with `initial_token` (valid for an
/// hour) and a seeded refresh token.
async fn world(pushes: &str, initial_token: &str) -> World {
    let identity = Arc::new(IdentityMock::start(MockConfig::default()).await);
    let accounts = [
        account(
            "ms_mail",
            &identity,
            "offline_access https://graph.microsoft.com/Mail.Send",
        ),
        account(
            "ms_ads",
            &identity,
            "offline_access https://ads.microsoft.com/msads.manage",
        ),
        account(
            "crm",
            &identity,
            "offline_access https://crm.example.com/leads.write",
        ),
    ]
    .concat();
    let dir = folder(&[
        ("pushes/accounts.yaml", &accounts),
        ("pushes/pushes.yaml", pushes),
    ]);
    let env = |_: &str| None;
    let catalog = Catalog::load(&dir.path().join("pushes"), &LoadOptions { env: &env }).unwrap();
    assert_eq!(catalog.error_count(), 0, "{:?}", catalog.diagnostics);
    let store = SledStore::open(&dir.path().join("data")).unwrap();
    let resolver = Resolver::new(
        TokenStore::new(Arc::new(store), Sealer::plain()),
        catalog.accounts.clone(),
        ResolverSettings::default(),
    );
    for (name, scope) in [
        (
            "ms_mail",
            "offline_access https://graph.microsoft.com/Mail.Send",
        ),
        (
            "ms_ads",
            "offline_access https://ads.microsoft.com/msads.manage",
        ),
        ("crm", "offline_access https://crm.example.com/leads.write"),
    ] {
        let rt = format!("rt-{name}");
        identity.seed_refresh_token(&rt, scope);
        let tokens: ImportedTokens = serde_json::from_value(serde_json::json!({
            "access_token": initial_token, "refresh_token": rt, "expires_in": 3600
        }))
        .unwrap();
        resolver.import(name, tokens).await.unwrap();
    }
    let deliverer = Deliverer::new(
        Arc::new(resolver),
        Sender::new(Duration::from_secs(10)),
        Default::default(),
        Duration::from_secs(600),
    );
    World {
        identity,
        _dir: dir,
        catalog,
        deliverer,
    }
}

fn call_event(data: serde_json::Value) -> Event {
    let now = chrono::Utc::now();
    Event {
        id: format!("evt-{}", rand_id()),
        event_type: "call.ended".into(),
        time: now,
        data,
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn attempt(w: &World, push: &str, event: &Event) -> Attempt {
    match w
        .deliverer
        .deliver(&w.catalog, w.catalog.push(push).unwrap(), event, 1)
        .await
    {
        Delivery::Attempted(a) => a,
        Delivery::Skipped(r) => panic!("skipped: {r}"),
    }
}

fn graph_push(base: &str) -> String {
    format!(
        "name: mail\non: call.ended\ngraph_mail:\n  account: ms_mail\n  base_url: {base}\n  to: [sales@example.com]\n  subject: Call from << event.caller >>\n  text: hello\n"
    )
}

// ---------- Graph ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_202_is_delivered_with_its_request_id() {
    let graph = GraphMock::start().await;
    let w = world(
        &graph_push(&graph.base_url()),
        "mock-at.graph.microsoft.com.imported",
    )
    .await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let a = attempt(
        &w,
        "mail",
        &call_event(serde_json::json!({"caller": "O'Brien \"Bob\" 🎉"})),
    )
    .await;
    let Outcome::Delivered {
        status: 202,
        reference: Some(id),
    } = &a.outcome
    else {
        panic!("{:?}", a.outcome)
    };
    assert_eq!(id.len(), 36, "Graph's request-id is kept: {id}");
    assert_eq!(
        graph.sent_messages()[0]["message"]["subject"],
        "Call from O'Brien \"Bob\" 🎉"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_throttling_and_outages_are_retried_as_the_service_says() {
    let graph = GraphMock::start().await;
    let w = world(
        &graph_push(&graph.base_url()),
        "mock-at.graph.microsoft.com.imported",
    )
    .await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let e = call_event(serde_json::json!({"caller": "x"}));
    graph.throttle_next(1, Some(7));
    assert!(
        matches!(attempt(&w, "mail", &e).await.outcome, Outcome::Retry { delay: RetryDelay::After(d), status: Some(429), .. } if d == Duration::from_secs(7))
    );
    graph.throttle_next(1, None);
    assert!(matches!(
        attempt(&w, "mail", &e).await.outcome,
        Outcome::Retry {
            delay: RetryDelay::Backoff,
            status: Some(429),
            ..
        }
    ));
    for status in [503, 504] {
        graph.unavailable_next(1, status, None);
        let out = attempt(&w, "mail", &e).await.outcome;
        assert!(
            matches!(out, Outcome::Retry { status: Some(s), .. } if s == status),
            "{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_client_errors_fail_with_graphs_code_and_message() {
    let graph = GraphMock::start().await;
    let pushes = format!(
        "{}---\nname: bad-rcpt\non: call.ended\ngraph_mail:\n  account: ms_mail\n  base_url: {}\n  to: [\"<< event.to >>\"]\n  subject: s\n  text: t\n",
        graph_push(&graph.base_url()),
        graph.base_url()
    );
    let w = world(&pushes, "mock-at.graph.microsoft.com.imported").await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    // An address Graph cannot resolve is refused by prepare already when it
    // has no `@`; one Graph itself refuses comes back as 400.
    graph.script_next(
        1,
        Scripted::Status {
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"error":{"code":"ErrorInvalidRecipients","message":"At least one recipient isn't valid."}}"#.into(),
        },
    );
    let out = attempt(
        &w,
        "bad-rcpt",
        &call_event(serde_json::json!({"to": "nobody@nowhere.invalid"})),
    )
    .await
    .outcome;
    assert!(
        matches!(&out, Outcome::Failed { status: Some(400), code: Some(c), message, .. } if c == "ErrorInvalidRecipients" && message.contains("isn't valid")),
        "{out:?}"
    );
    let local = attempt(
        &w,
        "bad-rcpt",
        &call_event(serde_json::json!({"to": "no-at-sign"})),
    )
    .await;
    assert!(
        matches!(&local.outcome, Outcome::Failed { code: Some(c), .. } if c == "prepare"),
        "{:?}",
        local.outcome
    );
    assert_eq!(local.requests, 0, "refused before sending");
    graph.deny_mail_send(true);
    let out = attempt(&w, "mail", &call_event(serde_json::json!({"caller": "x"})))
        .await
        .outcome;
    assert!(
        matches!(&out, Outcome::Failed { status: Some(403), code: Some(c), .. } if c == "ErrorAccessDenied"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_request_over_4_mb_is_refused_before_sending() {
    let graph = GraphMock::start().await;
    let w = world(
        &graph_push(&graph.base_url()),
        "mock-at.graph.microsoft.com.imported",
    )
    .await;
    let big = "x".repeat(5 * 1024 * 1024);
    let a = attempt(&w, "mail", &call_event(serde_json::json!({"caller": big}))).await;
    assert!(
        matches!(&a.outcome, Outcome::Failed { message, .. } if message.contains("over the 4194304-byte limit")),
        "{:?}",
        a.outcome.summary().chars().take(200).collect::<String>()
    );
    assert!(graph.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_401_gets_exactly_one_refresh_and_one_retry_then_success() {
    let graph = GraphMock::start().await;
    // The imported token is not accepted: Graph answers 401 InvalidAuthenticationToken.
    let w = world(&graph_push(&graph.base_url()), "stale-token").await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    let a = attempt(&w, "mail", &call_event(serde_json::json!({"caller": "x"}))).await;
    assert!(a.outcome.is_delivered(), "{:?}", a.outcome);
    assert_eq!(a.requests, 2);
    assert_eq!(w.identity.token_request_count(), 1, "one refresh");
    let requests = graph.requests();
    assert_eq!(requests[0].status, 401);
    assert_eq!(
        requests[1].header("authorization"),
        Some(format!("Bearer {}", w.identity.issued_access_tokens()[0]).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_two_seconds_is_honoured_before_the_next_attempt() {
    let graph = GraphMock::start().await;
    let w = world(
        &graph_push(&graph.base_url()),
        "mock-at.graph.microsoft.com.imported",
    )
    .await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    graph.throttle_next(1, Some(2));
    let e = call_event(serde_json::json!({"caller": "x"}));
    let push = w.catalog.push("mail").unwrap();
    let d = w
        .deliverer
        .deliver_with_retries(
            &w.catalog,
            push,
            &e,
            3,
            Duration::from_secs(3600),
            &Backoff::default(),
            |_, _| {},
        )
        .await;
    let Delivery::Attempted(a) = d else { panic!() };
    assert!(a.outcome.is_delivered(), "{:?}", a.outcome);
    let r = graph.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, 429);
    let gap = r[1].at.duration_since(r[0].at);
    assert!(
        gap >= Duration::from_secs(2),
        "second attempt after {gap:?}"
    );
}

// ---------- Bing Ads ----------

fn bing_push(base: &str) -> String {
    format!(
        "name: conv\non: call.ended\nbing_ads:\n  account: ms_ads\n  base_url: {base}\n  developer_token: BBD37VB98\n  customer_id: \"1234567\"\n  customer_account_id: \"7654321\"\n  conversion:\n    name: Phone Call\n    time: << event.time | iso8601 >>\n    click_id: << event.msclkid >>\n    value: 10\n    currency: EUR\n"
    )
}

fn conv_event(msclkid: &str) -> Event {
    let t = chrono::Utc::now() - chrono::Duration::hours(1);
    call_event(serde_json::json!({"msclkid": msclkid, "time": t.to_rfc3339()}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bing_200_is_delivered_with_its_tracking_id() {
    let bing = BingMock::start().await;
    let w = world(
        &bing_push(&bing.base_url()),
        "mock-at.ads.microsoft.com.imported",
    )
    .await;
    bing.accept_token_prefix(ADS_PREFIX);
    let a = attempt(&w, "conv", &conv_event("clk-1")).await;
    let Outcome::Delivered {
        status: 200,
        reference: Some(t),
    } = &a.outcome
    else {
        panic!("{:?}", a.outcome)
    };
    assert_eq!(t.len(), 36, "the TrackingId header is kept: {t}");
    assert_eq!(bing.accepted_conversions()[0]["MicrosoftClickId"], "clk-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bing_one_partial_error_among_three_conversions_fails_exactly_that_one() {
    let bing = BingMock::start().await;
    let w = world(
        &bing_push(&bing.base_url()),
        "mock-at.ads.microsoft.com.imported",
    )
    .await;
    bing.accept_token_prefix(ADS_PREFIX);
    let events = [
        conv_event("clk-a"),
        conv_event("clk-b"),
        conv_event("clk-c"),
    ];
    // The second conversion happened before its click: 5616.
    bing.register_click("clk-b", chrono::Utc::now());
    let push = w.catalog.push("conv").unwrap();
    let mut rendered = Vec::new();
    for e in &events {
        let tokens = w
            .deliverer
            .resolver()
            .tokens_for(&push.compiled.accounts)
            .await
            .unwrap();
        let input = pushwerk::engine::RenderInput {
            event: e,
            attempt: 1,
            now: chrono::Utc::now(),
            tokens: &tokens,
            secrets: pushwerk::targets::SecretMode::Real,
        };
        let pushwerk::engine::Rendered::Ready(r) =
            pushwerk::engine::render(&w.catalog, push, &input).unwrap()
        else {
            panic!()
        };
        rendered.push(*r);
    }
    let items: Vec<_> = rendered
        .iter()
        .map(|r| match &r.target {
            pushwerk::targets::RenderedTarget::BingAds(t) => (t, r),
            _ => unreachable!(),
        })
        .collect();
    let request = pushwerk::targets::bing_ads::prepare_batch(&items, &Default::default()).unwrap();
    let pushwerk::engine::send::Sent::Http(response) = Sender::new(Duration::from_secs(10))
        .send_http(&request, None)
        .await
    else {
        panic!("no answer")
    };
    assert_eq!(response.status, 200, "partial errors come with HTTP 200");
    let outcomes = pushwerk::targets::bing_ads::classify_batch(
        &response,
        3,
        Duration::from_secs(600),
        pushwerk::targets::bing_ads::CALL_RATE_WAIT,
    );
    assert!(outcomes[0].is_delivered() && outcomes[2].is_delivered());
    match &outcomes[1] {
        Outcome::Failed {
            code: Some(code),
            items,
            ..
        } => {
            assert_eq!(code, "ConversionTimeEarlierThanClickTime");
            assert_eq!(items[0].code, Some(5616));
            assert_eq!(items[0].index, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bing.accepted_conversions().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bing_expired_token_109_is_refreshed_once_then_delivered() {
    let bing = BingMock::start().await;
    let w = world(
        &bing_push(&bing.base_url()),
        "mock-at.ads.microsoft.com.old",
    )
    .await;
    bing.accept_token_prefix(ADS_PREFIX);
    bing.expire_token("mock-at.ads.microsoft.com.old");
    let a = attempt(&w, "conv", &conv_event("clk-1")).await;
    assert!(a.outcome.is_delivered(), "{:?}", a.outcome);
    assert_eq!(a.requests, 2);
    assert_eq!(w.identity.token_request_count(), 1);
    assert!(bing.requests()[0]
        .json()
        .get("OfflineConversions")
        .is_some());
    assert_eq!(bing.requests()[0].status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bing_refusing_a_fresh_token_too_fails_and_flags_the_account() {
    let bing = BingMock::start().await;
    // No token is accepted at all: 105 InvalidCredentials every time.
    let w = world(
        &bing_push(&bing.base_url()),
        "mock-at.ads.microsoft.com.old",
    )
    .await;
    let a = attempt(&w, "conv", &conv_event("clk-1")).await;
    assert!(
        matches!(&a.outcome, Outcome::Failed { code: Some(c), status: Some(401), .. } if c == "token_refused"),
        "{:?}",
        a.outcome
    );
    assert_eq!(a.requests, 2, "one retry, never a loop");
    assert_eq!(w.identity.token_request_count(), 1);
    let status = w
        .deliverer
        .resolver()
        .status(chrono::Utc::now().date_naive())
        .unwrap();
    let ads = status.iter().find(|s| s.account == "ms_ads").unwrap();
    assert_eq!(ads.state, "needs_reauth");
    // Further pushes fail at once with that reason, without token requests.
    let again = attempt(&w, "conv", &conv_event("clk-2")).await;
    assert!(
        matches!(&again.outcome, Outcome::Failed { code: Some(c), .. } if c == "needs_reauth"),
        "{:?}",
        again.outcome
    );
    assert_eq!(w.identity.token_request_count(), 1);
    assert_eq!(bing.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bing_faults_call_rate_internal_error_and_operation_errors() {
    let bing = BingMock::start().await;
    let w = world(
        &bing_push(&bing.base_url()),
        "mock-at.ads.microsoft.com.imported",
    )
    .await;
    bing.accept_token_prefix(ADS_PREFIX);
    bing.call_rate_exceeded_next(1);
    let out = attempt(&w, "conv", &conv_event("clk-1")).await.outcome;
    assert!(
        matches!(out, Outcome::Retry { delay: RetryDelay::After(d), .. } if d >= Duration::from_secs(60)),
        "{out:?}"
    );
    bing.internal_error_next(1);
    let out = attempt(&w, "conv", &conv_event("clk-2")).await.outcome;
    assert!(
        matches!(
            out,
            Outcome::Retry {
                delay: RetryDelay::Backoff,
                status: Some(500),
                ..
            }
        ),
        "{out:?}"
    );
    bing.script_next(
        1,
        Scripted::Status {
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: r#"{"TrackingId":"t","Type":"ApiFaultDetail","BatchErrors":[],"OperationErrors":[{"Code":5613,"Details":null,"ErrorCode":"OfflineConversionPilotNotEnabledForCustomer","Message":"not enabled"}]}"#.into(),
        },
    );
    let out = attempt(&w, "conv", &conv_event("clk-3")).await.outcome;
    assert!(
        matches!(&out, Outcome::Failed { code: Some(c), status: Some(400), .. } if c == "OfflineConversionPilotNotEnabledForCustomer"),
        "{out:?}"
    );
    bing.set_account("1", "2");
    let out = attempt(&w, "conv", &conv_event("clk-4")).await.outcome;
    assert!(
        matches!(&out, Outcome::Failed { status: Some(403), code: Some(c), .. } if c == "UserIsNotAuthorized"),
        "{out:?}"
    );
}

// ---------- HTTP ----------

fn http_push(url: &str, extra: &str) -> String {
    format!("name: hook\non: call.ended\nhttp:\n  url: {url}\n  headers:\n    Authorization: Bearer << oauth.crm >>\n  json:\n    phone: << event.phone >>\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_classes() {
    let rx = HttpReceiver::start().await;
    let w = world(&http_push(&rx.url("/leads"), ""), "crm-token").await;
    let e = call_event(serde_json::json!({"phone": "+4930123"}));
    assert!(matches!(
        attempt(&w, "hook", &e).await.outcome,
        Outcome::Delivered { status: 200, .. }
    ));
    for status in [408, 425, 429, 500, 502, 503] {
        rx.respond_next(1, status, vec![("retry-after".into(), "3".into())], "busy");
        let out = attempt(&w, "hook", &e).await.outcome;
        assert!(
            matches!(out, Outcome::Retry { status: Some(s), delay: RetryDelay::After(d), .. } if s == status && d == Duration::from_secs(3)),
            "{status}: {out:?}"
        );
    }
    rx.respond_next(1, 422, vec![], r#"{"error":"phone is invalid"}"#);
    let out = attempt(&w, "hook", &e).await.outcome;
    assert!(
        matches!(&out, Outcome::Failed { status: Some(422), message, .. } if message.contains("phone is invalid")),
        "{out:?}"
    );
    // A refused token: one refresh, one retry.
    rx.respond_next(1, 401, vec![], "expired");
    let a = attempt(&w, "hook", &e).await;
    assert!(
        a.outcome.is_delivered() && a.requests == 2,
        "{:?}",
        a.outcome
    );
    assert_eq!(w.identity.token_request_count(), 1);
    let last = rx.requests().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", w.identity.issued_access_tokens()[0]).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connection_refused_is_a_retry() {
    let rx = HttpReceiver::start().await;
    let url = rx.url("/x");
    drop(rx);
    let w = world(&http_push(&url, ""), "crm-token").await;
    let out = attempt(&w, "hook", &call_event(serde_json::json!({"phone": "1"})))
        .await
        .outcome;
    assert!(
        matches!(
            out,
            Outcome::Retry {
                status: None,
                delay: RetryDelay::Backoff,
                ..
            }
        ),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_idempotency_key_is_stable_across_retries_and_signature_verifies() {
    let rx = HttpReceiver::start().await;
    let extra = "  success: [201]\n  signing:\n    secret: shared-secret\n";
    let w = world(&http_push(&rx.url("/leads"), extra), "crm-token").await;
    rx.respond_next(2, 503, vec![], "down");
    rx.respond_next(1, 201, vec![], "created");
    let e = call_event(serde_json::json!({"phone": "+4930123"}));
    let push = w.catalog.push("hook").unwrap();
    let backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(100),
    };
    let mut seen = Vec::new();
    let d = w
        .deliverer
        .deliver_with_retries(
            &w.catalog,
            push,
            &e,
            5,
            Duration::from_secs(60),
            &backoff,
            |n, a| seen.push((n, a.outcome.clone())),
        )
        .await;
    let Delivery::Attempted(a) = d else { panic!() };
    assert!(
        matches!(a.outcome, Outcome::Delivered { status: 201, .. }),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3);
    let requests = rx.requests();
    let keys: Vec<_> = requests
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_owned())
        .collect();
    assert!(keys.windows(2).all(|k| k[0] == k[1]), "{keys:?}");
    assert_eq!(requests.len(), 3);
    for r in &requests {
        let ts = r.header("x-pushwerk-timestamp").unwrap();
        let expected = format!(
            "sha256={}",
            pushwerk::targets::http::sign(b"shared-secret", ts, &r.body)
        );
        assert_eq!(r.header("x-pushwerk-signature"), Some(expected.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_success_statuses_are_configurable() {
    let rx = HttpReceiver::start().await;
    let w = world(
        &http_push(&rx.url("/leads"), "  success: [201]\n"),
        "crm-token",
    )
    .await;
    let e = call_event(serde_json::json!({"phone": "1"}));
    rx.respond_next(1, 200, vec![], "ok but not created");
    let out = attempt(&w, "hook", &e).await.outcome;
    assert!(
        matches!(
            &out,
            Outcome::Failed {
                status: Some(200),
                ..
            }
        ),
        "{out:?}"
    );
    rx.respond_next(1, 201, vec![], "created");
    assert!(attempt(&w, "hook", &e).await.outcome.is_delivered());
}

// ---------- SMTP ----------

fn smtp_push(port: u16) -> String {
    format!(
        "name: mail-smtp\non: call.ended\nsmtp:\n  host: 127.0.0.1\n  port: {port}\n  tls: none\n  auth:\n    username: office@example.com\n    account: ms_mail\n  from: \"pushwerk <office@example.com>\"\n  to: [sales@example.com]\n  bcc: [audit@example.com]\n  subject: Call from << event.caller >>\n  text: \"Caller: << event.caller >>\\n.leading dot line\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_xoauth2_carries_the_current_access_token_and_the_message() {
    let smtp = pushwerk_testkit::smtp::SmtpMock::start().await;
    let w = world(
        &smtp_push(smtp.port()),
        "mock-at.graph.microsoft.com.current",
    )
    .await;
    smtp.accept_token("mock-at.graph.microsoft.com.current");
    let a = attempt(
        &w,
        "mail-smtp",
        &call_event(serde_json::json!({"caller": "Jürgen"})),
    )
    .await;
    assert!(a.outcome.is_delivered(), "{:?}", a.outcome);
    let delivered = smtp.delivered();
    assert_eq!(delivered.len(), 1);
    let d = &delivered[0];
    assert_eq!(d.mail_from, "office@example.com");
    assert_eq!(d.rcpt_to, ["sales@example.com", "audit@example.com"]);
    assert_eq!(
        d.auth,
        Some(pushwerk_testkit::smtp::AuthSeen::Xoauth2 {
            user: "office@example.com".into(),
            token: "mock-at.graph.microsoft.com.current".into()
        })
    );
    let data = String::from_utf8_lossy(&d.data);
    // "Jürgen" as an RFC 2047 encoded word: printf %s Jürgen | base64
    assert!(
        data.contains("Subject: Call from =?utf-8?b?SsO8cmdlbg==?="),
        "encoded subject: {data}"
    );
    assert!(
        data.contains("\r\n..leading dot line") || data.contains("\n.leading dot line"),
        "{data}"
    );
    assert!(
        !data.to_ascii_lowercase().contains("bcc:"),
        "Bcc stays in the envelope: {data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_535_leads_to_one_refresh_and_one_retry() {
    let smtp = pushwerk_testkit::smtp::SmtpMock::start().await;
    // The imported token is refused (535 5.7.3); tokens the identity mock
    // issues are accepted.
    let w = world(&smtp_push(smtp.port()), "stale-token").await;
    smtp.accept_token_prefix(GRAPH_PREFIX);
    let a = attempt(
        &w,
        "mail-smtp",
        &call_event(serde_json::json!({"caller": "x"})),
    )
    .await;
    assert!(a.outcome.is_delivered(), "{:?}", a.outcome);
    assert_eq!(a.requests, 2);
    assert_eq!(w.identity.token_request_count(), 1);
    let attempts = smtp.auth_attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(!attempts[0].1 && attempts[1].1, "{attempts:?}");
    let Some(pushwerk_testkit::smtp::AuthSeen::Xoauth2 { token, .. }) = &smtp.delivered()[0].auth
    else {
        panic!()
    };
    assert_eq!(token, &w.identity.issued_access_tokens()[0]);
    // A second refusal after the refresh fails, without a loop.
    smtp.disable_smtp_auth(true);
    let b = attempt(
        &w,
        "mail-smtp",
        &call_event(serde_json::json!({"caller": "y"})),
    )
    .await;
    assert!(
        matches!(&b.outcome, Outcome::Failed { code: Some(c), .. } if c == "token_refused"),
        "{:?}",
        b.outcome
    );
    assert_eq!(b.requests, 2);
    assert_eq!(w.identity.token_request_count(), 2);
}

// ---------- pushwerk send with the examples ----------

/// Copies the example folder with every service URL pointed at the mocks.
fn examples_at(dir: &Path, identity: &IdentityMock, rx: &HttpReceiver, smtp_port: u16) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(crate::util::root().join("pushes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                &identity.token_url(),
            )
            .replace(
                "https://auth.crm.example.com/oauth/token",
                &identity.token_url(),
            )
            .replace("https://crm.example.com/api/leads", &rx.url("/api/leads"))
            .replace(
                "scope: leads.write",
                "scope: offline_access https://crm.example.com/leads.write",
            )
            .replace("host: smtp.office365.com", "host: 127.0.0.1")
            .replace("port: 587", &format!("port: {smtp_port}"))
            .replace("tls: starttls", "tls: none");
        // One application at the mock: every account uses its client id.
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("client_id:") {
                    format!("client_id: {}", MockConfig::default().client_id)
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushwerk_send_delivers_each_example_push_to_the_mocks() {
    let identity = IdentityMock::start(MockConfig {
        client_secret: Some("s".into()),
        ..MockConfig::default()
    })
    .await;
    let smtp = pushwerk_testkit::smtp::SmtpMock::start().await;
    let graph = GraphMock::start().await;
    let bing = BingMock::start().await;
    let rx = HttpReceiver::start().await;
    graph.accept_token_prefix(GRAPH_PREFIX);
    bing.accept_token_prefix(ADS_PREFIX);
    let dir = tempfile::tempdir().unwrap();
    examples_at(&dir.path().join("pushes"), &identity, &rx, smtp.port());
    let graph_url = graph.base_url();
    let bing_url = bing.base_url();
    let env = [
        ("MS_MAIL_CLIENT_SECRET", "s"),
        ("MS_ADS_CLIENT_SECRET", "s"),
        ("CRM_CLIENT_SECRET", "s"),
        ("BING_ADS_DEVELOPER_TOKEN", "BBD37VB98"),
        ("BING_ADS_CUSTOMER_ID", "1234567"),
        ("BING_ADS_ACCOUNT_ID", "7654321"),
        ("PUSHWERK_GRAPH_URL", graph_url.as_str()),
        ("PUSHWERK_BING_ADS_URL", bing_url.as_str()),
    ];
    // Tokens as the control panel would paste them: refresh tokens only, so
    // the first send of each account refreshes at the identity mock.
    for (account, scope) in [
        (
            "ms_mail",
            "offline_access https://graph.microsoft.com/Mail.Send",
        ),
        (
            "ms_ads",
            "offline_access https://ads.microsoft.com/msads.manage",
        ),
        ("crm", "offline_access https://crm.example.com/leads.write"),
        (
            "ms_smtp",
            "offline_access https://outlook.office.com/SMTP.Send",
        ),
    ] {
        let rt = format!("rt-{account}");
        identity.seed_refresh_token(&rt, scope);
        std::fs::write(dir.path().join("rt.txt"), &rt).unwrap();
        let out = pushwerk_in(
            dir.path(),
            &["oauth", "import", account, "--file", "rt.txt"],
            &env,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ended = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let event = serde_json::json!({
        "id": "evt-send-1", "type": "call.ended", "time": ended,
        "data": {
            "caller_number": "+49 30 1234567", "caller_name": "Erika", "caller_email": "erika@example.org",
            "tracking_number": "+49 800 5550100", "campaign": "Winter Sale", "answered": true, "duration": 184,
            "started_at": ended, "ended_at": ended, "recording_url": "https://calls.example.com/r.mp3",
            "msclkid": "clk-send", "value": 120.5
        }
    });
    std::fs::write(dir.path().join("event.json"), event.to_string()).unwrap();
    for push in [
        "lead-mail",
        "bing-call-conversion",
        "crm-lead",
        "daily-summary",
    ] {
        let mut args = vec!["send", push];
        if push != "daily-summary" {
            args.extend(["--event", "event.json"]);
        }
        let out = pushwerk_in(dir.path(), &args, &env);
        assert!(
            out.status.success(),
            "{push}: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).contains(": delivered ("),
            "{push}: {}",
            stdout(&out)
        );
    }
    assert_eq!(
        graph.sent_messages().len(),
        2,
        "lead-mail and daily-summary"
    );
    assert_eq!(
        bing.accepted_conversions()[0]["MicrosoftClickId"],
        "clk-send"
    );
    let lead = rx.requests().pop().unwrap();
    assert!(
        lead.path.starts_with("/api/leads?source=Winter+Sale"),
        "{}",
        lead.path
    );
    assert_eq!(lead.json()["seconds"], 184);
    // The SMTP example fires on unanswered calls.
    smtp.accept_token_prefix("mock-at.outlook.office.com.");
    let missed = event
        .to_string()
        .replace("\"answered\":true", "\"answered\":false");
    std::fs::write(dir.path().join("missed.json"), missed).unwrap();
    let out = pushwerk_in(
        dir.path(),
        &["send", "missed-call-smtp", "--event", "missed.json"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(smtp.delivered().len(), 1);
    assert_eq!(
        identity.token_request_count(),
        4,
        "one refresh per account, reused afterwards"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_4xx_is_retried_and_5xx_fails() {
    let smtp = pushwerk_testkit::smtp::SmtpMock::start().await;
    let w = world(
        &smtp_push(smtp.port()),
        "mock-at.graph.microsoft.com.current",
    )
    .await;
    smtp.accept_token("mock-at.graph.microsoft.com.current");
    let e = call_event(serde_json::json!({"caller": "x"}));
    smtp.reject_next_data(1, 451, "4.3.2 Please try again later");
    let out = attempt(&w, "mail-smtp", &e).await.outcome;
    assert!(
        matches!(
            out,
            Outcome::Retry {
                status: Some(451),
                ..
            }
        ),
        "{out:?}"
    );
    smtp.reject_next_data(1, 554, "5.2.0 Message rejected");
    let out = attempt(&w, "mail-smtp", &e).await.outcome;
    assert!(
        matches!(
            &out,
            Outcome::Failed {
                status: Some(554),
                ..
            }
        ),
        "{out:?}"
    );
    assert!(smtp.delivered().is_empty());
    assert!(attempt(&w, "mail-smtp", &e).await.outcome.is_delivered());
}
