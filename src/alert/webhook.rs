//! Webhook delivery: one JSON POST per notification over HTTP or HTTPS (certificates checked
//! like those of HTTPS drains), with a 5 s timeout per attempt, retried by the shared policy
//! ([`crate::retry::WEBHOOK`]: 5 tries, backoff with jitter). Runs in the alert tasks, never
//! on the ingest path; gives up at shutdown.

use crate::drain::tls::Tls;
use crate::retry::{self, Failure, Finished};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Limit of one attempt, connect to end of response headers.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook as checked: where to POST, with what Basic auth, and how to show it in logs.
#[derive(Clone)]
pub struct Target {
    /// The URL without userinfo and fragment.
    pub endpoint: Uri,
    /// `Basic …` from the URL's userinfo (percent-decoded per RFC 3986 only).
    pub auth: Option<HeaderValue>,
    /// `#insecure`: no certificate verification (https only).
    pub insecure: bool,
    /// The URL with its password as `***`, for logs.
    pub redacted: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl Target {
    /// Checks `url` as drain URLs are checked (see [`crate::drain::url::parse_webhook`]);
    /// the error is one sentence.
    pub fn parse(url: &str) -> Result<Target, String> {
        let d = crate::drain::url::parse_webhook(url)?;
        let endpoint: Uri = d
            .endpoint
            .parse()
            .map_err(|e| format!("{:?} is not a URL ({e}).", d.redacted))?;
        let auth = match &d.auth {
            None => None,
            Some((u, p)) => {
                let userpass = [&u[..], b":", &p[..]].concat();
                let v = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(userpass)
                );
                Some(HeaderValue::from_str(&v).map_err(|e| format!("bad credentials ({e})."))?)
            }
        };
        Ok(Target {
            endpoint,
            auth,
            insecure: d.insecure,
            redacted: d.redacted,
        })
    }
}

/// One HTTP(S) client.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The clients shared by all webhook deliveries: certificates checked, and not (`#insecure`).
#[derive(Clone)]
pub struct Clients {
    verified: HttpClient,
    insecure: HttpClient,
}

impl Clients {
    pub fn new(tls: &Tls) -> Clients {
        let make = |insecure: bool| {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(TIMEOUT));
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls.config(insecure)).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https)
        };
        Clients {
            verified: make(false),
            insecure: make(true),
        }
    }

    fn for_target(&self, t: &Target) -> &HttpClient {
        if t.insecure {
            &self.insecure
        } else {
            &self.verified
        }
    }
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        attempts: u32,
    },
    /// An answer [`retry::classify`] calls final (a 4xx but 429): the receiver refuses this
    /// notification; retrying will not help.
    Refused(StatusCode),
    GaveUp {
        attempts: u32,
        last_error: String,
    },
    Cancelled,
}

/// Why one attempt failed.
enum AttemptError {
    /// The receiver answered with this status.
    Status(StatusCode),
    Other(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Status(s) => write!(f, "answered {s}"),
            AttemptError::Other(e) => f.write_str(e),
        }
    }
}

/// POSTs `body` to `target`, retried by [`retry::WEBHOOK`] (network errors, timeouts, 429
/// and 5xx); `shutdown` ends it at once, in an attempt or between two.
pub async fn deliver(
    clients: &Clients,
    target: &Target,
    body: Bytes,
    shutdown: &CancellationToken,
) -> Delivery {
    let client = clients.for_target(target);
    let deadline = retry::Deadline::on(shutdown.clone());
    let finished = retry::WEBHOOK
        .run(
            &deadline,
            |_| attempt(client, target, body.clone()),
            |_, _| {},
        )
        .await;
    match finished {
        Finished::Done { attempts, .. } => Delivery::Delivered { attempts },
        Finished::Refused {
            error: AttemptError::Status(status),
            ..
        } => Delivery::Refused(status),
        Finished::Refused { attempts, error } | Finished::Exhausted { attempts, error } => {
            Delivery::GaveUp {
                attempts,
                last_error: error.to_string(),
            }
        }
        Finished::Stopped { .. } => Delivery::Cancelled,
    }
}

/// One POST of a notification.
async fn attempt(
    client: &HttpClient,
    target: &Target,
    body: Bytes,
) -> Result<(), Failure<AttemptError>> {
    let mut req = Request::post(target.endpoint.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("logplex/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(a) = &target.auth {
        req = req.header(hyper::header::AUTHORIZATION, a.clone());
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Failure::GiveUp(AttemptError::Other(e.to_string())))?;
    let resp = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Err(_) => {
            return Err(Failure::Retry(AttemptError::Other(format!(
                "no answer within {}s",
                TIMEOUT.as_secs()
            ))))
        }
        Ok(Err(e)) => return Err(Failure::Retry(AttemptError::Other(e.to_string()))),
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    // Read (and drop) the body so the connection can be reused; bounded by time.
    let _ = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await;
    match retry::classify(status.as_u16()) {
        retry::Class::Done => Ok(()),
        _ => Err(Failure::of_status(
            status.as_u16(),
            AttemptError::Status(status),
        )),
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
        let url = Target::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        let out = deliver(
            &Clients::new(&Tls::new(None).unwrap()),
            &url,
            Bytes::from_static(b"{}"),
            &CancellationToken::new(),
        )
        .await;
        match out {
            Delivery::GaveUp { attempts, .. } => {
                assert_eq!(Some(attempts), retry::WEBHOOK.attempts)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_retries() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Target::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let clients = Clients::new(&Tls::new(None).unwrap());
        let out = deliver(&clients, &url, Bytes::from_static(b"{}"), &stop).await;
        assert_eq!(out, Delivery::Cancelled);
    }
}
