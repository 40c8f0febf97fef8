//! Supervision of a real child: a stand-in gateway written in Python that serves
//! `/healthz/ready` (200 while `DIR/unready` is absent) and records SIGTERM in `DIR/term`.

use super::*;
use crate::fleet::vip;
use std::path::Path;

const STAND_IN: &str = r#"
import http.server, os, signal, sys
port, d = int(sys.argv[1]), sys.argv[2]
def term(*_):
    open(os.path.join(d, "term"), "w").write(str(os.getpid()))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/healthz/ready" and not os.path.exists(os.path.join(d, "unready"))
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stand_in(dir: &Path) -> GatewaySpec {
    let port = free_port();
    GatewaySpec {
        program: "python3".into(),
        args: vec![
            "-c".into(),
            STAND_IN.into(),
            port.to_string(),
            dir.display().to_string(),
        ],
        ready_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        ready_path: "/healthz/ready".into(),
    }
}

fn fast() -> SupervisorConfig {
    SupervisorConfig {
        restart: RestartConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            window: Duration::from_secs(5),
            crashloop_after: 3,
            stable_after: Duration::from_secs(1),
        },
        probe_every: Duration::from_millis(20),
        probe_timeout: Duration::from_millis(200),
        unready_after: 2,
        start_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(3),
        fence: false,
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "meshedge-sup-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn wait_for(
    rx: &mut watch::Receiver<SupervisorStatus>,
    what: &str,
    f: impl Fn(&SupervisorStatus) -> bool,
) -> SupervisorStatus {
    let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}; status {:?}", *rx.borrow()),
    }
}

fn is_ready(s: &SupervisorStatus) -> bool {
    s.state == GatewayState::Ready
}

#[tokio::test]
async fn restarts_a_killed_gateway_quickly() {
    let dir = tempdir("kill");
    let sup = Supervisor::spawn(fast());
    let mut rx = sup.status();
    sup.start(stand_in(&dir)).await.unwrap();
    let first = wait_for(&mut rx, "ready", is_ready).await;
    let pid = first.pid.expect("pid");
    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let again = wait_for(&mut rx, "ready again", |s| {
        is_ready(s) && s.pid != Some(pid)
    })
    .await;
    let took = killed.elapsed();
    assert_eq!(again.restarts, 1);
    assert!(!again.crashloop);
    assert!(took < Duration::from_secs(5), "restart took {took:?}");
    eprintln!("gateway kill -9 -> ready again in {took:?}");
    sup.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn drains_with_sigterm_on_stop() {
    let dir = tempdir("stop");
    let sup = Supervisor::spawn(fast());
    let mut rx = sup.status();
    sup.start(stand_in(&dir)).await.unwrap();
    let ready = wait_for(&mut rx, "ready", is_ready).await;
    sup.stop().await.unwrap();
    assert_eq!(rx.borrow().state, GatewayState::Stopped);
    let term = std::fs::read_to_string(dir.join("term")).expect("SIGTERM recorded");
    assert_eq!(term, ready.pid.unwrap().to_string());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reports_a_crash_loop() {
    let sup = Supervisor::spawn(fast());
    let mut rx = sup.status();
    let spec = GatewaySpec {
        program: "sh".into(),
        args: vec!["-c".into(), "exit 3".into()],
        ready_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        ready_path: "/healthz/ready".into(),
    };
    sup.start(spec).await.unwrap();
    let down = wait_for(&mut rx, "crash loop", |s| s.crashloop).await;
    assert_eq!(down.state, GatewayState::Down);
    assert!(down.restarts >= 3);
    assert!(down.last_error.unwrap().contains("exit status: 3"));
    sup.stop().await.unwrap();
}

#[tokio::test]
async fn restarts_a_gateway_that_turns_unready() {
    let dir = tempdir("unready");
    let sup = Supervisor::spawn(fast());
    let mut rx = sup.status();
    sup.start(stand_in(&dir)).await.unwrap();
    let first = wait_for(&mut rx, "ready", is_ready).await;
    std::fs::write(dir.join("unready"), "").unwrap();
    wait_for(&mut rx, "restart", |s| s.restarts == 1).await;
    std::fs::remove_file(dir.join("unready")).unwrap();
    let again = wait_for(&mut rx, "ready again", is_ready).await;
    assert_ne!(again.pid, first.pid);
    sup.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn rolls_to_a_new_gateway_without_a_gap() {
    let old_dir = tempdir("roll-old");
    let new_dir = tempdir("roll-new");
    let sup = Supervisor::spawn(fast());
    let mut rx = sup.status();
    let old = stand_in(&old_dir);
    sup.start(old.clone()).await.unwrap();
    let first = wait_for(&mut rx, "ready", is_ready).await;
    let new = stand_in(&new_dir);
    sup.roll(new.clone()).await.unwrap();
    let now = rx.borrow().clone();
    assert!(is_ready(&now));
    assert_ne!(now.pid, first.pid);
    assert!(
        old_dir.join("term").exists(),
        "old gateway drained with SIGTERM"
    );
    probe::probe(new.ready_addr, "/healthz/ready", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        probe::probe(old.ready_addr, "/healthz/ready", Duration::from_secs(1))
            .await
            .is_err(),
        "old gateway stopped"
    );
    sup.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(old_dir);
    let _ = std::fs::remove_dir_all(new_dir);
}

#[tokio::test]
async fn a_roll_to_a_gateway_that_never_gets_ready_keeps_the_old_one() {
    let old_dir = tempdir("rollbad-old");
    let mut config = fast();
    config.start_timeout = Duration::from_millis(700);
    let sup = Supervisor::spawn(config);
    let mut rx = sup.status();
    let old = stand_in(&old_dir);
    sup.start(old.clone()).await.unwrap();
    let first = wait_for(&mut rx, "ready", is_ready).await;
    let mut broken = stand_in(&old_dir);
    broken.args = vec!["-c".into(), "import time; time.sleep(60)".into()];
    let err = sup.roll(broken).await.unwrap_err();
    assert!(matches!(err, SupervisorError::RollNotReady { .. }), "{err}");
    assert_eq!(rx.borrow().pid, first.pid);
    probe::probe(old.ready_addr, "/healthz/ready", Duration::from_secs(1))
        .await
        .unwrap();
    sup.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(old_dir);
}

/// `ip -o addr show dev DEVICE`, or `None` when the device does not exist.
fn addresses_of(device: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", device])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The fence follows the gateway process: it exists while the gateway runs, goes with a
/// killed gateway, and a roll carries its addresses to the new gateway's fence before the
/// old one drains. Needs root and /dev/net/tun (the address is a 127/8 host address on the
/// temporary device, nothing else is touched).
#[tokio::test]
async fn the_fence_lives_and_dies_with_the_gateway_and_rolls_carry_its_addresses() {
    let old_dir = tempdir("fence-old");
    let new_dir = tempdir("fence-new");
    let sup = Supervisor::spawn(SupervisorConfig {
        fence: true,
        ..fast()
    });
    let mut rx = sup.status();
    sup.start(stand_in(&old_dir)).await.unwrap();
    let first = wait_for(&mut rx, "ready", is_ready).await;
    let old_fence = first
        .fence
        .clone()
        .expect("the gateway has a fence (root and /dev/net/tun needed)");
    assert!(addresses_of(&old_fence).is_some(), "{old_fence} exists");
    vip::ip_run(&["addr", "add", "127.77.0.1/32", "dev", &old_fence])
        .await
        .unwrap();

    sup.roll(stand_in(&new_dir)).await.unwrap();
    let rolled = rx.borrow().clone();
    let new_fence = rolled.fence.clone().expect("the new gateway has a fence");
    assert_ne!(new_fence, old_fence);
    let carried = addresses_of(&new_fence).expect("new fence exists");
    assert!(carried.contains("127.77.0.1/32"), "carried: {carried}");
    assert!(
        addresses_of(&old_fence).is_none(),
        "the old fence went with the drained gateway"
    );

    let pid = rolled.pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while addresses_of(&new_fence).is_some_and(|a| a.contains("127.77.0.1/32")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the address went with the killed gateway");
    sup.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(old_dir);
    let _ = std::fs::remove_dir_all(new_dir);
}
