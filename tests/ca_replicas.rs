//! CA replicas over a real PostgreSQL server: any replica issues, join tokens stay
//! single-use across replicas, bans and entries apply everywhere at once, keys are sealed in
//! the database, and under load a `kill -9` of one replica and the loss of another's
//! database connection cost no request anything but a clear 503.

mod casupport;
mod pg;
mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use casupport::{anonymous, csr, status, Node};
use meshedge_ca::client::ClientError;
use pg::Postgres;
use support::*;

struct Replica {
    name: String,
    dir: std::path::PathBuf,
    guard: ChildGuard,
    addr: String,
}

fn init_replica(root: &TempDir, pg: &Postgres, name: &str) -> String {
    stdout_of(
        meshedge()
            .args([
                "ca",
                "init",
                "--trust-domain",
                "example.org",
                "--postgres",
                &pg.url(name),
                "--kek-file",
            ])
            .arg(root.join("ca.kek"))
            .arg("--state-dir")
            .arg(root.join(name)),
    )
}

fn serve(root: &TempDir, name: &str) -> Replica {
    let dir = root.join(name);
    let mut cmd = meshedge();
    cmd.args(["ca", "serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&dir);
    let (guard, addr) = spawn_until(cmd, "ca listening on", root.path());
    Replica {
        name: name.to_owned(),
        dir,
        guard,
        addr,
    }
}

fn cli(r: &Replica, args: &[&str]) -> String {
    stdout_of(meshedge().args(args).arg("--state-dir").arg(&r.dir))
}

fn serials_in_audit(r: &Replica) -> Vec<String> {
    std::fs::read_to_string(r.dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "issued")
        .map(|v| v["serial"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_ca_and_survive_crashes_and_lost_connections() {
    let pg = Postgres::start("ca-pg");
    let root = TempDir::new("replicas");
    assert!(init_replica(&root, &pg, "r1").contains("initialised CA for example.org"));
    assert!(init_replica(&root, &pg, "r2").contains("joined the CA"));
    assert!(init_replica(&root, &pg, "r3").contains("joined the CA"));
    // The keys in the database are sealed: no PEM private key in any row.
    let clear = pg.psql("SELECT count(*) FROM ca_keys WHERE position(convert_to('PRIVATE KEY', 'UTF8') in key_sealed) > 0");
    assert_eq!(clear, "0");
    assert_eq!(pg.psql("SELECT count(*) FROM ca_keys"), "2");

    let r1 = serve(&root, "r1");
    let r2 = serve(&root, "r2");
    let r3 = serve(&root, "r3");
    let bundle = cli(&r1, &["ca", "bundle"]);
    assert_eq!(
        cli(&r3, &["ca", "bundle"]),
        bundle,
        "every replica serves the same roots"
    );
    let all = [r1.addr.clone(), r2.addr.clone(), r3.addr.clone()];

    // A token raced on three replicas at once is redeemed once.
    let token = cli(&r1, &["ca", "token", "create", "--node", "racer"]);
    let mut race = Vec::new();
    for i in 0..9 {
        let client = anonymous(&all[i % 3..i % 3 + 1], &bundle);
        let token = token.clone();
        race.push(tokio::spawn(async move {
            Node::enroll(&client, &token, "racer").await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in race {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(
        wins, 1,
        "a join token raced on 3 replicas was redeemed {wins} times"
    );

    // Entries and bans written through one replica apply on the others at once.
    let token = cli(&r2, &["ca", "token", "create", "--node", "n1"]);
    let n1 = Node::enroll(&anonymous(&all[1..2], &bundle), &token, "n1")
        .await
        .unwrap();
    cli(
        &r1,
        &[
            "ca",
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/svc/web",
            "--parent",
            "n1",
            "--selector",
            "unix:uid:1000",
        ],
    );
    let (_, web) = csr("spiffe://example.org/svc/web");
    n1.client(&all[2..3], &bundle)
        .workload(&web, None)
        .await
        .expect("entry from r1 applies on r3");
    let token = cli(&r3, &["ca", "token", "create", "--node", "n2"]);
    let n2 = Node::enroll(&anonymous(&all[0..1], &bundle), &token, "n2")
        .await
        .unwrap();
    cli(&r1, &["ca", "ban", "--node", "n2"]);
    let (_, n2csr) = csr("spiffe://example.org/node/n2");
    assert_eq!(
        status(
            n2.client(&all[1..2], &bundle)
                .renew(&n2csr, None)
                .await
                .unwrap_err()
        )
        .1,
        "banned"
    );

    // Bounded issuance load from 6 clients that know all replicas.
    let outcomes: Arc<Mutex<Vec<Result<String, ClientError>>>> = Arc::default();
    let mut load = Vec::new();
    for c in 0..6 {
        let client = n1.client(
            &[
                all[c % 3].clone(),
                all[(c + 1) % 3].clone(),
                all[(c + 2) % 3].clone(),
            ],
            &bundle,
        );
        let outcomes = outcomes.clone();
        load.push(tokio::spawn(async move {
            let (_, web) = csr("spiffe://example.org/svc/web");
            for _ in 0..150 {
                let r = client.workload(&web, None).await.map(|s| s.serial);
                outcomes.lock().unwrap().push(r);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let progress = |n: usize| {
        let outcomes = outcomes.clone();
        poll(Duration::from_secs(60), move || {
            (outcomes.lock().unwrap().len() >= n).then_some(())
        })
        .expect("load makes progress")
    };
    progress(150);
    let Replica {
        guard: mut r1_guard,
        ..
    } = r1;
    r1_guard.kill9();
    progress(400);
    let killed = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'r2'");
    assert_ne!(killed, "0", "r2 had a database connection to terminate");
    for t in load {
        t.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_eq!(outcomes.len(), 900);
    let mut served = HashSet::new();
    for o in &outcomes {
        match o {
            Ok(serial) => assert!(
                served.insert(serial.clone()),
                "serial {serial} handed out twice"
            ),
            Err(e) => assert_eq!(
                e.api_error().map(|a| a.status),
                Some(503),
                "unclear failure: {e}"
            ),
        }
    }
    assert!(
        served.len() >= 890,
        "only {} of 900 requests succeeded",
        served.len()
    );

    // No serial twice across all replicas' audit logs.
    let r1_audit: Vec<String> = std::fs::read_to_string(root.join("r1/audit.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "issued")
        .map(|v| v["serial"].as_str().unwrap().to_owned())
        .collect();
    let mut every = HashSet::new();
    for s in r1_audit
        .into_iter()
        .chain(serials_in_audit(&r2))
        .chain(serials_in_audit(&r3))
    {
        assert!(every.insert(s.clone()), "serial {s} in two audit records");
    }
    assert!(every.len() >= served.len());

    // r2 reconnected: it issues again.
    n1.client(&all[1..2], &bundle)
        .workload(&web, None)
        .await
        .expect("r2 issues after reconnecting");

    // Root rotation through one replica reaches the others.
    cli(&r3, &["ca", "root", "add"]);
    let bundle_file = root.join("bundle.pem");
    std::fs::write(&bundle_file, &bundle).unwrap();
    poll(Duration::from_secs(10), || {
        let out = Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&bundle_file)
            .arg(format!("https://{}/v1/bundle", r2.addr))
            .output()
            .ok()?;
        (pem::parse_many(&out.stdout).ok()?.len() == 2).then_some(())
    })
    .expect("r2 serves the root added through r3");

    // The database goes away: every replica answers a clear 503, and recovers when it returns.
    pg.stop();
    let err = n1
        .client(&all[1..3], &bundle)
        .workload(&web, None)
        .await
        .unwrap_err();
    let (code, reason) = status(err);
    assert_eq!((code, reason.as_str()), (503, "store_unavailable"));
    let ready = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&bundle_file)
        .arg(format!("https://{}/healthz/ready", r3.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "503");
    pg.restart();
    let recovered = poll(Duration::from_secs(20), || {
        futures_block(n1.client(&all[1..3], &bundle).workload(&web, None)).ok()
    });
    assert!(
        recovered.is_some(),
        "replicas issue again once the database is back"
    );
    let _ = (r2.name, r3.name);
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
