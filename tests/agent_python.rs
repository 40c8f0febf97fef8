//! Interop: the Python `spiffe` package (py-spiffe, a gRPC C-core client) fetches an
//! X509-SVID and the bundle from the agent through `SPIFFE_ENDPOINT_SOCKET`, and sees a
//! rotation on its stream. Fails loudly when python3 or the package is missing
//! (`scripts/test.sh` installs it).

mod support;

use support::mesh::*;

const SCRIPT: &str = r#"
import sys, threading
from spiffe import WorkloadApiClient

client = WorkloadApiClient()
svid = client.fetch_x509_svid()
print("svid", svid.spiffe_id, flush=True)
bundles = client.fetch_x509_bundles()
for b in bundles.bundles:
    print("bundle", b.trust_domain, len(b.x509_authorities), flush=True)

serials = []
rotated = threading.Event()
def on_success(ctx):
    serials.append(ctx.default_svid.leaf.serial_number)
    if len(set(serials)) >= 2:
        rotated.set()
def on_error(err):
    print("stream error", err, flush=True)
handle = client.stream_x509_contexts(on_success=on_success, on_error=on_error)
ok = rotated.wait(30)
handle.cancel()
client.close()
print("rotated" if ok else "not rotated", len(set(serials)), flush=True)
sys.exit(0 if ok else 1)
"#;

#[test]
fn python_spiffe_fetches_svid_bundle_and_rotation() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import spiffe"])
        .output()
        .expect("python3 is installed");
    assert!(
        check.status.success(),
        "the Python spiffe package is missing (pip install spiffe; scripts/test.sh does it): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mesh = Mesh::start("python");
    let uid = my_uid();
    mesh.entry(
        "spiffe://example.org/svc/py",
        "n1",
        &[format!("unix:uid:{uid}")],
        Some("2s"),
    );
    let _agent = mesh.agent("n1", Some(&mesh.token("n1")));
    let out = python(&mesh.socket("n1"), SCRIPT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("svid spiffe://example.org/svc/py"),
        "{stdout}"
    );
    assert!(stdout.contains("bundle example.org 1"), "{stdout}");
    assert!(stdout.contains("rotated"), "{stdout}");
}
