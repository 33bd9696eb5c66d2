//! The logplex API's channels, tokens, drains and sessions (`/v2/...`; alert rules are in
//! [`super::alerts`], the stats in [`super::stats`]). A channel is shown as
//! `{"name","tokens":{NAME:TOKEN}}`, a drain as `{"id","token","url","status"}` with a
//! password in its URL shown as `***`. Adding and removing drains is shared with the
//! Platform API (`add_drain`, `remove_drain`).

use super::{no_content, reply, ApiError, Clash, JsonBody, Missing, Params, V2};
use crate::names::{valid_channel_name, valid_token_name};
use crate::server::Node;
use crate::session::Spec;
use crate::store::{self, StoreError};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// A store error of a request about app `name`: "not found" means that app.
pub(crate) fn or_no_app(name: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::no_app(name),
        other => other.into(),
    }
}

pub(crate) fn channel_json(rec: &store::ChannelRecord) -> Value {
    let tokens: serde_json::Map<String, Value> = rec
        .tokens
        .iter()
        .map(|(n, t)| (n.clone(), Value::String(t.clone())))
        .collect();
    json!({"name": rec.name, "tokens": tokens, "metrics": rec.metrics})
}

/// The channel named `name`, from the routing snapshot.
async fn find(node: &Node, name: &str) -> Result<store::ChannelRecord, ApiError> {
    node.catch_up_on(name).await;
    let snap = node.registry.snapshot();
    snap.record(name).ok_or_else(|| ApiError::no_app(name))
}

/// Channels in one page of `GET /v2/channels` when `limit` is left out.
pub const PAGE_DEFAULT: usize = 1000;
/// The largest `limit` of `GET /v2/channels`.
pub const PAGE_MAX: usize = 10_000;

/// A page of a list by name (`?limit=N&after=NAME`): those after `after` (from the first
/// when left out), at most `limit` ([`PAGE_DEFAULT`], at most [`PAGE_MAX`]).
pub(super) struct Page {
    pub limit: usize,
    pub after: String,
}

impl Page {
    pub fn from_query(query: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            limit: PAGE_DEFAULT,
            after: String::new(),
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "limit" => {
                    page.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=PAGE_MAX).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "limit {v:?} must be a number from 1 to {PAGE_MAX}."
                            ))
                        })?
                }
                "after" => page.after = v,
                _ => {}
            }
        }
        Ok(page)
    }

    /// The page's items of `all` (those after `after`, in order), with one more when more
    /// follow.
    pub fn take<T>(&self, all: impl Iterator<Item = T>) -> Vec<T> {
        all.take(self.limit + 1).collect()
    }

    /// The page's answer: `items` (from [`Page::take`]), and when
    /// more follow a `Link: <PATH?limit=N&after=LAST>; rel="next"` header, LAST the name of
    /// the page's last item.
    pub fn reply<T>(
        &self,
        path: &str,
        mut items: Vec<T>,
        name: impl Fn(&T) -> &str,
        body: impl FnOnce(Vec<T>) -> Value,
    ) -> Response {
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        let next = match (more, items.last()) {
            (true, Some(last)) => Some(format!(
                "<{path}?limit={}&after={}>; rel=\"next\"",
                self.limit,
                name(last)
            )),
            _ => None,
        };
        let mut r = reply(StatusCode::OK, &body(items));
        if let Some(v) = next.and_then(|l| hyper::header::HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(hyper::header::LINK, v);
        }
        r
    }
}

/// `GET /v2/channels?limit=N&after=NAME`: a page (`Page`) of channels by name. When more
/// follow, a `Link: <…?limit=N&after=LAST>; rel="next"` header says where the next page
/// starts. Finding the start of a page costs O(log n).
pub async fn list_channels(
    State(node): State<Arc<Node>>,
    RawQuery(query): RawQuery,
) -> Result<Response, V2> {
    let page = Page::from_query(query.as_deref())?;
    let snap = node.registry.snapshot();
    Ok(page.reply(
        "/v2/channels",
        page.take(snap.records_after(&page.after)),
        |c| &c.name,
        |items| Value::Array(items.iter().map(channel_json).collect()),
    ))
}

/// `GET /v2/channels/NAME`.
pub async fn channel(
    State(node): State<Arc<Node>>,
    Params(name): Params<String>,
) -> Result<Response, V2> {
    Ok(reply(
        StatusCode::OK,
        &channel_json(&find(&node, &name).await?),
    ))
}

/// `DELETE /v2/channels/NAME`: the channel, its tokens, drains, rules and history.
pub async fn delete_channel(
    State(node): State<Arc<Node>>,
    Params(name): Params<String>,
) -> Result<Response, V2> {
    let n = name.clone();
    match &node.cluster {
        Some(c) => c.destroy_channel(&name).await,
        None => {
            node.registry
                .change(Some(&name), move |c| store::delete_channel(c, &n))
                .await
        }
    }
    .map_err(or_no_app(&name))?;
    Ok(no_content())
}

/// `GET /v2/channels/NAME/tokens`: `[{"name","token"}]`.
pub async fn tokens(
    State(node): State<Arc<Node>>,
    Params(name): Params<String>,
) -> Result<Response, V2> {
    let rec = find(&node, &name).await?;
    let list: Vec<_> = rec
        .tokens
        .iter()
        .map(|(n, t)| json!({"name": n, "token": t}))
        .collect();
    Ok(reply(StatusCode::OK, &Value::Array(list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    name: String,
    #[serde(default)]
    tokens: Vec<String>,
    /// Metrics from the logs for this channel (off when left out).
    #[serde(default)]
    metrics: bool,
}

/// `POST /v2/channels` `{"name","tokens":[NAME…],"metrics":false}`.
pub async fn create_channel(
    State(node): State<Arc<Node>>,
    JsonBody(body): JsonBody<NewChannel>,
) -> Result<Response, V2> {
    if !valid_channel_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "Name {:?} must start with a letter and use only lowercase letters, digits and dashes (2 to 63).",
            body.name
        ))
        .into());
    }
    if let Some(t) = body.tokens.iter().find(|t| !valid_token_name(t)) {
        return Err(ApiError::invalid(format!(
            "Token name {t:?} must be 1 to 48 printable characters."
        ))
        .into());
    }
    let mut tokens = body.tokens;
    tokens.sort();
    tokens.dedup();
    let (name, with_metrics) = (body.name.clone(), body.metrics);
    let made = match &node.cluster {
        Some(c) => c.create_channel(&name, &tokens, with_metrics).await,
        None => {
            node.registry
                .change(Some(&body.name), move |c| {
                    let rec = store::create_channel(c, &name, &tokens)?;
                    if with_metrics {
                        return store::set_channel_metrics(c, &name, true);
                    }
                    Ok(rec)
                })
                .await
        }
    };
    let rec = made.map_err(|e| match e {
        StoreError::Conflict => ApiError::Conflict(Clash::App(body.name)),
        other => other.into(),
    })?;
    Ok(reply(StatusCode::CREATED, &channel_json(&rec)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
}

/// `POST /v2/channels/NAME/tokens` `{"name"}`: `{"name","token"}`.
pub async fn create_token(
    State(node): State<Arc<Node>>,
    Params(channel): Params<String>,
    JsonBody(body): JsonBody<NewToken>,
) -> Result<Response, V2> {
    if !valid_token_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "Token name {:?} must be 1 to 48 printable characters.",
            body.name
        ))
        .into());
    }
    let (ch, tn) = (channel.clone(), body.name.clone());
    let made = match &node.cluster {
        Some(c) => c.create_token(&channel, &body.name).await,
        None => {
            node.registry
                .change(Some(&channel), move |c| store::create_token(c, &ch, &tn))
                .await
        }
    };
    let token = made.map_err(|e| match e {
        StoreError::Conflict => ApiError::Conflict(Clash::Token {
            app: channel.clone(),
            name: body.name.clone(),
        }),
        other => or_no_app(&channel)(other),
    })?;
    Ok(reply(
        StatusCode::CREATED,
        &json!({"name": body.name, "token": token}),
    ))
}

/// `GET /v2/channels/NAME/drains`: each drain with its `status`.
pub async fn drains(
    State(node): State<Arc<Node>>,
    Params(name): Params<String>,
) -> Result<Response, V2> {
    let n = name.clone();
    let list = node
        .registry
        .store()
        .call(move |c| store::channel_drains(c, &n))
        .await
        .map_err(or_no_app(&name))?;
    let list = match &node.cluster {
        None => list
            .iter()
            .map(|d| {
                let mut v = drain_json(d);
                v["status"] = status_json(node.drains.status(&d.id));
                v
            })
            .collect(),
        Some(c) => {
            let ids: Vec<String> = list.iter().map(|d| d.id.clone()).collect();
            let local = |id: &str| {
                node.drains
                    .status(id)
                    .unwrap_or_else(crate::drain::Status::connecting)
            };
            let spread = crate::cluster::drains::spread(c, &name, &ids, local).await;
            list.iter()
                .zip(spread)
                .map(|(d, s)| {
                    let mut v = drain_json(d);
                    v["status"] = spread_json(s);
                    v
                })
                .collect()
        }
    };
    Ok(reply(StatusCode::OK, &Value::Array(list)))
}

/// In cluster mode a drain's `status` is its sum over the live nodes (each node delivers
/// the lines it ingested), with `"scope":"cluster"` and each node's part in `nodes`
/// (`[{"node", …the status fields}]`); with Redis away it is this node's own, with
/// `"scope":"local"` and this node alone in `nodes`.
fn spread_json(s: crate::cluster::drains::Spread) -> Value {
    let mut v = status_json(Some(s.total));
    v["scope"] = Value::from(if s.cluster { "cluster" } else { "local" });
    v["nodes"] = s
        .nodes
        .into_iter()
        .map(|(n, st)| {
            let mut part = status_json(Some(st));
            part["node"] = Value::from(n);
            part
        })
        .collect();
    v
}

#[derive(Deserialize)]
pub struct NewDrain {
    pub url: String,
}

/// `POST /v2/channels/NAME/drains` `{"url"}`.
pub async fn create_drain(
    State(node): State<Arc<Node>>,
    Params(name): Params<String>,
    JsonBody(body): JsonBody<NewDrain>,
) -> Result<Response, V2> {
    let d = add_drain(&node, &name, &body.url).await?;
    Ok(reply(StatusCode::CREATED, &drain_json(&d)))
}

/// `DELETE /v2/channels/NAME/drains/ID_TOKEN_OR_URL`.
pub async fn delete_drain(
    State(node): State<Arc<Node>>,
    Params((name, which)): Params<(String, String)>,
) -> Result<Response, V2> {
    remove_drain(&node, &name, &which).await?;
    Ok(no_content())
}

/// `{"id","token","url"}` of a drain; a password in the URL shows as `***`.
pub(crate) fn drain_json(d: &store::DrainRecord) -> Value {
    json!({"id": d.id, "token": d.token, "url": crate::drain::url::redact(&d.url)})
}

/// A drain's `status`: `{"state","last_error","last_error_at","sent","dropped","lag_lines",
/// "lag_seconds"}` (times in RFC 3339). A drain not running (not yet, or no more) is `connecting` with zeros.
fn status_json(st: Option<crate::drain::Status>) -> Value {
    let st = st.unwrap_or_else(crate::drain::Status::connecting);
    let at = crate::alert::rfc3339(st.last_error_at);
    json!({
        "state": st.state.as_str(),
        "last_error": st.last_error,
        "last_error_at": at,
        "sent": st.sent,
        "dropped": st.dropped,
        "lag_lines": st.lag_lines,
        "lag_seconds": (st.lag_seconds * 1000.0).round() / 1000.0,
    })
}

/// Validates and adds a drain; it starts at once (the registry refreshes the drains).
pub(crate) async fn add_drain(
    node: &Arc<Node>,
    channel: &str,
    url: &str,
) -> Result<store::DrainRecord, ApiError> {
    let parsed = crate::drain::DrainUrl::parse(url).map_err(ApiError::Invalid)?;
    if drain_loops(node, channel, &parsed).await {
        return Err(ApiError::invalid(format!(
            "A drain to {} would send every line of {channel} back into {channel} (it is this server's log input with a token of {channel}), forever.",
            parsed.redacted
        )));
    }
    let max = node.config.drains.max_per_channel;
    let (ch, u) = (channel.to_string(), url.to_string());
    let r = match &node.cluster {
        Some(c) => c.add_drain(channel, url, max).await,
        None => {
            node.registry
                .change(None, move |c| Ok(store::create_drain(c, &ch, &u, max)))
                .await
        }
    }
    .map_err(or_no_app(channel))?;
    r.map_err(|e| match e {
        store::AddDrain::Duplicate => ApiError::Conflict(Clash::Drain {
            app: channel.to_string(),
            url: url.to_string(),
        }),
        store::AddDrain::Limit(n) => ApiError::invalid(format!(
            "App {channel} already has {n} drains, the most allowed (drains.max_per_channel)."
        )),
        store::AddDrain::Store(e) => or_no_app(channel)(e),
    })
}

/// Would a drain of `channel` to `url` post the channel's lines back into it? It would when
/// the URL is this server's HTTP input (its bound address, or a name or address that
/// resolves to it, such as `localhost`) with one of the channel's tokens as password.
/// (A loop through something this cannot see, a proxy, is refused at ingest instead.)
async fn drain_loops(node: &Node, channel: &str, url: &crate::drain::DrainUrl) -> bool {
    let Some(input) = node.http_addr else {
        return false;
    };
    let Some((_, password)) = url
        .auth
        .as_ref()
        .filter(|_| url.kind == crate::drain::Kind::Http)
    else {
        return false;
    };
    if url.port != input.port() {
        return false;
    }
    let own_token = node
        .registry
        .snapshot()
        .record(channel)
        .is_some_and(|r| r.tokens.iter().any(|(_, t)| t.as_bytes() == &password[..]));
    if !own_token {
        return false;
    }
    let lookup = tokio::net::lookup_host((url.host.as_str(), url.port));
    match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => addrs.into_iter().any(|a| reaches(input, a)),
        _ => false,
    }
}

/// Does a connection to `a` reach a listener bound to `input`?
fn reaches(input: std::net::SocketAddr, a: std::net::SocketAddr) -> bool {
    if a.port() != input.port() {
        return false;
    }
    let (ip, bound) = (a.ip().to_canonical(), input.ip().to_canonical());
    // Connecting to 0.0.0.0 or :: reaches this host.
    let local = |ip: std::net::IpAddr| {
        ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
    };
    if bound.is_unspecified() {
        local(ip)
    } else {
        ip == bound || (ip.is_unspecified() && bound.is_loopback())
    }
}

/// Removes a drain by id, token or URL; it stops at once.
pub(crate) async fn remove_drain(
    node: &Arc<Node>,
    channel: &str,
    which: &str,
) -> Result<store::DrainRecord, ApiError> {
    let (ch, w) = (channel.to_string(), which.to_string());
    match &node.cluster {
        Some(c) => c.remove_drain(channel, which).await,
        None => {
            node.registry
                .change(None, move |c| store::delete_drain(c, &ch, &w))
                .await
        }
    }
    .map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound(Missing::Drain {
            app: channel.to_string(),
            which: which.to_string(),
        }),
        other => other.into(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    channel: String,
    num: Option<usize>,
    #[serde(default)]
    tail: bool,
    source: Option<String>,
    dyno: Option<String>,
    grep: Option<String>,
    /// Receive time from: RFC 3339 or a duration back from now (`2h`).
    since: Option<String>,
    /// Receive time until (not with `tail`).
    until: Option<String>,
}

/// `POST /v2/sessions`: `{"url"}`, built on `api.public_url`, never the Host header.
pub async fn create_session(
    State(node): State<Arc<Node>>,
    JsonBody(b): JsonBody<NewSession>,
) -> Result<Response, V2> {
    // With the durable log, history reaches back past the ring.
    let max = match node.log {
        Some(_) => node.config.log.max_lines_per_session,
        None => node.config.buffers.history_lines,
    };
    // A window of time without a number asks for every line in it the server gives.
    let windowed = b.since.as_deref().is_some_and(|s| !s.is_empty())
        || b.until.as_deref().is_some_and(|s| !s.is_empty());
    let num = b.num.unwrap_or(if windowed { max } else { 100 });
    if num > max {
        return Err(
            ApiError::invalid(format!("num {num} is over the history size ({max}).")).into(),
        );
    }
    node.catch_up_on(&b.channel).await;
    let channel_id = match node.registry.snapshot().channel(&b.channel) {
        Some(c) => c.id,
        None => return Err(ApiError::no_app(&b.channel).into()),
    };
    let nonempty = |o: Option<String>| o.filter(|s| !s.is_empty());
    let now = crate::clock::now_micros();
    let instant = |name: &str, o: Option<String>| match nonempty(o) {
        None => Ok(None),
        Some(raw) => crate::session::parse_instant(&raw, now)
            .map(Some)
            .map_err(|why| ApiError::invalid(format!("{name}: {why}."))),
    };
    let since_us = instant("since", b.since)?;
    let until_us = instant("until", b.until)?;
    if until_us.is_some() && b.tail {
        return Err(ApiError::invalid("until cannot be used with tail.".to_string()).into());
    }
    if let (Some(s), Some(u)) = (since_us, until_us) {
        if s >= u {
            return Err(ApiError::invalid("since must be before until.".to_string()).into());
        }
    }
    let id = crate::session::create(
        &node,
        Spec {
            channel: b.channel,
            channel_id,
            num,
            tail: b.tail,
            source: nonempty(b.source),
            dyno: nonempty(b.dyno),
            grep: nonempty(b.grep),
            since_us,
            until_us,
        },
    )
    .await;
    Ok(reply(
        StatusCode::CREATED,
        &json!({"url": format!("{}/sessions/{id}", node.public_url)}),
    ))
}
