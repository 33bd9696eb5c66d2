//! Syslog drains: `syslog://` (TCP) and `syslog+tls://` write octet-counted frames
//! `<PRI>1 TIME d.TOKEN SOURCE PROCID - - MSG LF` in batches (many frames per syscall),
//! reconnecting with backoff and jitter; `syslog+udp://` sends one datagram per message.

use super::backoff::Backoff;
use super::{pause, wait_for_work, Drain, Kind, Shared, Wait, FLUSH_DEADLINE};
use crate::line::{now_micros, Line};
use bytes::BytesMut;
use futures_util::FutureExt;
use logplex_proto::render;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Most lines and bytes written in one batch.
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: usize = 256 * 1024;
/// A connection with nothing to send for this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A connection older than this is replaced (lets DNS and load balancers move us).
const MAX_AGE: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Has the receiver closed its end? (Syslog receivers never send; a readable EOF means
    /// gone.) Checked before each batch so a batch is not written into a dead socket.
    fn closed(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            self.tcp().peek(&mut b).now_or_never(),
            Some(Ok(0)) | Some(Err(_))
        )
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }
}

/// Why a connection attempt failed.
enum ConnectError {
    Io(std::io::Error),
    /// The TLS handshake failed on the certificate: announced in-band as L14.
    Certificate(String),
}

async fn connect(d: &Drain, shared: &Shared) -> Result<Conn, ConnectError> {
    let addr = (d.url.host.as_str(), d.url.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(ConnectError::Io)?;
    let _ = tcp.set_nodelay(true);
    if d.url.kind != Kind::SyslogTls {
        return Ok(Conn::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(d.url.host.clone()).map_err(|e| {
        ConnectError::Certificate(format!("invalid server name {}: {e}", d.url.host))
    })?;
    let connector = tokio_rustls::TlsConnector::from(shared.tls.config(d.url.insecure));
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => Err(ConnectError::Io(std::io::ErrorKind::TimedOut.into())),
        Ok(Ok(s)) => Ok(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => {
            let cert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            if cert {
                Err(ConnectError::Certificate(e.to_string()))
            } else {
                Err(ConnectError::Io(e))
            }
        }
    }
}

/// `<PRI>1 TIME d.TOKEN SOURCE PROCID - - MSG LF`, octet-counted when `framed`.
fn render_line(out: &mut BytesMut, d: &Drain, framed: bool, l: &Line) {
    render::syslog_drain(
        out,
        framed,
        l.pri,
        l.timestamp(),
        &d.token,
        &l.source,
        l.procid(),
        l.msg(),
    );
}

/// Renders a batch: the L10 frame first if lines were dropped, then each line.
fn render_batch(
    out: &mut BytesMut,
    d: &Drain,
    framed: bool,
    lines: &[Line],
    dropped: Option<super::buffer::Dropped>,
) {
    if let Some(dr) = dropped {
        render::l10_syslog(out, framed, now_micros(), &d.token, dr.count, dr.since);
    }
    for l in lines {
        render_line(out, d, framed, l);
    }
}

/// The task of a `syslog://` or `syslog+tls://` drain.
pub async fn run_stream(d: &Drain, shared: &Shared) {
    let mut conn: Option<(Conn, Instant)> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let mut out = BytesMut::with_capacity(BATCH_BYTES + 4096);
    let mut cert_announced = false;
    let mut flush_deadline: Option<Instant> = None;
    loop {
        if shared.flush.is_cancelled() && flush_deadline.is_none() {
            flush_deadline = Some(Instant::now() + FLUSH_DEADLINE);
        }
        if flush_deadline.is_some_and(|t| Instant::now() > t) {
            return;
        }
        match wait_for_work(d, shared, conn.as_ref().map(|_| IDLE_CLOSE)).await {
            Wait::Stop => return,
            Wait::Idle => {
                conn = None;
                d.set_connected(false);
                continue;
            }
            Wait::Work => {}
        }
        if conn
            .as_ref()
            .is_some_and(|(c, at)| at.elapsed() > MAX_AGE || c.closed())
        {
            conn = None;
            d.set_connected(false);
        }
        if conn.is_none() {
            match connect(d, shared).await {
                Ok(c) => {
                    conn = Some((c, Instant::now()));
                    d.set_connected(true);
                    cert_announced = false;
                }
                Err(e) => {
                    match e {
                        ConnectError::Certificate(why) => {
                            tracing::warn!(drain = %String::from_utf8_lossy(&d.token), url = %d.url.redacted, "TLS certificate refused: {why}");
                            if !cert_announced {
                                d.announce(&format!(
                                    "Error L14 (certificate validation): drain {} ({}:{}): {why}",
                                    String::from_utf8_lossy(&d.token),
                                    d.url.host,
                                    d.url.port
                                ));
                                cert_announced = true;
                            }
                            d.failed(format_args!("TLS certificate refused: {why}"));
                        }
                        ConnectError::Io(e) => {
                            tracing::debug!(drain = %String::from_utf8_lossy(&d.token), url = %d.url.redacted, "connect: {e}");
                            d.failed(format_args!(
                                "cannot connect to {}:{}: {e}",
                                d.url.host, d.url.port
                            ));
                        }
                    }
                    d.counters.retried.inc();
                    if flush_deadline.is_some() || !pause(d, shared, backoff.next_delay()).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let Some((c, _)) = conn.as_mut() else {
            continue;
        };
        let (lines, dropped) = d.take(BATCH_LINES, BATCH_BYTES);
        out.clear();
        render_batch(&mut out, d, true, &lines, dropped);
        let n = lines.len() as u64;
        // While flushing at shutdown, a write may not outlast the flush deadline.
        let limit = match flush_deadline {
            Some(t) => WRITE_TIMEOUT.min(t.saturating_duration_since(Instant::now())),
            None => WRITE_TIMEOUT,
        };
        let written = d
            .writing(tokio::time::timeout(limit, c.write_all(&out)))
            .await;
        match &written {
            Ok(Err(e)) => d.failed(format_args!("write failed: {e}")),
            Err(_) => d.failed(format_args!("write timed out after {}s", limit.as_secs())),
            Ok(Ok(())) => {}
        }
        match written {
            Ok(Ok(())) => {
                d.count_sent(n);
                d.counters.buffered.sub(n as i64);
                backoff.reset();
            }
            Ok(Err(_)) | Err(_) => {
                // Not delivered: back in front; the next connection sends it.
                let lost = d.buffer.unshift(lines, dropped);
                d.count_dropped(lost);
                d.counters.buffered.sub(lost as i64);
                d.counters.retried.inc();
                conn = None;
                d.set_connected(false);
                if flush_deadline.is_some() || !pause(d, shared, backoff.next_delay()).await {
                    return;
                }
            }
        }
    }
}

/// The task of a `syslog+udp://` drain: one datagram per message, no framing.
pub async fn run_udp(d: &Drain, shared: &Shared) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    let sock = loop {
        let bind = if d.url.host.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let r = async {
            let s = tokio::net::UdpSocket::bind(bind).await?;
            s.connect((d.url.host.as_str(), d.url.port)).await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        match r {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!(drain = %String::from_utf8_lossy(&d.token), "udp: {e}");
                d.failed(format_args!("cannot set up the UDP socket: {e}"));
                if !pause(d, shared, backoff.next_delay()).await || shared.flush.is_cancelled() {
                    return;
                }
            }
        }
    };
    d.set_connected(true);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        if wait_for_work(d, shared, None).await != Wait::Work {
            break;
        }
        let (lines, dropped) = d.take(BATCH_LINES, BATCH_BYTES);
        d.counters.buffered.sub(lines.len() as i64);
        if let Some(dr) = dropped {
            out.clear();
            render::l10_syslog(&mut out, false, now_micros(), &d.token, dr.count, dr.since);
            let _ = sock.send(&out).await;
        }
        let mut lost = 0;
        let mut error = None;
        for l in &lines {
            out.clear();
            render_line(&mut out, d, false, l);
            if let Err(e) = sock.send(&out).await {
                lost += 1;
                error = Some(e);
            }
        }
        d.count_sent(lines.len() as u64 - lost);
        if lost > 0 {
            d.buffer.lost(lost);
            d.count_dropped(lost);
        }
        // UDP tells of a failure only by a send error (an ICMP refusal, a route).
        match error {
            Some(e) => d.failed(format_args!("send failed: {e}")),
            None if !lines.is_empty() => d.set_connected(true),
            None => {}
        }
    }
    d.set_connected(false);
}
