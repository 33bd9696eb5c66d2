//! Safe storage over the real binary and `logplex::start`: the data directory private
//! (0700, files 0600), one owner at a time, the admin key stored only as its hash, and
//! history that survives a start that fails, a stop on a full disk, and is never traded
//! for a fresh install when the database file is empty or foreign.

mod common;

use common::serve::{write_config, Ports, Serve};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file of `dir` but `admin.key` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "admin.key" || !e.path().is_file() {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        if data.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(name);
        }
    }
    hits
}

fn meta(db: &Path, key: &str) -> Option<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .ok()
}

/// Sends `n` lines `line i` to `channel` over HTTP; every batch is stored (204).
async fn send_lines(s: &TestServer, token: &str, prefix: &str, n: usize) {
    let body: String = (0..n)
        .map(|i| octet(&frame(token, "web.1", &format!("{prefix} {i}"))))
        .collect();
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("t:{token}")
        )
    );
    let (st, b) = request_with(
        &format!("http://{}", s.addrs.http.unwrap()),
        "POST",
        "/logs",
        Some(&body),
        &[
            ("content-type", "application/logplex-1"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(st, 204, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_and_the_admin_key_stored_as_a_hash() {
    let s = TestServer::start_with(|c| c.api.auth_key.clear()).await;
    let dir = s.dir.path().to_path_buf();
    let key = std::fs::read_to_string(dir.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "256 bits as hex: {key}");
    let auth = format!("Bearer {key}");
    let (st, body) = request_with(
        &s.api(),
        "POST",
        "/v2/channels",
        Some(r#"{"name":"demo","tokens":["app"]}"#),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = request_with(
        &s.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", "Bearer not-the-key")],
    )
    .await;
    assert_eq!(st, 401);
    let dir = s.stop().await;
    let d = dir.path();
    let db = d.join("logplex.db");
    assert_eq!(
        meta(&db, "admin_key_sha256").as_deref(),
        Some(sha256_hex(&key).as_str())
    );
    assert_eq!(meta(&db, "admin_key"), None);
    assert!(
        files_containing(d, &key).is_empty(),
        "the key is in {:?}",
        files_containing(d, &key)
    );

    // Loosened by hand (or by an older version): fixed at the next start, key unchanged.
    std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    for f in ["logplex.db", "admin.key"] {
        std::fs::set_permissions(d.join(f), PermissionsExt::from_mode(0o644)).unwrap();
    }
    let mut c = test_config(d);
    c.api.auth_key.clear();
    let s = TestServer::start_in(dir, c).await;
    let d = s.dir.path().to_path_buf();
    assert_eq!(mode(&d), 0o700);
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&d).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            // The durable log's folder: 0700, its files 0600.
            assert_eq!(mode(&e.path()), 0o700, "{name}");
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                assert_eq!(mode(&f.path()), 0o600, "{name}/{:?}", f.file_name());
            }
        } else {
            assert_eq!(mode(&e.path()), 0o600, "{name}");
        }
        seen.push(name);
    }
    seen.sort();
    for f in [
        "admin.key",
        "logplex.db",
        "logplex.db-shm",
        "logplex.db-wal",
        "logplex.lock",
    ] {
        assert!(seen.iter().any(|n| n == f), "{f} missing from {seen:?}");
    }
    assert_eq!(
        std::fs::read_to_string(d.join("admin.key")).unwrap().trim(),
        key
    );
    let (st, _) = request_with(
        &s.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(st, 200);
    let dir = s.stop().await;

    // Deleting admin.key makes a new key: the old one stops working.
    std::fs::remove_file(dir.path().join("admin.key")).unwrap();
    let mut c = test_config(dir.path());
    c.api.auth_key.clear();
    let s = TestServer::start_in(dir, c).await;
    let new_key = std::fs::read_to_string(s.dir.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_key, key);
    let (st, _) = request_with(
        &s.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = request_with(
        &s.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &format!("Bearer {new_key}"))],
    )
    .await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_key_left_by_an_older_version_is_replaced_by_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logplex.db");
    let old_key = "0123456789abcdef0123456789abcdef-an-old-plain-admin-key";
    {
        // What older versions left: the key itself in `meta`, admin.key gone astray.
        let st = logplex::store::Store::open(&db).unwrap();
        st.call_blocking(|c| logplex::store::set_meta(c, "admin_key", old_key))
            .unwrap();
    }
    assert!(
        !files_containing(dir.path(), old_key).is_empty(),
        "the old key is in no file before the start"
    );
    let mut c = test_config(dir.path());
    c.api.auth_key.clear();
    let s = TestServer::start_in(dir, c).await;
    let (st, body) = request_with(
        &s.api(),
        "GET",
        "/v2/channels",
        None,
        &[("authorization", &format!("Bearer {old_key}"))],
    )
    .await;
    assert_eq!(st, 200, "the same key still works: {body}");
    let d = s.dir.path().to_path_buf();
    assert_eq!(
        std::fs::read_to_string(d.join("admin.key")).unwrap().trim(),
        old_key,
        "written to admin.key, the one place it stays readable"
    );
    assert!(
        files_containing(&d, old_key).is_empty(),
        "the plain key is gone from every file of the store: {:?}",
        files_containing(&d, old_key)
    );
    let dir = s.stop().await;
    let db = dir.path().join("logplex.db");
    assert_eq!(meta(&db, "admin_key"), None);
    assert_eq!(
        meta(&db, "admin_key_sha256").as_deref(),
        Some(sha256_hex(old_key).as_str())
    );
}

#[test]
fn a_second_serve_on_the_same_directory_exits_1_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data/logplex.db");
    let (p1, p2) = (Ports::free(), Ports::free());
    let c1 = write_config(dir.path(), "one.toml", &p1, &store, "");
    let c2 = write_config(dir.path(), "two.toml", &p2, &store, "");
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let mut first = Serve::start(&c1, p1.api(), &env);
    let mut second = Serve::spawn(&c2, &env);
    let st = second.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "{}", second.stderr_text());
    let err = second.stderr_text();
    assert!(
        err.contains(&format!(
            "is in use by another logplex (pid {})",
            first.pid()
        )),
        "{err}"
    );
    assert!(
        std::net::TcpStream::connect(p2.api()).is_err(),
        "the second bound nothing"
    );
    // The first serves on, then stops; now the second may have the directory.
    assert!(
        std::net::TcpStream::connect(p1.api()).is_ok(),
        "the first server stopped serving"
    );
    assert!(first.stop().success(), "{}", first.stderr_text());
    let mut second = Serve::start(&c2, p2.api(), &env);
    assert!(second.stop().success(), "{}", second.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_keeps_the_saved_history() {
    let s = TestServer::start().await;
    let token = s.create_app("demo").await;
    send_lines(&s, &token, "kept", 5).await;
    assert_eq!(s.history("demo", 100).await.len(), 5);
    let dir = s.stop().await;

    // A port already taken: the start fails before it touches the store.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = test_config(dir.path());
    c.ingest.http.listen = logplex::config::Listen::Addr(taken.local_addr().unwrap());
    let e = logplex::start(c, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(e.contains("cannot bind ingest.http.listen"), "{e}");
    drop(taken);

    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    let h = s.history("demo", 100).await;
    assert_eq!(h.len(), 5, "{h:?}");
    assert!(h[4].ends_with("app[web.1]: kept 4"), "{h:?}");
    // A crash (no save) right after: the history saved before is still there.
    let dir = {
        let mut s = s;
        let h = s.handle.take().unwrap();
        h.abort();
        let _ = h.await;
        s.shutdown.cancel();
        s.dir
    };
    let c = test_config(dir.path());
    let s = TestServer::start_in(dir, c).await;
    assert_eq!(s.history("demo", 100).await.len(), 5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_foreign_database_file_is_an_error_not_a_fresh_install() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logplex.db");
    std::fs::write(&db, b"").unwrap();
    let mut c = test_config(dir.path());
    c.api.auth_key.clear();
    let e = logplex::start(c.clone(), tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("an empty database is refused")
        .to_string();
    assert!(e.contains("empty (0 bytes)"), "{e}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left as it was");
    assert!(!dir.path().join("admin.key").exists(), "no new admin key");

    std::fs::remove_file(&db).unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY); PRAGMA user_version = 7;")
        .unwrap();
    let e = logplex::start(c, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("a foreign database is refused")
        .to_string();
    assert!(e.contains("not a logplex database"), "{e}");
    let tables: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing added to it");
}

#[test]
fn the_binary_exits_1_on_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data/logplex.db");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, b"").unwrap();
    let p = Ports::free();
    let c = write_config(dir.path(), "c.toml", &p, &store, "");
    let mut s = Serve::spawn(&c, &[]);
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    let err = s.stderr_text();
    assert!(err.contains("empty (0 bytes)"), "{err}");
}

#[test]
/// Without the durable log (`[log] path = "off"`), history is saved at stop.
fn a_stop_on_a_full_disk_says_what_was_lost_and_keeps_the_previous_save() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "3m") else {
        skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let store = fs.0.join("data/logplex.db");
    let p = Ports::free();
    let token = "t.00000000-0000-4000-8000-00000000f00d";
    let c = write_config(
        dir.path(),
        "c.toml",
        &p,
        &store,
        &format!(
            "[log]\npath = \"off\"\n[[channels]]\nname = \"demo\"\ntokens = {{ app = \"{token}\" }}\n"
        ),
    );
    let env = [("LOGPLEX_AUTH_KEY", KEY)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let post = |lines: Vec<String>| {
        let body: String = lines
            .iter()
            .map(|l| octet(&frame(token, "web.1", l)))
            .collect();
        let auth = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("t:{token}")
            )
        );
        let (st, b) = rt.block_on(request_with(
            &format!("http://{}", p.http()),
            "POST",
            "/logs",
            Some(&body),
            &[
                ("content-type", "application/logplex-1"),
                ("authorization", &auth),
            ],
        ));
        assert_eq!(st, 204, "{b}");
    };
    let history = || -> Vec<String> {
        let url = rt.block_on(async {
            let (st, b) = request(
                &format!("http://{}", p.api()),
                "POST",
                "/v2/sessions",
                Some(r#"{"channel":"demo","num":1500}"#),
            )
            .await;
            assert_eq!(st, 201, "{b}");
            serde_json::from_str::<serde_json::Value>(&b).unwrap()["url"]
                .as_str()
                .unwrap()
                .to_string()
        });
        rt.block_on(get_text(&url))
            .lines()
            .map(str::to_string)
            .collect()
    };

    // First run: ten lines, saved on a clean stop.
    let mut s = Serve::start(&c, p.api(), &env);
    post((0..10).map(|i| format!("first run {i}")).collect());
    assert!(s.stop().success(), "{}", s.stderr_text());

    // Second run: a megabyte of new lines, then the disk fills up.
    let mut s = Serve::start(&c, p.api(), &env);
    assert_eq!(history().len(), 10);
    let pad = "x".repeat(900);
    for b in 0..12 {
        post(
            (0..100)
                .map(|i| format!("second run {b}/{i} {pad}"))
                .collect(),
        );
    }
    let in_memory = history().len();
    assert!(in_memory > 900, "{in_memory}");
    let filler = fs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let st = s.stop();
    let err = s.stderr_text();
    assert_eq!(st.code(), Some(1), "a failed save is a failed stop: {err}");
    let lost: usize = err
        .split(" lines of history could not be kept")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of lost lines in: {err}"));
    assert_eq!(lost, in_memory, "{err}");
    assert!(err.contains("full"), "{err}");

    // With room again, the history saved by the first run is back.
    std::fs::remove_file(&filler).unwrap();
    let mut s = Serve::start(&c, p.api(), &env);
    let h = history();
    assert_eq!(h.len(), 10, "{h:?}");
    assert!(h[9].ends_with("app[web.1]: first run 9"), "{h:?}");
    assert!(s.stop().success(), "{}", s.stderr_text());
    drop(fs);
}
