//! `meshedge dns serve|register|deregister|browse` as real processes, checked with `dig`.

mod support;

use std::process::Command;

use support::*;

fn serve(dir: &TempDir, listen: &str) -> (ChildGuard, String) {
    let mut cmd = meshedge();
    cmd.args([
        "dns",
        "serve",
        "--listen",
        listen,
        "--zone",
        "mesh.test",
        "--state-dir",
    ])
    .arg(dir.join("dns"))
    .arg("--tsig-key-file")
    .arg(dir.join("tsig.key"));
    spawn_until(cmd, "dns listening on", dir.path())
}

fn dig(addr: &str, qtype: &str, name: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    stdout_of(Command::new("dig").args([
        "+short",
        "+time=2",
        "+tries=2",
        "-p",
        port,
        &format!("@{host}"),
        qtype,
        name,
    ]))
}

fn update(addr: &str, dir: &TempDir, verb: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = meshedge();
    cmd.args([
        "dns",
        verb,
        "--server",
        addr,
        "--zone",
        "mesh.test",
        "--service",
        "_echo._tcp.mesh.test",
        "--instance",
        "echo-a1",
        "--tsig-key-file",
    ])
    .arg(dir.join("tsig.key"))
    .args(extra);
    cmd.output().unwrap()
}

#[test]
fn registrations_are_served_signed_and_survive_restart() {
    let dir = TempDir::new("dns");
    let (mut server, addr) = serve(&dir, "127.0.0.1:0");
    let out = update(
        &addr,
        &dir,
        "register",
        &[
            "--port",
            "8443",
            "--address",
            "127.0.0.1",
            "--priority",
            "1",
            "--locality",
            "zone-a",
            "--txt",
            "health=/healthz",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(
        dig(&addr, "PTR", "_echo._tcp.mesh.test"),
        "echo-a1._echo._tcp.mesh.test."
    );
    let srv = dig(&addr, "SRV", "echo-a1._echo._tcp.mesh.test");
    assert!(srv.starts_with("1 100 8443 echo-a1.mesh.test."), "{srv}");
    let txt = dig(&addr, "TXT", "echo-a1._echo._tcp.mesh.test");
    assert!(
        txt.contains("\"zone=zone-a\"") && txt.contains("\"health=/healthz\""),
        "{txt}"
    );
    let browse =
        stdout_of(meshedge().args(["dns", "browse", "--server", &addr, "_echo._tcp.mesh.test"]));
    assert!(
        browse.contains("127.0.0.1:8443") && browse.contains("zone=zone-a"),
        "{browse}"
    );

    // An unsigned update is refused, and changes nothing.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!("server {host} {port}\nzone mesh.test\nupdate delete echo-a1._echo._tcp.mesh.test SRV\nsend\n");
    let mut nsupdate = Command::new("nsupdate")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nsupdate (bind9-dnsutils) is installed");
    std::io::Write::write_all(nsupdate.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = nsupdate.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REFUSED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dig(&addr, "SRV", "echo-a1._echo._tcp.mesh.test").contains("8443"));

    // Restart on the same address: the snapshot brings the registration back.
    server.kill9();
    let (_server, addr2) = serve(&dir, &addr);
    assert_eq!(addr2, addr);
    assert!(dig(&addr, "SRV", "echo-a1._echo._tcp.mesh.test").contains("8443"));

    let out = update(&addr, &dir, "deregister", &["--address", "127.0.0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dig(&addr, "PTR", "_echo._tcp.mesh.test"), "");
}
