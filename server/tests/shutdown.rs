//! The `server` binary under SIGTERM with a reply streaming: it stops accepting, lets the
//! stream finish, flushes the ledger hand-off and exits 0; nothing is lost. Also its
//! operations listener (metrics and health) and its JSON log lines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{app_url, free_port, Child, TestApp};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn sigterm_lets_a_stream_in_flight_finish_and_loses_nothing(pool: PgPool) {
    // The clinic and the simulator come from an in-process app; the server under test is the
    // real binary, with a Redis prefix of its own, so only its own ledger writer can write
    // what it settles.
    let app = TestApp::spawn(&pool).await;
    let c = app.api_clinic("Shutdown Clinic").await;
    let port = free_port();
    let ops_port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let prefix = format!("shutdown:{}:", uuid::Uuid::new_v4());
    let site = std::env::temp_dir().join(format!("tessera-site-{port}"));
    std::fs::create_dir_all(&site).unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", app_url(&pool))
            .env("TESSERA_MIGRATE_ON_START", "false")
            .env("REDIS_URL", app.services.config.redis_url.clone())
            .env("TESSERA_REDIS_PREFIX", &prefix)
            .env("OPENAI_BASE_URL", format!("http://{}/v1", app.sim))
            .env("TESSERA_ALLOW_PRIVATE_ENDPOINTS", "true")
            .env("TESSERA_PUBLIC_URL", &base)
            .env("TESSERA_SHUTDOWN_GRACE_SECS", "20")
            .env("TESSERA_METRICS_ADDR", format!("127.0.0.1:{ops_port}"))
            .env("TESSERA_INGEST_WORKERS", "0")
            .env("TESSERA_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,server::telemetry=debug")
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("LEPTOS_OUTPUT_NAME", "tessera")
            .env("LEPTOS_SITE_ROOT", &site)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    common::wait_ready(&base).await;
    // The operations listener: health and metrics, without a token.
    let health = reqwest::get(format!("http://127.0.0.1:{ops_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let status = Command::new(env!("CARGO_BIN_EXE_server"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{ops_port}/readyz"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "the container health check passes");

    // A reply of 20 words, 150 ms apart: about three seconds of streaming.
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(c.token())
        .json(&json!({ "model": "gpt-4o-mini", "stream": true,
                       "messages": [{ "role": "user", "content": "[sim:words=20] [sim:chunk_ms=150] go" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while !text.contains("word1") {
        let chunk = body.next().await.expect("the stream began").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }

    // Act: SIGTERM while the reply streams.
    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // New connections are refused at once...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert!(
        fresh.get(format!("{base}/healthz")).send().await.is_err(),
        "a stopping server accepts no new request"
    );
    // ...while the stream in flight runs to its end.
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream was not cut"),
        ));
    }
    assert!(text.contains("word20"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // The process exits 0 by itself, well within its grace period.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    // Nothing lost: the call is in the ledger, the hand-off is empty.
    let recorded = app.ledger_usage(c.tenant).await;
    assert_eq!(recorded.requests, 1);
    assert!(recorded.completion_tokens >= 20, "{recorded:?}");
    let left: i64 = redis::cmd("XLEN")
        .arg(format!("{prefix}ledger"))
        .query_async(&mut app.services.redis.conn())
        .await
        .unwrap();
    assert_eq!(left, 0, "the ledger hand-off was flushed");

    // One JSON object per line; the stream's lines carry its request id, route and clinic,
    // and no line carries the API key.
    let lines = lines.join().unwrap();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = events
        .iter()
        .find(|e| e["span"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no line for request {request_id}: {lines:#?}"));
    assert_eq!(answered["span"]["route"], "/v1/chat/completions");
    assert_eq!(
        answered["span"]["clinic"],
        c.tenant.to_string(),
        "{answered}\n{lines:#?}"
    );
    assert!(events
        .iter()
        .any(|e| e["fields"]["message"] == "stopped" || e["message"] == "stopped"));
    assert!(lines.iter().all(|l| !l.contains(c.token())));
}
