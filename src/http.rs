//! HTTP plumbing shared by the API and the HTTP input: the accept loop (connection caps
//! that evict the longest idle, a header timeout, capped read buffers, graceful shutdown),
//! the response body type, and JSON helpers.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every response body: a whole buffer or a stream of chunks.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A response with a body and content type.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

/// A streamed body fed by a bounded channel; the sender sees the client leave when `send`
/// fails.
pub struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
}

impl StreamBody {
    pub fn channel(depth: usize) -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, StreamBody { rx }.boxed())
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown`; open connections are
/// asked to finish their current request and close. `table` caps the connections (at the
/// cap the one idle longest is closed to admit a new one). `B` is the handler's response
/// body: [`Body`] for the HTTP input, axum's for the API.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    table: Arc<crate::conns::Table>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    handler: Arc<H>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Some(conn) = table.admit().await else {
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let io = crate::conns::Tracked::new(sock, conn.activity.clone());
            let conn_fut = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                // hyper's read buffer grows to 400 KB by default and is kept while the
                // connection is idle: times thousands of connections, that is memory outside
                // the body budget.
                .max_buf_size(READ_BUF_MAX)
                .serve_connection(TokioIo::new(io), svc);
            let mut conn_fut = std::pin::pin!(conn_fut);
            tokio::select! {
                r = conn_fut.as_mut() => { if let Err(e) = r { tracing::debug!("http connection: {e}"); } }
                // Evicted at the cap: this was the connection idle longest.
                _ = conn.close.cancelled() => {}
                _ = shutdown.cancelled() => {
                    conn_fut.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn_fut).await;
                }
            }
            drop(conn);
        });
    }
}

/// The most a connection's read buffer holds (hyper keeps it while the connection idles,
/// and it is outside the body budget): a trade of memory per connection for reads per
/// batch. The load bench's HTTP ingest (75 KB batches, 4 connections), medians of 8 runs:
/// 4.72 M lines/s before these limits (hyper's 400 KB default), 4.61 M at 64 KiB, 4.35 M at
/// 16 KiB, 4.22 M at 8 KiB; 4,096 idle keep-alive connections (with hyper's 8 KiB write
/// buffer) hold at most 288, 96 and 64 MiB; tests/abuse.rs' attack peaks at 139-142 MiB of
/// RSS with 16 KiB, 110-127 MiB with 8 KiB.
const READ_BUF_MAX: usize = 16 * 1024;

/// `StatusCode` for a status that is always valid.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
