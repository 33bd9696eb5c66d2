//! The API's routing over a real socket: which routes need the admin key (and that an
//! unknown path or method without it is a 401, never a 404), that a route's other methods
//! are a JSON 404, that a trailing `/` is ignored, that path segments are percent-decoded
//! as the CLI encodes them, and that each surface words its errors its own way.

mod common;
use common::*;

fn id_and_message(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["id"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn the_admin_key_guards_every_route_but_the_public_ones() {
    let s = TestServer::start().await;
    let base = s.api();
    for path in ["/healthcheck", "/", "/console/style.css"] {
        let (st, body) = request_with(&base, "GET", path, None, &[]).await;
        assert_eq!(st, 200, "{path}: {body}");
    }
    // A session URL is public, guarded by its id alone.
    let (st, body) = request_with(&base, "GET", "/sessions/nope", None, &[]).await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(
        id_and_message(&body),
        ("not_found".into(), "Unknown or expired session.".into())
    );
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/v2/channels"),
        ("POST", "/v2/channels"),
        ("GET", "/apps/demo"),
        ("GET", "/v2/nothing-here"),
        ("PUT", "/v2/channels"),
        ("DELETE", "/healthcheck/x"),
    ] {
        let (st, body) = request_with(&base, method, path, None, &[]).await;
        assert_eq!(st, 401, "{method} {path}: {body}");
        assert_eq!(id_and_message(&body).0, "unauthorized", "{body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_404s() {
    let s = TestServer::start().await;
    let base = s.api();
    let (st, body) = request(&base, "GET", "/v2/nothing-here", None).await;
    assert_eq!(st, 404);
    assert_eq!(
        id_and_message(&body),
        ("not_found".into(), "No route GET /v2/nothing-here.".into())
    );
    let (st, body) = request(&base, "PUT", "/v2/channels", None).await;
    assert_eq!(st, 404, "a method a route does not answer: {body}");
    assert_eq!(
        id_and_message(&body),
        ("not_found".into(), "No route PUT /v2/channels.".into())
    );
    let (st, body) = request(&base, "GET", "/console/nope.js", None).await;
    assert_eq!(st, 404);
    assert_eq!(id_and_message(&body).1, "No file /console/nope.js.");
    s.stop().await;
}

#[tokio::test]
async fn a_trailing_slash_is_ignored_and_segments_are_percent_decoded() {
    let s = TestServer::start().await;
    let base = s.api();
    s.create_app("demo").await;
    let (st, body) = request(&base, "GET", "/v2/channels/", None).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("\"demo\""), "{body}");
    let (st, body) = request(&base, "GET", "/v2/channels/demo/", None).await;
    assert_eq!(st, 200, "{body}");

    // A drain removed by its URL, percent-encoded as the CLI sends a segment.
    let url = "https://u:p@127.0.0.1:9/x?y=1";
    let (st, body) = request(
        &base,
        "POST",
        "/v2/channels/demo/drains",
        Some(&format!("{{\"url\":\"{url}\"}}")),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let encoded = "https%3A%2F%2Fu%3Ap%40127.0.0.1%3A9%2Fx%3Fy%3D1";
    let (st, body) = request(
        &base,
        "DELETE",
        &format!("/v2/channels/demo/drains/{encoded}"),
        None,
    )
    .await;
    assert_eq!(st, 204, "{body}");
    let (st, body) = request(
        &base,
        "DELETE",
        &format!("/v2/channels/demo/drains/{encoded}"),
        None,
    )
    .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(id_and_message(&body).1, format!("No drain {url} on demo."));

    // `%2A` is `*`, the rules of every app.
    let (st, body) = request(&base, "GET", "/v2/channels/%2A/alerts", None).await;
    assert_eq!(st, 200, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn each_surface_words_a_missing_app_and_a_duplicate_drain_its_own_way() {
    let s = TestServer::start().await;
    let base = s.api();
    let (st, body) = request(&base, "GET", "/v2/channels/nope/drains", None).await;
    assert_eq!(st, 404);
    assert_eq!(
        id_and_message(&body),
        ("not_found".into(), "Couldn't find that app: nope.".into())
    );
    let (st, body) = request(&base, "GET", "/apps/nope/log-drains", None).await;
    assert_eq!(st, 404);
    assert_eq!(
        id_and_message(&body),
        ("not_found".into(), "Couldn't find that app.".into())
    );

    s.create_app("demo").await;
    let drain = r#"{"url":"https://127.0.0.1:9/x"}"#;
    let (st, body) = request(&base, "POST", "/v2/channels/demo/drains", Some(drain)).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = request(&base, "POST", "/v2/channels/demo/drains", Some(drain)).await;
    assert_eq!(st, 409);
    assert_eq!(
        id_and_message(&body),
        (
            "conflict".into(),
            "https://127.0.0.1:9/x is already a drain of demo.".into()
        )
    );
    let (st, body) = request(&base, "POST", "/apps/demo/log-drains", Some(drain)).await;
    assert_eq!(st, 422);
    assert_eq!(
        id_and_message(&body),
        (
            "invalid_params".into(),
            "Url has already been taken.".into()
        )
    );
    let (st, body) = request(&base, "GET", "/apps/demo/log-drains/d.nope", None).await;
    assert_eq!(st, 404);
    assert_eq!(id_and_message(&body).1, "Couldn't find that log drain.");

    // Body errors read alike on both surfaces.
    for path in ["/v2/channels/demo/drains", "/apps/demo/log-drains"] {
        let (st, body) = request(&base, "POST", path, Some("{bad")).await;
        assert_eq!(st, 400, "{path}: {body}");
        let (id, message) = id_and_message(&body);
        assert_eq!(id, "bad_request");
        assert!(message.starts_with("Invalid JSON body: "), "{message}");
    }
    s.stop().await;
}

/// `GET /v2/channels` pages by name: `limit` (1 to 10000) and `after`, with a `Link` to the
/// next page while more follow; the default page holds up to 1000.
#[tokio::test]
async fn the_channel_list_pages_by_name() {
    let s = TestServer::start().await;
    let base = s.api();
    for n in ["delta", "alpha", "echo", "charlie", "bravo"] {
        s.create_app(n).await;
    }
    let names = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, body) = request(&base, "GET", "/v2/channels", None).await;
    assert_eq!(st, 200);
    assert_eq!(names(&body), ["alpha", "bravo", "charlie", "delta", "echo"]);
    // Follow the Link headers from the first page to the last.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let (mut path, mut seen, mut pages) = (Some("/v2/channels?limit=2".to_string()), vec![], 0);
    while let Some(p) = path.take() {
        pages += 1;
        assert!(pages <= 5, "the pages never end");
        let req = hyper::Request::get(format!("{base}{p}"))
            .header("authorization", format!("Bearer {KEY}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        path = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string())
            .map(|l| {
                let (target, rel) = l.split_once("; ").unwrap();
                assert_eq!(rel, "rel=\"next\"");
                target.trim_matches(['<', '>']).to_string()
            });
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let page = names(&String::from_utf8_lossy(&body));
        assert!(page.len() <= 2);
        seen.extend(page);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["alpha", "bravo", "charlie", "delta", "echo"]);
    let (_, body) = request(&base, "GET", "/v2/channels?after=bravo&limit=2", None).await;
    assert_eq!(names(&body), ["charlie", "delta"]);
    let (_, body) = request(&base, "GET", "/v2/channels?after=echo", None).await;
    assert!(names(&body).is_empty());
    for bad in ["0", "10001", "many"] {
        let (st, body) = request(&base, "GET", &format!("/v2/channels?limit={bad}"), None).await;
        assert_eq!(st, 422, "limit={bad}: {body}");
        assert!(body.contains("must be a number from 1 to 10000"), "{body}");
    }
    s.stop().await;
}
