//! `provider-sim [ADDR]`: serves the provider simulator (default 127.0.0.1:3199) for
//! end-to-end tests and benchmarks.
//!
//! Environment: `SIM_LATENCY_MS` (wait before each chat, messages or embeddings answer) and
//! `SIM_CHUNK_MS` (wait between streamed events), whole milliseconds, default 0;
//! `SIM_STRIPE_WEBHOOK_URL` and `SIM_STRIPE_WEBHOOK_SECRET`: where the Stripe simulator
//! delivers its signed webhook events.

/// The milliseconds in environment variable `name` (0 when unset or empty).
fn millis(name: &str) -> u64 {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => 0,
        Ok(v) if v.trim().is_empty() => 0,
        Ok(v) => match v.trim().parse() {
            Ok(ms) => ms,
            Err(_) => {
                eprintln!(
                    "provider-sim: {name} must be a whole number of milliseconds (got {v:?})"
                );
                std::process::exit(2);
            }
        },
        Err(std::env::VarError::NotUnicode(v)) => {
            eprintln!("provider-sim: {name} must be a whole number of milliseconds (got {v:?})");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3199".into());
    let addr: std::net::SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: provider-sim [HOST:PORT]  (got {addr:?})");
            std::process::exit(2);
        }
    };
    let options = testkit::SimOptions {
        latency_ms: millis("SIM_LATENCY_MS"),
        chunk_ms: millis("SIM_CHUNK_MS"),
        stripe: testkit::stripe::StripeSimOptions {
            webhook_url: std::env::var("SIM_STRIPE_WEBHOOK_URL")
                .ok()
                .filter(|v| !v.is_empty()),
            webhook_secret: std::env::var("SIM_STRIPE_WEBHOOK_SECRET")
                .ok()
                .filter(|v| !v.is_empty()),
        },
    };
    match testkit::spawn_with(addr, options).await {
        Ok(bound) => println!("provider simulator listening on http://{bound}"),
        Err(e) => {
            eprintln!("provider-sim: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
