//! Criterion benchmarks of the engine's hot path (see BENCHMARKS.md):
//!
//! - `render/<push>` and `render_prepare/<push>`: every example push in
//!   `pushes/` rendered (and turned into the exact request) for
//!   `fixtures/call-ended.json` (`fixtures/call-missed.json` for a push whose
//!   condition needs an unanswered call; a cron tick for `schedule:` pushes),
//!   with access tokens given as a map: no network, no store;
//! - `resolver/access_token_cached`: `Resolver::access_token` for an account
//!   whose stored token is fresh (sled in a temp dir, imported first), with
//!   `resolver/block_on_baseline` as the cost of the executor around it;
//! - `catalog/load_1000_files`: `Catalog::load` of a folder of 1,000 push
//!   files (copies of `crm-webhook.yaml`, push `crm-lead`, under other names) plus the accounts file.
//!
//! `cargo bench --bench engine`; a filter selects groups, e.g.
//! `cargo bench --bench engine -- render_prepare`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use pushwerk::config::{Catalog, LoadOptions, Push, Trigger};
use pushwerk::engine::{render, RenderInput, Rendered, TokenValues};
use pushwerk::event::Event;
use pushwerk::oauth::seal::Sealer;
use pushwerk::oauth::{ImportedTokens, Resolver, ResolverSettings, TokenStore};
use pushwerk::store::SledStore;
use pushwerk::targets::{prepare, Endpoints};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `${env:NAME}` of the examples resolves to a dummy value, so that a
/// render with real values (as the daemon makes it) succeeds.
fn bench_env(name: &str) -> Option<String> {
    if name.ends_with("_ID") {
        // Microsoft Advertising customer and account ids are numeric.
        return Some("1234567".to_owned());
    }
    Some(format!("bench-{name}"))
}

fn load_examples() -> Catalog {
    let catalog = Catalog::load(&root().join("pushes"), &LoadOptions { env: &bench_env })
        .expect("pushes/ loads");
    assert_eq!(
        catalog.error_count(),
        0,
        "pushes/ has errors: {:?}",
        catalog.diagnostics
    );
    catalog
}

fn event(file: &str) -> Event {
    let text = std::fs::read_to_string(root().join("fixtures").join(file)).expect("fixture");
    Event::from_json(&text).expect("fixture event")
}

fn tokens(catalog: &Catalog) -> TokenValues {
    catalog
        .accounts
        .keys()
        .map(|a| (a.clone(), format!("eyJ0eXAiOiJKV1QiLCJhbGciOi.bench.{a}")))
        .collect()
}

fn input<'a>(event: &'a Event, tokens: &'a TokenValues) -> RenderInput<'a> {
    RenderInput {
        event,
        attempt: 1,
        now: Utc::now(),
        tokens,
        secrets: pushwerk::targets::SecretMode::Real,
    }
}

/// The event each push is measured with: a cron tick for `schedule:`
/// pushes, else the first fixture the push renders for (not skipped).
fn event_for(catalog: &Catalog, push: &Push, tokens: &TokenValues) -> (Event, String) {
    if let Trigger::Schedule(_) = push.trigger {
        return (
            Event::schedule_tick(push.name(), Utc::now()),
            "cron tick".to_owned(),
        );
    }
    for file in ["call-ended.json", "call-missed.json"] {
        let e = event(file);
        if let Ok(Rendered::Ready(r)) = render(catalog, push, &input(&e, tokens)) {
            if let Err(err) = prepare(&r, &Endpoints::default()) {
                panic!("push {} does not prepare for {file}: {err}", push.name());
            }
            return (e, file.to_owned());
        }
    }
    panic!("push {} renders for no fixture", push.name());
}

fn bench_render(c: &mut Criterion) {
    let catalog = load_examples();
    let tokens = tokens(&catalog);
    let endpoints = Endpoints::default();
    let mut render_group = c.benchmark_group("render");
    render_group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut cases = Vec::new();
    for push in &catalog.pushes {
        let (ev, source) = event_for(&catalog, push, &tokens);
        eprintln!("push {}: measured with {source}", push.name());
        render_group.bench_function(push.name(), |b| {
            b.iter(|| {
                let out = render(&catalog, push, black_box(&input(&ev, &tokens))).unwrap();
                black_box(out)
            })
        });
        cases.push((push, ev));
    }
    render_group.finish();

    let mut group = c.benchmark_group("render_prepare");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for (push, ev) in &cases {
        group.bench_function(push.name(), |b| {
            b.iter(|| {
                let Rendered::Ready(rendered) =
                    render(&catalog, push, black_box(&input(ev, &tokens))).unwrap()
                else {
                    panic!("skipped")
                };
                black_box(prepare(&rendered, &endpoints).unwrap())
            })
        });
    }
    group.finish();
}

fn bench_resolver(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("pushes");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("accounts.yaml"),
        "kind: oauth_account\nname: bench\ntoken_url: http://127.0.0.1:9/token\nclient_id: bench\nclient_secret: x\nscope: offline_access bench\n",
    )
    .unwrap();
    let no_env = |_: &str| None;
    let catalog = Catalog::load(&folder, &LoadOptions { env: &no_env }).unwrap();
    assert_eq!(catalog.error_count(), 0, "{:?}", catalog.diagnostics);
    let store = SledStore::open(&dir.path().join("data")).expect("sled opens");
    let resolver = Resolver::new(
        TokenStore::new(Arc::new(store), Sealer::plain()),
        catalog.accounts.clone(),
        ResolverSettings::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let imported: ImportedTokens = serde_json::from_value(serde_json::json!({
        "access_token": "at-bench", "refresh_token": "rt-bench", "expires_in": 3600
    }))
    .unwrap();
    rt.block_on(resolver.import("bench", imported)).unwrap();

    let mut group = c.benchmark_group("resolver");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("access_token_cached", |b| {
        b.iter(|| {
            let t = rt
                .block_on(resolver.access_token(black_box("bench")))
                .unwrap();
            black_box(t)
        })
    });
    group.bench_function("block_on_baseline", |b| {
        b.iter(|| rt.block_on(async { black_box(1u32) }))
    });
    group.finish();
    assert_eq!(
        resolver.token_requests(),
        0,
        "a cached token made a request"
    );
}

/// A folder with 1,000 copies of `crm-lead` (each under its own name) and
/// the example accounts.
fn thousand_pushes(dir: &Path) {
    let crm = std::fs::read_to_string(root().join("pushes/crm-webhook.yaml")).unwrap();
    assert!(crm.contains("name: crm-lead\n"));
    std::fs::copy(
        root().join("pushes/accounts.yaml"),
        dir.join("accounts.yaml"),
    )
    .unwrap();
    for i in 0..1000 {
        let text = crm.replace("name: crm-lead\n", &format!("name: crm-lead-{i:04}\n"));
        std::fs::write(dir.join(format!("crm-lead-{i:04}.yaml")), text).unwrap();
    }
}

fn bench_catalog(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    thousand_pushes(dir.path());
    let first = Catalog::load(dir.path(), &LoadOptions { env: &bench_env }).unwrap();
    assert_eq!(first.pushes.len(), 1000, "{:?}", first.diagnostics);
    assert_eq!(first.error_count(), 0);
    drop(first);

    let mut group = c.benchmark_group("catalog");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("load_1000_files", |b| {
        b.iter(|| {
            let catalog =
                Catalog::load(black_box(dir.path()), &LoadOptions { env: &bench_env }).unwrap();
            black_box(catalog.pushes.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_render, bench_resolver, bench_catalog);
criterion_main!(benches);
