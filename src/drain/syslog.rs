//! Syslog drains' transports (RFC 5424 with RFC 6587 octet counting on TCP and TLS, RFC
//! 5426 datagrams on UDP). Each frame is `<PRI>1 TIME d.TOKEN SOURCE PROCID - - MSG LF`; the
//! drain's token is the HOSTNAME so receivers can tell drains apart. The delivery loop is
//! the drains' [`runner`](super::runner); these only connect and send.

use super::runner::{Batch, ConnectError, Framing, SendError, Transport};
use super::{Drain, DrainEnv, Kind};
use crate::retry::{self, Policy};
use futures_util::FutureExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `syslog://` and `syslog+tls://`: one connection, batches written one after the other.
pub struct Stream;

/// An open syslog connection.
pub enum Conn {
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

impl Transport for Stream {
    type Conn = Conn;
    const FRAMING: Framing = Framing::Octets;
    const BATCH_LINES: usize = 1024;
    const BATCH_BYTES: usize = 256 * 1024;
    const POLICY: Policy = retry::RECONNECT;
    const CONNECTS: bool = true;

    async fn connect(&mut self, d: &Drain, env: &DrainEnv) -> Result<Conn, ConnectError> {
        let cannot = |e: std::io::Error| {
            ConnectError::Io(format!(
                "cannot connect to {}:{}: {e}",
                d.url.host, d.url.port
            ))
        };
        let timed_out = || cannot(std::io::ErrorKind::TimedOut.into());
        let addr = (d.url.host.as_str(), d.url.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(cannot)?;
        let _ = tcp.set_nodelay(true);
        if d.url.kind != Kind::SyslogTls {
            return Ok(Conn::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(d.url.host.clone()).map_err(|e| {
            ConnectError::Certificate(format!("invalid server name {}: {e}", d.url.host))
        })?;
        let connector = tokio_rustls::TlsConnector::from(env.tls.config(d.url.insecure));
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Err(_) => Err(timed_out()),
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
                    Err(cannot(e))
                }
            }
        }
    }

    async fn send(
        &mut self,
        conn: &mut Conn,
        _d: &Drain,
        batch: &Batch,
        _attempt: u32,
    ) -> Result<(), SendError> {
        let why = match tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(&batch.body)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("write failed: {e}"),
            Err(_) => format!("write timed out after {}s", WRITE_TIMEOUT.as_secs()),
        };
        // Not delivered: the runner puts the lines back, and the next connection sends them.
        Err(SendError {
            why,
            retry: true,
            broken: true,
            lost: 0,
        })
    }

    /// Has the receiver closed its end? (Syslog receivers never send; a readable EOF means
    /// gone.) Checked before each batch so a batch is not written into a dead socket.
    fn closed(conn: &Conn) -> bool {
        let mut b = [0u8; 1];
        matches!(
            conn.tcp().peek(&mut b).now_or_never(),
            Some(Ok(0)) | Some(Err(_))
        )
    }
}

/// `syslog+udp://`: one datagram per message, no framing. A datagram that cannot be sent
/// is lost (counted, announced by L10), never sent again.
pub struct Datagrams;

impl Transport for Datagrams {
    type Conn = UdpSocket;
    const FRAMING: Framing = Framing::Datagrams;
    const BATCH_LINES: usize = 1024;
    const BATCH_BYTES: usize = 256 * 1024;
    const POLICY: Policy = retry::RECONNECT;
    const CONNECTS: bool = true;

    async fn connect(&mut self, d: &Drain, _env: &DrainEnv) -> Result<UdpSocket, ConnectError> {
        let bind = if d.url.host.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let r = async {
            let s = UdpSocket::bind(bind).await?;
            s.connect((d.url.host.as_str(), d.url.port)).await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        r.map_err(|e| ConnectError::Io(format!("cannot set up the UDP socket: {e}")))
    }

    async fn send(
        &mut self,
        sock: &mut UdpSocket,
        _d: &Drain,
        batch: &Batch,
        _attempt: u32,
    ) -> Result<(), SendError> {
        // UDP tells of a failure only by a send error (an ICMP refusal, a route). The L10
        // notice is sent like the lines, but only lines count as lost.
        let notice = batch.has_notice();
        let mut lost = 0;
        let mut error = None;
        for (i, frame) in batch.frames().enumerate() {
            if let Err(e) = sock.send(frame).await {
                if !(notice && i == 0) {
                    lost += 1;
                }
                error = Some(e);
            }
        }
        match error {
            None => Ok(()),
            Some(e) => Err(SendError {
                why: format!("send failed: {e}"),
                retry: false,
                broken: false,
                lost,
            }),
        }
    }
}
