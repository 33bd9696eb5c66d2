//! The web console, served by the API listener: the live log page of a session
//! (`GET /sessions/UUID` asked for `text/html`), the console (`GET /`, with an app's view
//! drawing charts of its metrics from the logs) and their static files
//! (`GET /console/FILE`), all embedded in the binary.
//!
//! The pages are plain HTML, CSS and JavaScript modules with no build step. They hold no
//! data and no secret: the live page streams its session over Server-Sent Events from its
//! own URL (the session URL is the only secret, as for the CLI, and no admin key reaches
//! it); the console asks for the admin key in the browser and calls the JSON API with it.
//! Every page and file is sent with a `Content-Security-Policy` that lets the browser load
//! and connect to this origin only (no CDN, font or analytics request can leave it), and
//! with `Referrer-Policy: no-referrer` so a session URL never leaks as a referrer.

use crate::http::{response, Body};
use crate::server::Node;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use std::sync::Arc;

/// Only this origin, for everything; no inline script or style; never framed.
pub const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

const LIVE_HTML: &str = include_str!("assets/live.html");
const CONSOLE_HTML: &str = include_str!("assets/console.html");

/// The files under `/console/`: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    (
        "lines.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/lines.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "metrics.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/metrics.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/charts.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Does a request for a session URL want the live page? A browser's navigation does
/// (`Accept: text/html,…`); an EventSource asks for `text/event-stream` and other
/// clients for anything else, and get the stream (a client that names both gets the
/// stream too).
pub fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let names = |wanted: &str| {
        accept.split(',').any(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(wanted))
        })
    };
    names("text/html") && !names("text/event-stream")
}

/// Adds the headers every console response carries.
fn secure(mut r: Response<Body>, cache: &'static str) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    secure(
        response(status, "text/html; charset=utf-8", body),
        "no-store",
    )
}

/// `GET /console/FILE`: an embedded file, or `None` for a name that is not one.
pub fn file(name: &str) -> Option<Response<Body>> {
    let (_, ctype, body) = FILES.iter().find(|(n, _, _)| *n == name)?;
    // Revalidated on every load (no ETag: the files are small), so an upgrade is seen at once.
    Some(secure(
        response(StatusCode::OK, ctype, body.as_bytes()),
        "no-cache",
    ))
}

/// `GET /`: the console. The page itself holds nothing; it asks for the admin key and
/// everything it shows comes from the JSON API called with that key.
pub fn console() -> Response<Body> {
    html(StatusCode::OK, CONSOLE_HTML.to_string())
}

/// `GET /sessions/UUID` for a browser: the live page of a session that exists (404, as a
/// page, for one that does not, has expired or whose app was destroyed). Opening the page
/// keeps the session alive like opening its stream.
pub fn live(node: &Arc<Node>, id: &str) -> Response<Body> {
    let spec = uuid::Uuid::parse_str(id)
        .ok()
        .and_then(|id| node.sessions.touch(&id))
        .filter(|spec| {
            node.registry
                .snapshot()
                .channel_with_id(&spec.channel, spec.channel_id)
                .is_some()
        });
    let Some(spec) = spec else {
        let page = fill(LIVE_HTML, &[("app", ""), ("tail", "gone"), ("num", "0")]);
        return html(StatusCode::NOT_FOUND, page);
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let num = spec.num.to_string();
    let page = fill(
        LIVE_HTML,
        &[
            ("app", &spec.channel),
            ("tail", if spec.tail { "true" } else { "false" }),
            ("num", &num),
            ("source", &opt(&spec.source)),
            ("dyno", &opt(&spec.dyno)),
            ("grep", &opt(&spec.grep)),
        ],
    );
    html(StatusCode::OK, page)
}

/// Replaces each `{{name}}` of the template with its value, HTML-escaped; names not given
/// become empty.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + len];
        if let Some((_, v)) = values.iter().find(|(n, _)| *n == name) {
            escape_into(&mut out, v);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_navigation_wants_html_and_an_event_source_does_not() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            wants_html(&h)
        };
        assert!(with(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
        ));
        assert!(with("TEXT/HTML"));
        assert!(!with("text/event-stream"));
        assert!(!with("text/html, text/event-stream"));
        assert!(!with("*/*"));
        assert!(!with("text/plain"));
        assert!(!with("application/xhtml+xml"));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn values_are_escaped_into_the_template() {
        let t = r#"<main data-app="{{app}}" data-grep="{{grep}}" data-x="{{unknown}}">{{"#;
        let out = fill(t, &[("app", "demo"), ("grep", r#""><script>x</script>&'"#)]);
        assert_eq!(
            out,
            r#"<main data-app="demo" data-grep="&quot;&gt;&lt;script&gt;x&lt;/script&gt;&amp;&#39;" data-x="">{{"#
        );
    }

    #[test]
    fn every_page_names_only_files_that_exist() {
        for page in [LIVE_HTML, CONSOLE_HTML] {
            for part in page.split("console/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                assert!(file(&name).is_some(), "{name} is named but not served");
            }
            // No request may leave the origin: no absolute URL in a page.
            assert!(
                !page.contains("http://") && !page.contains("https://") && !page.contains("//cdn")
            );
        }
        for (name, _, body) in FILES {
            // The SVG namespace is a name, not a request.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{name} names another origin"
            );
        }
    }
}
