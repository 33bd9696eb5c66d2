//! The HTTP side of the client commands: a small [`Client`] for the JSON API (`docs/api.md`)
//! and [`CliError`], whose `Display` is the one sentence a user sees after `logplex: `.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How long a plain API request may take; session streams have no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `User-Agent` of the API requests, so the server's logs tell the CLI apart.
pub(crate) const CLI_USER_AGENT: &str = concat!("logplex-cli/", env!("CARGO_PKG_VERSION"));

/// Everything that ends a client command early. Each variant knows its exit code
/// ([`CliError::exit_code`]) and prints as one sentence.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (exit 2).
    Usage(String),
    /// Neither `LOGPLEX_AUTH_KEY` nor the `admin.key` file gave an admin key.
    NoAdminKey { path: String },
    /// Connection refused or the host cannot be resolved.
    Unreachable { url: String },
    /// The request was sent but no answer came back in time, or the connection broke.
    Network { url: String, reason: String },
    /// 401 from the API: the admin key is wrong.
    Unauthorized,
    /// 404 on a request about one app.
    UnknownApp(String),
    /// Any other error answer of the API, with the server's own message.
    Api { status: StatusCode, message: String },
    /// A 2xx answer we could not understand.
    BadResponse(String),
    /// Local I/O failed (reading stdin, spawning a command, ...).
    Io(String),
    /// A lookup on the client side found nothing (`drains:remove`, `alerts:remove`).
    NotFound(String),
}

impl CliError {
    /// 2 for bad usage, 1 for everything else (`docs/cli.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Reads a 404 of a request about `app` as "unknown app": every app-scoped request the
    /// CLI makes (channel, its tokens, drains, alerts, a session on it) is a 404 only when
    /// the channel itself is missing, because single drains and rules are looked up first.
    pub fn in_app(self, app: &str) -> CliError {
        match self {
            CliError::Api {
                status: StatusCode::NOT_FOUND,
                ..
            } => CliError::UnknownApp(app.to_string()),
            other => other,
        }
    }

    /// Maps an error answer of the API (status + JSON body) to an error.
    pub fn from_answer(status: StatusCode, body: &[u8]) -> CliError {
        if status == StatusCode::UNAUTHORIZED {
            return CliError::Unauthorized;
        }
        #[derive(Deserialize)]
        struct ApiError {
            #[serde(default)]
            message: String,
        }
        let message = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) if !e.message.is_empty() => e.message,
            _ => format!("the server answered {status}"),
        };
        CliError::Api { status, message }
    }

    /// Maps a failed request of the hyper client to an error.
    fn from_request(url: &str, e: &hyper_util::client::legacy::Error) -> CliError {
        if e.is_connect() {
            CliError::Unreachable {
                url: url.to_string(),
            }
        } else {
            let reason = match std::error::Error::source(e) {
                Some(s) => s.to_string(),
                None => e.to_string(),
            };
            CliError::Network {
                url: url.to_string(),
                reason,
            }
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::BadResponse(m) | CliError::Io(m) | CliError::NotFound(m) => {
                f.write_str(m)
            }
            CliError::NoAdminKey { path } => write!(
                f,
                "no admin key: set LOGPLEX_AUTH_KEY, or start `logplex serve` once so that it writes {path}"
            ),
            CliError::Unreachable { url } => {
                write!(f, "cannot reach the server at {url} (is `logplex serve` running?)")
            }
            CliError::Network { url, reason } => write!(f, "the request to {url} failed: {reason}"),
            CliError::Unauthorized => f.write_str("the server refused the admin key (check LOGPLEX_AUTH_KEY)"),
            CliError::UnknownApp(app) => write!(f, "unknown app {app:?}"),
            CliError::Api { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}

/// The shared hyper client: HTTP/1 over plain TCP, which is all `logplex serve` speaks.
pub type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// Builds the hyper client used for both the API and the HTTP input.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// Checks that `url` is an `http://` URL and returns it without a trailing `/`.
pub fn normalize_base(flag: &str, url: &str) -> Result<String, CliError> {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.starts_with("https://") {
        return Err(CliError::Usage(format!(
            "{flag}: {url:?} uses https, which this client does not speak; give the http:// address"
        )));
    }
    match trimmed.parse::<Uri>() {
        Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => Ok(trimmed.to_string()),
        _ => Err(CliError::Usage(format!(
            "{flag}: {url:?} is not a URL like http://127.0.0.1:8001"
        ))),
    }
}

/// Percent-encodes one path segment (an app, drain id or alert name), keeping RFC 3986's
/// unreserved characters.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of the logplex API at one base URL, authenticated with the admin key.
pub struct Client {
    base: String,
    key: String,
    http: HttpClient,
}

impl Client {
    /// `base` must have gone through [`normalize_base`].
    pub fn new(base: String, key: String) -> Client {
        Client {
            base,
            key,
            http: http_client(),
        }
    }

    /// The base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` and parse the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.call(Method::GET, path, None).await?;
        parse_json(&body)
    }

    /// `POST path` with a JSON body and parse the JSON answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        self.send_json(Method::POST, path, body).await
    }

    /// `PATCH path` with a JSON body and parse the JSON answer.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        self.send_json(Method::PATCH, path, body).await
    }

    /// `METHOD path` with a JSON body; parses the JSON answer.
    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| CliError::Io(format!("cannot encode the request: {e}")))?;
        let answer = self.call(method, path, Some(json)).await?;
        parse_json(&answer)
    }

    /// `DELETE path`; any 2xx is success.
    pub async fn delete(&self, path: &str) -> Result<(), CliError> {
        self.call(Method::DELETE, path, None).await.map(drop)
    }

    /// `GET url` without the admin key (session URLs are their own secret, and may point at
    /// another host than `--url`), returning the response to stream its body.
    pub async fn open_stream(&self, url: &str) -> Result<Response<Incoming>, CliError> {
        let uri: Uri = url.parse().map_err(|_| {
            CliError::BadResponse(format!(
                "the server gave a session URL that is not a URL: {url:?}"
            ))
        })?;
        let req = Request::get(uri)
            .header(USER_AGENT, CLI_USER_AGENT)
            .header(ACCEPT, "text/plain")
            .body(Full::new(Bytes::new()))
            .map_err(|e| CliError::Io(format!("cannot build the request: {e}")))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| CliError::from_request(url, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(CliError::NotFound(
                "the log session expired before it could be read".into(),
            ));
        }
        let body = collect(url, resp.into_body()).await.unwrap_or_default();
        Err(CliError::from_answer(status, &body))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Bytes, CliError> {
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url
            .parse()
            .map_err(|_| CliError::Usage(format!("{url:?} is not a valid URL")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(USER_AGENT, CLI_USER_AGENT);
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.key)).map_err(|_| {
            CliError::Usage("the admin key contains characters not allowed in a header".into())
        })?;
        req = req
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json");
        let body = match json {
            Some(j) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(j))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| CliError::Io(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| CliError::from_request(&self.base, &e))?;
            let status = resp.status();
            let body = collect(&self.base, resp.into_body()).await?;
            Ok::<_, CliError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| CliError::Network {
                url: self.base.clone(),
                reason: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            })??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError::from_answer(status, &body))
        }
    }
}

async fn collect(url: &str, body: Incoming) -> Result<Bytes, CliError> {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| CliError::Network {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, CliError> {
    // A 204 or empty 2xx body parses as JSON `null`, so `()` and `Option` answers work.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        CliError::BadResponse(format!(
            "the server's answer is not what this client expects: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_sentences() {
        let e = CliError::from_answer(
            StatusCode::UNAUTHORIZED,
            br#"{"id":"unauthorized","message":"x"}"#,
        );
        assert_eq!(
            e.to_string(),
            "the server refused the admin key (check LOGPLEX_AUTH_KEY)"
        );
        assert_eq!(e.exit_code(), 1);

        let e = CliError::from_answer(
            StatusCode::NOT_FOUND,
            br#"{"id":"not_found","message":"no such channel"}"#,
        );
        assert_eq!(e.to_string(), "no such channel");
        assert_eq!(e.in_app("demo").to_string(), r#"unknown app "demo""#);

        let e = CliError::from_answer(
            StatusCode::CONFLICT,
            br#"{"id":"conflict","message":"channel demo already exists"}"#,
        );
        assert_eq!(e.in_app("demo").to_string(), "channel demo already exists");

        let e = CliError::from_answer(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(e.to_string(), "the server answered 502 Bad Gateway");

        let e = CliError::Unreachable {
            url: "http://127.0.0.1:8001".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the server at http://127.0.0.1:8001 (is `logplex serve` running?)"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base("--url", "http://127.0.0.1:8001/").unwrap(),
            "http://127.0.0.1:8001"
        );
        assert!(matches!(
            normalize_base("--url", "https://x"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            normalize_base("--url", "127.0.0.1:8001"),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("http-5xx"), "http-5xx");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[tokio::test]
    async fn requests_carry_the_key_and_errors_map() {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let auth = req.headers().get(AUTHORIZATION).cloned();
                    let path = req.uri().path().to_string();
                    let method = req.method().clone();
                    let body = req.into_body().collect().await?.to_bytes();
                    let (status, answer) =
                        match (auth.as_ref().map(|a| a.as_bytes()), path.as_str()) {
                            (Some(b"Bearer k"), "/v2/channels") if method == Method::POST => {
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                (
                                    201,
                                    format!(r#"{{"name":{},"tokens":{{"app":"t.1"}}}}"#, v["name"]),
                                )
                            }
                            (Some(b"Bearer k"), "/v2/channels/demo")
                                if method == Method::DELETE =>
                            {
                                (204, String::new())
                            }
                            (Some(b"Bearer k"), _) => {
                                (404, r#"{"id":"not_found","message":"nope"}"#.into())
                            }
                            _ => (401, r#"{"id":"unauthorized","message":"bad key"}"#.into()),
                        };
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(answer)))
                            .unwrap(),
                    )
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        let base = format!("http://{addr}");
        let c = Client::new(base.clone(), "k".into());
        let v: serde_json::Value = c
            .post("/v2/channels", &serde_json::json!({"name": "demo"}))
            .await
            .unwrap();
        assert_eq!(v["name"], "demo");
        c.delete("/v2/channels/demo").await.unwrap();
        let e = c
            .get::<serde_json::Value>("/v2/channels/nope")
            .await
            .unwrap_err()
            .in_app("nope");
        assert_eq!(e.to_string(), r#"unknown app "nope""#);
        let bad = Client::new(base, "wrong".into());
        let e = bad
            .get::<serde_json::Value>("/v2/channels")
            .await
            .unwrap_err();
        assert!(matches!(e, CliError::Unauthorized));

        // Nothing listens on a freshly closed port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = Client::new(format!("http://{closed}"), "k".into());
        let e = c
            .get::<serde_json::Value>("/v2/channels")
            .await
            .unwrap_err();
        assert!(matches!(e, CliError::Unreachable { .. }), "{e:?}");
    }
}
