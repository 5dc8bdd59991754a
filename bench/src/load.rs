//! The load: `concurrency` client loops over one shared HTTP client, each sending the next
//! request as soon as its previous one is read to the end, until `n` requests have been sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

/// Where requests go and how they authenticate.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub authorization: String,
}

/// What a run measured.
pub struct Measured {
    /// Each successful request's latency, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub wall: Duration,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Measured {
    /// The nearest-rank percentile `p` (0–100), in microseconds.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let n = self.latencies_us.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1]
    }

    pub fn requests_per_second(&self) -> f64 {
        let done = self.latencies_us.len() + self.errors;
        done as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How an API's replies are checked: what a whole reply holds, what ends its stream, and
/// what marks an error event in it.
#[derive(Clone, Copy)]
pub struct Check {
    pub reply: &'static [u8],
    pub done: &'static [u8],
    pub error: &'static [u8],
}

/// One request. Its latency runs from sending until the whole body is read, or for a stream
/// until its last event (`[DONE]`, `response.completed`); the rest of the stream is still read
/// so the connection is reused.
async fn one(
    client: &reqwest::Client,
    target: &Target,
    body: Bytes,
    stream: bool,
    check: Check,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut res = client
        .post(&target.url)
        .header(AUTHORIZATION, &target.authorization)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut done_at = None;
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        let from = buf.len().saturating_sub(check.done.len());
        buf.extend_from_slice(&chunk);
        if stream && done_at.is_none() && contains(&buf[from..], check.done) {
            done_at = Some(started.elapsed());
        }
    }
    let read_all = started.elapsed();
    let shown = || String::from_utf8_lossy(&buf[..buf.len().min(400)]).into_owned();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", shown()));
    }
    if stream {
        if contains(&buf, check.error) {
            return Err(format!("error event in the stream: {}", shown()));
        }
        done_at.ok_or_else(|| {
            let done = String::from_utf8_lossy(check.done);
            format!("stream ended without {done}: {}", shown())
        })
    } else if contains(&buf, check.reply) {
        Ok(read_all)
    } else {
        let reply = String::from_utf8_lossy(check.reply);
        Err(format!("no {reply} in the reply: {}", shown()))
    }
}

/// Sends `n` requests with `concurrency` loops.
pub async fn run(
    client: &reqwest::Client,
    target: &Target,
    body: Bytes,
    stream: bool,
    check: Check,
    concurrency: usize,
    n: usize,
) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (client, target, body, next) =
            (client.clone(), target.clone(), body.clone(), next.clone());
        loops.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n / concurrency.max(1) + 1);
            let mut errors = 0;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match one(&client, &target, body.clone(), stream, check).await {
                    Ok(d) => latencies.push(d.as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut out = Measured {
        latencies_us: Vec::with_capacity(n),
        wall: Duration::ZERO,
        errors: 0,
        first_error: None,
    };
    for l in loops {
        match l.await {
            Ok((latencies, errors, first_error)) => {
                out.latencies_us.extend(latencies);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert(format!("client loop failed: {e}"));
            }
        }
    }
    out.wall = started.elapsed();
    out.latencies_us.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(values: &[u64]) -> Measured {
        Measured {
            latencies_us: values.to_vec(),
            wall: Duration::from_secs(1),
            errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let m = measured(&(1..=100).collect::<Vec<_>>());
        assert_eq!(m.percentile(50.0), 50);
        assert_eq!(m.percentile(99.0), 99);
        assert_eq!(m.percentile(100.0), 100);
        let m = measured(&[7]);
        assert_eq!(m.percentile(50.0), 7);
        assert_eq!(m.percentile(99.0), 7);
        assert_eq!(measured(&[]).percentile(99.0), 0);
    }
}
