//! idlegate in front of real software nobody here wrote, as users put it:
//! PostgreSQL and Redis that accept before they serve, nginx under a herd,
//! a headless Chromium that leaves sockets open, a gRPC server behind h2c,
//! Python's `http.server` answering in HTTP/1.0.
//! `.ci/run` installs them all from Debian's packages; no test here is
//! skipped.

use std::path::Path;
use std::process::Command;

use crate::support::activator::Activator;
use crate::support::http;
use crate::support::real::{self, Browser, Nginx, PgCluster, RedisData};
use crate::support::*;

/// How many cold starts each readiness test makes.
const COLD_STARTS: usize = 10;

/// An activator running idlegate in TCP mode in front of `backend` on
/// 127.0.0.1:`port`, with `extra` flags.
fn in_front(
    dir: std::sync::Arc<tempfile::TempDir>,
    port: u16,
    extra: &[&str],
    backend: &[String],
) -> Activator {
    Fixture::tcp()
        .dir(&dir)
        .upstream(&format!("127.0.0.1:{port}"))
        .idle("300ms")
        .stop_timeout("10s")
        .extra(extra)
        .command(backend)
        .socket("real")
        .start()
        .act
}

/// Makes `COLD_STARTS` cold starts: each time the first client is the held
/// one, `ask` must get its answer, then idlegate exits on idle.
fn cold_starts(act: &Activator, mut ask: impl FnMut(u16) -> Result<String, String>, want: &str) {
    let port = act.tcp_addrs[0].port();
    for n in 1..=COLD_STARTS {
        assert!(act.running().is_none(), "run {n} is not a cold start");
        let answer = ask(port);
        assert_eq!(
            answer.as_deref(),
            Ok(want),
            "cold start {n}: the held first client failed; log:\n{}",
            act.log()
        );
        act.wait_exit_0(n, PATIENCE);
    }
    assert_eq!(act.activations(), COLD_STARTS);
}

/// PostgreSQL accepts connections before it serves them ("the database
/// system is starting up"): with `ready(cluster)`'s flags every held first
/// client must get its answer.
fn postgres_cold_starts(ready: impl FnOnce(&PgCluster) -> Vec<String>) {
    let dir = tempdir();
    let pg = PgCluster::init(dir.path());
    let flags = ready(&pg);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let act = in_front(dir.clone(), pg.port, &flags, &pg.backend_argv());
    cold_starts(&act, |port| real::psql_query(port, "select 40 + 2"), "42");
}

#[test]
fn postgres_behind_ready_cmd_answers_every_first_client() {
    postgres_cold_starts(|pg| vec!["--ready-cmd".into(), pg.ready_cmd()]);
}

#[test]
fn postgres_behind_ready_notify_answers_every_first_client() {
    postgres_cold_starts(|_| vec!["--ready-notify".into()]);
}

/// The two ways for Redis: `redis-cli ping` answers `LOADING` while the
/// dataset loads; `--supervised systemd` sends `READY=1` once loaded.
#[test]
fn redis_loading_a_dataset_answers_every_first_client() {
    let dir = tempdir();
    let data = RedisData::create(&dir.path().join("redis"), real::REDIS_LOADING_KEYS);
    let port = free_port();
    let ready_cmd = data.ready_cmd(port);
    let act = in_front(
        dir.clone(),
        port,
        &["--ready-cmd", &ready_cmd],
        &data.backend_argv(port),
    );
    cold_starts(
        &act,
        |port| real::redis_cmd(port, &["get", "key:7"]),
        "value:7",
    );
    drop(act);

    let port = free_port();
    let mut argv = data.backend_argv(port);
    argv.extend(args(&["--supervised", "systemd"]));
    let act = in_front(dir.clone(), port, &["--ready-notify"], &argv);
    cold_starts(
        &act,
        |port| real::redis_cmd(port, &["get", "key:7"]),
        "value:7",
    );
}

/// idlegate in HTTP mode (idle timeout 2 s, `extra` flags, socket `socket`)
/// in front of nginx with 512 worker connections on a free port: the gate
/// and nginx's port.
fn nginx_in_front(socket: &str, extra: &[&str]) -> (Gate, u16) {
    let dir = tempdir();
    let port = free_port();
    let conf = Nginx::config(dir.path(), port, 512);
    let gate = Fixture::http()
        .dir(&dir)
        .upstream(&format!("127.0.0.1:{port}"))
        .idle("2s")
        .default_stop_timeout()
        .extra(extra)
        .command(&Nginx::backend_argv(&conf))
        .socket(socket)
        .start();
    (gate, port)
}

/// A headless Chromium loads a page through HTTP mode and stays on it,
/// keeping its preconnected socket, which never sends a byte: idlegate must
/// still exit within the idle timeout plus the header read timeout, with the
/// backend (nginx) gone.
#[test]
fn a_browser_staying_on_a_page_lets_http_mode_exit() {
    let (act, port) = nginx_in_front("web", &["--header-read-timeout", "3s"]);
    let url = format!("http://{}/", act.tcp_addrs[0]);
    let browser = Browser::open(&url, act.dir.path());
    wait_until("the page served through idlegate", PATIENCE, || {
        act.log().contains("GET / 200")
    });
    act.wait_exit_0(1, PATIENCE);
    assert!(
        !process_gone(browser.pid()),
        "the browser is still on the page"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nginx is stopped"
    );
}

/// A headless Chromium asks a cold backend for a page with
/// `--waiting-page`: it gets the waiting page, whose event stream puts the
/// start's progress and the time waited in its title, then lands on the
/// content by itself, with no 503 left.
#[test]
fn a_browser_on_the_waiting_page_sees_progress_then_lands_on_the_content() {
    let act = Fixture::http()
        .extra(&["--waiting-page"])
        .backend(&["--delay-ms", "4000"])
        .start();
    let url = format!("http://{}/", act.tcp_addrs[0]);
    let browser = Browser::open(&url, act.dir.path());
    let mut titles: Vec<String> = Vec::new();
    let note = |titles: &mut Vec<String>| match browser.title() {
        Some(t) if titles.last() != Some(&t) => titles.push(t),
        _ => {}
    };
    // The event stream's progress reached the page (its script sets the title).
    wait_until("the progress in the page's title", PATIENCE * 2, || {
        note(&mut titles);
        titles
            .iter()
            .any(|t| t.starts_with("starting") && t.ends_with(" s)"))
    });
    // Then the page reloads onto the content by itself.
    wait_until("the browser on the content", PATIENCE * 2, || {
        note(&mut titles);
        act.log().contains("GET / 200")
            && titles
                .last()
                .is_some_and(|t| !t.contains("tarting") && !t.is_empty())
    });
    let log = act.log();
    assert!(
        log.contains("GET / 503"),
        "the waiting page was served: {log}"
    );
    assert!(
        log.contains("GET /.idlegate/events 200"),
        "the event stream was served and ended: {log}"
    );
    let last_page = log
        .lines()
        .rfind(|l| l.contains("GET / "))
        .unwrap_or_default();
    assert!(last_page.contains("GET / 200"), "{last_page}\n{log}");
    eprintln!("titles seen: {titles:?}");
}

/// 100 h2c clients with 10 streams each arrive at a cold nginx with 512
/// worker connections: without a bound that is 1000 HTTP/1.1 connections at
/// once and hundreds of 502s; with `--upstream-connections-max` (the
/// default) the requests beyond it queue, and none fails.
#[test]
fn a_cold_start_herd_in_http_mode_never_floods_the_backend() {
    let (act, port) = nginx_in_front("herd", &[]);
    let url = format!("http://{}/", act.tcp_addrs[0]);
    // The most connections to nginx seen at once while the herd runs.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let most = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                most = most.max(real::established_to(port).len());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            most
        })
    };
    let herd = real::h2load(&["-c100", "-m10", "-n5000", &url]).unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = most.join().unwrap();
    let bound = idlegate::config::DEFAULT_UPSTREAM_CONNECTIONS_MAX;
    assert!(
        (1..=bound).contains(&most),
        "{most} connections to nginx at once (the default bound is {bound})"
    );
    assert_eq!(
        (herd.succeeded, herd.failed, herd.errored),
        (5000, 0, 0),
        "{herd:?}; log:\n{}",
        act.log()
    );
    assert_eq!(act.activations(), 1, "one cold start");
    assert!(act.log().contains("backend ready"), "{}", act.log());
}

/// `--upstream-protocol h2c` in front of nginx listening with HTTP/2 only
/// (cleartext, prior knowledge): requests reach it as HTTP/2, an HTTP/1.1
/// client and an h2c client alike; an upgrade is refused with 501 (it has
/// no h2c form here); the idle exit stops nginx as usual.
#[test]
fn h2c_upstream_speaks_http2_to_an_http2_only_nginx() {
    let dir = tempdir();
    let port = free_port();
    let conf = Nginx::h2c_config(dir.path(), port);
    let act = Fixture::http()
        .dir(&dir)
        .upstream(&format!("127.0.0.1:{port}"))
        .idle("2s")
        .default_stop_timeout()
        .extra(&["--upstream-protocol", "h2c"])
        .command(&Nginx::backend_argv(&conf))
        .socket("grpc")
        .start();
    let addr = act.tcp_addrs[0];
    let asked = http::get(addr, "/protocol", &[]).unwrap();
    assert_eq!(asked.status, 200, "{}", act.log());
    assert_eq!(asked.text(), "HTTP/2.0\n");
    assert_eq!(http::get(addr, "/", &[]).unwrap().text(), real::NGINX_PAGE);
    let host = http::get(addr, "/host", &[("Host", "photos.lan")]).unwrap();
    assert_eq!(
        host.text(),
        "photos.lan\n",
        "the client's Host is the :authority"
    );
    let h2 = real::h2load(&[
        "-n",
        "200",
        "-c",
        "4",
        "-m",
        "10",
        &format!("http://{addr}/"),
    ])
    .unwrap();
    assert_eq!(h2.succeeded, 200, "{h2:?}");
    let upgrade = http::get(
        addr,
        "/",
        &[("Connection", "upgrade"), ("Upgrade", "websocket")],
    )
    .unwrap();
    assert_eq!(upgrade.status, 501);
    act.wait_exit_0(1, PATIENCE);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nginx is stopped"
    );
}

/// A real gRPC server (Debian's python3-grpcio) behind `--upstream-protocol
/// h2c`, woken by a real gRPC client: a unary call, a server stream, and a
/// failure whose status travels in the trailers all arrive as the server
/// sent them; then the idle exit stops the server.
#[test]
fn a_grpc_server_is_served_through_h2c() {
    let dir = tempdir();
    let port = free_port();
    let grpc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc");
    let server = grpc.join("echo_server.py");
    let act = Fixture::http()
        .dir(&dir)
        .upstream(&format!("127.0.0.1:{port}"))
        .idle("2s")
        .default_stop_timeout()
        .extra(&["--upstream-protocol", "h2c"])
        .command(&[
            "/usr/bin/python3",
            server.to_str().unwrap(),
            &port.to_string(),
        ])
        .socket("grpc")
        .start();
    let out = real::run_with_timeout(
        Command::new("/usr/bin/python3")
            .arg(grpc.join("echo_client.py"))
            .arg(act.tcp_addrs[0].to_string()),
        PATIENCE,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", act.log()));
    assert_eq!(
        out,
        "say: hello\ncount: 0 1 2\nfail: NOT_FOUND nothing here\n",
        "{}",
        act.log()
    );
    act.wait_exit_0(1, PATIENCE);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the gRPC server is stopped"
    );
}

/// Python's `http.server` (the README's demo backend) answers in HTTP/1.0,
/// its 404 with `Connection: close`: a client gets idlegate's own HTTP/1.1
/// status line and keeps its kept-alive connection from answer to answer.
#[test]
fn pythons_http_server_in_http_mode_keeps_the_clients_connection() {
    use std::io::{Read, Write};
    let fixture = Fixture::http();
    let port = fixture
        .upstream_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let root = fixture.file("site");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello from python\n").unwrap();
    let root = root.display().to_string();
    let act = fixture
        .command(&[
            "/usr/bin/python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
            &root,
        ])
        .start();
    let mut conn = http::Conn::connect(act.tcp_addrs[0]).unwrap();
    for (path, status) in [("/index.html", 200), ("/missing", 404), ("/", 200)] {
        let r = conn
            .request("GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("{path}: {e}; log:\n{}", act.log()));
        assert_eq!(r.status, status, "{path}: {r:?}");
    }
    let mut raw = std::net::TcpStream::connect(act.tcp_addrs[0]).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    raw.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello from python\n"), "{answer}");
}

/// The waiting page as a visitor sees it in a headless Chromium during a
/// slow start: the service's name (the Host asked for without its port, or
/// "the service" when the Host is an address), the stage in plain words
/// and the time waited, in the rendered page, in the title its script sets
/// from the event stream, and once the start failed; never an internal
/// address, a probe error or the backend's stderr.
#[test]
fn the_waiting_page_shows_the_name_and_the_stage_and_no_address() {
    let act = Fixture::http()
        .extra(&["--waiting-page", "--start-timeout", "12s"])
        .backend(&["--delay-ms", "600000"])
        .start();
    let port = act.tcp_addrs[0].port();
    let dir = act.dir.path();
    let named = real::dump_dom(
        &format!("http://photos.test:{port}/"),
        dir,
        &["--host-resolver-rules=MAP photos.test 127.0.0.1"],
    );
    let by_address = real::dump_dom(&format!("http://127.0.0.1:{port}/"), dir, &[]);
    for (dom, name) in [(&named, "photos.test"), (&by_address, "the service")] {
        assert!(dom.contains(&format!("<h1>Starting {name}…</h1>")), "{dom}");
        assert!(
            dom.contains("waiting for the app to accept connections"),
            "{dom}"
        );
        assert!(dom.contains("id=\"idlegate-waited\""), "{dom}");
        assert!(!dom.contains("127.0.0.1"), "{dom}");
    }
    // The event stream's progress, as the page's script shows it in the
    // title, then the failed start.
    let browser = Browser::open(&format!("http://127.0.0.1:{port}/"), dir);
    let mut titles: Vec<String> = Vec::new();
    let mut note = || {
        if let Some(t) = browser.title() {
            if titles.last() != Some(&t) {
                titles.push(t);
            }
        }
        titles.clone()
    };
    wait_until("the stage in the page's title", PATIENCE, || {
        note().iter().any(|t| {
            t.starts_with("starting: waiting for the app to accept connections (")
                && t.ends_with(" s)")
        })
    });
    wait_until("the failed start in the page's title", PATIENCE, || {
        note()
            .iter()
            .any(|t| t.starts_with("failed: not ready within the start timeout (12s) ("))
    });
    // (While it loads, Chromium titles the tab with the address typed.)
    let typed = format!("127.0.0.1:{port}");
    let titles = note();
    assert!(
        titles
            .iter()
            .filter(|t| **t != typed)
            .all(|t| !t.contains("127.0.0.1") && !t.contains("test backend")),
        "{titles:?}"
    );
    assert!(
        act.log()
            .contains("nothing accepted connections on 127.0.0.1"),
        "the details stay in the log: {}",
        act.log()
    );
    eprintln!("titles seen: {titles:?}");
}
