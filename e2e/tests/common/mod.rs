//! The service binaries as real processes, for the end-to-end tests: started with the
//! environment a test gives (and the tests' token secret), their stderr kept, killed when
//! dropped; and a MongoDB database of the test's own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
pub use test_support::http::Reply;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;

pub use test_support::servers::{database_url, mongodb_uri};

/// How long a service may take to start listening and to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines printed when a test fails.
pub const LOG_LINES: usize = 200;

// ---- the service processes ------------------------------------------------------------------

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

/// A service binary in the target directory (`CARGO_TARGET_DIR`, a relative one taken from
/// the workspace root, else `target/`), built by `cargo build --workspace` or `make test`.
pub fn binary(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let path = target
        .join("debug")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: build the services first with `cargo build --workspace` \
         (`make test` builds every target and starts the databases)",
        path.display()
    );
    path
}

/// The port in a line such as `... write-service listening port=41234`.
pub fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("listening") {
        return None;
    }
    let after = line.split("port=").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Every line a service wrote to stderr (a test may search the whole log).
pub type Log = Arc<Mutex<Vec<String>>>;

/// Reads the child's stderr to the end, so it never blocks on a full pipe: keeps the last
/// lines and reports the port from the "listening" line.
pub async fn drain(stderr: ChildStderr, log: Log, port: oneshot::Sender<u16>) {
    let mut port = Some(port);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = listening_port(&line)
            && let Some(tx) = port.take()
        {
            let _ = tx.send(p);
        }
        log.lock().unwrap().push(line);
    }
}

/// The last [`LOG_LINES`] lines.
pub fn tail(log: &Log) -> String {
    let log = log.lock().unwrap();
    log[log.len().saturating_sub(LOG_LINES)..].join("\n")
}

/// One running service binary; killed when dropped.
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub port: u16,
    pub log: Log,
}

impl Service {
    pub async fn start(name: &'static str, env: &[(&str, String)]) -> Service {
        let mut command = Command::new(binary(name));
        command
            .env("RUST_LOG", "info,sqlx=warn")
            // Tokens signed with the tests' secret are valid; a test's env may say otherwise.
            .env("AUTH_HS256_SECRET", test_support::auth::SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let log: Log = Arc::default();
        let (tx, rx) = oneshot::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(drain(stderr, log.clone(), tx));
        let port = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => panic!("{name} exited before listening:\n{}", tail(&log)),
            Err(_) => panic!(
                "{name} did not listen within {START_TIMEOUT:?}:\n{}",
                tail(&log)
            ),
        };
        Service {
            name,
            child,
            port,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/health/ready` until it answers 200.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/health/ready", self.url());
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, tail(&self.log));
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {START_TIMEOUT:?}:\n{}",
                self.name,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, no last checkpoint.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (port {}) log ----\n{}",
                self.name,
                self.port,
                tail(&self.log)
            );
        }
    }
}

/// An HTTP client that sends a staff token with every request: the tests drive the shop as
/// its staff, to whom every endpoint is open (who may do what is `access.rs`'s subject).
pub fn staff_http() -> reqwest::Client {
    let staff = test_support::auth::bearer(&test_support::auth::staff());
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(60))
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            staff.parse().unwrap(),
        )]))
        .build()
        .unwrap()
}

/// The write-service on PostgreSQL database `database` and the read-service on a fresh
/// MongoDB database, as processes, not yet ready; the URL of `database` and the MongoDB
/// database (dropped with it).
pub async fn write_and_read(
    database: &str,
    consistency_timeout_ms: u64,
) -> (Service, Service, String, MongoDatabase) {
    let database_url = database_url(database);
    let mongodb_database = MongoDatabase {
        name: format!("e2e{}", uuid::Uuid::new_v4().simple()),
    };
    let write = Service::start(
        "write-service",
        &[
            ("DATABASE_URL", database_url.clone()),
            ("WRITE_SERVICE_ADDR", "127.0.0.1:0".into()),
        ],
    )
    .await;
    let read = Service::start(
        "read-service",
        &[
            ("MONGODB_URI", mongodb_uri()),
            ("MONGODB_DATABASE", mongodb_database.name.clone()),
            ("READ_SERVICE_ADDR", "127.0.0.1:0".into()),
            (
                "READ_CONSISTENCY_TIMEOUT_MS",
                consistency_timeout_ms.to_string(),
            ),
        ],
    )
    .await;
    (write, read, database_url, mongodb_database)
}

/// The test's own MongoDB database, dropped when the test ends, whether it passed or not.
pub struct MongoDatabase {
    pub name: String,
}

impl Drop for MongoDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = mongodb::Client::with_uri_str(mongodb_uri()).await?;
                client.database(&name).drop().await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop MongoDB database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop MongoDB database {}", self.name),
        }
    }
}

/// Sends `request` (`what` names it if it cannot be sent) and reads the answer.
pub async fn answer(request: reqwest::RequestBuilder, what: &str) -> Reply {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let streaming = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // An event stream does not end: the answer is its status and headers (dropping
        // the response closes it).
        return Reply {
            status,
            headers,
            body: Value::String("(an event stream)".to_owned()),
        };
    }
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}
