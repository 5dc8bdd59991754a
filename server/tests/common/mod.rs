//! Spawns the real router on a free port against a fresh database (as the app role) and a
//! Redis key prefix of its own.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use leptos::prelude::LeptosOptions;
use sqlx::PgPool;
use tessera_core::llm::wire::SseEvent;
use tessera_core::metering::MonthUsage;
use tessera_core::{Config, Db, Month, Provider, Redis, Services, TenantId};
pub use testkit::fixtures::TestClinic;

pub struct TestApp {
    pub url: String,
    /// The services behind the server (same database and Redis prefix).
    pub services: Services,
    /// The provider simulator the server calls.
    pub sim: SocketAddr,
}

impl TestApp {
    pub async fn spawn(owner_pool: &PgPool) -> Self {
        Self::spawn_with(owner_pool, &[]).await
    }

    /// As [`TestApp::spawn`], with extra configuration variables (`{sim}` in a value stands
    /// for the simulator's address).
    pub async fn spawn_with(owner_pool: &PgPool, extra: &[(&str, &str)]) -> Self {
        Self::spawn_on(testkit::app_role_options(owner_pool), extra).await
    }

    /// As [`TestApp::spawn_with`], reaching Postgres with `db` (say, through a proxy).
    pub async fn spawn_on(db: sqlx::postgres::PgConnectOptions, extra: &[(&str, &str)]) -> Self {
        let db = Db::connect_with(db, 5)
            .await
            .expect("connect as tessera_app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let prefix = format!("test:{}:", uuid::Uuid::new_v4());
        // Provider calls go to the simulator, never to a real provider.
        let sim = testkit::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut vars = HashMap::new();
        vars.insert("OPENAI_BASE_URL".to_string(), format!("http://{sim}/v1"));
        vars.insert(
            "ANTHROPIC_BASE_URL".to_string(),
            format!("http://{sim}/anthropic"),
        );
        vars.insert("TESSERA_PUBLIC_URL".to_string(), url.clone());
        vars.insert("TESSERA_REDIS_PREFIX".to_string(), prefix.clone());
        // The simulator listens on loopback.
        vars.insert("TESSERA_ALLOW_PRIVATE_ENDPOINTS".to_string(), "true".into());
        if let Ok(redis_url) = std::env::var("REDIS_URL") {
            vars.insert("REDIS_URL".to_string(), redis_url);
        }
        for (k, v) in extra {
            vars.insert(k.to_string(), v.replace("{sim}", &sim.to_string()));
        }
        let config = Config::from_vars(&vars).unwrap();
        let redis = Redis::connect(&config.redis_url, &prefix)
            .await
            .expect("connect to Redis");
        let services = Services::new(config, db, redis);
        services.start_background();
        let leptos_options = LeptosOptions::builder()
            .output_name("tessera")
            .site_addr(addr)
            .build();
        let app = server::router(services.clone(), leptos_options);
        tokio::spawn(async move {
            axum::serve(
                axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self { url, services, sim }
    }

    /// A browser-like client: keeps cookies, does not follow redirects, sends this site's
    /// `Origin` on every request.
    pub fn browser(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("origin", self.url.parse().unwrap());
        // Browsers' form posts accept HTML; the server then answers a redirect with 302.
        headers.insert(
            "accept",
            "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
        );
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// A JSON answer of the provider simulator, e.g. `/sim/last` (the body of the last chat,
    /// messages or moderation request it received) or `/sim/last-headers`.
    pub async fn sim(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("http://{}{path}", self.sim))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A page or other text answer, fetched by `client`.
    pub async fn text(&self, client: &reqwest::Client, path: &str) -> String {
        client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until every settled usage event is in the Postgres ledger (the server's own
    /// ledger writer runs too; this one helps and then waits for the hand-off to be empty).
    pub async fn flush_ledger(&self) {
        // Calls that have answered may have their settles still queued (see `batch.rs`).
        self.services.gateway.metering.settles_done().await;
        let writer = tessera_core::metering::LedgerWriter::new(
            self.services.db.clone(),
            self.services.redis.clone(),
        );
        let stream = self.services.gateway.metering.ledger_stream();
        // Up to 15 s: after an outage the server's writer takes its failed batch again after
        // its backoff.
        for _ in 0..300 {
            writer.drain_all().await.unwrap();
            let left: i64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut self.services.redis.conn())
                .await
                .unwrap();
            if left == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the ledger hand-off did not empty");
    }

    pub fn api(&self, name: &str) -> String {
        format!("{}/api/{name}", self.url)
    }

    /// Posts a form the way a page without JavaScript does (redirects come back as 302).
    pub async fn post(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client.post(self.api(name)).form(form).send().await.unwrap()
    }

    /// Calls a server function the way the hydrated page does (JSON back).
    pub async fn call(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client
            .post(self.api(name))
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Signs up a clinic; the client is left signed in as its owner.
    pub async fn sign_up(&self, client: &reqwest::Client, clinic: &str, email: &str) {
        let res = self
            .post(
                client,
                "sign_up",
                &[
                    ("clinic_name", clinic),
                    ("name", "Olivia Owner"),
                    ("email", email),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert!(
            res.status().is_redirection() || res.status().is_success(),
            "sign up: {}",
            res.status()
        );
    }

    /// Invites `email` as `role` from `inviter`'s clinic; returns the token of the link.
    pub async fn invite(&self, inviter: &reqwest::Client, email: &str, role: &str) -> String {
        let invite: serde_json::Value = self
            .call(
                inviter,
                "invite_member",
                &[("email", email), ("role", role)],
            )
            .await
            .json()
            .await
            .unwrap();
        invite["link"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    }

    pub async fn session(&self, client: &reqwest::Client) -> serde_json::Value {
        let res = client
            .post(self.api("session"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

pub use testkit::fixtures::PASSWORD;

impl TestApp {
    /// What fixtures need to make clinics through this server's own services.
    pub fn env(&self) -> testkit::fixtures::Env<'_> {
        testkit::fixtures::Env {
            db: &self.services.db,
            changes: &self.services.changes,
            master: self.services.master_keys(),
            admin: None,
        }
    }

    /// A clinic whose owner's email is made from `name`, with OpenAI and Anthropic keys the
    /// simulator accepts, and an API key (`clinic.token()`).
    pub async fn api_clinic(&self, name: &str) -> TestClinic {
        testkit::fixtures::clinic(name)
            .key(Provider::OpenAi, "sk-test-good-key")
            .key(Provider::Anthropic, "sk-ant-test-good-key")
            .api_key("tests")
            .create(&self.env())
            .await
    }

    /// The live counters of `tenant` this month: (used tokens, reserved tokens), the tokens
    /// reserved by calls in flight alone: what the server holds of the allowance for calls to
    /// come is given back first, as it is when the server stops or a second passes without a
    /// call.
    pub async fn live_usage(&self, tenant: TenantId) -> (MonthUsage, i64) {
        let _ = self.services.gateway.metering.return_slices().await;
        self.services
            .gateway
            .metering
            .month_usage(tenant, Month::now())
            .await
            .unwrap()
    }

    /// This month's totals of `tenant` in the Postgres ledger.
    pub async fn ledger_usage(&self, tenant: TenantId) -> MonthUsage {
        tessera_core::metering::report::ledger_totals(&self.services.db, tenant, Month::now())
            .await
            .unwrap()
    }

    /// Calls a server function as the hydrated page does and reads its JSON answer, which
    /// must be a success.
    pub async fn json(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
    ) -> serde_json::Value {
        let res = self.call(client, name, form).await;
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(status.is_success(), "{name}: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"))
    }
}

/// Stripe configured against the simulator; `whsec_old` is a secret being rolled out.
pub const STRIPE: [(&str, &str); 3] = [
    ("STRIPE_SECRET_KEY", "sk_test_sim"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_old,whsec_sim"),
    ("STRIPE_API_BASE", "http://{sim}/stripe/"),
];

impl TestApp {
    /// A server with Stripe (the simulator, delivering its webhooks to this server) and the
    /// catalogue made, with `extra` configuration too.
    pub async fn spawn_with_billing(owner_pool: &PgPool, extra: &[(&str, &str)]) -> Self {
        let vars: Vec<(&str, &str)> = STRIPE.iter().chain(extra).copied().collect();
        let app = Self::spawn_with(owner_pool, &vars).await;
        let res = reqwest::Client::new()
            .post(format!("{}/sim/config", app.stripe_sim()))
            .json(&serde_json::json!({
                "webhook_url": format!("{}/webhooks/stripe", app.url),
                "webhook_secret": "whsec_sim",
            }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
        let plans = tessera_core::billing::plans(app.services.db.pool())
            .await
            .unwrap();
        app.services
            .stripe
            .as_ref()
            .expect("Stripe is configured")
            .sync_catalog(&plans)
            .await
            .unwrap();
        app
    }

    /// The Stripe simulator's root.
    pub fn stripe_sim(&self) -> String {
        format!("http://{}/stripe", self.sim)
    }

    /// Subscribes `clinic` to `plan` the way its owner does: Checkout, paid at the simulator,
    /// whose webhooks put the plan in place. Needs [`TestApp::spawn_with_billing`].
    pub async fn subscribe(&self, clinic: &TestClinic, plan: tessera_core::PlanId) {
        let urls = tessera_core::billing::ReturnUrls {
            success: format!("{}/settings/billing?checkout=success", self.url),
            cancel: format!("{}/settings/billing?checkout=cancelled", self.url),
        };
        let chosen = tessera_core::billing::choose_plan(
            &self.services.db,
            self.services.stripe.as_ref().expect("Stripe is configured"),
            clinic.tenant,
            clinic.owner(),
            &clinic.email,
            plan,
            &urls,
        )
        .await
        .unwrap();
        let tessera_core::billing::Chosen::Checkout(url) = chosen else {
            panic!("the clinic already had a subscription");
        };
        let paid = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{url}/pay"))
            .send()
            .await
            .unwrap();
        assert!(paid.status().is_redirection(), "{}", paid.status());
        let limits = self.services.gateway.limits(clinic.tenant).await.unwrap();
        assert!(limits.paying && limits.plan == plan, "{limits:?}");
    }

    /// The clinic the signed-in `client` acts in.
    pub async fn clinic_of(&self, client: &reqwest::Client) -> TestClinic {
        let session = self.session(client).await;
        let tenant: TenantId = session["clinic"]["id"].as_str().unwrap().parse().unwrap();
        let owner: tessera_core::UserId = session["user_id"].as_str().unwrap().parse().unwrap();
        TestClinic {
            tenant,
            slug: session["clinic"]["slug"].as_str().unwrap().to_string(),
            owner,
            email: session["email"].as_str().unwrap().to_string(),
            api_key: None,
            agents: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Takes the clinic of the signed-in `admin` (its owner) past its month's allowance the
    /// way a clinic gets there: it subscribes to Starter, allows spending beyond the allowance
    /// with a cap, API calls use 1,100,000 tokens of the 1,000,000 included; then the admin
    /// sets calls to stop at the allowance. Needs [`TestApp::spawn_with_billing`].
    pub async fn use_up_allowance(&self, admin: &reqwest::Client) {
        let clinic = self.clinic_of(admin).await;
        self.subscribe(&clinic, tessera_core::PlanId::Starter).await;
        let key = self
            .json(admin, "create_api_key", &[("name", "Reports")])
            .await;
        let token = key["token"].as_str().unwrap().to_string();
        let cap = [("mode", "cap"), ("amount", "10")];
        self.json(admin, "set_spending_cap", &cap).await;
        let client = reqwest::Client::new();
        for i in 0..11 {
            let res = client
                .post(format!("{}/v1/chat/completions", self.url))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "model": "gpt-4o-mini", "max_tokens": 100_000,
                    "messages": [{ "role": "user", "content": format!("Report {i} [sim:words=100000]") }] }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        }
        self.json(admin, "set_spending_cap", &[("mode", "stop")])
            .await;
    }
}

/// The events of a server-sent event stream, read by the same parser the gateway uses.
pub fn sse(body: &str) -> Vec<SseEvent> {
    tessera_core::llm::wire::sse_events(body)
}

/// A `/v1/chat/completions` call with the API key `token`.
pub async fn chat(app: &TestApp, token: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The URL of the test's database as the app role (for a `server` process of the test's own).
pub fn app_url(pool: &PgPool) -> String {
    let options = pool.connect_options();
    let password = std::env::var("TESSERA_APP_DB_PASSWORD").unwrap_or_else(|_| "tessera".into());
    format!(
        "postgres://tessera_app:{password}@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// A `server` process a test started: killed when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on loopback (for a process of the test's own to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python interpreter for the scripts under `end2end/sdk` when it can import `modules`:
/// `TESSERA_PYTHON` (scripts/test.sh points it at a virtual environment with
/// end2end/sdk/requirements.txt installed), else `python3`. Without them the test fails under
/// CI and is skipped, saying so, elsewhere.
pub fn python(modules: &[&str]) -> Option<String> {
    let python = std::env::var("TESSERA_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return Some(python);
    }
    let names = modules.join(", ");
    assert!(
        std::env::var_os("CI").is_none(),
        "the Python packages {names} are required under CI: set TESSERA_PYTHON (scripts/test.sh does)"
    );
    eprintln!("SKIPPED: {python} cannot import {names}; run scripts/test.sh or set TESSERA_PYTHON");
    None
}

/// Runs `end2end/sdk/<script>` against the server (`TESSERA_BASE_URL`, `TESSERA_API_KEY`, and
/// `env`); returns the JSON it printed, failing with its output when it fails.
pub async fn run_script(
    python: String,
    script: &str,
    base_url: String,
    token: String,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let script = format!("{}/../end2end/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // On a blocking thread: the server under test runs on this test's runtime.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .env("TESSERA_BASE_URL", base_url)
            .env("TESSERA_API_KEY", &token)
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Waits (up to a minute) until a server started as a child process answers `/readyz`.
pub async fn wait_ready(base: &str) {
    let started = std::time::Instant::now();
    while reqwest::get(format!("{base}/readyz"))
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
