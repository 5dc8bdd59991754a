//! `gateway-bench`: what Tessera's gateway adds to a model call, in latency and in CPU, measured
//! against a direct call to the provider and a bare proxy in the same run. See `bench/README.md`.
//!
//! `gateway-bench run --sim URL --tessera URL [options]` sets up a clinic, starts the bare proxy
//! as a child process, loads each path and prints Markdown tables (results also as JSON with
//! `--out`). `gateway-bench proxy --upstream URL` is that bare proxy, and `gateway-bench sim` the
//! provider simulator served with `TCP_NODELAY`. `bench/gateway.sh` starts everything and runs
//! it.

mod cpu;
mod load;
mod proxy;
mod setup;
mod sim;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use cpu::{Group, Watched};
use load::{Check, Measured, Target};
use serde_json::{json, Value};
use tessera_core::Config;

const USAGE: &str = "\
usage: gateway-bench run --sim URL --tessera URL [options]
       gateway-bench proxy --upstream URL [--listen HOST:PORT]
       gateway-bench sim [HOST:PORT]

run options:
  --sim URL            the provider simulator, e.g. http://127.0.0.1:3199
  --tessera URL        the Tessera server, e.g. http://127.0.0.1:3000
  --server-pid PID     the server process (default: the one `server serve` running)
  --sim-pid PID        the simulator process (default: the one `provider-sim` or
                       `gateway-bench sim` running)
  --concurrency LIST   client loops per run, comma-separated (default 1,32)
  --requests LIST      measured requests per run, one per concurrency (default 2000,10000)
  --warmup N           requests before each measured run (default: a tenth, at least 50)
  --settle-ms MS       pause after each run before reading CPU, so deferred work
                       (the ledger writer) is counted (default 500)
  --pause-ms MS        pause after each run's line, before the next run, so that a
                       tool watching the output can act between runs (default 0)
  --model NAME         model asked for (default gpt-4o-mini)
  --api API            chat (POST /v1/chat/completions, the default) or responses
                       (POST /v1/responses, OpenAI's Responses API; LiteLLM left out)
  --proxy-workers N    runtime threads of the bare proxy (default: Tokio's, one per core);
                       give the server the same with TOKIO_WORKER_THREADS
  --out FILE           also write the results as JSON
  --litellm URL        also measure LiteLLM's proxy at URL (with --litellm-key, its master
                       key, and --litellm-pid, its process)

The database, Redis and master keys come from the same environment as the server's
(DATABASE_URL, DATABASE_ADMIN_URL, TESSERA_MASTER_KEYS).";

/// The OpenAI key stored for the clinic and sent on the direct and proxied paths.
const PROVIDER_KEY: &str = "sk-bench-key";
/// The model asked for on the compatible path (a name no provider claims).
const COMPATIBLE_MODEL: &str = "llama3.1:8b";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Proxy,
    Tessera,
    /// Through Tessera to a clinic's OpenAI-compatible endpoint (the guarded client, the
    /// clinic's own base URL).
    Compatible,
    /// Through LiteLLM's proxy (master key, budgets in Redis), when the run includes it.
    LiteLlm,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Direct,
        Path::Proxy,
        Path::Tessera,
        Path::Compatible,
        Path::LiteLlm,
    ];
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Proxy => "bare proxy",
            Path::Tessera => "tessera",
            Path::Compatible => "tessera compatible",
            Path::LiteLlm => "litellm",
        }
    }
    /// The CPU attributed to what this path puts between client and provider.
    fn groups(self) -> &'static [Group] {
        match self {
            Path::Direct => &[],
            Path::Proxy => &[Group::Proxy],
            Path::Tessera | Path::Compatible => &[Group::Server, Group::Redis, Group::Postgres],
            Path::LiteLlm => &[Group::LiteLlm, Group::Redis],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Sse,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Json => "JSON",
            Kind::Sse => "SSE",
        }
    }
}

/// Which of OpenAI's APIs the calls use: chat completions, or the Responses API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Chat,
    Responses,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
        }
    }
    /// The address of its calls, under a base URL.
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
        }
    }
    /// How a reply or a stream of it is checked and timed.
    fn check(self) -> Check {
        match self {
            Api::Chat => Check {
                reply: b"\"choices\"",
                done: b"data: [DONE]",
                error: b"\"error\"",
            },
            // A response object carries `"error":null`; a failed stream sends an `error` or a
            // `response.failed` event.
            Api::Responses => Check {
                reply: b"\"status\":\"completed\"",
                done: b"\"type\":\"response.completed\"",
                error: b"event: error",
            },
        }
    }
}

struct Options {
    sim: String,
    tessera: String,
    server_pid: Option<u32>,
    sim_pid: Option<u32>,
    runs: Vec<(usize, usize)>,
    warmup: Option<usize>,
    settle: Duration,
    /// After each run's line, before the next run.
    pause: Duration,
    model: String,
    out: Option<String>,
    /// LiteLLM's proxy: its URL, master key and pid.
    litellm: Option<(String, String, u32)>,
    /// Runtime threads of the bare proxy (`TOKIO_WORKER_THREADS`); Tokio's default if unset.
    proxy_workers: Option<usize>,
    api: Api,
}

impl Options {
    /// The paths this run measures, in order.
    fn paths(&self) -> Vec<Path> {
        // LiteLLM is measured on chat completions only.
        Path::ALL
            .into_iter()
            .filter(|p| *p != Path::LiteLlm || (self.litellm.is_some() && self.api == Api::Chat))
            .collect()
    }
}

fn list(v: &str, what: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what}: expected positive whole numbers, got {v:?}"))
        })
        .collect()
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        sim: String::new(),
        tessera: String::new(),
        server_pid: None,
        sim_pid: None,
        runs: Vec::new(),
        warmup: None,
        settle: Duration::from_millis(500),
        pause: Duration::ZERO,
        model: "gpt-4o-mini".into(),
        out: None,
        litellm: None,
        proxy_workers: None,
        api: Api::Chat,
    };
    let (mut litellm_url, mut litellm_key, mut litellm_pid) = (None, None, None);
    let mut concurrency = vec![1, 32];
    let mut requests = vec![2000, 10000];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let pid = |v: String| {
            v.parse::<u32>()
                .map_err(|_| format!("{a}: not a pid: {v:?}"))
        };
        match a.as_str() {
            "--sim" => o.sim = value()?.trim_end_matches('/').to_string(),
            "--tessera" => o.tessera = value()?.trim_end_matches('/').to_string(),
            "--server-pid" => o.server_pid = Some(pid(value()?)?),
            "--sim-pid" => o.sim_pid = Some(pid(value()?)?),
            "--concurrency" => concurrency = list(&value()?, a)?,
            "--requests" => requests = list(&value()?, a)?,
            "--warmup" => {
                o.warmup = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--warmup: expected a whole number".to_string())?,
                )
            }
            "--settle-ms" => {
                o.settle = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|_| "--settle-ms: expected a whole number".to_string())?,
                )
            }
            "--pause-ms" => {
                o.pause = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|_| "--pause-ms: expected a whole number".to_string())?,
                )
            }
            "--model" => o.model = value()?,
            "--proxy-workers" => {
                let v = value()?;
                o.proxy_workers =
                    Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{a}: expected a positive whole number, got {v:?}")
                    })?)
            }
            "--api" => {
                o.api = match value()?.as_str() {
                    "chat" => Api::Chat,
                    "responses" => Api::Responses,
                    other => return Err(format!("{a}: expected chat or responses, got {other:?}")),
                }
            }
            "--out" => o.out = Some(value()?),
            "--litellm" => litellm_url = Some(value()?.trim_end_matches('/').to_string()),
            "--litellm-key" => litellm_key = Some(value()?),
            "--litellm-pid" => litellm_pid = Some(pid(value()?)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.sim.is_empty() || o.tessera.is_empty() {
        return Err("--sim and --tessera are required".into());
    }
    match (litellm_url, litellm_key, litellm_pid) {
        (Some(url), Some(key), Some(pid)) => o.litellm = Some((url, key, pid)),
        (None, None, None) => {}
        _ => return Err("--litellm, --litellm-key and --litellm-pid go together".into()),
    }
    if requests.len() == 1 {
        requests = vec![requests[0]; concurrency.len()];
    }
    if requests.len() != concurrency.len() {
        return Err("--requests needs one value, or one per --concurrency value".into());
    }
    o.runs = concurrency.into_iter().zip(requests).collect();
    Ok(o)
}

/// The one process running one of `programs` (name, first argument), or an error asking for its
/// pid.
fn one_pid(
    given: Option<u32>,
    programs: &[(&str, Option<&str>)],
    flag: &str,
) -> Result<u32, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let found: Vec<u32> = programs
        .iter()
        .flat_map(|(program, arg)| cpu::find_program(program, *arg))
        .collect();
    match found[..] {
        [p] => Ok(p),
        [] => Err(format!("no {programs:?} process found; pass {flag}")),
        _ => Err(format!("several {programs:?} processes found; pass {flag}")),
    }
}

/// The bare proxy, as a child process killed when this is dropped.
struct ProxyProcess {
    child: std::process::Child,
    url: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ProxyProcess {
    fn start(upstream: &str, workers: Option<usize>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        // `BENCH_PROXY_WRAPPER`: a command the proxy runs under (bench/instructions.sh counts
        // its instructions with valgrind); split at spaces.
        let wrapper = std::env::var("BENCH_PROXY_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = std::process::Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => std::process::Command::new(exe),
        };
        command.args(["proxy", "--listen", "127.0.0.1:0", "--upstream", upstream]);
        match workers {
            Some(n) => command.env("TOKIO_WORKER_THREADS", n.to_string()),
            None => command.env_remove("TOKIO_WORKER_THREADS"),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the bare proxy: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string);
        match (read, url) {
            (Ok(_), Some(url)) => Ok(Self {
                child,
                url,
                _stdout: stdout,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the bare proxy did not start (said {line:?})"))
            }
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same request in either API: a system and a user message, at most 64 tokens back.
fn request_body(model: &str, kind: Kind, api: Api) -> Bytes {
    let messages = json!([
        { "role": "system", "content": "You are the front-desk assistant of a small clinic." },
        { "role": "user", "content": "Summarise the clinic's opening hours for a patient in one short sentence." },
    ]);
    let mut body = match api {
        Api::Chat => json!({ "model": model, "messages": messages, "max_tokens": 64 }),
        Api::Responses => json!({ "model": model, "input": messages, "max_output_tokens": 64 }),
    };
    if kind == Kind::Sse {
        body["stream"] = json!(true);
        if api == Api::Chat {
            body["stream_options"] = json!({ "include_usage": true });
        }
    }
    Bytes::from(body.to_string())
}

/// One measured run.
struct Row {
    path: Path,
    kind: Kind,
    concurrency: usize,
    warmup: usize,
    measured: Measured,
    /// CPU milliseconds per measured request, by process group.
    cpu_ms: HashMap<Group, f64>,
}

impl Row {
    fn gateway_cpu_ms(&self) -> f64 {
        self.path
            .groups()
            .iter()
            .fold(0.0, |sum, g| sum + self.cpu_ms[g])
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

struct Derived {
    kind: Kind,
    concurrency: usize,
    /// Tessera's path (to OpenAI, or to a compatible endpoint).
    path: Path,
    tessera_p50: i64,
    tessera_p99: i64,
    proxy_p50: i64,
    proxy_p99: i64,
    cpu_ratio: Option<f64>,
}

fn derive(rows: &[Row]) -> Vec<Derived> {
    let mut out = Vec::new();
    for kind in [Kind::Json, Kind::Sse] {
        let mut cs: Vec<usize> = rows
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.concurrency)
            .collect();
        cs.dedup();
        for c in cs {
            let get = |p: Path| {
                rows.iter()
                    .find(|r| r.kind == kind && r.concurrency == c && r.path == p)
            };
            let (Some(d), Some(x)) = (get(Path::Direct), get(Path::Proxy)) else {
                continue;
            };
            for path in [Path::Tessera, Path::Compatible, Path::LiteLlm] {
                let Some(t) = get(path) else { continue };
                let added = |r: &Row, p: f64| {
                    r.measured.percentile(p) as i64 - d.measured.percentile(p) as i64
                };
                let proxy_cpu = x.gateway_cpu_ms();
                out.push(Derived {
                    kind,
                    concurrency: c,
                    path,
                    tessera_p50: added(t, 50.0),
                    tessera_p99: added(t, 99.0),
                    proxy_p50: added(x, 50.0),
                    proxy_p99: added(x, 99.0),
                    cpu_ratio: (proxy_cpu > 0.0).then(|| t.gateway_cpu_ms() / proxy_cpu),
                });
            }
        }
    }
    out
}

fn print_tables(rows: &[Row], derived: &[Derived]) {
    println!("| path | body | concurrency | p50 (ms) | p99 (ms) | requests/s | CPU ms/request |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} |",
            r.path.name(),
            r.kind.name(),
            r.concurrency,
            ms(r.measured.percentile(50.0)),
            ms(r.measured.percentile(99.0)),
            r.measured.requests_per_second(),
            r.gateway_cpu_ms(),
        );
    }
    println!();
    println!("CPU ms per request, by process (the gateway's share is server + redis + postgres for tessera, proxy for the bare proxy):");
    println!();
    print!("| path | body | concurrency |");
    for g in Group::ALL {
        print!(" {} |", g.name());
    }
    println!();
    println!("|---|---|---:|{}", "---:|".repeat(Group::ALL.len()));
    for r in rows {
        print!(
            "| {} | {} | {} |",
            r.path.name(),
            r.kind.name(),
            r.concurrency
        );
        for g in Group::ALL {
            print!(" {:.3} |", r.cpu_ms[&g]);
        }
        println!();
    }
    println!();
    println!("| path | body | concurrency | added p50 (µs) | added p99 (µs) | bare proxy added p50 (µs) | bare proxy added p99 (µs) | CPU/request ÷ bare proxy |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for d in derived {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            d.path.name(),
            d.kind.name(),
            d.concurrency,
            signed(d.tessera_p50),
            signed(d.tessera_p99),
            signed(d.proxy_p50),
            signed(d.proxy_p99),
            d.cpu_ratio
                .map(|r| format!("{r:.1}×"))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    let litellm = versus_litellm(rows);
    if !litellm.is_empty() {
        println!();
        println!("| body | concurrency | requests per CPU-second, tessera ÷ litellm |");
        println!("|---|---:|---:|");
        for (kind, c, x) in litellm {
            println!("| {} | {c} | {x:.1}× |", kind.name());
        }
    }
}

/// Per body and concurrency: how many more requests Tessera serves per CPU-second than
/// LiteLLM (LiteLLM's CPU per request over Tessera's), when the run measured both.
fn versus_litellm(rows: &[Row]) -> Vec<(Kind, usize, f64)> {
    let mut out = Vec::new();
    for t in rows.iter().filter(|r| r.path == Path::Tessera) {
        let l = rows.iter().find(|r| {
            r.path == Path::LiteLlm && r.kind == t.kind && r.concurrency == t.concurrency
        });
        if let Some(l) = l {
            if t.gateway_cpu_ms() > 0.0 {
                out.push((
                    t.kind,
                    t.concurrency,
                    l.gateway_cpu_ms() / t.gateway_cpu_ms(),
                ));
            }
        }
    }
    out
}

fn to_json(rows: &[Row], derived: &[Derived], meta: Value) -> Value {
    let runs: Vec<Value> = rows
        .iter()
        .map(|r| {
            let cpu: serde_json::Map<String, Value> = Group::ALL
                .iter()
                .map(|g| (g.name().to_string(), json!(r.cpu_ms[g])))
                .collect();
            json!({
                "path": r.path.name(),
                "body": r.kind.name(),
                "concurrency": r.concurrency,
                "warmup": r.warmup,
                "requests": r.measured.latencies_us.len() + r.measured.errors,
                "errors": r.measured.errors,
                "first_error": r.measured.first_error,
                "p50_us": r.measured.percentile(50.0),
                "p90_us": r.measured.percentile(90.0),
                "p99_us": r.measured.percentile(99.0),
                "max_us": r.measured.latencies_us.last().copied().unwrap_or(0),
                "wall_s": r.measured.wall.as_secs_f64(),
                "requests_per_second": r.measured.requests_per_second(),
                "gateway_cpu_ms_per_request": r.gateway_cpu_ms(),
                "cpu_ms_per_request": cpu,
            })
        })
        .collect();
    let derived: Vec<Value> = derived
        .iter()
        .map(|d| {
            json!({
                "path": d.path.name(),
                "body": d.kind.name(),
                "concurrency": d.concurrency,
                "tessera_added_p50_us": d.tessera_p50,
                "tessera_added_p99_us": d.tessera_p99,
                "proxy_added_p50_us": d.proxy_p50,
                "proxy_added_p99_us": d.proxy_p99,
                "cpu_per_request_tessera_over_proxy": d.cpu_ratio,
            })
        })
        .collect();
    let litellm: Vec<Value> = versus_litellm(rows)
        .into_iter()
        .map(|(kind, c, x)| json!({ "body": kind.name(), "concurrency": c, "tessera_requests_per_cpu_second_over_litellm": x }))
        .collect();
    json!({ "meta": meta, "runs": runs, "derived": derived, "versus_litellm": litellm })
}

async fn run(o: Options) -> Result<bool, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let database = config
        .database_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let server_pid = one_pid(o.server_pid, &[("server", Some("serve"))], "--server-pid")?;
    let sim_pid = one_pid(
        o.sim_pid,
        &[("provider-sim", None), ("gateway-bench", Some("sim"))],
        "--sim-pid",
    )?;

    eprintln!(
        "setting up two clinics (an OpenAI key; an OpenAI-compatible endpoint) and their API keys"
    );
    let clinic = setup::clinic(&config, PROVIDER_KEY, None).await?;
    let compatible = setup::clinic(&config, PROVIDER_KEY, Some(&format!("{}/v1", o.sim))).await?;
    let proxy = ProxyProcess::start(&o.sim, o.proxy_workers)?;
    let proxy_pid = proxy.child.id();
    let watched = Watched {
        fixed: vec![
            (Group::Server, server_pid),
            (Group::Sim, sim_pid),
            (Group::Proxy, proxy_pid),
            (Group::Client, std::process::id()),
        ]
        .into_iter()
        .chain(o.litellm.iter().flat_map(|(_, _, pid)| {
            // LiteLLM runs as a process with workers under it.
            std::iter::once(*pid)
                .chain(cpu::children(*pid))
                .map(|p| (Group::LiteLlm, p))
        }))
        .collect(),
        database,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let target = |p: Path| match p {
        Path::Direct => Target {
            url: format!("{}{}", o.sim, o.api.path()),
            authorization: format!("Bearer {PROVIDER_KEY}"),
        },
        Path::Proxy => Target {
            url: format!("{}{}", proxy.url, o.api.path()),
            authorization: format!("Bearer {PROVIDER_KEY}"),
        },
        Path::Tessera => Target {
            url: format!("{}{}", o.tessera, o.api.path()),
            authorization: format!("Bearer {}", clinic.token),
        },
        Path::Compatible => Target {
            url: format!("{}{}", o.tessera, o.api.path()),
            authorization: format!("Bearer {}", compatible.token),
        },
        Path::LiteLlm => {
            let (url, key, _) = o.litellm.clone().unwrap_or_default();
            Target {
                url: format!("{url}{}", o.api.path()),
                authorization: format!("Bearer {key}"),
            }
        }
    };
    // A model name no provider claims goes to the clinic's OpenAI-compatible endpoint.
    let model_for = |p: Path| {
        if p == Path::Compatible {
            COMPATIBLE_MODEL.to_string()
        } else {
            o.model.clone()
        }
    };

    // One call on each path first, so a broken set-up fails at once and clearly.
    let mut tessera_ok = 0usize;
    let mut compatible_ok = 0usize;
    for p in o.paths() {
        for kind in [Kind::Json, Kind::Sse] {
            let m = load::run(
                &client,
                &target(p),
                request_body(&model_for(p), kind, o.api),
                kind == Kind::Sse,
                o.api.check(),
                1,
                1,
            )
            .await;
            if let Some(e) = m.first_error {
                return Err(format!("{} {} does not work: {e}", p.name(), kind.name()));
            }
            if p == Path::Tessera {
                tessera_ok += 1;
            } else if p == Path::Compatible {
                compatible_ok += 1;
            }
        }
    }

    // What the watched processes use with no load at all (pollers, other work on the shared
    // PostgreSQL and Redis): the floor under every CPU figure below.
    let idle_window = Duration::from_secs(3);
    let before = watched.sample();
    tokio::time::sleep(idle_window).await;
    let idle: HashMap<Group, f64> = cpu::used(&before, &watched.sample())
        .into_iter()
        .map(|(g, t)| (g, t as f64 / 1e6 / idle_window.as_secs_f64()))
        .collect();

    let mut rows = Vec::new();
    for kind in [Kind::Json, Kind::Sse] {
        let stream = kind == Kind::Sse;
        for &(c, n) in &o.runs {
            for p in o.paths() {
                let t = target(p);
                let body = request_body(&model_for(p), kind, o.api);
                let warmup = o.warmup.unwrap_or((n / 10).max(50));
                let w =
                    load::run(&client, &t, body.clone(), stream, o.api.check(), c, warmup).await;
                tokio::time::sleep(o.settle).await;
                let before = watched.sample();
                let m = load::run(&client, &t, body.clone(), stream, o.api.check(), c, n).await;
                tokio::time::sleep(o.settle).await;
                let after = watched.sample();
                let used = cpu::used(&before, &after);
                let per_request = n.max(1) as f64;
                let cpu_ms = used
                    .into_iter()
                    .map(|(g, t)| (g, t as f64 / 1e6 / per_request))
                    .collect();
                if p == Path::Tessera {
                    tessera_ok += w.latencies_us.len() + m.latencies_us.len();
                } else if p == Path::Compatible {
                    compatible_ok += w.latencies_us.len() + m.latencies_us.len();
                }
                let row = Row {
                    path: p,
                    kind,
                    concurrency: c,
                    warmup,
                    measured: m,
                    cpu_ms,
                };
                eprintln!(
                    "{:<10} {:<4} c={:<3} n={:<6} p50 {} ms  p99 {} ms  {:>6.0} req/s  gateway CPU {:.3} ms/req{}",
                    p.name(),
                    kind.name(),
                    c,
                    n,
                    ms(row.measured.percentile(50.0)),
                    ms(row.measured.percentile(99.0)),
                    row.measured.requests_per_second(),
                    row.gateway_cpu_ms(),
                    match (&row.measured.first_error, w.first_error.as_ref()) {
                        (Some(e), _) | (None, Some(e)) =>
                            format!("  {} errors, first: {e}", row.measured.errors + w.errors),
                        _ => String::new(),
                    }
                );
                rows.push(row);
                tokio::time::sleep(o.pause).await;
            }
        }
    }
    drop(proxy);

    // Every successful call through Tessera should reach the Postgres ledger.
    let waited = Instant::now();
    let count = || async {
        Ok::<i64, String>(
            setup::ledger_rows(&clinic.db, clinic.tenant).await?
                + setup::ledger_rows(&compatible.db, compatible.tenant).await?,
        )
    };
    let tessera_ok = tessera_ok + compatible_ok;
    let mut recorded = count().await?;
    while recorded < tessera_ok as i64 && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        recorded = count().await?;
    }
    let derived = derive(&rows);
    print_tables(&rows, &derived);
    println!();
    println!(
        "Ledger: {recorded} of {tessera_ok} successful calls through Tessera recorded in Postgres."
    );
    println!(
        "Idle, before the runs (CPU ms per second): {}.",
        Group::ALL
            .iter()
            .map(|g| format!("{} {:.1}", g.name(), idle[g]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let errors: usize = rows.iter().map(|r| r.measured.errors).sum();
    if let Some(out) = &o.out {
        let meta = json!({
            "cpu_time": "the processes' CPU-time clocks, in nanoseconds",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "model": o.model,
            "api": o.api.name(),
            "settle_ms": o.settle.as_millis() as u64,
            "proxy_workers": o.proxy_workers,
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "ledger_expected": tessera_ok,
            "ledger_recorded": recorded,
            "idle_cpu_ms_per_second": Group::ALL
                .iter()
                .map(|g| (g.name().to_string(), json!(idle[g])))
                .collect::<serde_json::Map<String, Value>>(),
            "errors": errors,
        });
        let text = serde_json::to_string_pretty(&to_json(&rows, &derived, meta))
            .map_err(|e| e.to_string())?;
        std::fs::write(out, text + "\n").map_err(|e| format!("writing {out}: {e}"))?;
        eprintln!("results written to {out}");
    }
    Ok(errors == 0 && recorded == tessera_ok as i64)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("proxy") => proxy::main(&args[1..]).await,
        Some("sim") => sim::main(&args[1..]).await,
        Some("run") => match parse_options(&args[1..]) {
            Err(e) if e.is_empty() => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway-bench: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
            Ok(o) => match run(o).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("gateway-bench: some calls failed or were not recorded (see above)");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("gateway-bench: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
