//! `provider-sim [ADDR]`: serves the provider simulator (default 127.0.0.1:3199) for
//! end-to-end tests and benchmarks.

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
    match testkit::spawn(addr).await {
        Ok(bound) => println!("provider simulator listening on http://{bound}"),
        Err(e) => {
            eprintln!("provider-sim: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
