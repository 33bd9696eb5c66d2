//! `logplex shuttle`: the dyno side, after Heroku's log-shuttle. Lines of stdin, or of a
//! command's stdout and stderr, become RFC 5424 messages posted in `application/logplex-1`
//! batches to the HTTP input, with the channel's token as the Basic-auth password.
//!
//! One task runs everything: it reads lines into the current [`Batcher`] batch, closes a
//! batch when it is full or `--wait` old, queues it in the bounded [`Outbox`] and keeps
//! one request in flight. A full outbox either drops its oldest batch and says so in-band
//! with an L12 line (`--drop`, the default) or stops reading until there is room
//! (`--no-drop`), which makes the writer block on its pipe. A batch that cannot be
//! delivered (tries used up, or refused with a 4xx other than 429) is lost: it is told on
//! stderr and, like log-shuttle, in-band with an L13 line in front of the next batch sent.

use super::client::{http_client, normalize_base, CliError, HttpClient};
use super::{AppArg, ServerArgs};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use clap::Args;
use futures_util::stream::{self, Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use logplex::retry::{self, Failure};
use logplex_proto::render;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::rc::Rc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;

/// Frames go out at this priority: local7.info, as log-shuttle sends them.
const PRI_LINE: u8 = 190;
/// The L12 and L13 notices: local5.warning, as log-shuttle sends them.
const PRI_NOTICE: u8 = 172;
/// A batch is closed before its body passes this size, far below the input's default
/// `ingest.http.max_body` (4 MiB), whatever `--batch-size` and `--max-line-length` say.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long one POST to the input may take.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTTLE_USER_AGENT: &str = concat!("logplex-shuttle/", env!("CARGO_PKG_VERSION"));

#[derive(Args, Debug)]
pub struct ShuttleArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// The token name the lines are sent with; created on the app when missing.
    #[arg(short = 's', long, default_value = "app", value_name = "SOURCE")]
    pub source: String,
    /// The PROCID of every line, shown as `SOURCE[DYNO]`.
    #[arg(short = 'd', long, default_value = "web.1", value_name = "DYNO")]
    pub dyno: String,
    /// Send with this token (`t.…`) instead of looking it up with the admin key.
    #[arg(
        long,
        env = "LOGPLEX_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The HTTP input (default: http:// + ingest.http.listen of the default config).
    #[arg(long, env = "LOGPLEX_INGEST_URL", value_name = "URL")]
    pub ingest_url: Option<String>,
    /// Lines per batch.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub batch_size: usize,
    /// Send a partial batch once its first line is this old.
    #[arg(long, default_value = "250ms", value_name = "DURATION")]
    pub wait: String,
    /// Longer lines are split into several messages, at UTF-8 boundaries.
    #[arg(long, default_value_t = 10_000, value_name = "BYTES")]
    pub max_line_length: usize,
    /// Batches waiting behind the one in flight.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub back_buff: usize,
    /// When the queue is full, drop the oldest lines and report them with an L12 line (default).
    #[arg(long = "drop", overrides_with = "no_drop")]
    pub drop_oldest: bool,
    /// When the queue is full, stop reading until there is room.
    #[arg(long = "no-drop", overrides_with = "drop_oldest")]
    pub no_drop: bool,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Run this command and send its stdout and stderr (else read stdin).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: ShuttleArgs) -> Result<ExitCode, CliError> {
    let settings = Settings::from_args(&args)?;
    let ingest = ingest_url(args.ingest_url.as_deref())?;
    let token = match &args.token {
        Some(t) => t.trim().to_string(),
        None => lookup_token(&args).await?,
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"));
    let auth = HeaderValue::from_str(&format!("Basic {auth}")).map_err(|_| {
        CliError::Usage("the token contains characters not allowed in a header".into())
    })?;
    let sink = Rc::new(Sink {
        http: http_client(),
        url: ingest,
        auth,
    });
    let framer = Framer {
        token,
        procid: args.dyno.clone(),
    };

    let (input, mut child) = match args.command.split_first() {
        None => (boxed_lines(tokio::io::stdin()), None),
        Some((program, rest)) => {
            let mut child = tokio::process::Command::new(program)
                .args(rest)
                .stdin(Stdio::inherit())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| CliError::Io(format!("cannot run {program:?}: {e}")))?;
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Err(CliError::Io(format!(
                    "cannot read the output of {program:?}"
                )));
            };
            let merged: LineStream = Box::pin(stream::select(boxed_lines(out), boxed_lines(err)));
            (merged, Some(child))
        }
    };

    if !pump(input, child.is_none(), settings, framer, sink).await {
        return Ok(ExitCode::from(130));
    }
    let Some(child) = child.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    let status = child
        .wait()
        .await
        .map_err(|e| CliError::Io(format!("cannot wait for the command: {e}")))?;
    Ok(exit_code_of(status))
}

/// The knobs of [`pump`], checked.
#[derive(Debug, Clone, Copy)]
struct Settings {
    batch_size: usize,
    wait: Duration,
    max_line_length: usize,
    back_buff: usize,
    policy: FullPolicy,
}

impl Settings {
    fn from_args(a: &ShuttleArgs) -> Result<Settings, CliError> {
        let wait = logplex::config::parse_duration(&a.wait)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--wait: {:?} is not a duration like 250ms or 1s",
                    a.wait
                ))
            })?;
        for (flag, n) in [
            ("--batch-size", a.batch_size),
            ("--max-line-length", a.max_line_length),
            ("--back-buff", a.back_buff),
        ] {
            if n == 0 {
                return Err(CliError::Usage(format!("{flag}: must be at least 1")));
            }
        }
        // RFC 5424 PROCID: 1 to 128 printable ASCII characters.
        if a.dyno.is_empty() || a.dyno.len() > 128 || !a.dyno.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CliError::Usage(format!(
                "--dyno: {:?} is not 1 to 128 printable ASCII characters",
                a.dyno
            )));
        }
        Ok(Settings {
            batch_size: a.batch_size,
            wait,
            max_line_length: a.max_line_length,
            back_buff: a.back_buff,
            policy: if a.no_drop {
                FullPolicy::Block
            } else {
                FullPolicy::DropOldest
            },
        })
    }
}

/// The token named SOURCE of the app, created when the app has none by that name.
async fn lookup_token(args: &ShuttleArgs) -> Result<String, CliError> {
    let client = super::connect(&args.server)?;
    let app = &args.app.app;
    let channel: super::commands::Channel = client
        .get(&super::commands::app_path(app))
        .await
        .map_err(|e| e.in_app(app))?;
    match channel.tokens.get(&args.source) {
        Some(t) => Ok(t.clone()),
        None => super::commands::create_token(&client, app, &args.source).await,
    }
}

/// `--ingest-url` with `/logs` added when it has no path, else the default config's HTTP
/// input (a wildcard listen address is reached on loopback).
fn ingest_url(flag: Option<&str>) -> Result<Uri, CliError> {
    let url = match flag {
        Some(u) => {
            let base = normalize_base("--ingest-url", u)?;
            let has_path = base
                .parse::<Uri>()
                .is_ok_and(|u| !matches!(u.path(), "" | "/"));
            if has_path {
                base
            } else {
                format!("{base}/logs")
            }
        }
        None => {
            let config = super::default_config();
            let Some(listen) = config.ingest.http.listen.addr() else {
                return Err(CliError::Usage(
                    "the HTTP input is off in the config; give --ingest-url".into(),
                ));
            };
            let addr = super::reachable(listen);
            format!("http://{addr}/logs")
        }
    };
    url.parse()
        .map_err(|_| CliError::Usage(format!("--ingest-url: {url:?} is not a URL")))
}

#[cfg(unix)]
fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        (None, None) => ExitCode::FAILURE,
    }
}

#[cfg(not(unix))]
fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
}

type LineStream = Pin<Box<dyn Stream<Item = std::io::Result<Vec<u8>>>>>;

/// The lines of a reader, without their `\n` (or `\r\n`).
fn boxed_lines<R: AsyncRead + Unpin + 'static>(reader: R) -> LineStream {
    Box::pin(stream::unfold(BufReader::new(reader), |mut r| async move {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Some((Ok(line), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    }))
}

/// Reads `input` to its end, sending every line, and returns once everything read has been
/// delivered or given up on. `false` when a second Ctrl-C asked to stop without flushing;
/// the first one ends the input when `close_on_interrupt` (stdin), else it is ignored.
async fn pump(
    mut input: LineStream,
    close_on_interrupt: bool,
    s: Settings,
    framer: Framer,
    sink: Rc<Sink>,
) -> bool {
    let mut batcher = Batcher::new(framer, s.batch_size);
    let mut outbox = Outbox::new(s.back_buff, s.policy);
    let mut inflight: Option<Inflight> = None;
    // Lines of batches that could not be delivered, not yet reported in-band (L13).
    let mut lost: Option<Tally> = None;
    let mut input_open = true;
    let mut interrupted = false;
    // When the partial batch must go, counted from its first line.
    let mut deadline: Option<Instant> = None;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        if inflight.is_none() {
            if let Some((batch, dropped)) = outbox.pop() {
                let notices = Notices {
                    dropped,
                    lost: lost.take(),
                };
                let own = batch.count;
                let batch = batch.with_notices(&batcher.framer, notices, OffsetDateTime::now_utc());
                let sink = sink.clone();
                inflight = Some(Box::pin(async move {
                    if sink.deliver(batch, own).await {
                        None
                    } else {
                        Some(Lost {
                            lines: own,
                            notices,
                        })
                    }
                }));
            }
        }
        if !input_open && batcher.is_empty() && outbox.is_empty() && inflight.is_none() {
            // Notices put back by the loss of the batch that carried them have nothing
            // left to ride on; the lost lines themselves were told on stderr already.
            if let Some(d) = outbox.drops.take() {
                eprintln!(
                    "logplex: {} dropped since {} could not be reported in-band.",
                    lines(d.count as usize),
                    timestamp(d.since)
                );
            }
            return true;
        }
        let room = outbox.policy == FullPolicy::DropOldest || !outbox.is_full();
        tokio::select! {
            line = input.next(), if input_open && room => match line {
                Some(Ok(line)) => {
                    let now = OffsetDateTime::now_utc();
                    let ts = timestamp(now);
                    let mut closed = false;
                    for piece in split_line(&line, s.max_line_length) {
                        batcher.add(&ts, piece, |b| {
                            outbox.push(b, now);
                            closed = true;
                        });
                    }
                    // The wait counts from the first line of the batch being filled.
                    if batcher.is_empty() {
                        deadline = None;
                    } else if deadline.is_none() || closed {
                        deadline = Some(Instant::now() + s.wait);
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        eprintln!("logplex: cannot read the input any further: {e}");
                    }
                    input_open = false;
                    deadline = None;
                    if let Some(b) = batcher.take() {
                        outbox.push(b, OffsetDateTime::now_utc());
                    }
                }
            },
            () = sleep_until(deadline), if deadline.is_some() && room => {
                deadline = None;
                if let Some(b) = batcher.take() {
                    outbox.push(b, OffsetDateTime::now_utc());
                }
            }
            done = poll_inflight(&mut inflight) => {
                inflight = None;
                if let Some(Lost { lines: n, notices }) = done {
                    // The notices the batch carried were not seen either: report them again,
                    // with the lines of the batch itself counted as lost from now.
                    Tally::add(&mut outbox.drops, notices.dropped);
                    Tally::add(&mut lost, notices.lost);
                    Tally::add(
                        &mut lost,
                        Some(Tally {
                            count: n as u64,
                            since: OffsetDateTime::now_utc(),
                        }),
                    );
                }
            }
            r = &mut ctrl_c => {
                if interrupted || r.is_err() {
                    return false;
                }
                interrupted = true;
                ctrl_c = Box::pin(tokio::signal::ctrl_c());
                // A command in the same terminal got the signal too and ends on its own, so
                // its output is read to the end (it must never block on a full pipe); stdin
                // is taken to be at its end.
                if close_on_interrupt && input_open {
                    input_open = false;
                    deadline = None;
                    if let Some(b) = batcher.take() {
                        outbox.push(b, OffsetDateTime::now_utc());
                    }
                }
                if !outbox.is_empty() || inflight.is_some() {
                    eprintln!("logplex: sending what is left; press Ctrl-C again to quit at once.");
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The request in flight; it resolves to the batch's loss, if it could not be delivered.
type Inflight = Pin<Box<dyn Future<Output = Option<Lost>>>>;

/// A batch that could not be delivered: its own lines, and the notices it carried.
struct Lost {
    lines: usize,
    notices: Notices,
}

async fn poll_inflight(f: &mut Option<Inflight>) -> Option<Lost> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// `2016-03-08T02:43:26.693600+00:00`: UTC, microseconds, as Logplex writes it.
fn timestamp(t: OffsetDateTime) -> String {
    let mut b = BytesMut::with_capacity(32);
    render::rfc3339_micros(&mut b, micros(t));
    String::from_utf8_lossy(&b).into_owned()
}

/// Cuts `line` into pieces of at most `max` bytes without splitting a UTF-8 character
/// (unless bytes that are not UTF-8 leave no boundary within reach). An empty line yields
/// nothing.
pub fn split_line(line: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let max = max.max(1);
    let mut rest = line;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= max {
            return Some(std::mem::take(&mut rest));
        }
        let is_continuation = |b: u8| b & 0xC0 == 0x80;
        // A character is at most 4 bytes, so a boundary is at most 3 bytes back.
        let floor = max.saturating_sub(3);
        let mut cut = max;
        while cut > floor && is_continuation(rest[cut]) {
            cut -= 1;
        }
        if cut == 0 || is_continuation(rest[cut]) {
            cut = max;
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// What every frame of this shuttle shares: the token (as APP-NAME, like log-shuttle) and
/// the PROCID.
struct Framer {
    token: String,
    procid: String,
}

impl Framer {
    /// Appends `LEN <PRI>1 TIMESTAMP host TOKEN PROCID - - MSG`.
    fn line(&self, out: &mut BytesMut, ts: &str, msg: &[u8]) {
        frame(out, PRI_LINE, ts, "host", &self.token, &self.procid, msg);
    }

    /// Appends one of log-shuttle's own notices (L12, L13): `heroku` as HOSTNAME and
    /// `log-shuttle` as PROCID, byte for byte what log-shuttle sends.
    fn notice(&self, out: &mut BytesMut, ts: &str, msg: &[u8]) {
        frame(
            out,
            PRI_NOTICE,
            ts,
            "heroku",
            &self.token,
            "log-shuttle",
            msg,
        );
    }
}

/// Appends one octet-counted RFC 5424 frame with empty MSGID and SD, as log-shuttle sends
/// it (input-side frames: no LF after MSG, unlike drain frames).
fn frame(out: &mut BytesMut, pri: u8, ts: &str, host: &str, app: &str, procid: &str, msg: &[u8]) {
    render::syslog_message(
        out,
        true,
        pri,
        ts.as_bytes(),
        host.as_bytes(),
        app.as_bytes(),
        procid.as_bytes(),
        msg,
    );
}

/// A time as UNIX microseconds, as proto's renderers take it.
fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// A logplex-1 body under construction and the number of frames in it.
#[derive(Debug, Default)]
struct Batch {
    body: BytesMut,
    count: usize,
}

impl Batch {
    /// This batch behind the L12 and L13 frames of `notices` (in log-shuttle's order:
    /// dropped, then lost), or as it is when there is nothing to report.
    fn with_notices(self, framer: &Framer, notices: Notices, now: OffsetDateTime) -> Batch {
        if notices.is_empty() {
            return self;
        }
        let ts = timestamp(now);
        let mut body = BytesMut::with_capacity(self.body.len() + 320);
        let mut count = self.count;
        let mut text = BytesMut::with_capacity(96);
        if let Some(d) = notices.dropped {
            render::l12_text(&mut text, d.count, micros(d.since));
            framer.notice(&mut body, &ts, &text);
            count += 1;
        }
        if let Some(l) = notices.lost {
            text.clear();
            render::l13_text(&mut text, l.count, micros(l.since));
            framer.notice(&mut body, &ts, &text);
            count += 1;
        }
        body.extend_from_slice(&self.body);
        Batch { body, count }
    }
}

/// Fills batches of at most `size` lines (and [`MAX_BATCH_BYTES`]).
struct Batcher {
    framer: Framer,
    size: usize,
    current: Batch,
}

impl Batcher {
    fn new(framer: Framer, size: usize) -> Batcher {
        Batcher {
            framer,
            size,
            current: Batch::default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.current.count == 0
    }

    /// Adds one message; `full` receives each batch this closes.
    fn add(&mut self, ts: &str, msg: &[u8], mut full: impl FnMut(Batch)) {
        if !self.is_empty() && self.current.body.len() + msg.len() + 128 > MAX_BATCH_BYTES {
            full(std::mem::take(&mut self.current));
        }
        self.framer.line(&mut self.current.body, ts, msg);
        self.current.count += 1;
        if self.current.count >= self.size {
            full(std::mem::take(&mut self.current));
        }
    }

    /// The partial batch, if any.
    fn take(&mut self) -> Option<Batch> {
        (!self.is_empty()).then(|| std::mem::take(&mut self.current))
    }
}

/// What a full [`Outbox`] does with one more batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FullPolicy {
    /// Drop the oldest queued batch, count its lines and report them in-band (L12).
    DropOldest,
    /// The caller stops reading while the outbox is full; a push then still queues.
    Block,
}

/// Lines dropped (L12) or lost (L13) since a time, not yet reported in-band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    since: OffsetDateTime,
}

impl Tally {
    /// Adds `more` to `slot`, keeping the earlier `since`.
    fn add(slot: &mut Option<Tally>, more: Option<Tally>) {
        let Some(more) = more else { return };
        match slot {
            Some(t) => {
                t.count += more.count;
                t.since = t.since.min(more.since);
            }
            None => *slot = Some(more),
        }
    }
}

/// What the next batch sent reports in front of its lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Notices {
    dropped: Option<Tally>,
    lost: Option<Tally>,
}

impl Notices {
    fn is_empty(&self) -> bool {
        self.dropped.is_none() && self.lost.is_none()
    }
}

/// The bounded queue of closed batches waiting behind the one in flight.
struct Outbox {
    queue: VecDeque<Batch>,
    capacity: usize,
    policy: FullPolicy,
    /// Lines of batches dropped while full, until the next [`Outbox::pop`] reports them.
    drops: Option<Tally>,
}

impl Outbox {
    fn new(capacity: usize, policy: FullPolicy) -> Outbox {
        Outbox {
            queue: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            policy,
            drops: None,
        }
    }

    fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, batch: Batch, now: OffsetDateTime) {
        if self.is_full() && self.policy == FullPolicy::DropOldest {
            if let Some(old) = self.queue.pop_front() {
                Tally::add(
                    &mut self.drops,
                    Some(Tally {
                        count: old.count as u64,
                        since: now,
                    }),
                );
            }
        }
        self.queue.push_back(batch);
    }

    /// The next batch to send, with the drops to report in front of it.
    fn pop(&mut self) -> Option<(Batch, Option<Tally>)> {
        let batch = self.queue.pop_front()?;
        Some((batch, self.drops.take()))
    }
}

/// Where batches go.
struct Sink {
    http: HttpClient,
    url: Uri,
    auth: HeaderValue,
}

impl Sink {
    /// Sends one batch, retried by [`retry::SHUTTLE`]; `false` when it is lost, which is
    /// told on stderr (never fatal). `own_lines` is the batch's count without its notices.
    async fn deliver(&self, batch: Batch, own_lines: usize) -> bool {
        let count = batch.count;
        let body = batch.body.freeze();
        let finished = retry::SHUTTLE
            .run(
                &retry::Deadline::default(),
                |_| self.post(body.clone(), count),
                |attempt, why| {
                    if attempt == 1 {
                        eprintln!("logplex: {why}; retrying.");
                    }
                },
            )
            .await;
        match finished {
            retry::Finished::Done { .. } => true,
            retry::Finished::Refused { error, .. } => {
                eprintln!("logplex: {error}; {} lost.", lines(own_lines));
                false
            }
            retry::Finished::Exhausted { attempts, error } => {
                eprintln!(
                    "logplex: {error}; gave up after {attempts} tries, {} lost.",
                    lines(own_lines)
                );
                false
            }
            retry::Finished::Stopped { .. } => false,
        }
    }

    /// One POST of a batch: delivered, or why not and whether to try again.
    async fn post(&self, body: Bytes, count: usize) -> Result<(), Failure<String>> {
        let req = Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/logplex-1")
            .header("Logplex-Msg-Count", count)
            .header(USER_AGENT, SHUTTLE_USER_AGENT)
            .header(AUTHORIZATION, self.auth.clone())
            .body(Full::new(body));
        let req = match req {
            Ok(r) => r,
            Err(e) => return Err(Failure::GiveUp(format!("cannot build the request: {e}"))),
        };
        let url = &self.url;
        let resp = match tokio::time::timeout(POST_TIMEOUT, self.http.request(req)).await {
            Err(_) => {
                return Err(Failure::Retry(format!(
                    "the HTTP input at {url} did not answer within 30s"
                )))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(Failure::Retry(format!(
                    "cannot reach the HTTP input at {url}"
                )))
            }
            Ok(Err(e)) => {
                return Err(Failure::Retry(format!(
                    "the request to the HTTP input at {url} failed: {e}"
                )))
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let reason = match resp.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes())
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
            Err(_) => String::new(),
        };
        Err(input_refusal(url, status, &reason))
    }
}

fn lines(n: usize) -> String {
    if n == 1 {
        "1 line".into()
    } else {
        format!("{n} lines")
    }
}

/// The sentence for an error answer of the HTTP input, and whether to try again (by
/// [`retry::classify`]: 429 and 5xx are worth another try).
fn input_refusal(url: &Uri, status: StatusCode, reason: &str) -> Failure<String> {
    let why = match status {
        StatusCode::UNAUTHORIZED => {
            format!("the HTTP input at {url} does not know the token (401)")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the HTTP input at {url} refused a batch as too large (413)")
        }
        _ if reason.trim().is_empty() => format!("the HTTP input at {url} answered {status}"),
        _ => format!(
            "the HTTP input at {url} answered {status}: {}",
            reason.trim()
        ),
    };
    Failure::of_status(status.as_u16(), why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn framer() -> Framer {
        Framer {
            token: "t.01234567-89ab-4cde-8f01-23456789abcd".into(),
            procid: "web.1".into(),
        }
    }

    #[test]
    fn timestamps_have_microseconds_and_utc_offset() {
        assert_eq!(
            timestamp(datetime!(2016-03-08 02:43:26.6936 UTC)),
            "2016-03-08T02:43:26.693600+00:00"
        );
        assert_eq!(
            timestamp(datetime!(2016-03-08 03:43:26 +01:00)),
            "2016-03-08T02:43:26.000000+00:00"
        );
    }

    #[test]
    fn log_shuttle_frame() {
        let mut out = BytesMut::new();
        framer().line(
            &mut out,
            "2016-03-08T02:43:26.693600+00:00",
            "Started GET \"/siso/\"".as_bytes(),
        );
        let expected_rest = "<190>1 2016-03-08T02:43:26.693600+00:00 host t.01234567-89ab-4cde-8f01-23456789abcd web.1 - - Started GET \"/siso/\"";
        assert_eq!(
            out,
            format!("{} {expected_rest}", expected_rest.len()).as_bytes()
        );
    }

    #[test]
    fn frame_length_counts_bytes_not_chars() {
        let mut out = BytesMut::new();
        frame(&mut out, 190, "T", "h", "a", "p", "é".as_bytes());
        assert_eq!(&out[..], "21 <190>1 T h a p - - é".as_bytes());
        assert_eq!("<190>1 T h a p - - é".len(), 21);
    }

    #[test]
    fn long_lines_split_at_utf8_boundaries() {
        let pieces: Vec<&[u8]> = split_line(b"abcdefg", 3).collect();
        assert_eq!(pieces, [&b"abc"[..], b"def", b"g"]);
        let line = "aé€😀b".as_bytes(); // 1 + 2 + 3 + 4 + 1 bytes
        let pieces: Vec<&str> = split_line(line, 4)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        assert_eq!(pieces, ["aé", "€", "😀", "b"]);
        assert!(split_line(line, 4).all(|p| p.len() <= 4));
        let joined: Vec<u8> = split_line(line, 2).flatten().copied().collect();
        assert_eq!(joined, line); // a 4-byte character cannot fit in 2: it is cut
        assert_eq!(split_line(b"", 10).count(), 0);
        assert_eq!(split_line(b"short", 10).collect::<Vec<_>>(), [b"short"]);
    }

    #[test]
    fn batches_close_at_batch_size_and_on_take() {
        let mut b = Batcher::new(framer(), 2);
        let mut closed = Vec::new();
        for msg in ["a", "b", "c"] {
            b.add("T", msg.as_bytes(), |batch| closed.push(batch));
        }
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].count, 2);
        let rest = b.take().unwrap();
        assert_eq!(rest.count, 1);
        assert!(b.take().is_none());
    }

    #[test]
    fn batches_close_before_the_byte_cap() {
        let mut b = Batcher::new(framer(), 500);
        let mut closed = Vec::new();
        let line = vec![b'x'; 10_000];
        for _ in 0..250 {
            b.add("T", &line, |batch| closed.push(batch));
        }
        assert!(!closed.is_empty());
        assert!(closed.iter().all(|c| c.body.len() <= MAX_BATCH_BYTES));
    }

    fn batch_of(n: usize) -> Batch {
        let mut b = Batcher::new(framer(), n);
        let mut out = None;
        for _ in 0..n {
            b.add("T", b"x", |batch| out = Some(batch));
        }
        out.unwrap()
    }

    #[test]
    fn full_outbox_drops_oldest_and_reports_l12_once() {
        let t0 = datetime!(2016-03-08 02:43:26 UTC);
        let mut o = Outbox::new(2, FullPolicy::DropOldest);
        o.push(batch_of(3), t0);
        o.push(batch_of(4), t0);
        assert!(o.is_full());
        o.push(batch_of(5), t0); // drops the 3
        o.push(batch_of(6), t0 + Duration::from_secs(1)); // drops the 4
        let (first, drops) = o.pop().unwrap();
        assert_eq!(first.count, 5);
        assert_eq!(
            drops,
            Some(Tally {
                count: 7,
                since: t0
            })
        );
        let (second, none) = o.pop().unwrap();
        assert_eq!((second.count, none), (6, None));
        assert!(o.pop().is_none());

        let with = first.with_notices(
            &framer(),
            Notices {
                dropped: drops,
                lost: None,
            },
            t0,
        );
        assert_eq!(with.count, 6);
        let text = String::from_utf8(with.body.to_vec()).unwrap();
        let l12 = "Error L12: 7 messages dropped since 2016-03-08T02:43:26.000000+00:00.";
        let head = format!(
            "<172>1 2016-03-08T02:43:26.000000+00:00 heroku {} log-shuttle - - {l12}",
            framer().token
        );
        assert!(
            text.starts_with(&format!("{} {head}", head.len())),
            "{text}"
        );
    }

    /// log-shuttle's own batch tests pin the frames byte for byte: with the token `token`
    /// and 5 lines, the L12 frame is 138 bytes and the L13 frame 135.
    #[test]
    fn notices_match_log_shuttle_byte_for_byte() {
        let t0 = datetime!(2016-03-08 02:43:26.5 UTC);
        let framer = Framer {
            token: "token".into(),
            procid: "web.1".into(),
        };
        let five = |since| Some(Tally { count: 5, since });
        let batch = batch_of(2).with_notices(
            &framer,
            Notices {
                dropped: five(t0),
                lost: five(t0 + Duration::from_secs(1)),
            },
            t0,
        );
        assert_eq!(batch.count, 4);
        let text = String::from_utf8(batch.body.to_vec()).unwrap();
        let ts = "2016-03-08T02:43:26.500000+00:00";
        let later = "2016-03-08T02:43:27.500000+00:00";
        let expected = format!(
            "138 <172>1 {ts} heroku token log-shuttle - - \
             Error L12: 5 messages dropped since {ts}.\
             135 <172>1 {ts} heroku token log-shuttle - - \
             Error L13: 5 messages lost since {later}."
        );
        assert!(text.starts_with(&expected), "{text}");

        let plain = batch_of(2).with_notices(&framer, Notices::default(), t0);
        assert_eq!(plain.count, 2);
        assert_eq!(
            plain.body,
            batch_of(2).body,
            "nothing to report, nothing added"
        );
    }

    #[test]
    fn tallies_add_up_from_the_earliest_time() {
        let t0 = datetime!(2016-03-08 02:43:26 UTC);
        let mut slot = None;
        Tally::add(&mut slot, None);
        assert_eq!(slot, None);
        let later = t0 + Duration::from_secs(5);
        Tally::add(
            &mut slot,
            Some(Tally {
                count: 2,
                since: later,
            }),
        );
        Tally::add(
            &mut slot,
            Some(Tally {
                count: 3,
                since: t0,
            }),
        );
        assert_eq!(
            slot,
            Some(Tally {
                count: 5,
                since: t0
            })
        );
    }

    #[test]
    fn blocking_outbox_never_drops() {
        let t0 = datetime!(2016-03-08 02:43:26 UTC);
        let mut o = Outbox::new(1, FullPolicy::Block);
        o.push(batch_of(1), t0);
        o.push(batch_of(2), t0);
        assert_eq!(o.pop().map(|(b, d)| (b.count, d)), Some((1, None)));
        assert_eq!(o.pop().map(|(b, d)| (b.count, d)), Some((2, None)));
    }

    #[test]
    fn input_errors_say_whether_to_retry() {
        let url: Uri = "http://127.0.0.1:8601/logs".parse().unwrap();
        assert!(matches!(
            input_refusal(&url, StatusCode::SERVICE_UNAVAILABLE, ""),
            Failure::Retry(_)
        ));
        assert!(matches!(
            input_refusal(&url, StatusCode::TOO_MANY_REQUESTS, ""),
            Failure::Retry(_)
        ));
        match input_refusal(&url, StatusCode::BAD_REQUEST, "frame 3 is malformed\n") {
            Failure::GiveUp(why) => assert_eq!(
                why,
                "the HTTP input at http://127.0.0.1:8601/logs answered 400 Bad Request: frame 3 is malformed"
            ),
            _ => panic!("400 is final"),
        }
        assert!(matches!(
            input_refusal(&url, StatusCode::UNAUTHORIZED, ""),
            Failure::GiveUp(_)
        ));
    }

    #[tokio::test]
    async fn batches_are_posted_as_logplex_1() {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let _ = tx.send((parts.headers, body));
                    Ok::<_, hyper::Error>(
                        hyper::Response::builder()
                            .status(204)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });

        let token = framer().token;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("token:{token}"));
        let sink = Rc::new(Sink {
            http: http_client(),
            url: format!("http://{addr}/logs").parse().unwrap(),
            auth: HeaderValue::from_str(&format!("Basic {auth}")).unwrap(),
        });
        let input: LineStream = Box::pin(stream::iter([Ok(b"one".to_vec()), Ok(b"two".to_vec())]));
        let settings = Settings {
            batch_size: 500,
            wait: Duration::from_millis(250),
            max_line_length: 10_000,
            back_buff: 50,
            policy: FullPolicy::DropOldest,
        };
        assert!(pump(input, true, settings, framer(), sink).await);

        let (headers, body) = rx.recv().await.unwrap();
        assert_eq!(headers["content-type"], "application/logplex-1");
        assert_eq!(headers["logplex-msg-count"], "2");
        assert_eq!(headers["user-agent"], SHUTTLE_USER_AGENT);
        assert_eq!(
            headers["authorization"].to_str().unwrap(),
            format!("Basic {auth}")
        );
        let body = String::from_utf8(body.to_vec()).unwrap();
        let frames: Vec<&str> = body.split(" <190>1 ").collect();
        assert_eq!(frames.len(), 3, "{body}");
        assert!(
            body.ends_with(&format!("host {token} web.1 - - two")),
            "{body}"
        );
    }

    #[test]
    fn ingest_urls() {
        assert_eq!(
            ingest_url(Some("http://h:8601")).unwrap().to_string(),
            "http://h:8601/logs"
        );
        assert_eq!(
            ingest_url(Some("http://h:8601/")).unwrap().to_string(),
            "http://h:8601/logs"
        );
        assert_eq!(
            ingest_url(Some("http://h:8601/in")).unwrap().to_string(),
            "http://h:8601/in"
        );
    }
}
