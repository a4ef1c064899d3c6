//! The development scripts in `scripts/`, run for real on throw-away copies, in seconds,
//! without building the services and without touching the servers `make test` runs.
//!
//! - `run.sh` (`make run`, `make down`): on a copy of `scripts/` in a temporary "checkout"
//!   whose `target/debug/{write-service,projector,read-service}` are stand-ins (a small Python
//!   HTTP server answering 200, run under the binary's name) and whose `cargo` does nothing.
//!   Ctrl-C and SIGTERM end a run with exit 0 and stop every service; a service that dies ends
//!   it with exit 1 and stops the others; `run.sh stop` stops what a killed run left, started
//!   by this or by an older `run.sh`, and never a process that is not ours.
//! - `pg.sh` and `mongo.sh`: a private cluster / server in a temporary directory, started on
//!   one port, stopped, and started on another, must listen on the new one.
//! - Installing what is missing (`scripts/lib/install.sh`): fake `apt-get`, `sudo` and `id`
//!   first on `PATH` record what would have run, so nothing is installed.
//!
//! `SCRIPTS_UNDER_TEST=DIR` runs these tests against another copy of `scripts/` (this is how
//! they were checked to fail on the scripts before the fixes).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a slow machine; the tests wait for conditions, never for this.
const DEADLINE: Duration = Duration::from_secs(30);
const SERVICES: [&str; 5] = [
    "write-service",
    "projector",
    "read-service",
    "fulfilment",
    "payment-sandbox",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

fn scripts_under_test() -> PathBuf {
    match std::env::var_os("SCRIPTS_UNDER_TEST") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("scripts"),
    }
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on, for a script to bind later. Not one the kernel hands out (port
/// 0 gives an ephemeral one, which another test's port 0 or any outgoing connection may take
/// before the script binds it: a stand-in then dies and another test's answers in its place).
/// Each call of this process takes the next port of a block below the ephemeral range
/// (32768 and up), the block chosen by the process id.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let block = 20_000 + (std::process::id() % 12) as u16 * 1_000;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < 1_000, "no free port left in {block}..{}", block + 1_000);
        if TcpListener::bind(("127.0.0.1", block + n)).is_ok() {
            return block + n;
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn write_executable(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap(); // keeps the mode
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// A temporary directory, removed when dropped. World-readable, so the `postgres` user can
/// reach a cluster inside it when the tests run as root.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "order-backend-{label}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of `scripts/` under `root`, as in a checkout at `root`.
    fn checkout(&self, name: &str) -> PathBuf {
        let root = self.0.join(name);
        copy_dir(&scripts_under_test(), &root.join("scripts"));
        root
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sends `signal` (e.g. "TERM") to `target`: a pid, or `-PGID` for a process group.
fn kill(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}").as_str(), "--", target])
        .stderr(Stdio::null())
        .status();
}

/// The arguments of a live process (a zombie's are empty).
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(text)
        .collect();
    (!args.is_empty()).then_some(args)
}

/// Whether `pid` still runs a program named `program` (compared by its last path parts).
fn runs(pid: u32, program: &str) -> bool {
    cmdline(pid).is_some_and(|args| args[0].ends_with(program))
}

// ---- run.sh ---------------------------------------------------------------------------------

/// Stands in for the service binaries. Each `target/debug/NAME` is a symbolic link to
/// the Python interpreter, so the process keeps exactly the argv[0] it was started with (as
/// a real binary does; a script's would be rewritten), and Python runs this `sitecustomize`
/// (found through PYTHONPATH) first: `migrate` succeeds; otherwise it answers 200 to every
/// HTTP request on the address run.sh gives the service, until killed.
const FAKE_SERVICE: &str = r#"
import http.server, os
args = open("/proc/self/cmdline", "rb").read().split(b"\0")
name = os.path.basename(args[0].decode())
addr = {
    "write-service": "WRITE_SERVICE_ADDR",
    "projector": "PROJECTOR_ADDR",
    "read-service": "READ_SERVICE_ADDR",
    "fulfilment": "FULFILMENT_ADDR",
    "payment-sandbox": "PAYMENT_SANDBOX_ADDR",
}.get(name)
if addr and b"migrate" in args:
    os._exit(0)
if addr and b"token" in args:
    os.write(1, b"header.claims.signature\n")
    os._exit(0)
if addr:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
        do_POST = do_PUT = do_GET
        def log_message(self, *args):
            pass
    host, port = os.environ[addr].rsplit(":", 1)
    http.server.HTTPServer((host, int(port)), Ok).serve_forever()
"#;

/// The Python interpreter's own file, not a wrapper such as a pyenv shim.
fn python() -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3 (the project needs it for its MongoDB-compatible server)");
    assert!(output.status.success(), "{}", describe(&output));
    PathBuf::from(text(&output.stdout).trim())
}

/// `target/debug/NAME` stand-ins under `dir` (see [`FAKE_SERVICE`]).
fn fake_services(dir: &Path) {
    let python = python();
    fs::create_dir_all(dir.join("target/debug")).unwrap();
    for name in SERVICES {
        symlink(&python, dir.join("target/debug").join(name)).unwrap();
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A checkout with stand-in services and a `cargo` that does nothing, plus the addresses.
struct FakeCheckout {
    tmp: TempDir,
    root: PathBuf,
    env: Vec<(String, String)>,
    /// Stand-ins for PostgreSQL and MongoDB: run.sh only checks that they accept connections.
    _databases: [TcpListener; 2],
}

impl FakeCheckout {
    fn new() -> FakeCheckout {
        let tmp = TempDir::new("run-sh");
        let root = tmp.checkout("checkout");
        fake_services(&root);
        let fake_python = tmp.path().join("python");
        fs::create_dir_all(&fake_python).unwrap();
        fs::write(fake_python.join("sitecustomize.py"), FAKE_SERVICE).unwrap();
        let bin = tmp.path().join("bin");
        write_executable(&bin.join("cargo"), "#!/bin/sh\nexit 0\n");
        let databases = [(); 2].map(|_| TcpListener::bind("127.0.0.1:0").unwrap());
        let db_port = |i: usize| databases[i].local_addr().unwrap().port();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let env = vec![
            ("PATH".into(), path),
            ("PYTHONPATH".into(), fake_python.display().to_string()),
            (
                "DATABASE_URL".into(),
                format!("postgres://postgres@127.0.0.1:{}/orders", db_port(0)),
            ),
            (
                "MONGODB_URI".into(),
                format!("mongodb://127.0.0.1:{}", db_port(1)),
            ),
            (
                "WRITE_SERVICE_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "PROJECTOR_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "READ_SERVICE_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "FULFILMENT_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            (
                "PAYMENT_SANDBOX_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            // A mail server of the user's: run.sh then starts none (scripts/mail.sh has its
            // own checks).
            ("SMTP_URL".into(), "smtp://127.0.0.1:9".into()),
        ];
        FakeCheckout {
            tmp,
            root,
            env,
            _databases: databases,
        }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.root)
            .env_remove("CARGO_TARGET_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.root.join(".local/run").join(format!("{name}.pid"))
    }

    fn pid(&self, name: &str) -> u32 {
        let text = fs::read_to_string(self.pid_file(name)).unwrap();
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pid file {text:?}"))
    }

    /// `scripts/run.sh stop` (what `make down` runs).
    fn stop(&self) -> Output {
        self.command(self.root.join("scripts/run.sh"))
            .arg("stop")
            .output()
            .unwrap()
    }

    /// `make run` in the foreground of a terminal: its own process group, SIGINT not ignored
    /// (a test harness may have inherited it ignored), stdout and stderr to files.
    fn run(&self) -> Run<'_> {
        let out = fs::File::create(self.tmp.path().join("run.out")).unwrap();
        let err = fs::File::create(self.tmp.path().join("run.err")).unwrap();
        let child = self
            .command("env")
            .arg("--default-signal=INT,TERM")
            .arg(self.root.join("scripts/run.sh"))
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut run = Run {
            checkout: self,
            child,
        };
        wait_for("make run to print its banner", || {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("run.sh ended early: {status}\n{}", run.stderr());
            }
            fs::read_to_string(self.tmp.path().join("run.out"))
                .is_ok_and(|out| out.contains("The order backend is running."))
        });
        run
    }

    /// The services' pids, each checked to be the stand-in process.
    fn service_pids(&self) -> Vec<(&'static str, u32)> {
        SERVICES
            .iter()
            .map(|&name| {
                let pid = self.pid(name);
                assert!(runs(pid, &format!("target/debug/{name}")), "{name} {pid}");
                (name, pid)
            })
            .collect()
    }

    fn assert_stopped(&self, pids: &[(&str, u32)], context: &str) {
        for &(name, pid) in pids {
            wait_for(&format!("{name} (pid {pid}) to stop: {context}"), || {
                !runs(pid, name)
            });
            assert!(
                !self.pid_file(name).exists(),
                "{name}'s pid file is left: {context}"
            );
        }
    }
}

/// A running `scripts/run.sh`; its process group (run.sh, the services, its log tail) is
/// killed when dropped.
struct Run<'a> {
    checkout: &'a FakeCheckout,
    child: Child,
}

impl Run<'_> {
    fn stderr(&self) -> String {
        fs::read_to_string(self.checkout.tmp.path().join("run.err")).unwrap_or_default()
    }

    fn wait(&mut self) -> ExitStatus {
        let mut status = None;
        wait_for("run.sh to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        kill("KILL", &format!("-{}", self.child.id()));
        let _ = self.child.wait();
        // Services a killed run.sh left, if a test failed before stopping them.
        for name in SERVICES {
            if let Ok(pid) = fs::read_to_string(self.checkout.pid_file(name))
                && let Ok(pid) = pid.trim().parse::<u32>()
                && runs(pid, &format!("target/debug/{name}"))
            {
                kill("KILL", &pid.to_string());
            }
        }
    }
}

#[test]
fn run_sh_exits_0_on_sigterm_and_stops_what_it_started() {
    let checkout = FakeCheckout::new();
    let mut run = checkout.run();
    let pids = checkout.service_pids();
    kill("TERM", &run.child.id().to_string());
    let status = run.wait();
    assert!(status.success(), "{status}\n{}", run.stderr());
    checkout.assert_stopped(&pids, &run.stderr());
}

#[test]
fn run_sh_exits_0_on_ctrl_c_and_stops_what_it_started() {
    let checkout = FakeCheckout::new();
    let mut run = checkout.run();
    let pids = checkout.service_pids();
    // A terminal's Ctrl-C signals the whole foreground process group.
    kill("INT", &format!("-{}", run.child.id()));
    let status = run.wait();
    assert!(status.success(), "{status}\n{}", run.stderr());
    checkout.assert_stopped(&pids, &run.stderr());
}

#[test]
fn run_sh_exits_1_when_a_service_dies_and_stops_the_others() {
    let checkout = FakeCheckout::new();
    let mut run = checkout.run();
    let pids = checkout.service_pids();
    kill("KILL", &checkout.pid("projector").to_string());
    let status = run.wait();
    assert_eq!(status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains("projector exited"),
        "{}",
        run.stderr()
    );
    checkout.assert_stopped(&pids, &run.stderr());
}

#[test]
fn make_down_stops_the_services_of_a_run_that_was_killed() {
    let checkout = FakeCheckout::new();
    let mut run = checkout.run();
    let pids = checkout.service_pids();
    kill("KILL", &run.child.id().to_string());
    run.wait();
    for &(name, pid) in &pids {
        assert!(runs(pid, name), "{name} should outlive a SIGKILLed run.sh");
    }
    let output = checkout.stop();
    assert!(output.status.success(), "{}", describe(&output));
    checkout.assert_stopped(&pids, &describe(&output));
}

/// Services an older run.sh started as `target/debug/NAME` from the checkout's root.
#[test]
fn make_down_stops_services_started_by_relative_path() {
    let checkout = FakeCheckout::new();
    fs::create_dir_all(checkout.root.join(".local/run")).unwrap();
    let mut children = Vec::new();
    for name in SERVICES {
        let child = checkout
            .command("bash")
            .args(["-c", &format!("exec target/debug/{name} serve")])
            .spawn()
            .unwrap();
        fs::write(checkout.pid_file(name), format!("{}\n", child.id())).unwrap();
        children.push((name, KillOnDrop(child)));
    }
    let pids: Vec<_> = children.iter().map(|(n, c)| (*n, c.0.id())).collect();
    for &(name, pid) in &pids {
        wait_for(&format!("{name} to run as target/debug/{name}"), || {
            cmdline(pid).is_some_and(|a| a[0] == format!("target/debug/{name}"))
        });
    }
    let output = checkout.stop();
    assert!(output.status.success(), "{}", describe(&output));
    for (name, child) in &mut children {
        // Stopped means exited (reaped here, as its parent), not merely signalled.
        wait_for(&format!("{name} to stop\n{}", describe(&output)), || {
            child.0.try_wait().unwrap().is_some()
        });
    }
}

/// A pid file may name a pid that another program has since been given: `make down` must
/// leave it alone, even one that looks like ours but belongs to another checkout.
#[test]
fn make_down_leaves_foreign_processes_alone() {
    let checkout = FakeCheckout::new();
    let other = checkout.tmp.path().join("other-checkout");
    fake_services(&other);
    fs::create_dir_all(checkout.root.join(".local/run")).unwrap();
    let mut sleeper = KillOnDrop(Command::new("sleep").arg("600").spawn().unwrap());
    let mut lookalike = KillOnDrop(
        checkout
            .command("bash")
            .current_dir(&other)
            .args(["-c", "exec target/debug/projector run"])
            .spawn()
            .unwrap(),
    );
    let lookalike_pid = lookalike.0.id();
    wait_for("the look-alike projector to run", || {
        cmdline(lookalike_pid).is_some_and(|a| a[0] == "target/debug/projector")
    });
    fs::write(
        checkout.pid_file("write-service"),
        sleeper.0.id().to_string(),
    )
    .unwrap();
    fs::write(checkout.pid_file("projector"), lookalike_pid.to_string()).unwrap();
    fs::write(checkout.pid_file("read-service"), "not a pid").unwrap();

    let output = checkout.stop();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        sleeper.0.try_wait().unwrap().is_none(),
        "{}",
        describe(&output)
    );
    assert!(
        lookalike.0.try_wait().unwrap().is_none(),
        "{}",
        describe(&output)
    );
    for name in SERVICES {
        assert!(!checkout.pid_file(name).exists(), "stale {name}.pid kept");
    }
}

// ---- pg.sh and mongo.sh: the port asked for -------------------------------------------------

/// A PostgreSQL server directory `pg.sh` would find on its own, if any.
fn postgres_installed() -> bool {
    if let Some(bin) = std::env::var_os("PG_BIN") {
        return Path::new(&bin).join("postgres").exists();
    }
    fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .any(|d| d.path().join("bin/postgres").exists())
        })
        .unwrap_or(false)
}

/// Runs a copy of `scripts/pg.sh` on a private cluster in a temporary directory; stops it
/// when dropped.
struct PrivatePg {
    tmp: TempDir,
    root: PathBuf,
}

impl PrivatePg {
    fn new() -> PrivatePg {
        let tmp = TempDir::new("pg-sh");
        let root = tmp.checkout("checkout");
        PrivatePg { tmp, root }
    }

    fn pg(&self, port: u16, action: &str) -> Output {
        Command::new(self.root.join("scripts/pg.sh"))
            .arg(action)
            .env("PG_DIR", self.tmp.path().join("pg"))
            .env("PG_PORT", port.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg(1, "stop");
    }
}

#[test]
fn pg_sh_listens_on_pg_port_when_the_cluster_already_exists() {
    if !postgres_installed() {
        eprintln!("skipped: no PostgreSQL server binaries (set PG_BIN)");
        return;
    }
    let (first, second) = (free_port(), free_port());
    let pg = PrivatePg::new();

    let started = pg.pg(first, "start");
    assert!(started.status.success(), "{}", describe(&started));
    assert!(listening(first), "{}", describe(&started));
    let stopped = pg.pg(first, "stop");
    assert!(stopped.status.success(), "{}", describe(&stopped));

    // The cluster now exists, with `port = FIRST` in its postgresql.conf.
    let restarted = pg.pg(second, "start");
    assert!(
        listening(second),
        "not listening on {second}\n{}",
        describe(&restarted)
    );
    assert!(!listening(first), "still listening on {first}");
    assert!(restarted.status.success(), "{}", describe(&restarted));
    assert_eq!(
        text(&restarted.stdout).trim(),
        format!("postgres://postgres@127.0.0.1:{second}/orders")
    );

    // Running on another port than asked: refuse, naming the port it runs on.
    let refused = pg.pg(first, "start");
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains(&format!("already running on port {second}")),
        "{}",
        describe(&refused)
    );
}

/// Runs a copy of `scripts/mongo.sh` with its server's files in a temporary directory and the
/// project's virtualenv; stops the server when dropped.
struct PrivateMongo {
    tmp: TempDir,
    root: PathBuf,
}

impl PrivateMongo {
    fn mongo(&self, port: u16, action: &str) -> Output {
        Command::new(self.root.join("scripts/mongo.sh"))
            .arg(action)
            .env("MONGO_DIR", self.tmp.path().join("mongo"))
            .env("MONGO_PORT", port.to_string())
            .env("MONGO_DB", "memory")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        let _ = self.mongo(1, "stop");
    }
}

#[test]
fn mongo_sh_listens_on_mongo_port_after_a_restart() {
    let venv = workspace_root().join(".local/venv");
    if !venv.join("bin/nx-27017").exists() {
        eprintln!("skipped: no .local/venv with nx-27017 (scripts/mongo.sh start makes it)");
        return;
    }
    let tmp = TempDir::new("mongo-sh");
    let root = tmp.checkout("checkout");
    fs::create_dir_all(root.join(".local")).unwrap();
    symlink(&venv, root.join(".local/venv")).unwrap();
    let mongo = PrivateMongo { tmp, root };
    let (first, second) = (free_port(), free_port());

    let started = mongo.mongo(first, "start");
    assert!(started.status.success(), "{}", describe(&started));
    assert!(listening(first), "{}", describe(&started));
    let refused = mongo.mongo(second, "start");
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains("already running (pid"),
        "{}",
        describe(&refused)
    );
    assert!(
        text(&refused.stderr).contains(&format!("on port {first}, not {second}")),
        "{}",
        describe(&refused)
    );

    let stopped = mongo.mongo(first, "stop");
    assert!(stopped.status.success(), "{}", describe(&stopped));
    let restarted = mongo.mongo(second, "start");
    assert!(restarted.status.success(), "{}", describe(&restarted));
    assert_eq!(
        text(&restarted.stdout).trim(),
        format!("mongodb://127.0.0.1:{second}")
    );
    assert!(listening(second), "{}", describe(&restarted));
    assert!(!listening(first), "still listening on {first}");
}

// ---- installing what is missing -------------------------------------------------------------

/// Who the scripts run as, as far as installing goes.
#[derive(Clone, Copy)]
enum As {
    Root,
    /// A user for whom `sudo -n` works.
    PasswordLessSudo,
    /// A user for whom sudo wants a password.
    User,
}

/// Fake `id`, `sudo` and `apt-get` first on PATH, recording every call to `calls`.
struct FakeSystem {
    tmp: TempDir,
    root: PathBuf,
    path: String,
}

impl FakeSystem {
    fn new(who: As) -> FakeSystem {
        let tmp = TempDir::new("install");
        let root = tmp.checkout("checkout");
        let bin = tmp.path().join("bin");
        let calls = tmp.path().join("calls");
        let uid = if matches!(who, As::Root) { 0 } else { 1000 };
        write_executable(
            &bin.join("id"),
            &format!(
                "#!/bin/sh\nif [ \"$1\" = -u ]; then echo {uid}; else exec /usr/bin/id \"$@\"; fi\n"
            ),
        );
        write_executable(
            &bin.join("apt-get"),
            &format!(
                "#!/bin/sh\necho \"DEBIAN_FRONTEND=$DEBIAN_FRONTEND apt-get $*\" >>'{}'\n",
                calls.display()
            ),
        );
        let sudo_works = matches!(who, As::PasswordLessSudo);
        write_executable(
            &bin.join("sudo"),
            &format!(
                "#!/bin/sh\n[ \"$1\" = -n ] || {{ echo 'sudo without -n would ask' >&2; exit 1; }}\n\
                 shift\n{}\necho \"sudo $*\" >>'{}'\nexec \"$@\"\n",
                if sudo_works {
                    ""
                } else {
                    "echo 'sudo: a password is required' >&2; exit 1"
                },
                calls.display()
            ),
        );
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        FakeSystem { tmp, root, path }
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.tmp.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `scripts/NAME ACTION` with PG_BIN an empty directory, so PostgreSQL looks missing.
    fn script(&self, name: &str, action: &str) -> Output {
        let empty = self.tmp.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        Command::new(self.root.join("scripts").join(name))
            .arg(action)
            .env("PATH", &self.path)
            .env("PG_BIN", &empty)
            .env("PG_DIR", self.tmp.path().join("pg"))
            .env("PG_PORT", free_port().to_string())
            .env("MONGO_DIR", self.tmp.path().join("mongo"))
            .env("MONGO_PORT", free_port().to_string())
            .env_remove("AUTO_INSTALL")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// The apt-get calls in `calls`: one update, then one install of exactly `packages`.
fn assert_installed(calls: &[String], packages: &str, context: &str) {
    let apt: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("DEBIAN_FRONTEND="))
        .collect();
    assert_eq!(apt.len(), 2, "{calls:?}\n{context}");
    assert!(
        apt[0].starts_with("DEBIAN_FRONTEND=noninteractive apt-get update"),
        "{calls:?}"
    );
    assert!(
        apt[1].starts_with("DEBIAN_FRONTEND=noninteractive apt-get install")
            && apt[1].split_whitespace().any(|w| w == "-y")
            && apt[1].ends_with(&format!(" {packages}")),
        "{calls:?}"
    );
}

#[test]
fn pg_sh_start_installs_the_postgresql_server_as_root() {
    let system = FakeSystem::new(As::Root);
    let output = system.script("pg.sh", "start");
    // The fake apt-get installs nothing, so it still finds no server, and says so.
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(text(&output.stderr).contains("installed the postgresql package"));
    let calls = system.calls();
    assert_installed(&calls, "postgresql", &describe(&output));
    assert!(!calls.iter().any(|c| c.starts_with("sudo")), "{calls:?}");
}

#[test]
fn pg_sh_start_installs_the_postgresql_server_with_password_less_sudo() {
    let system = FakeSystem::new(As::PasswordLessSudo);
    let output = system.script("pg.sh", "start");
    assert!(!output.status.success(), "{}", describe(&output));
    let calls = system.calls();
    assert_installed(&calls, "postgresql", &describe(&output));
    let sudo: Vec<_> = calls
        .iter()
        .filter(|c| c.starts_with("sudo env DEBIAN_FRONTEND=noninteractive apt-get"))
        .collect();
    assert_eq!(sudo.len(), 2, "apt-get runs through sudo: {calls:?}");
}

#[test]
fn pg_sh_start_advises_when_it_may_not_install() {
    let system = FakeSystem::new(As::User);
    let output = system.script("pg.sh", "start");
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("apt-get install postgresql"),
        "{}",
        describe(&output)
    );
    assert_eq!(system.calls(), Vec::<String>::new());
}

#[test]
fn auto_install_0_only_advises() {
    let system = FakeSystem::new(As::Root);
    let empty = system.tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let output = Command::new(system.root.join("scripts/pg.sh"))
        .arg("start")
        .env("PATH", &system.path)
        .env("PG_BIN", &empty)
        .env("PG_DIR", system.tmp.path().join("pg"))
        .env("AUTO_INSTALL", "0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(text(&output.stderr).contains("apt-get install postgresql"));
    assert_eq!(system.calls(), Vec::<String>::new());
}

/// `make down` and `pg.sh status` on a machine without PostgreSQL install nothing.
#[test]
fn pg_sh_stop_and_status_install_nothing() {
    let system = FakeSystem::new(As::Root);
    let stop = system.script("pg.sh", "stop");
    assert!(stop.status.success(), "{}", describe(&stop));
    let status = system.script("pg.sh", "status");
    assert!(!status.status.success(), "{}", describe(&status));
    assert_eq!(system.calls(), Vec::<String>::new());
}

#[test]
fn mongo_sh_start_installs_python3_venv() {
    let system = FakeSystem::new(As::Root);
    // A Python without venv and ensurepip, as on a fresh Debian.
    write_executable(
        &system.tmp.path().join("bin/python3"),
        "#!/bin/sh\necho 'No module named venv' >&2\nexit 1\n",
    );
    let output = system.script("mongo.sh", "start");
    assert!(!output.status.success(), "{}", describe(&output));
    assert_installed(&system.calls(), "python3 python3-venv", &describe(&output));
    assert!(
        !system.root.join(".local/venv").exists(),
        "made a virtualenv"
    );
}

/// The helper on its own, as the browser tests will call it for Chromium.
#[test]
fn install_sh_installs_what_it_is_asked_for() {
    let system = FakeSystem::new(As::Root);
    let output = Command::new(system.root.join("scripts/lib/install.sh"))
        .arg("chromium")
        .env("PATH", &system.path)
        .env_remove("AUTO_INSTALL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_installed(&system.calls(), "chromium", &describe(&output));
}
