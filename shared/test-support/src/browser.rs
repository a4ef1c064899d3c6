//! A headless Chromium for tests, driven by its DevTools protocol over `--remote-debugging-pipe`:
//! no chromedriver, no port to find, no WebSocket crate. Chromium reads JSON messages, each
//! ended by a NUL byte, from its fd 3 and writes them to its fd 4.
//!
//! ```no_run
//! # async fn run() -> Result<(), test_support::browser::BrowserError> {
//! use std::time::Duration;
//! let Some(mut browser) = test_support::browser::Browser::launch_or_skip().await else {
//!     return Ok(()); // Chromium is not installed and CI is not set
//! };
//! browser.goto("http://127.0.0.1:8080/dashboard").await?;
//! browser.wait_for("document.querySelector('#conn')?.dataset.state === 'live'", Duration::from_secs(10)).await?;
//! assert!(browser.page_errors().is_empty());
//! browser.close().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// The viewport every page gets, so screenshots have one size.
pub const VIEWPORT: (u32, u32) = (1280, 900);
/// How long one protocol call may take (Chromium's first answer takes about 2 s on a small machine).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Browser::wait_for`] evaluates its predicate.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Log lines quoted in an error when Chromium goes away.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// No Chromium to start: tests may skip on a developer's machine (see [`Browser::launch_or_skip`]).
    #[error("chromium is not installed: {0}")]
    NotInstalled(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The pipe closed: Chromium exited or crashed.
    #[error("chromium closed the DevTools pipe (log {}):\n{tail}", log.display())]
    Closed { log: PathBuf, tail: String },
    /// Chromium answered a call with an error.
    #[error("{method}: {message}")]
    Protocol { method: String, message: String },
    #[error("navigating to {url}: {message}")]
    Navigation { url: String, message: String },
    /// The evaluated script threw (or its promise rejected).
    #[error("script threw: {0}")]
    Script(String),
    #[error("{0}")]
    Timeout(String),
}

impl BrowserError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrowserError {
        let context = context.into();
        move |source| BrowserError::Io { context, source }
    }
}

/// What the page reported as going wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageErrorKind {
    /// An uncaught exception or unhandled promise rejection (`Runtime.exceptionThrown`).
    Exception,
    /// `console.error(...)` (`Runtime.consoleAPICalled` of type `error`).
    ConsoleError,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    pub kind: PageErrorKind,
    /// The message (an exception's description includes its stack).
    pub message: String,
    /// The script's URL and line, when Chromium names them.
    pub location: Option<String>,
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PageErrorKind::Exception => "uncaught",
            PageErrorKind::ConsoleError => "console.error",
        };
        write!(f, "{kind}: {}", self.message)?;
        if let Some(at) = &self.location {
            write!(f, " (at {at})")?;
        }
        Ok(())
    }
}

/// One Chromium with one page, killed when dropped.
pub struct Browser {
    // Declared before the profile so Chromium is killed before its profile is deleted.
    child: Child,
    to_chromium: ChildStdin,
    /// Every message Chromium sent, read by a task of its own so Chromium never blocks on a full
    /// pipe and events that arrive between calls are kept.
    from_chromium: mpsc::UnboundedReceiver<Value>,
    next_id: u64,
    /// The page's session: page-level calls carry it.
    session_id: String,
    page_errors: Vec<PageError>,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium (`$CHROMIUM`, else `chromium` on the `PATH`) headless with a fresh profile
    /// and opens a blank page of [`VIEWPORT`] size. Its stderr goes to
    /// `target/chromium/<pid>-<n>.log`, kept unless [`Browser::close`] succeeds.
    pub async fn launch() -> Result<Browser, BrowserError> {
        let binary = chromium_binary()?;
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir()
            .map_err(BrowserError::io("create the profile directory"))?;
        let log = new_log_path()?;
        let stderr = std::fs::File::create(&log)
            .map_err(BrowserError::io(format!("create {}", log.display())))?;
        let mut child = Command::new("sh")
            // Our stdin and stdout pipes become Chromium's fds 3 and 4, the pipe's fixed numbers;
            // sh does the moving so no unsafe pre-exec code is needed.
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(BrowserError::io(format!("start {}", binary.display())))?;
        let (Some(to_chromium), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BrowserError::Io {
                context: "start chromium".into(),
                source: std::io::Error::other("no pipes"),
            });
        };
        let (tx, from_chromium) = mpsc::unbounded_channel();
        tokio::spawn(read_messages(stdout, tx));
        let mut browser = Browser {
            child,
            to_chromium,
            from_chromium,
            next_id: 0,
            session_id: String::new(),
            page_errors: Vec::new(),
            log,
            _profile: profile,
        };
        let target = browser
            .call_browser("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let attached = browser
            .call_browser(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await?;
        browser.session_id = attached["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol {
                method: "Target.attachToTarget".into(),
                message: format!("no sessionId in {attached}"),
            })?
            .to_owned();
        // Runtime.enable turns on the exception and console events page_errors() collects.
        browser.call("Runtime.enable", json!({})).await?;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await?;
        Ok(browser)
    }

    /// [`Browser::launch`] for a test: `None` (with the reason printed) when Chromium is not
    /// installed, so the test can return early on a developer's machine. Panics when CI is set
    /// (`make test` installs Chromium there, so its absence is a failure) or Chromium is
    /// installed but does not start.
    pub async fn launch_or_skip() -> Option<Browser> {
        match Browser::launch().await {
            Ok(browser) => Some(browser),
            Err(BrowserError::NotInstalled(why)) if !on_ci() => {
                eprintln!(
                    "SKIPPED: {why}. Install it with `sudo apt-get install chromium` \
                     (`make test` does as root); with CI set this test fails instead."
                );
                None
            }
            Err(e @ BrowserError::NotInstalled(_)) => panic!(
                "CI is set, so the browser tests must run, but {e} \
                 (`make test` installs it through scripts/with-services.sh)"
            ),
            Err(e) => panic!("cannot start the browser: {e}"),
        }
    }

    /// Where Chromium's stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Opens `url` and waits until its document has loaded (`readyState` "complete").
    pub async fn goto(&mut self, url: &str) -> Result<(), BrowserError> {
        let navigated = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(message) = navigated["errorText"].as_str() {
            return Err(BrowserError::Navigation {
                url: url.to_owned(),
                message: message.to_owned(),
            });
        }
        self.wait_for("document.readyState === 'complete'", CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Evaluates `js` in the page and returns its value as JSON (awaiting it if it is a
    /// promise); `null` for undefined. A throw or rejection is [`BrowserError::Script`].
    pub async fn eval(&mut self, js: &str) -> Result<Value, BrowserError> {
        let evaluated = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(details) = evaluated.get("exceptionDetails") {
            return Err(BrowserError::Script(describe_exception(details)));
        }
        Ok(evaluated["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// The attribute `name` of the first element matching `css`; `None` when there is no such
    /// element or it has no such attribute.
    pub async fn attribute(
        &mut self,
        css: &str,
        name: &str,
    ) -> Result<Option<String>, BrowserError> {
        let js = format!(
            "document.querySelector({})?.getAttribute({}) ?? null",
            js_string(css),
            js_string(name)
        );
        Ok(self.eval(&js).await?.as_str().map(str::to_owned))
    }

    /// The trimmed text of the first element matching `css`.
    pub async fn text(&mut self, css: &str) -> Result<Option<String>, BrowserError> {
        let js = format!(
            "document.querySelector({})?.textContent.trim() ?? null",
            js_string(css)
        );
        Ok(self.eval(&js).await?.as_str().map(str::to_owned))
    }

    /// Evaluates `js` every [`POLL_INTERVAL`] until its value is truthy (as JavaScript judges)
    /// and returns that value; a timeout error names the last value and the page's errors.
    /// Write predicates that cannot throw (`?.`): a throw ends the wait at once.
    pub async fn wait_for(&mut self, js: &str, timeout: Duration) -> Result<Value, BrowserError> {
        self.wait_until(js, timeout, truthy).await
    }

    /// Evaluates `js` every [`POLL_INTERVAL`] until `accept` takes its value, and returns it.
    pub async fn wait_until(
        &mut self,
        js: &str,
        timeout: Duration,
        mut accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(js).await?;
            if accept(&value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                let errors = self.page_errors().to_vec();
                return Err(BrowserError::Timeout(format!(
                    "`{js}` not satisfied within {timeout:?}: last value {value}; page errors: {}",
                    describe_errors(&errors)
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Saves a PNG of the viewport at `path`, creating its folder.
    pub async fn screenshot(&mut self, path: impl AsRef<Path>) -> Result<(), BrowserError> {
        let path = path.as_ref();
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| BrowserError::Protocol {
                method: "Page.captureScreenshot".into(),
                message: format!("data is not base64: {e}"),
            })?;
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .map_err(BrowserError::io(format!("create {}", folder.display())))?;
        }
        std::fs::write(path, png).map_err(BrowserError::io(format!("write {}", path.display())))
    }

    /// The page's uncaught exceptions and `console.error` calls so far, oldest first.
    pub fn page_errors(&mut self) -> &[PageError] {
        while let Ok(message) = self.from_chromium.try_recv() {
            // Replies here belong to calls that timed out: nobody waits for them.
            self.note_event(&message);
        }
        &self.page_errors
    }

    /// Forgets the page errors collected so far (before opening a page that is meant to fail).
    pub fn clear_page_errors(&mut self) {
        self.page_errors();
        self.page_errors.clear();
    }

    /// Asks Chromium to exit and waits for it (killing it if it does not exit in 10 s); its log
    /// is deleted when it exits.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        match self.call_browser("Browser.close", json!({})).await {
            // Chromium may close the pipe before its answer is read.
            Ok(_) | Err(BrowserError::Closed { .. }) => {}
            Err(e) => return Err(e),
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(exited) => {
                exited.map_err(BrowserError::io("wait for chromium"))?;
                // The log explains failures; a clean run's would only pile up.
                let _ = std::fs::remove_file(&self.log);
                Ok(())
            }
            Err(_) => {
                self.child
                    .kill()
                    .await
                    .map_err(BrowserError::io("kill chromium"))?;
                Err(BrowserError::Timeout(
                    "chromium did not exit within 10 s of Browser.close; killed".into(),
                ))
            }
        }
    }

    /// A call on the page's session.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let session = self.session_id.clone();
        self.send(method, params, Some(&session)).await
    }

    /// A call on the browser itself (`Target.*`, `Browser.*`).
    pub async fn call_browser(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Value, BrowserError> {
        self.send(method, params, None).await
    }

    async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        if self.to_chromium.write_all(&bytes).await.is_err()
            || self.to_chromium.flush().await.is_err()
        {
            return Err(self.closed());
        }
        let reply = tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                match self.from_chromium.recv().await {
                    None => return Err(self.closed()),
                    Some(message) if message["id"] == id => return Ok(message),
                    Some(message) => self.note_event(&message),
                }
            }
        })
        .await
        .map_err(|_| {
            BrowserError::Timeout(format!("{method}: no answer within {CALL_TIMEOUT:?}"))
        })??;
        if let Some(error) = reply.get("error") {
            return Err(BrowserError::Protocol {
                method: method.to_owned(),
                message: error["message"]
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned),
            });
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Keeps the page's exceptions and console errors; every other event is of no interest.
    fn note_event(&mut self, message: &Value) {
        if message["sessionId"].as_str() != Some(self.session_id.as_str()) {
            return;
        }
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                self.page_errors.push(PageError {
                    kind: PageErrorKind::Exception,
                    message: describe_exception(details),
                    location: location(details),
                });
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args = params["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let message = args
                    .iter()
                    .map(|arg| match &arg["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => arg["description"]
                            .as_str()
                            .or(arg["type"].as_str())
                            .unwrap_or_default()
                            .to_owned(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let location = params["stackTrace"]["callFrames"].get(0).and_then(location);
                self.page_errors.push(PageError {
                    kind: PageErrorKind::ConsoleError,
                    message,
                    location,
                });
            }
            _ => {}
        }
    }

    fn closed(&self) -> BrowserError {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        BrowserError::Closed {
            log: self.log.clone(),
            tail: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"),
        }
    }
}

/// Reads NUL-terminated JSON messages until the pipe closes.
async fn read_messages(stdout: ChildStdout, tx: mpsc::UnboundedSender<Value>) {
    let mut reader = BufReader::new(stdout);
    let mut message = Vec::new();
    loop {
        message.clear();
        match reader.read_until(0, &mut message).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A message without its NUL is one cut off by the pipe closing.
        if message.pop() != Some(0) {
            return;
        }
        match serde_json::from_slice(&message) {
            Ok(value) => {
                if tx.send(value).is_err() {
                    return;
                }
            }
            Err(e) => eprintln!(
                "browser: not JSON from chromium ({e}): {}",
                String::from_utf8_lossy(&message)
            ),
        }
    }
}

/// `$CHROMIUM` if set, else `chromium` on the `PATH`.
fn chromium_binary() -> Result<PathBuf, BrowserError> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(BrowserError::NotInstalled(format!(
                "CHROMIUM={} is not a file",
                path.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|folder| folder.join("chromium"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| BrowserError::NotInstalled("no `chromium` on the PATH".into()))
}

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`), where a
/// missing browser is a failure rather than a reason to skip.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// A log file of its own for each browser a test process starts.
fn new_log_path() -> Result<PathBuf, BrowserError> {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let folder = crate::target_dir().join("chromium");
    std::fs::create_dir_all(&folder)
        .map_err(BrowserError::io(format!("create {}", folder.display())))?;
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    Ok(folder.join(format!("{}-{n}.log", std::process::id())))
}

/// `s` as a JavaScript string literal (JSON's string syntax is JavaScript's).
pub fn js_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// JavaScript's truthiness of a value that came back as JSON.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn describe_exception(details: &Value) -> String {
    details["exception"]["description"]
        .as_str()
        .or(details["exception"]["value"].as_str())
        .or(details["text"].as_str())
        .map_or_else(|| details.to_string(), str::to_owned)
}

/// `url:line:column` (1-based) of an exception's details or a stack frame.
fn location(at: &Value) -> Option<String> {
    let url = at["url"].as_str().filter(|u| !u.is_empty())?;
    let line = at["lineNumber"].as_u64().unwrap_or(0) + 1;
    let column = at["columnNumber"].as_u64().unwrap_or(0) + 1;
    Some(format!("{url}:{line}:{column}"))
}

fn describe_errors(errors: &[PageError]) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_is_javascripts() {
        for falsy in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for truthy_value in [json!(true), json!(1), json!("0"), json!([]), json!({})] {
            assert!(truthy(&truthy_value), "{truthy_value}");
        }
    }

    #[test]
    fn js_strings_are_quoted_and_escaped() {
        assert_eq!(js_string(r#"#a[data-x="1"]"#), r##""#a[data-x=\"1\"]""##);
        assert_eq!(js_string("line\nbreak"), r#""line\nbreak""#);
    }
}
