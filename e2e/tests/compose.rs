//! `docker-compose.yml` and the `Dockerfile`, checked against the code without a Docker
//! engine: the services and their health checks, the start order, the one image, the
//! published ports, that the fulfilment process reaches the payment sandbox and the mail
//! catcher, and that every environment variable given to a service is one the code reads
//! (found by scanning the sources for clap's `env = "NAME"`, so this cannot drift).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The Rust services, each run from the binary of the same name.
const APP_SERVICES: [&str; 5] = [
    "write-service",
    "projector",
    "read-service",
    FULFILMENT,
    PAYMENT_SANDBOX,
];
const FULFILMENT: &str = "fulfilment";
/// The sandbox of Stripe's test mode, built from this workspace.
const PAYMENT_SANDBOX: &str = "payment-sandbox";
/// The mail catcher (an image, not ours).
const MAILPIT: &str = "mailpit";
/// Mailpit's SMTP port and web UI port inside its container.
const MAILPIT_SMTP: u16 = 1025;
const MAILPIT_UI: u16 = 8025;
/// The Rust services that need no database: the sandbox keeps its state in memory.
const NO_DATABASE: [&str; 1] = [PAYMENT_SANDBOX];
/// The one-shot job that applies the migrations.
const MIGRATE: &str = "migrate";
const POSTGRES: &str = "postgres";
const MONGO: &str = "mongo";
/// Source directories whose `env = "NAME"` attributes name the variables the services read.
const SOURCE_DIRS: [&str; 6] = [
    "write-service/src",
    "projector/src",
    "read-service/src",
    "fulfilment/src",
    "payment-sandbox/src",
    "shared",
];
/// Read by tracing's `EnvFilter` (shared/service-kit/src/telemetry.rs), not by clap.
const EXTRA_VARS: [&str; 1] = ["RUST_LOG"];

const HEALTHY: &str = "service_healthy";
const COMPLETED: &str = "service_completed_successfully";

// ---- the compose file, as far as these checks need it --------------------------------------

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    command: Option<Words>,
    entrypoint: Option<Words>,
    #[serde(default)]
    environment: Environment,
    #[serde(default)]
    depends_on: DependsOn,
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    ports: Vec<Port>,
    restart: Option<String>,
}

/// A string (split on whitespace, as compose does for `command`) or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Words {
    List(Vec<String>),
    Line(String),
}

impl Words {
    fn words(&self) -> Vec<String> {
        match self {
            Words::List(words) => words.clone(),
            Words::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
        target: Option<String>,
    },
}

impl Build {
    /// (context, dockerfile, target) with compose's defaults.
    fn normalized(&self) -> (String, String, Option<String>) {
        match self {
            Build::Context(context) => (context.clone(), "Dockerfile".to_owned(), None),
            Build::Full {
                context,
                dockerfile,
                target,
            } => (
                context.clone().unwrap_or_else(|| ".".to_owned()),
                dockerfile
                    .clone()
                    .unwrap_or_else(|| "Dockerfile".to_owned()),
                target.clone(),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `KEY: value` mapping or `KEY=value` list; a key without a value passes the host's value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Environment {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

impl Default for Environment {
    fn default() -> Self {
        Environment::Map(BTreeMap::new())
    }
}

impl Environment {
    fn vars(&self) -> BTreeMap<String, Option<String>> {
        match self {
            Environment::Map(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(ToString::to_string)))
                .collect(),
            Environment::List(list) => list
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item.clone(), None),
                })
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.vars().remove(name).flatten()
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

impl Default for DependsOn {
    fn default() -> Self {
        DependsOn::List(Vec::new())
    }
}

#[derive(Debug, Deserialize)]
struct Dependency {
    condition: Option<String>,
}

impl DependsOn {
    /// Each dependency with its condition (compose's default is `service_started`).
    fn conditions(&self) -> BTreeMap<String, String> {
        let started = || "service_started".to_owned();
        match self {
            DependsOn::List(names) => names.iter().map(|n| (n.clone(), started())).collect(),
            DependsOn::Map(map) => map
                .iter()
                .map(|(n, d)| (n.clone(), d.condition.clone().unwrap_or_else(started)))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Option<Words>,
    disable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Port {
    /// `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`
    Short(Scalar),
    Long {
        target: Scalar,
    },
}

impl Port {
    fn container_port(&self) -> String {
        match self {
            Port::Short(spec) => {
                let spec = spec.to_string();
                let port = spec.rsplit(':').next().unwrap_or_default();
                port.split('/').next().unwrap_or_default().to_owned()
            }
            Port::Long { target } => target.to_string(),
        }
    }
}

// ---- helpers --------------------------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Compose {
    let path = root().join("docker-compose.yml");
    serde_saphyr::from_str(&read(&path)).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn service<'a>(compose: &'a Compose, name: &str) -> &'a Service {
    compose
        .services
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// The services built from the workspace: the three servers and the migration job.
fn rust_services() -> Vec<&'static str> {
    let mut names = APP_SERVICES.to_vec();
    names.push(MIGRATE);
    names
}

/// The names in clap `env = "NAME"` attributes of one source file.
fn env_attributes(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = src[from..].find("env") {
        let start = from + found;
        from = start + 3;
        let ident_before = src[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if ident_before {
            continue;
        }
        let Some(rest) = src[from..].trim_start().strip_prefix('=') else {
            continue;
        };
        if rest.starts_with('=') {
            continue;
        }
        let Some(rest) = rest.trim_start().strip_prefix('"') else {
            continue;
        };
        let Some(end) = rest.find('"') else { continue };
        let name = &rest[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            names.push(name.to_owned());
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return; // a crate that has no sources yet reads nothing
    };
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every environment variable the services read.
fn variables_read() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root().join(dir), &mut files);
    }
    let mut names: BTreeSet<String> = files
        .iter()
        .flat_map(|file| env_attributes(&read(file)))
        .collect();
    names.extend(EXTRA_VARS.iter().map(|s| (*s).to_owned()));
    names
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (current.is_empty() && trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// `(major, minor)` of a version such as `1.94` or `1.95.0`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

// ---- the checks -----------------------------------------------------------------------------

#[test]
fn env_attribute_scanner_finds_clap_attributes() {
    let src = r#"
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        #[arg(
            long,
            env  =  "MONGODB_URI",
        )]
        let not_an_env = "NOPE"; if env == "NOPE" {} // env = "lower"
    "#;
    assert_eq!(env_attributes(src), ["DATABASE_URL", "MONGODB_URI"]);
    let read = variables_read();
    for name in [
        "DATABASE_URL",
        "WRITE_SERVICE_ADDR",
        "PROJECTOR_ADDR",
        "PAYMENT_SANDBOX_ADDR",
        "RUST_LOG",
    ] {
        assert!(
            read.contains(name),
            "scan of the sources misses {name}: {read:?}"
        );
    }
}

#[test]
fn every_service_is_defined() {
    let compose = compose();
    for name in [POSTGRES, MONGO, MIGRATE, MAILPIT]
        .into_iter()
        .chain(APP_SERVICES)
    {
        service(&compose, name);
    }
}

#[test]
fn databases_have_health_checks() {
    let compose = compose();
    for name in [POSTGRES, MONGO] {
        let check = service(&compose, name)
            .healthcheck
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no healthcheck"));
        assert_ne!(check.disable, Some(true), "{name}: healthcheck disabled");
        let test = check.test.as_ref().map(Words::words).unwrap_or_default();
        assert!(
            !test.is_empty() && test[0] != "NONE",
            "{name}: healthcheck has no test"
        );
    }
}

#[test]
fn mongo_runs_as_a_replica_set_and_the_uris_name_it() {
    let compose = compose();
    let mongo = service(&compose, MONGO);
    let command = mongo.command.as_ref().map(Words::words).unwrap_or_default();
    let set = command
        .iter()
        .enumerate()
        .find_map(|(i, word)| match word.strip_prefix("--replSet") {
            Some("") => command.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        })
        .unwrap_or_else(|| panic!("mongo is not started with --replSet: {command:?}"));

    // Healthy means initiated and primary, so the projector's first transaction can succeed.
    let test = mongo
        .healthcheck
        .as_ref()
        .and_then(|h| h.test.as_ref())
        .map(Words::words)
        .unwrap_or_default()
        .join(" ");
    for needle in ["rs.initiate", &format!("'{set}'"), "isWritablePrimary"] {
        assert!(
            test.contains(needle),
            "mongo healthcheck lacks {needle}: {test}"
        );
    }

    let mut users = 0;
    for name in rust_services() {
        if let Some(uri) = service(&compose, name).environment.get("MONGODB_URI") {
            users += 1;
            assert!(
                uri.starts_with(&format!("mongodb://{MONGO}:27017"))
                    && uri.contains(&format!("replicaSet={set}")),
                "{name}: MONGODB_URI {uri} should reach {MONGO}:27017 with replicaSet={set}"
            );
        }
    }
    assert!(users > 0, "no service is given MONGODB_URI");
}

#[test]
fn database_url_matches_the_postgres_service() {
    let compose = compose();
    let postgres = service(&compose, POSTGRES);
    let var = |name: &str| {
        postgres
            .environment
            .get(name)
            .unwrap_or_else(|| panic!("postgres sets no {name}"))
    };
    let expected = format!(
        "postgres://{}:{}@{POSTGRES}:5432/{}",
        var("POSTGRES_USER"),
        var("POSTGRES_PASSWORD"),
        var("POSTGRES_DB")
    );
    for name in rust_services() {
        if let Some(url) = service(&compose, name).environment.get("DATABASE_URL") {
            assert_eq!(url, expected, "{name}: DATABASE_URL");
        }
    }
}

#[test]
fn services_wait_for_what_they_need() {
    let compose = compose();
    for name in rust_services() {
        let svc = service(&compose, name);
        let env = svc.environment.vars();
        let mut needed = BTreeMap::new();
        if env.contains_key("DATABASE_URL") {
            needed.insert(POSTGRES, HEALTHY);
            if name != MIGRATE {
                needed.insert(MIGRATE, COMPLETED);
            }
        }
        if env.contains_key("MONGODB_URI") {
            needed.insert(MONGO, HEALTHY);
        }
        assert!(
            !needed.is_empty() || NO_DATABASE.contains(&name),
            "{name} is given no database"
        );
        // The services it calls, when compose runs them: started and answering first.
        let calls = |var: &str, host: &str| {
            svc.environment
                .get(var)
                .and_then(|url| url_host(&url).map(|(h, _)| h == host))
                .unwrap_or(false)
        };
        if calls("PAYMENT_PROVIDER_URL", PAYMENT_SANDBOX) {
            needed.insert(PAYMENT_SANDBOX, HEALTHY);
        }
        if calls("SMTP_URL", MAILPIT) {
            needed.insert(MAILPIT, HEALTHY);
        }
        let actual = svc.depends_on.conditions();
        for (dependency, condition) in needed {
            assert_eq!(
                actual.get(dependency).map(String::as_str),
                Some(condition),
                "{name} should depend on {dependency} with condition {condition}"
            );
        }
    }
    // What each one connects to, so the rule above has something to check.
    let has = |name: &str, var: &str| service(&compose, name).environment.vars().contains_key(var);
    assert!(has(MIGRATE, "DATABASE_URL"));
    assert!(has("write-service", "DATABASE_URL"));
    assert!(has("projector", "DATABASE_URL") && has("projector", "MONGODB_URI"));
    assert!(has("read-service", "MONGODB_URI"));
    for var in ["DATABASE_URL", "PAYMENT_PROVIDER_URL", "SMTP_URL"] {
        assert!(has(FULFILMENT, var), "{FULFILMENT} is given no {var}");
    }

    // Waiting for a service to be healthy needs a health check to wait on.
    for (name, svc) in &compose.services {
        for (dependency, condition) in svc.depends_on.conditions() {
            if condition == HEALTHY {
                let check = service(&compose, &dependency).healthcheck.as_ref();
                assert!(
                    check.is_some_and(|c| c.disable != Some(true) && c.test.is_some()),
                    "{name} waits for {dependency} to be healthy, which has no health check"
                );
            }
        }
    }
}

/// `(host, port)` of `scheme://host:port[/...]`.
fn url_host(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The one `*_ADDR` variable of a Rust service: (name, value).
fn listen_addr(compose: &Compose, name: &str) -> (String, String) {
    let addrs: Vec<(String, String)> = service(compose, name)
        .environment
        .vars()
        .into_iter()
        .filter(|(k, _)| k.ends_with("_ADDR"))
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    assert_eq!(addrs.len(), 1, "{name} sets one listen address: {addrs:?}");
    addrs.into_iter().next().expect("one address")
}

#[test]
fn rust_services_are_checked_on_their_own_port() {
    let compose = compose();
    for name in APP_SERVICES {
        let (var, addr) = listen_addr(&compose, name);
        let port = addr.rsplit(':').next().unwrap_or_default();
        let test = service(&compose, name)
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.as_ref())
            .map(Words::words)
            .unwrap_or_default()
            .join(" ");
        for needle in [
            format!("/dev/tcp/127.0.0.1/{port} "),
            "GET /health/ready ".to_owned(),
        ] {
            assert!(
                test.contains(&needle),
                "{name}: the health check should ask {needle:?} ({var}={addr}): {test}"
            );
        }
    }
}

#[test]
fn fulfilment_pays_through_the_sandbox_and_mails_through_mailpit() {
    let compose = compose();
    let fulfilment = service(&compose, FULFILMENT);
    let env = |name: &str| {
        fulfilment
            .environment
            .get(name)
            .unwrap_or_else(|| panic!("{FULFILMENT} sets no {name}"))
    };
    let command = fulfilment
        .command
        .as_ref()
        .map(Words::words)
        .unwrap_or_default();
    assert_eq!(command, [FULFILMENT, "run"]);

    let (_, sandbox_addr) = listen_addr(&compose, PAYMENT_SANDBOX);
    let sandbox_port = sandbox_addr.rsplit(':').next().unwrap_or_default();
    assert_eq!(
        env("PAYMENT_PROVIDER_URL"),
        format!("http://{PAYMENT_SANDBOX}:{sandbox_port}"),
        "the provider is the sandbox, on the port it listens on"
    );
    assert!(
        env("PAYMENT_API_KEY").starts_with("sk_test_"),
        "the sandbox accepts test-mode secret keys only"
    );
    assert_eq!(
        service(&compose, PAYMENT_SANDBOX)
            .command
            .as_ref()
            .map(Words::words)
            .unwrap_or_default(),
        [PAYMENT_SANDBOX]
    );

    assert_eq!(env("SMTP_URL"), format!("smtp://{MAILPIT}:{MAILPIT_SMTP}"));
    let mailpit = service(&compose, MAILPIT);
    let image = mailpit.image.as_deref().unwrap_or_default();
    assert!(
        image.starts_with("axllent/mailpit"),
        "{MAILPIT} runs {image}"
    );
    assert!(mailpit.build.is_none(), "{MAILPIT} is an image, not ours");
    let published: Vec<String> = mailpit.ports.iter().map(Port::container_port).collect();
    assert_eq!(
        published,
        [MAILPIT_UI.to_string()],
        "{MAILPIT} publishes its web UI, and SMTP stays inside the network"
    );
}

#[test]
fn rust_services_share_one_image_and_pick_their_binary() {
    let compose = compose();
    let mut builds = BTreeSet::new();
    let mut images = BTreeSet::new();
    for name in rust_services() {
        let svc = service(&compose, name);
        let build = svc
            .build
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no build"));
        builds.insert(build.normalized());
        images.insert(svc.image.clone());
        assert!(
            svc.entrypoint.is_none(),
            "{name}: the binary goes in `command`"
        );
    }
    assert_eq!(builds.len(), 1, "one build for all: {builds:?}");
    assert_eq!(images.len(), 1, "one image name for all: {images:?}");
    let (context, dockerfile, _) = builds.pop_first().expect("one build");
    let dockerfile = root().join(context).join(dockerfile);
    assert_eq!(
        dockerfile.canonicalize().ok(),
        root().join("Dockerfile").canonicalize().ok(),
        "the build is the workspace's Dockerfile"
    );

    let command = |name: &str| {
        service(&compose, name)
            .command
            .as_ref()
            .map(Words::words)
            .unwrap_or_default()
    };
    for name in APP_SERVICES {
        assert_eq!(
            command(name).first().map(String::as_str),
            Some(name),
            "{name} runs its own binary"
        );
    }
    assert_eq!(command(MIGRATE), ["write-service", "migrate"]);
    let restart = service(&compose, MIGRATE).restart.as_deref();
    assert!(
        matches!(restart, None | Some("no" | "on-failure")),
        "a one-shot job must not be restarted after it succeeds: restart {restart:?}"
    );
}

#[test]
fn only_the_http_apis_and_uis_publish_ports_and_listen_on_all_interfaces() {
    let compose = compose();
    let publishing: BTreeSet<&str> = compose
        .services
        .iter()
        .filter(|(_, svc)| !svc.ports.is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    // The two APIs, the sandbox's ledger and mode switch, and Mailpit's web UI.
    assert_eq!(
        publishing,
        BTreeSet::from(["write-service", "read-service", PAYMENT_SANDBOX, MAILPIT]),
        "services publishing ports"
    );

    for name in APP_SERVICES {
        let svc = service(&compose, name);
        // Inside a container, 127.0.0.1 (the services' default) is unreachable from outside.
        let (var, addr) = &listen_addr(&compose, name);
        let port = addr
            .strip_prefix("0.0.0.0:")
            .unwrap_or_else(|| panic!("{name}: {var}={addr} should listen on 0.0.0.0"));
        for published in &svc.ports {
            assert_eq!(
                published.container_port(),
                port,
                "{name} publishes the port it listens on ({var})"
            );
        }
    }
}

#[test]
fn every_variable_given_to_a_service_is_read_by_the_code() {
    let compose = compose();
    let read = variables_read();
    let mut unknown = Vec::new();
    for name in rust_services() {
        for var in service(&compose, name).environment.vars().into_keys() {
            if !read.contains(&var) {
                unknown.push(format!("{name}: {var}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables no code reads (no `env = \"NAME\"` under {SOURCE_DIRS:?}): {unknown:?}"
    );
}

#[test]
fn dockerfile_builds_every_service_binary_and_runs_them_unprivileged() {
    let text = read(&root().join("Dockerfile"));
    let instructions = dockerfile_instructions(&text);

    let build = instructions
        .iter()
        .find(|(kw, args)| kw == "RUN" && args.contains("cargo build"))
        .map(|(_, args)| args.clone())
        .expect("a RUN cargo build");
    for flag in ["--release", "--locked"] {
        assert!(build.contains(flag), "cargo build without {flag}: {build}");
    }
    let words: Vec<&str> = build.split_whitespace().collect();
    for bin in APP_SERVICES {
        let selected = words
            .windows(2)
            .any(|w| matches!(w[0], "--bin" | "-p" | "--package") && w[1] == bin);
        assert!(selected, "cargo build does not build {bin}: {build}");
    }

    // The runtime stage: from the last FROM on.
    let last_from = instructions
        .iter()
        .rposition(|(kw, _)| kw == "FROM")
        .expect("a FROM");
    let runtime = &instructions[last_from..];
    for bin in APP_SERVICES {
        assert!(
            runtime
                .iter()
                .any(|(kw, args)| kw == "COPY" && args.contains("--from") && args.contains(bin)),
            "the runtime stage does not copy {bin}"
        );
    }
    let user = runtime
        .iter()
        .rev()
        .find(|(kw, _)| kw == "USER")
        .map(|(_, args)| args.clone())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(uid, "" | "root" | "0"),
        "runs as root: USER {user}"
    );

    // The builder's Rust is at least the workspace's rust-version.
    let args: BTreeMap<&str, &str> = instructions
        .iter()
        .filter(|(kw, _)| kw == "ARG")
        .filter_map(|(_, a)| a.split_once('='))
        .collect();
    let rust_image = instructions
        .iter()
        .filter(|(kw, _)| kw == "FROM")
        .find_map(|(_, a)| a.split_whitespace().find(|w| w.starts_with("rust:")))
        .expect("a builder FROM rust:")
        .to_owned();
    let mut image = rust_image.clone();
    for (name, value) in &args {
        image = image.replace(&format!("${{{name}}}"), value);
    }
    let tag = image.trim_start_matches("rust:");
    let required = read(&root().join("Cargo.toml"))
        .lines()
        .find_map(|l| {
            let value = l.trim().strip_prefix("rust-version")?.trim_start();
            Some(value.strip_prefix('=')?.trim().trim_matches('"').to_owned())
        })
        .expect("workspace rust-version");
    let version: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    // A bare major tag (rust:1-bookworm) follows the newest release.
    if version.contains('.') {
        assert!(
            major_minor(&version) >= major_minor(&required),
            "builder {image} is older than rust-version {required}"
        );
    } else {
        assert!(
            !version.is_empty(),
            "builder image {image} names no Rust version"
        );
    }
}
