//! The `hookgate` command line: parse, load configuration, initialise
//! logging, call into the library. Nothing else lives here.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hookgate::config::{self, LogFormat, SecretSource};
use hookgate::signature::{self, Scheme, Verifier};

/// mimalloc: per request, hyper, http and hookgate allocate and free a few
/// dozen small blocks; mimalloc's thread-local free lists do it in fewer
/// instructions than glibc's malloc (`bench/micro-results.md`). Built as
/// mimalloc v2 without transparent huge pages: v3, and huge pages, held
/// 3-17 MB more than glibc in queue mode; v2 holds about what glibc does.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Webhook sidecar: verify, deduplicate, queue and forward webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Run {
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration: prints OK, or every error (exit 1).
    CheckConfig {
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Sign a body read from stdin; prints one `Header-Name: value` line per header to send
    /// (mailgun, which signs inside the body, prints the body to send instead).
    Sign {
        #[arg(long)]
        scheme: String,
        #[command(flatten)]
        secret: SecretArgs,
        /// Event/message id, for schemes that sign one (a new one is made when omitted).
        #[arg(long)]
        id: Option<String>,
        /// Unix timestamp to sign (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        /// The URL the provider signs, for square, hubspot and twilio (twilio: as called,
        /// query included).
        #[arg(long, default_value = "")]
        signed_url: String,
    },
    /// Probe a running hookgate's readiness (for Docker HEALTHCHECK): exit 0 when ready.
    Healthcheck {
        /// The readiness URL of the admin listener.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9090/readyz",
            env = "HOOKGATE_HEALTHCHECK_URL"
        )]
        url: String,
    },
    /// Verify a body read from stdin against headers; exit 0 when valid, 1 with the reason otherwise.
    Verify {
        #[arg(long)]
        scheme: String,
        #[command(flatten)]
        secret: SecretArgs,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Accepted clock skew for timestamped schemes.
        #[arg(long, default_value = "5m")]
        tolerance: humantime::Duration,
        /// The route's `signed_url`, for square, hubspot and twilio.
        #[arg(long, default_value = "")]
        signed_url: String,
        /// The request's query string (without `?`), which twilio signs after the URL.
        #[arg(long)]
        query: Option<String>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct SecretArgs {
    /// The secret itself (visible in `ps` and shell history: prefer --secret-env).
    #[arg(long)]
    secret: Option<String>,
    /// Name of an environment variable holding the secret.
    #[arg(long)]
    secret_env: Option<String>,
    /// A file holding the secret (one trailing newline is ignored).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

impl SecretArgs {
    fn resolve(&self) -> anyhow::Result<config::Secret> {
        let src = SecretSource {
            value: self.secret.clone(),
            env: self.secret_env.clone(),
            file: self.secret_file.clone(),
            ..SecretSource::default()
        };
        src.resolve().map_err(|e| anyhow::anyhow!("secret: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => return check_config(config),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Sign {
            scheme,
            secret,
            id,
            timestamp,
            signed_url,
        } => sign(&scheme, &secret, id, timestamp, &signed_url),
        Command::Verify {
            scheme,
            secret,
            headers,
            tolerance,
            signed_url,
            query,
        } => {
            let request = VerifyRequest {
                raw_headers: &headers,
                tolerance: tolerance.into(),
                signed_url: &signed_url,
                query: query.as_deref(),
            };
            return verify(&scheme, &secret, &request);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config::load(path.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&config.log);
    // One CPU: a single-threaded runtime, with no idle workers to wake or
    // steal from. More: one worker per CPU.
    let workers = config.server.runtime_workers();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    tracing::info!(workers, "runtime started");
    rt.block_on(async move {
        let listeners = hookgate::Listeners::bind(&config)
            .await
            .context("cannot bind the listeners")?;
        let shutdown = hookgate::shutdown::Shutdown::new();
        shutdown.trigger_on_signals();
        hookgate::run(config, listeners, shutdown, hookgate::RunOptions::default()).await?;
        Ok(())
    })
}

fn healthcheck(url: &str) -> anyhow::Result<()> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    let uri: http::Uri = url.parse().context("--url")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Empty<bytes::Bytes>>();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
            .await
            .context("readiness probe timed out")?
            .context("readiness probe failed")?;
        if resp.status().is_success() {
            Ok(())
        } else {
            bail!("not ready: {}", resp.status())
        }
    })
}

fn init_logging(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    // Colours only on a terminal: log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    match config::load(path.as_deref()) {
        Ok(_) => {
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for m in e.messages() {
                eprintln!("error: {m}");
            }
            ExitCode::FAILURE
        }
    }
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the body from stdin")?;
    Ok(body)
}

fn parse_scheme(name: &str) -> anyhow::Result<Scheme> {
    name.parse()
        .map(Scheme::Preset)
        .map_err(|e| anyhow::anyhow!("--scheme: {e}"))
}

fn sign(
    scheme: &str,
    secret: &SecretArgs,
    id: Option<String>,
    ts: Option<i64>,
    signed_url: &str,
) -> anyhow::Result<()> {
    let scheme = parse_scheme(scheme)?;
    let secret = secret.resolve()?;
    let body = read_stdin()?;
    let ts = match ts {
        Some(t) => t,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64,
    };
    let id = id.unwrap_or_else(|| format!("msg_{}", uuid::Uuid::now_v7().simple()));
    let signed =
        signature::sign_request(&scheme, secret.expose(), &body, Some(&id), ts, signed_url)?;
    let mut out = std::io::stdout().lock();
    for (name, value) in signed.headers {
        writeln!(out, "{}: {}", name, value.to_str().unwrap_or_default())?;
    }
    if let Some(body) = signed.body {
        out.write_all(&body)?;
        writeln!(out)?;
    }
    Ok(())
}

/// What `verify` checks besides the body read from stdin.
struct VerifyRequest<'a> {
    raw_headers: &'a [String],
    tolerance: Duration,
    signed_url: &'a str,
    query: Option<&'a str>,
}

fn verify(scheme: &str, secret: &SecretArgs, request: &VerifyRequest<'_>) -> ExitCode {
    let outcome = (|| -> anyhow::Result<Result<(), signature::VerifyError>> {
        let scheme = parse_scheme(scheme)?;
        let secret = secret.resolve()?;
        let mut headers = http::HeaderMap::new();
        for h in request.raw_headers {
            let Some((name, value)) = h.split_once(':') else {
                bail!("-H {h:?}: expected `Name: value`");
            };
            let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("-H: invalid header name {:?}", name.trim()))?;
            let value = http::HeaderValue::from_str(value.trim())
                .with_context(|| format!("-H: invalid value for {name}"))?;
            headers.append(name, value);
        }
        let body = read_stdin()?;
        let verifier = Verifier::new(scheme, &[secret.expose()], request.tolerance)?
            .with_signed_url(request.signed_url);
        Ok(verifier
            .verify_request(&headers, &body, SystemTime::now(), request.query)
            .map(|_| ()))
    })();
    match outcome {
        Ok(Ok(())) => {
            println!("valid");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            println!("invalid: {} ({e})", e.code());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
