//! Three replicas behind nginx with `deploy/nginx/sessiond.conf`, sharing one
//! keys folder, with clocks up to 24 s apart. A fixed workload of cookie-jar
//! clients runs while a key is rotated through one replica's admin API,
//! another replica is killed and restarted, and the third is stopped with
//! SIGTERM and restarted. No session may be lost and nginx may return no 5xx.
//!
//! Needs nginx. Without it the test passes with a message, unless `CI=true`,
//! where it fails (`.ci/run` installs nginx).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{Duration as Span, SecondsFormat, Utc};
use common::tokens::{kid_of, write_key};
use common::{TestServer, set_cookie_token};
use serde_json::Value;

const SESSION: &str = "/ccstore/v1/metering/session";
const SESSIONS: usize = 200;
const REQUESTS_PER_SESSION: usize = 20;
const THREADS: usize = 4;
/// Rounds (one request per session each) before the key rotation, and
/// before the phase where a replica is killed ends. The last phase stops a
/// replica with SIGTERM.
const ROTATE_AFTER_ROUND: usize = 5;
const KILL_PHASE_END: usize = 10;
/// Clock offsets of the replicas, in seconds: 24 s apart at most, below the
/// default leeway of 30 s.
const CLOCK_OFFSETS: [i64; 3] = [-12, 0, 12];
const OLD_KID: &str = "fleet-a";
const NEW_KID: &str = "fleet-b";
const ADMIN_CREDENTIAL: &str = "fleet-test-admin-credential-0123456789abcdef";
/// The example upstream addresses in `deploy/nginx/sessiond.conf`.
const EXAMPLE_UPSTREAMS: [&str; 3] = ["192.0.2.11:8080", "192.0.2.12:8080", "192.0.2.13:8080"];

#[test]
fn fleet_keeps_every_session() {
    let Some(nginx_binary) = find_nginx() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is not installed; .ci/run installs it with apt-get install -y nginx"
        );
        eprintln!("SKIPPED fleet_keeps_every_session: nginx is not installed");
        return;
    };
    let started = Instant::now();
    let fleet = Fleet::start(&nginx_binary);
    let mut replicas = fleet.replicas;
    let figures = Figures::default();
    let sessions: Vec<Mutex<Session>> = (0..SESSIONS).map(|_| Mutex::new(Session::new())).collect();
    let run = |rounds, action: Option<Box<dyn FnOnce() + Send + '_>>| {
        run_rounds(&fleet.nginx_url, &sessions, rounds, &figures, action)
    };

    run(0..ROTATE_AFTER_ROUND, None);
    rotate(&replicas[0]);
    let [_, killed, stopped] = &mut replicas[..] else {
        unreachable!("three replicas")
    };
    run(
        ROTATE_AFTER_ROUND..KILL_PHASE_END,
        Some(Box::new(|| {
            figures.record_event("SIGKILL replica 1");
            killed.kill_and_restart(&fleet.keys_dir);
            figures.record_event("replica 1 restarted");
        })),
    );
    let stop_exit = Mutex::new(None);
    run(
        KILL_PHASE_END..REQUESTS_PER_SESSION,
        Some(Box::new(|| {
            figures.record_event("SIGTERM replica 2");
            let exit = stopped.stop();
            *stop_exit.lock().expect("exit lock") = Some(exit);
            figures.record_event("replica 2 exited");
            stopped.restart(&fleet.keys_dir);
            figures.record_event("replica 2 restarted");
        })),
    );
    let fingerprint = wait_for_agreement(&replicas);
    let new_session_kids = new_session_kids(&fleet.nginx_url, &replicas);
    let retries = fleet.nginx.retried_requests();
    let elapsed = started.elapsed();

    let intact_sessions = sessions
        .iter()
        .filter(|s| {
            let s = s.lock().expect("session lock");
            !s.lost
                && s.kid.as_deref() == Some(OLD_KID)
                && s.same_token_responses == REQUESTS_PER_SESSION - 1
        })
        .count();
    println!(
        "fleet: {} requests, {SESSIONS} sessions, {intact_sessions} kept one token to the \
         end, {} new sessions minted for valid tokens, {} 5xx, {} other failures, {retries} \
         requests nginx retried on another replica, fingerprint {fingerprint}, {:.1} s; {}",
        figures.requests(),
        figures.lost.load(Ordering::Relaxed),
        figures.server_errors.load(Ordering::Relaxed),
        figures.other_failures.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        figures.events.lock().expect("events lock").join(", "),
    );
    let examples = figures.examples.lock().expect("examples lock");
    assert!(
        examples.is_empty(),
        "failures, first ones:\n{}",
        examples.join("\n")
    );
    assert_eq!(figures.requests(), SESSIONS * REQUESTS_PER_SESSION);
    assert_eq!(figures.lost.load(Ordering::Relaxed), 0, "sessions lost");
    assert_eq!(figures.server_errors.load(Ordering::Relaxed), 0, "5xx");
    assert_eq!(figures.other_failures.load(Ordering::Relaxed), 0);
    assert_eq!(intact_sessions, SESSIONS, "sessions that kept one token");
    let stop_exit = *stop_exit.lock().expect("exit lock");
    assert_eq!(stop_exit, Some(Some(0)), "exit code after SIGTERM");
    for (label, kid) in &new_session_kids {
        assert_eq!(kid, NEW_KID, "new session from {label}");
    }
}

/// The replicas, nginx in front of them and their shared keys folder.
struct Fleet {
    replicas: Vec<Replica>,
    nginx: Nginx,
    nginx_url: String,
    keys_dir: PathBuf,
    _workdir: tempfile::TempDir,
}

impl Fleet {
    fn start(nginx_binary: &Path) -> Fleet {
        let workdir = tempfile::tempdir().expect("temp dir");
        let keys_dir = workdir.path().join("keys");
        write_key(&keys_dir, OLD_KID, Some(Utc::now() - Span::minutes(5)));
        let credential_file = workdir.path().join("admin-token");
        std::fs::write(&credential_file, format!("{ADMIN_CREDENTIAL}\n")).expect("writes");

        let replicas: Vec<Replica> = CLOCK_OFFSETS
            .iter()
            .map(|&offset| Replica::start(free_port(), offset, &keys_dir, &credential_file))
            .collect();
        let upstreams: Vec<String> = replicas
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let nginx = Nginx::start(nginx_binary, &workdir.path().join("nginx"), &upstreams);
        let nginx_url = format!("http://127.0.0.1:{}", nginx.port);
        Fleet {
            replicas,
            nginx,
            nginx_url,
            keys_dir,
            _workdir: workdir,
        }
    }
}

/// One `sessiond` replica on a fixed port, so that it can restart there.
struct Replica {
    server: TestServer,
    port: u16,
    clock_offset: i64,
    credential_file: PathBuf,
}

impl Replica {
    fn start(port: u16, clock_offset: i64, keys_dir: &Path, credential_file: &Path) -> Replica {
        let server = TestServer::builder()
            .keys_dir(keys_dir)
            .env("SESSIOND_BIND", &format!("127.0.0.1:{port}"))
            .env("SESSIOND_WORKERS", "1")
            .env("SESSIOND_COOKIE_SECURE", "false")
            .env("SESSIOND_RELOAD_INTERVAL", "1")
            .env("SESSIOND_CLOCK_OFFSET", &clock_offset.to_string())
            .env("SESSIOND_SHUTDOWN_DELAY", "1")
            .env(
                "SESSIOND_ADMIN_TOKEN_FILE",
                credential_file.to_str().expect("UTF-8 path"),
            )
            .env("RUST_LOG", "info")
            .start();
        Replica {
            server,
            port,
            clock_offset,
            credential_file: credential_file.to_path_buf(),
        }
    }

    /// Stops the process with SIGTERM and returns its exit code.
    fn stop(&mut self) -> Option<i32> {
        self.server.signal("TERM");
        self.server.wait_exit(Duration::from_secs(15))
    }

    /// Starts a new process on the same port.
    fn restart(&mut self, keys_dir: &Path) {
        *self = Replica::start(
            self.port,
            self.clock_offset,
            keys_dir,
            &self.credential_file,
        );
    }

    /// Kills the process with SIGKILL, so requests in flight are cut, and
    /// starts a new one on the same port.
    fn kill_and_restart(&mut self, keys_dir: &Path) {
        self.server.signal("KILL");
        self.server.wait_exit(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        self.restart(keys_dir);
    }
}

/// What one client session saw.
struct Session {
    http: reqwest::blocking::Client,
    token: Option<String>,
    kid: Option<String>,
    /// Responses that returned the session's token unchanged.
    same_token_responses: usize,
    /// A response replaced the session's token.
    lost: bool,
}

impl Session {
    fn new() -> Session {
        let http = reqwest::blocking::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client builds");
        Session {
            http,
            token: None,
            kid: None,
            same_token_responses: 0,
            lost: false,
        }
    }
}

/// Counts over the whole workload.
#[derive(Default)]
struct Figures {
    requests: AtomicUsize,
    /// Events with the number of requests sent before each.
    events: Mutex<Vec<String>>,
    lost: AtomicUsize,
    server_errors: AtomicUsize,
    other_failures: AtomicUsize,
    examples: Mutex<Vec<String>>,
}

impl Figures {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn record_event(&self, event: &str) {
        let requests = self.requests();
        let mut events = self.events.lock().expect("events lock");
        events.push(format!("{event} after {requests} requests"));
    }

    fn record_failure(&self, counter: &AtomicUsize, example: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().expect("examples lock");
        if examples.len() < 10 {
            examples.push(example);
        }
    }
}

/// Sends one request per session for each round in `rounds`, from
/// `THREADS` threads that each own a slice of the sessions. Once two rounds
/// have been sent, `action` runs alongside the rest.
fn run_rounds<'a>(
    nginx_url: &str,
    sessions: &[Mutex<Session>],
    rounds: std::ops::Range<usize>,
    figures: &Figures,
    action: Option<Box<dyn FnOnce() + Send + 'a>>,
) {
    let url = format!("{nginx_url}{SESSION}");
    let action_after = figures.requests() + 2 * SESSIONS;
    std::thread::scope(|scope| {
        if let Some(action) = action {
            scope.spawn(move || {
                while figures.requests() < action_after {
                    std::thread::sleep(Duration::from_millis(5));
                }
                action();
            });
        }
        for share in sessions.chunks(SESSIONS.div_ceil(THREADS)) {
            let rounds = rounds.clone();
            let url = &url;
            scope.spawn(move || {
                for round in rounds {
                    for session in share {
                        let mut session = session.lock().expect("session lock");
                        request(url, &mut session, round, figures);
                    }
                }
            });
        }
    });
}

fn request(url: &str, session: &mut Session, round: usize, figures: &Figures) {
    let result = session.http.get(url).send();
    figures.requests.fetch_add(1, Ordering::Relaxed);
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            figures.record_failure(&figures.other_failures, format!("round {round}: {e}"));
            return;
        }
    };
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get("x-upstream-addr")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    if status >= 500 {
        let example = format!("round {round}: status {status} from upstream {upstream}");
        figures.record_failure(&figures.server_errors, example);
        return;
    }
    let token = set_cookie_token(&response);
    let valid = response
        .json::<Value>()
        .ok()
        .and_then(|body| body["valid"].as_bool());
    match (&session.token, token, valid) {
        (None, Some(token), Some(false)) => {
            session.kid = Some(kid_of(&token));
            session.token = Some(token);
        }
        (Some(first), Some(token), Some(true)) if *first == token => {
            session.same_token_responses += 1
        }
        (Some(_), Some(token), Some(false)) => {
            let example = format!("round {round}: new session minted by upstream {upstream}");
            figures.record_failure(&figures.lost, example);
            // The jar now contains the new token: follow it, so that the
            // session's later requests are not counted again.
            session.token = Some(token);
            session.lost = true;
        }
        (_, token, valid) => {
            let example = format!(
                "round {round}: status {status}, cookie set {}, valid {valid:?}, \
                 upstream {upstream}",
                token.is_some()
            );
            figures.record_failure(&figures.other_failures, example);
        }
    }
}

/// Creates `NEW_KID` through the admin API of `replica`, signing from a
/// past instant so that every replica, whatever its clock offset, signs
/// with it as soon as it has loaded the file.
fn rotate(replica: &Replica) {
    let at = (Utc::now() - Span::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let response = common::client()
        .post(replica.server.admin_url("/admin/v1/rotate"))
        .bearer_auth(ADMIN_CREDENTIAL)
        .json(&serde_json::json!({"kid": NEW_KID, "at": at}))
        .send()
        .expect("rotate request");
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    assert_eq!(status, 201, "rotate: {body}");
}

/// Waits until every replica's `/readyz` reports `NEW_KID` as the signing
/// key and the same ring fingerprint; returns the fingerprint.
fn wait_for_agreement(replicas: &[Replica]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = replicas
            .iter()
            .map(|r| {
                let response = common::client().get(r.server.url("/readyz")).send();
                response
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .unwrap_or(Value::Null)
            })
            .collect();
        let fingerprint = &last[0]["fingerprint"];
        let agree = last
            .iter()
            .all(|ready| ready["signing_kid"] == NEW_KID && &ready["fingerprint"] == fingerprint);
        if agree && fingerprint.is_string() {
            return fingerprint.as_str().unwrap_or_default().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("replicas did not agree on the key ring within 15 s: {last:?}");
}

/// Starts new sessions through nginx and on each replica directly, and
/// returns `(where, kid of the minted token)` for each.
fn new_session_kids(nginx_url: &str, replicas: &[Replica]) -> Vec<(String, String)> {
    let mut urls: Vec<(String, String)> = (0..9)
        .map(|i| {
            (
                format!("nginx request {i}"),
                format!("{nginx_url}{SESSION}"),
            )
        })
        .collect();
    for (i, replica) in replicas.iter().enumerate() {
        urls.push((format!("replica {i}"), replica.server.url(SESSION)));
    }
    urls.into_iter()
        .map(|(label, url)| {
            let response = common::client().get(&url).send().expect("new session");
            let token = set_cookie_token(&response).expect("new session sets the cookie");
            (label, kid_of(&token))
        })
        .collect()
}

/// An nginx master process with its own configuration, logs and pid file.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    fn start(binary: &Path, dir: &Path, upstreams: &[String]) -> Nginx {
        std::fs::create_dir_all(dir).expect("nginx folder");
        // Worker processes run as an unprivileged user when nginx starts as
        // root, and must reach the temp folders.
        use std::os::unix::fs::PermissionsExt;
        for folder in [dir, dir.parent().expect("parent")] {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let port = free_port();
        std::fs::write(dir.join("sessiond.conf"), site_config(upstreams, port)).expect("writes");
        std::fs::write(dir.join("nginx.conf"), main_config(dir)).expect("writes");

        let child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        nginx.wait_until_listening();
        nginx
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", self.error_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not listen within 10 s:\n{}", self.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Requests that nginx sent to more than one replica, from its access
    /// log, where `$upstream_addr` lists every replica tried.
    fn retried_requests(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(','))
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers first. SIGKILL stops only
        // the master and can leave the workers running.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns `deploy/nginx/sessiond.conf` with the test's replicas and listen port.
fn site_config(upstreams: &[String], port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/sessiond.conf");
    let mut text = std::fs::read_to_string(&path).expect("deploy/nginx/sessiond.conf");
    for (example, upstream) in EXAMPLE_UPSTREAMS.iter().zip(upstreams) {
        assert!(
            text.contains(example),
            "{example} not in {}",
            path.display()
        );
        text = text.replace(example, upstream);
    }
    assert!(
        text.contains("listen 80;"),
        "listen 80; not in {}",
        path.display()
    );
    text = text.replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    let left = text
        .lines()
        .any(|line| line.trim().starts_with("server 192.0.2."));
    assert!(!left, "an example upstream is left:\n{text}");
    text
}

/// Builds the top-level configuration: a foreground master, files in `dir`,
/// and the replica that served each response in `X-Upstream-Addr`.
fn main_config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{
    worker_connections 1024;
}}
http {{
    log_format upstreams '$status $upstream_addr $upstream_status';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    add_header X-Upstream-Addr $upstream_addr always;
    include {dir}/sessiond.conf;
}}
"
    )
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binds a free port")
        .port()
}
