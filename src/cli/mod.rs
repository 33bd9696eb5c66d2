//! The client commands (`docs/cli.md`: `apps`, `tokens`, `logs`, `drains`, `alerts`,
//! `metrics`, `shuttle`): they talk to a running `logplex serve` over its HTTP API.
//!
//! [`Command`] is flattened into the binary's own subcommands; [`main`] runs one of them on a
//! current-thread runtime and turns its outcome into the exit code (0 ok, 1 failed request,
//! 2 bad usage), printing failures as one `logplex: ...` sentence on stderr.

mod browser;
mod client;
mod commands;
mod logs;
mod metrics;
mod shuttle;

pub use client::CliError;

use clap::{ArgGroup, Args, Subcommand};
use client::{normalize_base, Client};
use std::path::PathBuf;
use std::process::ExitCode;

/// The API address every client command talks to.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The logplex API [default: `api.listen` of ./config.toml, else http://127.0.0.1:8001].
    #[arg(long, env = "LOGPLEX_URL", value_name = "URL")]
    pub url: Option<String>,
}

/// `-a APP` of the app-scoped commands.
#[derive(Args, Debug, Clone)]
pub struct AppArg {
    /// The app (channel).
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: String,
}

/// The client commands. The variants with many options hold them boxed so that the binary's
/// own command enum, which embeds this one next to `serve`, stays small.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List apps (channels).
    Apps {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create an app with the tokens `app` and `heroku`.
    #[command(name = "apps:create")]
    AppsCreate {
        /// Name: a lowercase letter, then lowercase letters, digits and dashes.
        app: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Destroy an app with its tokens, drains, alerts and history.
    #[command(name = "apps:destroy")]
    AppsDestroy {
        app: String,
        /// The app's name again, to confirm.
        #[arg(long, value_name = "APP")]
        confirm: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List an app's tokens as `NAME TOKEN`.
    Tokens {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a token; lines sent with it show as `NAME[PROCID]`.
    #[command(name = "tokens:create")]
    TokensCreate {
        name: String,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print an app's recent lines, and with -t keep following them.
    Logs(Box<logs::LogsArgs>),
    /// List an app's drains as a table: URL (password as `***`), token, state
    /// (connected, connecting, failing), lines sent, dropped and waiting, last error.
    Drains {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Forward every line of an app to a syslog or HTTP(S) URL.
    #[command(name = "drains:add")]
    DrainsAdd {
        /// `syslog://`, `syslog+tls://`, `syslog+udp://`, `http://` or `https://`.
        #[arg(value_name = "URL")]
        drain_url: String,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a drain, named by its URL or its token (`d.…`).
    #[command(name = "drains:remove")]
    DrainsRemove {
        #[arg(value_name = "URL_OR_TOKEN")]
        drain: String,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List alert rules, of one app or all.
    Alerts {
        /// Only this app's rules.
        #[arg(short = 'a', long = "app", value_name = "APP")]
        app: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add an alert rule to an app.
    #[command(name = "alerts:add")]
    AlertsAdd(Box<AlertAddArgs>),
    /// Remove an alert rule from an app.
    #[command(name = "alerts:remove")]
    AlertsRemove {
        name: String,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send lines of stdin, or of a command's output, to an app (the dyno side).
    Shuttle(Box<shuttle::ShuttleArgs>),
    /// Show an app's metrics from its logs: requests/min, 5xx %, service time, H-codes and
    /// l2met names, with a sparkline per minute.
    Metrics {
        #[command(flatten)]
        app: AppArg,
        /// How far back, up to 24h (`30m`, `1h`, `24h`).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        since: String,
        /// Print the API's JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn metrics from the logs on for an app (they start empty).
    #[command(name = "metrics:enable")]
    MetricsEnable {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Turn metrics from the logs off for an app (its roll-ups are forgotten).
    #[command(name = "metrics:disable")]
    MetricsDisable {
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `alerts:add`: the rule of `docs/alerts.md`, minus `app` (given by -a).
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("condition").required(true).args(["where_", "regex", "metric"])))]
pub struct AlertAddArgs {
    pub name: String,
    #[command(flatten)]
    pub app: AppArg,
    /// A logfmt predicate on the message, e.g. `status>=500`.
    #[arg(long = "where", value_name = "PRED")]
    pub where_: Option<String>,
    /// A regular expression on the message.
    #[arg(long, value_name = "RE")]
    pub regex: Option<String>,
    /// Instead of lines: a metric from the logs of an app with metrics on, e.g.
    /// `router.p95_service` or `router.5xx_ratio` (see docs/metrics.md).
    #[arg(long, value_name = "NAME", requires = "above")]
    pub metric: Option<String>,
    /// The limit of --metric: a number (`0.05`), or a duration for a time (`500ms`).
    #[arg(long, value_name = "LIMIT", requires = "metric")]
    pub above: Option<String>,
    /// Matching lines within the window that fire a line rule (default 1).
    #[arg(long, value_name = "N")]
    pub threshold: Option<u64>,
    /// The window the threshold counts in (`30s`, `1m`, `1h`).
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub window: String,
    /// Quiet time after firing (`5m`).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub cooldown: String,
    /// Only lines of this source (exact).
    #[arg(short = 's', long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only lines of this dyno (`web` matches `web.1`, `web.2`, ...).
    #[arg(short = 'd', long, value_name = "DYNO")]
    pub dyno: Option<String>,
    /// POST a JSON notice here on firing and resolving.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs one client command to completion and returns the process exit code
/// (0 ok, 1 failed request, 2 bad usage).
pub fn main(cmd: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logplex: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cmd));
    // A read of stdin abandoned on Ctrl-C sits on a blocking thread; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logplex: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cmd: Command) -> Result<ExitCode, CliError> {
    let ok = |r: Result<(), CliError>| r.map(|()| ExitCode::SUCCESS);
    match cmd {
        Command::Apps { server } => ok(commands::apps(&connect(&server)?).await),
        Command::AppsCreate { app, server } => {
            ok(commands::apps_create(&connect(&server)?, &app).await)
        }
        Command::AppsDestroy {
            app,
            confirm,
            server,
        } => {
            if confirm.as_deref() != Some(app.as_str()) {
                return Err(CliError::Usage(format!(
                    "destroying {app:?} deletes its tokens, drains and logs; confirm with --confirm {app}"
                )));
            }
            ok(commands::apps_destroy(&connect(&server)?, &app).await)
        }
        Command::Tokens { app, server } => ok(commands::tokens(&connect(&server)?, &app.app).await),
        Command::TokensCreate { name, app, server } => {
            ok(commands::tokens_create(&connect(&server)?, &app.app, &name).await)
        }
        Command::Logs(args) => {
            let client = connect(&args.server)?;
            logs::run(&client, &args).await
        }
        Command::Drains { app, server } => ok(commands::drains(&connect(&server)?, &app.app).await),
        Command::DrainsAdd {
            drain_url,
            app,
            server,
        } => ok(commands::drains_add(&connect(&server)?, &app.app, &drain_url).await),
        Command::DrainsRemove { drain, app, server } => {
            ok(commands::drains_remove(&connect(&server)?, &app.app, &drain).await)
        }
        Command::Alerts { app, server } => {
            ok(commands::alerts(&connect(&server)?, app.as_deref()).await)
        }
        Command::AlertsAdd(args) => {
            commands::check_alert_args(&args)?;
            ok(commands::alerts_add(&connect(&args.server)?, &args).await)
        }
        Command::AlertsRemove { name, app, server } => {
            ok(commands::alerts_remove(&connect(&server)?, &app.app, &name).await)
        }
        Command::Shuttle(args) => shuttle::run(*args).await,
        Command::Metrics {
            app,
            since,
            json,
            server,
        } => ok(metrics::show(&connect(&server)?, &app.app, &since, json).await),
        Command::MetricsEnable { app, server } => {
            ok(metrics::set(&connect(&server)?, &app.app, true).await)
        }
        Command::MetricsDisable { app, server } => {
            ok(metrics::set(&connect(&server)?, &app.app, false).await)
        }
    }
}

/// A client for `--url` (`LOGPLEX_URL`), else for the API of the default config, with the
/// admin key.
pub(crate) fn connect(server: &ServerArgs) -> Result<Client, CliError> {
    let config = default_config();
    let base = match &server.url {
        Some(url) => normalize_base("--url", url)?,
        None => {
            let listen = config.api.listen.addr().ok_or_else(|| {
                CliError::Usage("the API is off in the config; give --url".into())
            })?;
            format!("http://{}", reachable(listen))
        }
    };
    Ok(Client::new(base, admin_key(&config)?))
}

/// The address to connect to for a listen address of the config: itself, or loopback for a
/// wildcard (`0.0.0.0`, `[::]`).
pub(crate) fn reachable(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(loopback);
    }
    addr
}

/// The admin key: `LOGPLEX_AUTH_KEY`, else `api.auth_key` of the default config, else the
/// `admin.key` file `logplex serve` writes into the default config's data directory.
fn admin_key(config: &logplex::config::Config) -> Result<String, CliError> {
    if let Ok(k) = std::env::var("LOGPLEX_AUTH_KEY") {
        let k = k.trim();
        if !k.is_empty() {
            return Ok(k.to_string());
        }
    }
    if !config.api.auth_key.trim().is_empty() {
        return Ok(config.api.auth_key.trim().to_string());
    }
    let path = config.store.data_dir().join("admin.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_string()),
        _ => Err(CliError::NoAdminKey {
            path: path.display().to_string(),
        }),
    }
}

/// The config `logplex serve` would use when started here without `--config`. A config
/// that does not validate still tells where the data directory is, so it is read without
/// validation before falling back to the built-in defaults.
pub(crate) fn default_config() -> logplex::config::Config {
    use logplex::config::Config;
    Config::load(None)
        .ok()
        .or_else(|| {
            let text = std::fs::read_to_string(PathBuf::from("config.toml")).ok()?;
            Config::from_toml(&text).ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The binary's shape: these commands flattened into the top level.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let got = |listen: &str| reachable(listen.parse().unwrap()).to_string();
        assert_eq!(got("0.0.0.0:8001"), "127.0.0.1:8001");
        assert_eq!(got("[::]:8001"), "[::1]:8001");
        assert_eq!(got("10.0.0.5:9"), "10.0.0.5:9");
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn colon_names_and_trailing_command_parse() {
        let cli =
            Cli::try_parse_from(["logplex", "drains:add", "syslog://h:1", "-a", "demo"]).unwrap();
        assert!(
            matches!(cli.command, Command::DrainsAdd { ref drain_url, .. } if drain_url == "syslog://h:1")
        );
        let cli = Cli::try_parse_from([
            "logplex",
            "shuttle",
            "-a",
            "demo",
            "--no-drop",
            "--",
            "ls",
            "-l",
        ])
        .unwrap();
        let Command::Shuttle(s) = cli.command else {
            panic!("shuttle")
        };
        assert_eq!(s.command, ["ls", "-l"]);
        assert!(s.no_drop);
        let e = Cli::try_parse_from([
            "logplex",
            "alerts:add",
            "x",
            "-a",
            "demo",
            "--where",
            "a=1",
            "--regex",
            "b",
        ]);
        assert!(e.is_err());
    }
}
