//! `logplex logs`: opens a log session (`POST /v2/sessions`) and copies its stream to
//! stdout, either verbatim or, with `--json`, as one JSON object per session line; with
//! `--web` it prints the session's URL, whose page is the live view in a browser.

use super::client::{CliError, Client};
use super::{AppArg, ServerArgs};
use clap::Args;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Lines of history to print (default 100; with --since or --until, as many as the
    /// server allows: log.max_lines_per_session).
    #[arg(short = 'n', long = "num", value_name = "NUM")]
    pub num: Option<u32>,
    /// Only lines received at or after this time: RFC 3339 (2026-11-27T14:00:00Z) or a
    /// duration back from now (30m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only lines received before this time (same forms as --since); not with --tail.
    #[arg(long, value_name = "TIME", conflicts_with = "tail")]
    pub until: Option<String>,
    /// Keep printing new lines until interrupted.
    #[arg(short = 't', long)]
    pub tail: bool,
    /// Only lines of this source (`app`, `heroku`, ...).
    #[arg(short = 's', long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only lines of this dyno; `web` matches `web.1`, `web.2`, ...
    #[arg(short = 'd', long, value_name = "DYNO")]
    pub dyno: Option<String>,
    /// Only lines whose message contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
    /// Print each line as `{"timestamp","source","dyno","message"}`.
    #[arg(long)]
    pub json: bool,
    /// Print the URL of the session's live page for a browser instead of the lines, and
    /// open it where a browser can be (a desktop session).
    #[arg(long, conflicts_with = "json")]
    pub web: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `POST /v2/sessions`: absent options are left out so the server's defaults apply.
#[derive(Serialize)]
struct SessionRequest<'a> {
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    num: Option<u32>,
    tail: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dyno: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grep: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<&'a str>,
}

#[derive(Deserialize)]
struct Session {
    url: String,
}

pub async fn run(client: &Client, args: &LogsArgs) -> Result<ExitCode, CliError> {
    let app = &args.app.app;
    let request = SessionRequest {
        channel: app,
        num: args.num,
        tail: args.tail,
        source: args.source.as_deref(),
        dyno: args.dyno.as_deref(),
        grep: args.grep.as_deref(),
        since: args.since.as_deref(),
        until: args.until.as_deref(),
    };
    let session: Session = client
        .post("/v2/sessions", &request)
        .await
        .map_err(|e| e.in_app(app))?;
    // A server behind a proxy may answer with a path only.
    let url = if session.url.starts_with('/') {
        format!("{}{}", client.base(), session.url)
    } else {
        session.url
    };
    if args.web {
        println!("{url}");
        super::browser::open(&url);
        return Ok(ExitCode::SUCCESS);
    }
    let mut body = client.open_stream(&url).await?.into_body();
    let mut printer = Printer::new(args.json);
    let mut stdout = io::stdout().lock();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = &mut ctrl_c => {
                let _ = stdout.flush();
                // Interrupting a tail is how it is meant to end; interrupting history is not.
                return Ok(if args.tail { ExitCode::SUCCESS } else { ExitCode::from(130) });
            }
        };
        let written = match frame {
            None => printer.finish(&mut stdout),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => printer.push(&chunk, &mut stdout),
                Err(_) => Ok(()), // trailers
            },
            Some(Err(e)) => {
                let _ = printer.finish(&mut stdout);
                return Err(CliError::Network {
                    url,
                    reason: format!("the log stream broke: {e}"),
                });
            }
        };
        match written {
            Ok(()) if printer.finished => return Ok(ExitCode::SUCCESS),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(CliError::Io(format!("cannot write to stdout: {e}"))),
        }
    }
}

/// Copies session lines to a writer, flushing per chunk so a pipe sees lines promptly.
struct Printer {
    json: bool,
    /// `--json` only: the start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// Plain mode: did the last byte written end a line?
    at_line_start: bool,
    finished: bool,
}

impl Printer {
    fn new(json: bool) -> Printer {
        Printer {
            json,
            partial: Vec::new(),
            at_line_start: true,
            finished: false,
        }
    }

    fn push(&mut self, chunk: &[u8], out: &mut impl Write) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.json {
            self.partial.extend_from_slice(chunk);
            let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
                return Ok(());
            };
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            for line in complete.split(|b| *b == b'\n') {
                if !line.is_empty() {
                    write_json(line, out)?;
                }
            }
        } else {
            out.write_all(chunk)?;
            self.at_line_start = chunk.ends_with(b"\n");
        }
        out.flush()
    }

    /// The stream ended: complete a last line that lacks its `\n`.
    fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.finished = true;
        if self.json && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            write_json(&line, out)?;
        } else if !self.json && !self.at_line_start {
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

fn write_json(line: &[u8], out: &mut impl Write) -> io::Result<()> {
    let text = String::from_utf8_lossy(line);
    let parsed = parse_session_line(text.trim_end_matches('\r'));
    serde_json::to_writer(&mut *out, &parsed).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// One session line, `TIMESTAMP SOURCE[PROCID]: MSG`, split into its parts.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct SessionLine<'a> {
    pub timestamp: Option<&'a str>,
    pub source: Option<&'a str>,
    /// The PROCID; `None` for a line rendered as `SOURCE: MSG`.
    pub dyno: Option<&'a str>,
    pub message: &'a str,
}

/// Splits a session line. Anything not in the session format is kept whole as the message,
/// with the other fields null, so `--json` never loses a line.
pub fn parse_session_line(line: &str) -> SessionLine<'_> {
    let whole = SessionLine {
        timestamp: None,
        source: None,
        dyno: None,
        message: line,
    };
    let Some((timestamp, rest)) = line.split_once(' ') else {
        return whole;
    };
    // SOURCE is a token name and PROCID an RFC 5424 field: neither holds a space.
    let (header, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let Some(header) = header.strip_suffix(':') else {
        return whole;
    };
    let (source, dyno) = match header.strip_suffix(']').and_then(|h| h.split_once('[')) {
        Some((source, dyno)) => (source, Some(dyno)),
        None => (header, None),
    };
    if timestamp.is_empty() || source.is_empty() {
        return whole;
    }
    SessionLine {
        timestamp: Some(timestamp),
        source: Some(source),
        dyno,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heroku_router_line() {
        let l = parse_session_line(
            "2016-03-08T02:43:26.693600+00:00 heroku[router]: at=info method=GET path=\"/\" status=200",
        );
        assert_eq!(
            l,
            SessionLine {
                timestamp: Some("2016-03-08T02:43:26.693600+00:00"),
                source: Some("heroku"),
                dyno: Some("router"),
                message: "at=info method=GET path=\"/\" status=200",
            }
        );
    }

    #[test]
    fn app_line_keeps_spaces_and_colons_in_message() {
        let l = parse_session_line(
            "2016-03-08T02:43:26.693600+00:00 app[web.1]: Started GET \"/siso/\": ok  ",
        );
        assert_eq!(l.source, Some("app"));
        assert_eq!(l.dyno, Some("web.1"));
        assert_eq!(l.message, "Started GET \"/siso/\": ok  ");
    }

    #[test]
    fn line_without_procid_has_null_dyno() {
        let l = parse_session_line("2016-03-08T02:43:26+00:00 app: hello");
        assert_eq!((l.source, l.dyno, l.message), (Some("app"), None, "hello"));
        let l = parse_session_line("2016-03-08T02:43:26+00:00 app[web.1]:");
        assert_eq!((l.dyno, l.message), (Some("web.1"), ""));
    }

    #[test]
    fn other_lines_are_kept_whole() {
        for line in ["", "garbage", "a b c", "2016 app[web.1] no colon"] {
            let l = parse_session_line(line);
            assert_eq!(
                (l.timestamp, l.source, l.dyno, l.message),
                (None, None, None, line)
            );
        }
    }

    #[test]
    fn json_output_across_chunks() {
        let mut p = Printer::new(true);
        let mut out = Vec::new();
        p.push(
            b"2016-03-08T02:43:26+00:00 app[web.1]: one\n2016-03-08T02:43:27+00:00 ap",
            &mut out,
        )
        .unwrap();
        p.push(b"p[web.2]: two\n", &mut out).unwrap();
        p.push(b"2016-03-08T02:43:28+00:00 heroku: three", &mut out)
            .unwrap();
        p.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"timestamp":"2016-03-08T02:43:26+00:00","source":"app","dyno":"web.1","message":"one"}"#,
                r#"{"timestamp":"2016-03-08T02:43:27+00:00","source":"app","dyno":"web.2","message":"two"}"#,
                r#"{"timestamp":"2016-03-08T02:43:28+00:00","source":"heroku","dyno":null,"message":"three"}"#,
            ]
        );
    }

    #[test]
    fn plain_output_is_verbatim() {
        let mut p = Printer::new(false);
        let mut out = Vec::new();
        p.push(b"a app[web.1]: x\nb app", &mut out).unwrap();
        p.push(b"[web.1]: y", &mut out).unwrap();
        p.finish(&mut out).unwrap();
        assert_eq!(out, b"a app[web.1]: x\nb app[web.1]: y\n");
    }
}
