//! HTTP(S) drains' transport: `application/logplex-1` batches of Heroku's HTTPS-drain frames
//! (`LEN <PRI>1 TIME host SOURCE PROCID - MSG LF`), one request in flight, retried by
//! [`retry::HTTP_DRAIN`] (429, 5xx and network errors, with the same `Logplex-Frame-Id`);
//! other 4xx drop the batch (counted, announced by the next L10). The delivery loop is the
//! drains' [`runner`](super::runner); this only connects and sends.

use super::runner::{Batch, ConnectError, Framing, SendError, Transport};
use super::{Drain, DrainEnv};
use crate::retry::{self, Policy};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!("logplex/", env!("CARGO_PKG_VERSION"));

/// `http://` and `https://`.
#[derive(Default)]
pub struct Http {
    /// `Basic …` from the URL's userinfo, made once.
    auth: Option<String>,
    /// The batch's `Logplex-Frame-Id`: new for each batch, the same on its retries.
    frame_id: String,
}

impl Http {
    pub fn new(d: &Drain) -> Http {
        let auth = d.url.auth.as_ref().map(|(u, p)| {
            let userpass = [&u[..], b":", &p[..]].concat();
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(userpass)
            )
        });
        Http {
            auth,
            frame_id: String::new(),
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

impl Transport for Http {
    /// The client, whose pool holds the connection.
    type Conn = HttpClient;
    const FRAMING: Framing = Framing::Logplex1;
    const BATCH_LINES: usize = usize::MAX;
    const BATCH_BYTES: usize = 100 * 1024;
    const POLICY: Policy = retry::HTTP_DRAIN;
    const CONNECTS: bool = false;

    async fn connect(&mut self, d: &Drain, env: &DrainEnv) -> Result<HttpClient, ConnectError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*env.tls.config(d.url.insecure)).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .build(connector))
    }

    async fn send(
        &mut self,
        client: &mut HttpClient,
        d: &Drain,
        batch: &Batch,
        attempt: u32,
    ) -> Result<(), SendError> {
        if attempt == 1 {
            self.frame_id = uuid::Uuid::new_v4().simple().to_string();
        }
        let retry = |why: String| SendError {
            why,
            retry: true,
            broken: false,
            lost: 0,
        };
        let refused = |why: String| SendError {
            why,
            retry: false,
            broken: false,
            lost: batch.lines,
        };
        let mut req = hyper::Request::post(&d.url.endpoint)
            .header("content-type", "application/logplex-1")
            .header("logplex-msg-count", batch.count.to_string())
            .header("logplex-frame-id", &self.frame_id)
            .header("logplex-drain-token", &d.token[..])
            .header("user-agent", USER_AGENT);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Full::new(batch.body.clone()))
            .map_err(|e| refused(format!("cannot build the request: {e}")))?;
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, client.request(req)).await {
            Err(_) => {
                return Err(retry(format!(
                    "no answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(retry(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status().as_u16();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect()).await;
        match retry::classify(status) {
            retry::Class::Done => Ok(()),
            retry::Class::Retry => Err(retry(format!("HTTP {status}"))),
            retry::Class::GiveUp => Err(refused(format!("batch refused with HTTP {status}"))),
        }
    }
}

/// An error and its causes, `outer: inner: …` (hyper's own message is only "client error
/// (Connect)"; the cause says which name did not resolve or which address refused).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
