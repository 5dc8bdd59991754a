//! `gateway-bench sim [HOST:PORT]`: the provider simulator of `testkit` (the same routes and
//! wire formats as `provider-sim`, with `SIM_LATENCY_MS` and `SIM_CHUNK_MS`), served with
//! `TCP_NODELAY` on every connection as a real provider's front end is. Without it a streamed
//! reply over a kept-alive connection stalls about 40 ms (Nagle's algorithm against the client's
//! delayed acknowledgement), which would hide everything this benchmark measures.

use std::process::ExitCode;

use axum::serve::ListenerExt;

fn millis(name: &str) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(0),
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number of milliseconds (got {v:?})")),
    }
}

pub async fn main(args: &[String]) -> ExitCode {
    let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:0");
    let options = match (millis("SIM_LATENCY_MS"), millis("SIM_CHUNK_MS")) {
        (Ok(latency_ms), Ok(chunk_ms)) => testkit::SimOptions {
            latency_ms,
            chunk_ms,
            ..Default::default()
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sim: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        // The same line as provider-sim's, so a script reads either.
        Ok(bound) => println!("provider simulator listening on http://{bound}"),
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::FAILURE;
        }
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, testkit::router_with(options)).await {
        eprintln!("sim: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
