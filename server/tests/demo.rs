//! Demo mode: the demo clinic is seeded once through the product and chats through the
//! simulator; every page says "Demo"; and it cannot be turned on for a public address.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{app_url, free_port, Child, TestApp};
use serde_json::Value;
use sqlx::PgPool;
use tessera_core::demo;

#[sqlx::test(migrations = "../migrations")]
async fn the_demo_clinic_is_seeded_once_and_chats_through_the_simulator(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;
    assert!(demo::seed(&app.services).await.unwrap(), "seeded");
    assert!(!demo::seed(&app.services).await.unwrap(), "only once");

    let staff = app.browser();
    let res = app
        .post(
            &staff,
            "sign_in",
            &[("email", demo::EMAIL), ("password", demo::PASSWORD)],
        )
        .await;
    assert!(res.status().is_redirection(), "sign in: {}", res.status());
    let home: Value = app.json(&staff, "chat_home", &[]).await;
    let agents = home["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "{home}");
    let sent: Value = app
        .json(
            &staff,
            "start_conversation",
            &[
                ("agent_id", agents[0]["id"].as_str().unwrap()),
                ("text", "Hello demo"),
            ],
        )
        .await;
    let reply = sent["reply_id"].as_str().unwrap();
    let body = app.text(&staff, &format!("/chat/replies/{reply}")).await;
    assert!(body.contains("\"Simulated \""), "{body}");
    assert!(body.contains("event: done"), "{body}");
}

/// Starts the binary in demo mode with `public_url` and `listen`; the child and its address.
fn start(pool: &PgPool, app: &TestApp, public_url: &str, listen: &str) -> Child {
    let site = std::env::temp_dir().join(format!("tessera-demo-site-{}", free_port()));
    std::fs::create_dir_all(&site).unwrap();
    Child(
        Command::new(env!("CARGO_BIN_EXE_server"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", app_url(pool))
            .env("TESSERA_MIGRATE_ON_START", "false")
            .env("REDIS_URL", app.services.config.redis_url.clone())
            .env(
                "TESSERA_REDIS_PREFIX",
                format!("demo:{}:", uuid::Uuid::new_v4()),
            )
            .env("OPENAI_BASE_URL", format!("http://{}/v1", app.sim))
            .env("TESSERA_DEMO", "true")
            // So that an HTTPS address is refused for demo mode, not for a missing key.
            .env(
                "TESSERA_MASTER_KEYS",
                "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .env("TESSERA_PUBLIC_URL", public_url)
            .env("TESSERA_INGEST_WORKERS", "0")
            .env("TESSERA_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env("LEPTOS_SITE_ADDR", listen)
            .env("LEPTOS_OUTPUT_NAME", "tessera")
            .env("LEPTOS_SITE_ROOT", &site)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server"),
    )
}

fn output_of(mut child: Child) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut text = String::new();
            use std::io::Read;
            if let Some(mut e) = child.0.stderr.take() {
                e.read_to_string(&mut text).unwrap();
            }
            if let Some(mut o) = child.0.stdout.take() {
                o.read_to_string(&mut text).unwrap();
            }
            return (status, text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server should have refused to start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn demo_mode_shows_on_every_page_and_never_runs_for_a_public_address(pool: PgPool) {
    let app = TestApp::spawn(&pool).await;

    // Refused for a public address, and for a listener beyond loopback.
    let (status, out) = output_of(start(
        &pool,
        &app,
        "https://clinic.example.com",
        &format!("127.0.0.1:{}", free_port()),
    ));
    assert!(!status.success());
    assert!(out.contains("TESSERA_DEMO"), "{out}");
    let port = free_port();
    let (status, out) = output_of(start(
        &pool,
        &app,
        &format!("http://127.0.0.1:{port}"),
        &format!("0.0.0.0:{port}"),
    ));
    assert!(!status.success());
    assert!(
        out.contains("TESSERA_DEMO") && out.contains("LEPTOS_SITE_ADDR"),
        "{out}"
    );

    // On this machine it starts, seeds the clinic and says "Demo" on the pages.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _child = start(&pool, &app, &base, &format!("127.0.0.1:{port}"));
    common::wait_ready(&base).await;
    for path in ["/signin", "/signup"] {
        let html = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(html.contains("data-demo=\"true\""), "{path}: {html}");
        assert!(
            html.contains("demo-banner") && html.contains(demo::EMAIL),
            "{path}"
        );
    }
    // The clinic was seeded by the server at start.
    assert!(!demo::seed(&app.services).await.unwrap());
}
