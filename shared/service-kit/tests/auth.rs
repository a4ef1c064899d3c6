//! The token checks and the rule table's middleware, on a small router: every way a token
//! can be wrong, the roles, the rate limit, a key rotation in a JWKS served over HTTP, and
//! `AUTH_DISABLED`. Each service's own tests and the end-to-end matrix cover its endpoints.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::auth::{Auth, AuthSettings, Caller, Claims, KeyError, Rule, authorize};
use tower::ServiceExt;

const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes-for-tests";

static RULES: &[Rule] = &[
    Rule::anyone(Method::GET, "/open"),
    Rule::customer(Method::GET, "/mine", "own"),
    Rule::staff(Method::POST, "/admin"),
];

fn key_file(file: &str) -> Vec<u8> {
    let path = format!("{}/../test-support/keys/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).expect("a test key")
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&key_file(&format!("{name}.jwk.json"))).unwrap()
}

fn claims(sub: &str, staff: bool) -> Claims {
    Claims::new(
        sub,
        "order-backend",
        "order-backend",
        staff,
        Duration::from_secs(600),
    )
}

fn hs(claims: &Claims) -> String {
    claims.sign_hs256(SECRET.as_bytes()).unwrap()
}

fn signed_by(name: &str, claims: &Claims) -> String {
    let private = key_file(&format!("{name}.pem"));
    let (alg, key) = if name.starts_with("test-ec") {
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&private).unwrap(),
        )
    } else {
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&private).unwrap(),
        )
    };
    let mut header = Header::new(alg);
    header.kid = Some(name.into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn app(auth: Auth) -> Router {
    async fn mine(caller: Caller) -> axum::Json<Value> {
        axum::Json(json!({"sub": caller.sub.to_string(), "staff": caller.staff}))
    }
    Router::new()
        .route("/open", get(|| async { "open" }))
        .route("/mine", get(mine))
        .route("/admin", post(|| async { "done" }))
        .route("/forgotten", get(|| async { "no rule" }))
        .route_layer(axum::middleware::from_fn_with_state(auth, authorize))
}

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

async fn call(app: &Router, method: Method, path: &str, authorization: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, www_authenticate, retry_after) = {
        let header = |n: &str| {
            response
                .headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (
            response.status(),
            header("www-authenticate"),
            header("retry-after"),
        )
    };
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        www_authenticate,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn mine(app: &Router, token: &str) -> Answer {
    call(app, Method::GET, "/mine", Some(&format!("Bearer {token}"))).await
}

fn assert_refused(answer: &Answer, why: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{why}: {:?}",
        answer.body
    );
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\""),
        "{why}"
    );
    assert_eq!(answer.body["error"]["code"], "invalid_token", "{why}");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWKS served over HTTP whose keys a test can change; each read is counted.
async fn jwks_server(keys: Arc<Mutex<Value>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let router = Router::new()
        .route(
            "/jwks.json",
            get(|State(keys): State<Arc<Mutex<Value>>>| async move {
                let mut keys = keys.lock().unwrap();
                keys["reads"] = json!(keys["reads"].as_u64().unwrap_or(0) + 1);
                axum::Json(keys.clone())
            }),
        )
        .with_state(keys);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

fn settings() -> AuthSettings {
    AuthSettings::hs256(SECRET)
}

#[tokio::test]
async fn every_bad_token_is_401_and_roles_decide_the_rest() {
    let keys = Arc::new(Mutex::new(
        json!({"keys": [jwk("test-rsa-1"), jwk("test-ec-1")]}),
    ));
    let mut s = settings();
    s.jwks = Some(jwks_server(keys).await);
    s.jwks_min_refresh = Duration::from_millis(50);
    let app = app(Auth::new(&s, RULES).await.unwrap());

    // Health-like routes need nothing; a token does not hurt them.
    assert_eq!(
        call(&app, Method::GET, "/open", None).await.status,
        StatusCode::OK
    );

    // The good ones: HS256, RS256 and ES256 by kid, staff by `roles` or by `scope`.
    let alice = mine(&app, &hs(&claims("alice", false))).await;
    assert_eq!(alice.body, json!({"sub": "alice", "staff": false}));
    let rs = mine(&app, &signed_by("test-rsa-1", &claims("bob", false))).await;
    assert_eq!(rs.body, json!({"sub": "bob", "staff": false}));
    let es = mine(&app, &signed_by("test-ec-1", &claims("carol", true))).await;
    assert_eq!(es.body, json!({"sub": "carol", "staff": true}));
    let mut scoped = claims("dave", false);
    scoped.scope = Some("orders:read staff".into());
    assert_eq!(mine(&app, &hs(&scoped)).await.body["staff"], true);

    // Roles.
    let customer = format!("Bearer {}", hs(&claims("alice", false)));
    let staff = format!("Bearer {}", hs(&claims("root", true)));
    let refused = call(&app, Method::POST, "/admin", Some(&customer)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"]["code"], "forbidden");
    assert_eq!(
        call(&app, Method::POST, "/admin", Some(&staff))
            .await
            .status,
        StatusCode::OK
    );

    // A route nobody gave a rule is closed, even to staff.
    let forgotten = call(&app, Method::GET, "/forgotten", Some(&staff)).await;
    assert_eq!(forgotten.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(forgotten.body["error"]["code"], "no_access_rule");

    let now = jsonwebtoken::get_current_timestamp();
    let with = |f: &dyn Fn(&mut Claims)| {
        let mut c = claims("alice", false);
        f(&mut c);
        hs(&c)
    };
    let good = hs(&claims("alice", false));
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let flipped = {
        let mut s = signature.to_owned();
        let last = if s.ends_with('A') { 'B' } else { 'A' };
        s.pop();
        s.push(last);
        s
    };
    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    // HS256 keyed with the RSA public key's bytes, naming the RSA key: the classic confusion.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-rsa-1".into());
        let key = EncodingKey::from_secret(&key_file("test-rsa-1.pub.pem")).unwrap();
        jsonwebtoken::encode(&header, &claims("alice", true), &key).unwrap()
    };
    let other_secret = claims("alice", false)
        .sign_hs256(b"another-secret-of-at-least-thirty-two-bytes")
        .unwrap();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("not a bearer scheme", Some(format!("Basic {good}"))),
        ("bearer without a token", Some("Bearer ".into())),
        ("not a JWT", Some("Bearer not-a-jwt".into())),
        ("three garbage parts", Some("Bearer a.b.c".into())),
        (
            "expired",
            Some(format!("Bearer {}", with(&|c| c.exp = now - 3600))),
        ),
        (
            "not valid yet",
            Some(format!("Bearer {}", with(&|c| c.nbf = Some(now + 3600)))),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                with(&|c| c.iss = "someone-else".into())
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                with(&|c| c.aud = "another-api".into())
            )),
        ),
        (
            "sub not a customer id",
            Some(format!("Bearer {}", with(&|c| c.sub = "a b/c".into()))),
        ),
        ("alg none", Some(format!("Bearer {none}"))),
        (
            "HS256 with the RSA public key",
            Some(format!("Bearer {confused}")),
        ),
        (
            "bad signature",
            Some(format!("Bearer {head}.{payload}.{flipped}")),
        ),
        ("another secret", Some(format!("Bearer {other_secret}"))),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                signed_by("test-rsa-2", &claims("alice", false))
            )),
        ),
        ("RS256 token naming the EC key", {
            let private = key_file("test-rsa-1.pem");
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("test-ec-1".into());
            let key = EncodingKey::from_rsa_pem(&private).unwrap();
            Some(format!(
                "Bearer {}",
                jsonwebtoken::encode(&header, &claims("alice", false), &key).unwrap()
            ))
        }),
    ];
    for (why, authorization) in &cases {
        let answer = call(&app, Method::GET, "/mine", authorization.as_deref()).await;
        assert_refused(&answer, why);
        // The staff route is 401 too, not 403: who calls is unknown.
        let answer = call(&app, Method::POST, "/admin", authorization.as_deref()).await;
        assert_refused(&answer, why);
    }

    // Within the leeway (30 s) a clock a little off is forgiven.
    let late = with(&|c| c.exp = now - 10);
    assert_eq!(mine(&app, &late).await.status, StatusCode::OK);
    let early = with(&|c| c.nbf = Some(now + 10));
    assert_eq!(mine(&app, &early).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_added_to_the_jwks_is_used_without_a_restart_and_no_request_fails() {
    let keys = Arc::new(Mutex::new(json!({"keys": [jwk("test-rsa-1")]})));
    let mut s = AuthSettings::hs256(SECRET);
    s.hs256_secret = None;
    s.jwks = Some(jwks_server(keys.clone()).await);
    s.jwks_min_refresh = Duration::from_millis(200);
    let app = app(Auth::new(&s, RULES).await.unwrap());

    let old = signed_by("test-rsa-1", &claims("alice", false));
    let new = signed_by("test-rsa-2", &claims("alice", false));
    assert_refused(&mine(&app, &new).await, "rsa-2 before it is published");

    // A client keeps calling; the provider publishes the new key, then starts signing with
    // it. Every request must pass.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (app, calls, old, new, keys) = (
            app.clone(),
            calls.clone(),
            old.clone(),
            new.clone(),
            keys.clone(),
        );
        tokio::spawn(async move {
            for i in 0..200 {
                if i == 50 {
                    keys.lock().unwrap()["keys"] = json!([jwk("test-rsa-1"), jwk("test-rsa-2")]);
                }
                let token = if i < 50 { &old } else { &new };
                let status = mine(&app, token).await.status;
                calls.lock().unwrap().push(status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    client.await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 200);
    assert!(calls.iter().all(|s| *s == StatusCode::OK), "{calls:?}");

    // Unknown kids do not hammer the provider: a burst of them shares the re-reads, and each
    // is answered 401 once one is done.
    let bogus = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("nobody".into());
        let key = EncodingKey::from_rsa_pem(&key_file("test-rsa-1.pem")).unwrap();
        jsonwebtoken::encode(&header, &claims("alice", false), &key).unwrap()
    };
    let reads = || keys.lock().unwrap()["reads"].as_u64().unwrap();
    let before = reads();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (app, bogus) = (app.clone(), bogus.clone());
            tokio::spawn(async move { mine(&app, &bogus).await.status })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // At most the read under way when a request found its kid unknown and one after it
    // (the first may have begun before the key was published), never one per request.
    let reread = reads() - before;
    assert!(
        (1..=2).contains(&reread),
        "{reread} re-reads for 20 requests"
    );
}

#[tokio::test]
async fn a_caller_over_the_rate_gets_429_with_retry_after_and_others_do_not() {
    let mut s = settings();
    s.rate_limit_per_second = 1;
    s.rate_limit_burst = 2;
    let app = app(Auth::without_jwks(&s, RULES).unwrap());
    let alice = hs(&claims("alice", false));
    let bob = hs(&claims("bob", false));
    assert_eq!(mine(&app, &alice).await.status, StatusCode::OK);
    assert_eq!(mine(&app, &alice).await.status, StatusCode::OK);
    let limited = mine(&app, &alice).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let wait: u64 = limited.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(mine(&app, &bob).await.status, StatusCode::OK);
}

#[tokio::test]
async fn no_key_refuses_to_start_unless_disabled_which_says_so() {
    let mut none = settings();
    none.hs256_secret = None;
    assert!(matches!(
        Auth::new(&none, RULES).await,
        Err(KeyError::NoKey)
    ));
    let mut short = settings();
    short.hs256_secret = Some("too-short".into());
    assert!(matches!(
        Auth::new(&short, RULES).await,
        Err(KeyError::ShortSecret)
    ));
    let mut missing = settings();
    missing.jwks = Some("/nonexistent/jwks.json".into());
    assert!(matches!(
        Auth::new(&missing, RULES).await,
        Err(KeyError::Jwks(..))
    ));

    none.disabled = true;
    let auth = Auth::new(&none, RULES).await.unwrap();
    let mut details = service_kit::ops::Details::new();
    auth.readiness_note(&mut details);
    assert_eq!(details.get("auth"), Some(&json!("disabled")));
    let app = app(auth);
    let anonymous = call(&app, Method::GET, "/mine", None).await;
    assert_eq!(anonymous.body, json!({"sub": "anonymous", "staff": true}));
    assert_eq!(
        call(&app, Method::POST, "/admin", None).await.status,
        StatusCode::OK
    );
}
