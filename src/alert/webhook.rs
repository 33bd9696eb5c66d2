//! Webhook delivery: one JSON POST per notification over plain HTTP, with a 5 s timeout per
//! attempt and bounded retries with exponential backoff. Runs in the alert tasks, never on
//! the ingest path; gives up at shutdown.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts per notification (the first one and the retries).
pub const ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled for each next one (0.5 s, 1 s, 2 s, 4 s).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Limit of one attempt, connect to end of response headers.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client shared by all webhook deliveries.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http)
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// A 4xx other than 408/429: the receiver refuses this notification; retrying will not help.
    Refused(StatusCode),
    GaveUp {
        attempts: u32,
        last_error: String,
    },
    Cancelled,
}

/// POSTs `body` to `url`, retrying network errors, timeouts, 408, 429 and 5xx.
pub async fn deliver(
    client: &HttpClient,
    url: &Uri,
    body: Bytes,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return Outcome::Cancelled,
            }
            backoff *= 2;
        }
        let req = Request::post(url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("logplex/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Outcome::GaveUp {
                    attempts: attempt,
                    last_error: e.to_string(),
                }
            }
        };
        let sent = tokio::select! {
            r = tokio::time::timeout(TIMEOUT, client.request(req)) => r,
            _ = shutdown.cancelled() => return Outcome::Cancelled,
        };
        match sent {
            Err(_) => last_error = format!("no answer within {}s", TIMEOUT.as_secs()),
            Ok(Err(e)) => last_error = e.to_string(),
            Ok(Ok(resp)) => {
                let status = resp.status();
                // Read (and drop) the body so the connection can be reused; bounded by time.
                let _ = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await;
                if status.is_success() {
                    return Outcome::Delivered { attempts: attempt };
                }
                if status.is_client_error()
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::REQUEST_TIMEOUT
                {
                    return Outcome::Refused(status);
                }
                last_error = format!("answered {status}");
            }
        }
    }
    Outcome::GaveUp {
        attempts: ATTEMPTS,
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_closed_port_is_retried_then_given_up() {
        // Bind then drop a listener: its port refuses connections.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: Uri = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
        let out = deliver(
            &client(),
            &url,
            Bytes::from_static(b"{}"),
            &CancellationToken::new(),
        )
        .await;
        match out {
            Outcome::GaveUp { attempts, .. } => assert_eq!(attempts, ATTEMPTS),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_retries() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: Uri = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let out = deliver(&client(), &url, Bytes::from_static(b"{}"), &stop).await;
        assert_eq!(out, Outcome::Cancelled);
    }
}
