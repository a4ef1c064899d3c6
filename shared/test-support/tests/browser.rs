//! The headless browser against pages served here: a script's fetch changes the DOM and the
//! test waits for it; a page that throws shows in page_errors; a closed browser is an error.
//! Skipped (with the reason printed) where Chromium is not installed, unless CI is set.

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::json;
use test_support::browser::{Browser, BrowserError, PageErrorKind, VIEWPORT};

const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html><body>
<h1>Test page</h1>
<div id="value" data-value="">waiting</div>
<script>
  // The value arrives after a round trip, so the test has to wait for it.
  fetch('/api/value')
    .then((r) => r.json())
    .then((v) => {
      const el = document.querySelector('#value');
      el.dataset.value = String(v.value);
      el.textContent = 'value ' + v.value;
    });
</script>
</body></html>"#;

const THROWS: &str = r#"<!doctype html>
<html><body>
<script>console.error('logged by the page', 7);</script>
<script>throw new Error('boom from the page');</script>
</body></html>"#;

/// Serves the pages on a free loopback port; returns the base URL.
async fn serve() -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/throws", get(|| async { Html(THROWS) }))
        .route(
            "/api/value",
            get(|| async { axum::Json(json!({"value": 42})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test]
async fn a_page_is_waited_for_read_and_photographed() {
    let Some(mut browser) = Browser::launch_or_skip().await else {
        return;
    };
    let base = serve().await;
    browser.goto(&format!("{base}/")).await.unwrap();

    let value = browser
        .wait_for("document.querySelector('#value')?.dataset.value", WAIT)
        .await
        .unwrap();
    assert_eq!(value, "42");
    assert_eq!(
        browser.attribute("#value", "data-value").await.unwrap(),
        Some("42".into())
    );
    assert_eq!(
        browser.attribute("#value", "data-other").await.unwrap(),
        None
    );
    assert_eq!(
        browser.attribute("#absent", "data-value").await.unwrap(),
        None
    );
    assert_eq!(
        browser.text("#value").await.unwrap(),
        Some("value 42".into())
    );
    assert_eq!(browser.eval("1 + 1").await.unwrap(), 2);
    assert_eq!(
        browser
            .eval("Promise.resolve({a: [1, 'b']})")
            .await
            .unwrap(),
        json!({"a": [1, "b"]})
    );
    assert_eq!(browser.eval("undefined").await.unwrap(), json!(null));
    match browser
        .eval("(() => { throw new Error('thrown by eval') })()")
        .await
    {
        Err(BrowserError::Script(message)) => {
            assert!(message.contains("thrown by eval"), "{message}")
        }
        other => panic!("expected a script error, got {other:?}"),
    }
    match browser.eval("Promise.reject(new Error('rejected'))").await {
        Err(BrowserError::Script(message)) => assert!(message.contains("rejected"), "{message}"),
        other => panic!("expected a script error, got {other:?}"),
    }
    let wanted = browser
        .wait_until(
            "Number(document.querySelector('#value').dataset.value)",
            WAIT,
            |v| v.as_i64() == Some(42),
        )
        .await
        .unwrap();
    assert_eq!(wanted, 42);
    // An error thrown by evaluated code is the caller's, not the page's.
    assert!(
        browser.page_errors().is_empty(),
        "{:?}",
        browser.page_errors()
    );

    let path = test_support::target_dir().join("test-support/browser.png");
    let _ = std::fs::remove_file(&path);
    browser.screenshot(&path).await.unwrap();
    assert_eq!(png_size(&std::fs::read(&path).unwrap()), VIEWPORT);

    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_page_that_throws_shows_in_page_errors() {
    let Some(mut browser) = Browser::launch_or_skip().await else {
        return;
    };
    let base = serve().await;
    browser.goto(&format!("{base}/throws")).await.unwrap();

    // Both scripts ran before the load event goto waited for, and Chromium reports events in
    // order, so they are in by now.
    let errors = browser.page_errors().to_vec();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].kind, PageErrorKind::ConsoleError);
    assert_eq!(errors[0].message, "logged by the page 7");
    assert_eq!(errors[1].kind, PageErrorKind::Exception);
    assert!(
        errors[1].message.contains("boom from the page"),
        "{errors:#?}"
    );
    assert!(
        errors[1]
            .location
            .as_deref()
            .is_some_and(|at| at.starts_with(&format!("{base}/throws:"))),
        "{errors:#?}"
    );

    // A wait that times out says what it last saw and what the page reported.
    match browser
        .wait_for("document.title", Duration::from_millis(300))
        .await
    {
        Err(BrowserError::Timeout(message)) => {
            assert!(message.contains("boom from the page"), "{message}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    browser.clear_page_errors();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.page_errors().is_empty());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_browser_that_went_away_is_an_error_not_a_panic() {
    let Some(mut browser) = Browser::launch_or_skip().await else {
        return;
    };
    // Browser.close makes Chromium exit and close its end of the pipe; while it shuts down a
    // call may still be answered (or refused: the page's session goes first), so call until the
    // pipe is closed.
    let _ = browser.call_browser("Browser.close", json!({})).await;
    let deadline = std::time::Instant::now() + WAIT;
    let log = loop {
        match browser.eval("1").await {
            Err(BrowserError::Closed { log, .. }) => break log,
            other => assert!(
                std::time::Instant::now() < deadline,
                "chromium still answers {WAIT:?} after Browser.close: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.is_file(), "the log is kept: {}", log.display());
    assert!(matches!(
        browser.goto("about:blank").await,
        Err(BrowserError::Closed { .. })
    ));
}
