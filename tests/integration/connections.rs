//! `idlegate status --connections` lists every unit of work in flight, as
//! the real clients make them: TCP connections, HTTP requests and upgrades,
//! UDP flows, inhibitors; asking never wakes a stopped idlegate.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::http::Conn;
use crate::support::scripted::{raw_connect, raw_head, Upstream};
use crate::support::*;

/// `idlegate status --connections [--json]`: exit status, stdout.
fn listing(state: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(idlegate_bin());
    cmd.args(["status", "--connections", "--state-file"])
        .arg(state);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `work` list of the JSON report (empty when it cannot be had).
fn work_of(state: &Path) -> Vec<Value> {
    let (_, text) = listing(state, true);
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|doc| doc["work"].as_array().cloned())
        .unwrap_or_default()
}

/// The count of the state file and the kinds of the list, from one
/// `status --connections --json` (`None` for the count once not running).
fn count_and_list(state: &Path) -> (Option<u64>, Vec<String>) {
    let (_, text) = listing(state, true);
    let doc: Value = serde_json::from_str(&text).unwrap_or_default();
    let kinds = doc["work"]
        .as_array()
        .map(|work| work.iter().map(|w| w["kind"].to_string()).collect())
        .unwrap_or_default();
    (doc["in_flight"].as_u64(), kinds)
}

fn of_kind<'a>(work: &'a [Value], kind: &str) -> Vec<&'a Value> {
    work.iter().filter(|w| w["kind"] == kind).collect()
}

/// Two TCP clients and an inhibitor: each listed with its address, age and
/// bytes each way (the inhibitor with its --why); a closed client leaves the
/// list, and the stopped idlegate lists nothing and is not woken by asking.
#[test]
fn tcp_connections_and_an_inhibitor_are_listed_with_their_bytes() {
    let dir = tempdir();
    let fixture = Fixture::tcp().dir(&dir).idle("1s");
    let state = fixture.file("idlegate.state");
    let control = fixture.file("control");
    let fixture = fixture.extra(&["--state-file", state.to_str().unwrap()]);
    let act = ActivatorBuilder::new(dir, &fixture.args())
        .tcp("http")
        .unix(&control, "control")
        .start();

    let (code, text) = listing(&state, false);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("work in flight: none"), "{text}");

    let mut clients: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(act.tcp_addrs[0]).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let line = format!("client {i} says hello\n");
        c.write_all(line.as_bytes()).unwrap();
        let mut echo = vec![0u8; line.len()];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(echo, line.as_bytes());
    }
    let mut inhibit = Command::new(idlegate_bin())
        .args(["inhibit", "--control", control.to_str().unwrap()])
        .args(["--why", "nightly backup", "--", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("two connections and the inhibitor listed", PATIENCE, || {
        let work = work_of(&state);
        of_kind(&work, "connection").len() == 2 && of_kind(&work, "inhibitor").len() == 1
    });
    let work = work_of(&state);
    assert_eq!(work.len(), 3, "{work:?}");
    for c in &clients {
        let me = c.local_addr().unwrap().to_string();
        let listed = work
            .iter()
            .find(|w| w["client"] == me.as_str())
            .unwrap_or_else(|| panic!("{me} not in {work:?}"));
        assert_eq!(listed["kind"], "connection");
        assert_eq!(listed["bytes_from_client"], 20, "{listed}");
        assert_eq!(listed["bytes_to_client"], 20, "{listed}");
        assert!(listed["age_ms"].as_u64().is_some(), "{listed}");
    }
    let inhibitor = of_kind(&work, "inhibitor")[0];
    assert_eq!(inhibitor["why"], "nightly backup");
    assert!(
        inhibitor["client"].as_str().unwrap().starts_with("pid "),
        "{inhibitor}"
    );

    let (code, text) = listing(&state, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("work in flight (3;"), "{text}");
    assert!(text.contains("why: nightly backup"), "{text}");
    assert!(text.contains("20 B in, 20 B out"), "{text}");

    drop(clients.pop());
    wait_until("the closed client to leave the list", PATIENCE, || {
        of_kind(&work_of(&state), "connection").len() == 1
    });
    drop(clients);
    inhibit.kill().unwrap();
    inhibit.wait().unwrap();
    act.wait_exit_0(1, PATIENCE);
    let (code, text) = listing(&state, true);
    assert_eq!(code, Some(3), "{text}");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["running"], false);
    assert_eq!(doc["work"], serde_json::json!([]));
    assert_eq!(act.activations(), 1, "asking woke idlegate");
    assert!(
        !Path::new(&format!("{}.connections", state.display())).exists(),
        "the connections socket outlived idlegate"
    );
}

/// HTTP mode: a streaming request is listed with its method, Host and path,
/// an upgraded connection as an upgrade, and an idle keep-alive connection
/// (not work) is not listed at all.
#[test]
fn http_requests_and_upgrades_are_listed_and_idle_keep_alive_is_not() {
    let fixture = Fixture::http();
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    let addr = act.tcp_addrs[0];

    let mut idle = Conn::connect(addr).unwrap();
    assert_eq!(idle.request("GET", "/", &[], b"").unwrap().status, 200);

    let mut slow = Conn::connect(addr).unwrap();
    slow.send("GET", "/slow?n=600&ms=100", &[("Host", "photos.lan")], b"")
        .unwrap();
    let mut upgraded = Conn::connect(addr).unwrap();
    let switched = upgraded
        .request(
            "GET",
            "/upgrade",
            &[("Connection", "upgrade"), ("Upgrade", "echo")],
            b"",
        )
        .unwrap();
    assert_eq!(switched.status, 101);
    let tunnel = upgraded.stream();
    tunnel.write_all(b"ping\n").unwrap();
    let mut pong = [0u8; 5];
    tunnel.read_exact(&mut pong).unwrap();

    wait_until("the request and the upgrade listed", PATIENCE, || {
        let work = work_of(&state);
        of_kind(&work, "request").len() == 1 && of_kind(&work, "upgrade").len() == 1
    });
    let work = work_of(&state);
    let request = of_kind(&work, "request")[0];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["host"], "photos.lan");
    assert_eq!(request["path"], "/slow?n=600&ms=100");
    assert_eq!(
        request["client"],
        slow.stream().local_addr().unwrap().to_string().as_str()
    );
    let upgrade = of_kind(&work, "upgrade")[0];
    assert_eq!(upgrade["path"], "/upgrade");
    assert_eq!(upgrade["bytes_from_client"], 5, "{upgrade}");
    assert_eq!(upgrade["bytes_to_client"], 5, "{upgrade}");
    let idle_addr = idle.stream().local_addr().unwrap().to_string();
    assert!(
        work.iter().all(|w| w["client"] != idle_addr.as_str()),
        "an idle keep-alive connection is not work: {work:?}"
    );
    assert_eq!(work.len(), 2, "{work:?}");

    let (code, text) = listing(&state, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("GET photos.lan/slow?n=600&ms=100"), "{text}");
}

/// A UDP flow is listed with its client and its datagrams' bytes.
#[test]
fn udp_flows_are_listed() {
    let fixture = Fixture::udp();
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send_to(b"hello", act.udp_addrs[0]).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    wait_until("the flow listed with its bytes", PATIENCE, || {
        work_of(&state).iter().any(|w| {
            w["kind"] == "udp-flow"
                && w["client"] == client.local_addr().unwrap().to_string().as_str()
                && w["bytes_from_client"] == 5
                && w["bytes_to_client"] == 5
        })
    });
}

/// A WebSocket is one unit of work, counted once. Its upstream answers the
/// upgrade after a pause (an app that checks the session first), so that
/// the request and the client connection are work of their own meanwhile;
/// once the `101` is in, `idlegate status` says 1 in flight and `status
/// --connections` lists that one upgrade (one document, so the state file's
/// count and the live list are compared at one moment), and they keep
/// agreeing past the idle timeout, which does not fire; when the client
/// closes it, the count is 0 and the list empty, and idlegate exits on idle.
#[test]
fn an_open_websocket_is_counted_once_and_status_agrees_with_the_list() {
    let up = Upstream::start(|ex| {
        std::thread::sleep(Duration::from_millis(400));
        ex.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
              hello",
        )?;
        ex.echo_until_close()
    });
    let fixture = Fixture::http()
        .upstream(&up.addr.to_string())
        .external()
        .idle("3s");
    let state = fixture.file("idlegate.state");
    let act = fixture
        .extra(&["--state-file", state.to_str().unwrap()])
        .start();

    let mut ws = raw_connect(act.tcp_addrs[0]);
    ws.write_all(
        b"GET /socket HTTP/1.1\r\nHost: jellyfin.lan:8096\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let (head, mut greeting) = raw_head(&mut ws);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    while greeting.len() < 5 {
        let mut buf = [0u8; 64];
        let n = ws.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {greeting:?}");
        greeting.extend_from_slice(&buf[..n]);
    }
    assert_eq!(greeting, b"hello");
    ws.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    ws.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");

    let one_upgrade = (Some(1), vec!["\"upgrade\"".to_owned()]);
    // The state file follows a count change within 250 ms while work is
    // in flight (the reporter's unit test pins that); 5 s for a loaded
    // machine.
    wait_until(
        "the count and the list to agree on the one upgrade",
        Duration::from_secs(5),
        || count_and_list(&state) == one_upgrade,
    );
    let past_idle = Instant::now() + Duration::from_secs(4);
    while Instant::now() < past_idle {
        assert_eq!(count_and_list(&state), one_upgrade, "{}", act.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        act.exits().is_empty(),
        "exited with an open WebSocket; log:\n{}",
        act.log()
    );

    ws.shutdown(Shutdown::Write).unwrap();
    wait_until("the count back to 0, the list empty", PATIENCE, || {
        count_and_list(&state) == (Some(0), Vec::new())
    });
    act.wait_exit_0(1, PATIENCE);
}
