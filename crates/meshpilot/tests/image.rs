//! The image the install manifests name: `scripts/build-image.sh` assembles its root filesystem
//! (here with this build's binary), and the binary runs from it — chrooted, as the image's
//! non-root user, with nothing of the host's filesystem — to `/ready` and a full ADS sync of a
//! real Envoy.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Envoy, Meshpilot};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_image_rootfs_runs_the_server_to_ready_and_an_ads_sync() {
    let _bin = support::require_envoy!();
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        eprintln!("SKIP: chroot needs root");
        return;
    }
    let out = TempDir::new().expect("tempdir");
    let built = Command::new(repo().join("scripts/build-image.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_meshpilot"), "--out"])
        .arg(out.path())
        .output()
        .expect("run build-image.sh");
    assert!(
        built.status.success(),
        "build-image.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let rootfs = out.path().join("rootfs");
    // Only what the script put there: the binary, its libraries, the user, /tmp.
    for path in ["usr/local/bin/meshpilot", "etc/passwd", "etc/group", "tmp"] {
        assert!(rootfs.join(path).exists(), "{path} missing from the rootfs");
    }
    assert!(!rootfs.join("bin/sh").exists(), "a shell in the image");
    assert!(out.path().join("oci/index.json").exists());

    // The scenario's manifests, where the chrooted server (uid 65532) can read them.
    let config = rootfs.join("config");
    std::fs::create_dir(&config).expect("mkdir");
    support::copy_scenario_files(
        "03-bookinfo",
        &["services.yaml", "gateway.yaml", "reviews-v1.yaml"],
        &config,
    );
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&config)
        .status()
        .expect("chmod");
    assert!(chmod.success());

    let server = Meshpilot::spawn_in_root(&rootfs, &[Path::new("/config")], &[]);
    server.wait_ready(WAIT).await;
    let ip = support::loopback_ip();
    let admin = support::admin_addr();
    let id = support::node_id("router", ip, "gw", "istio-system");
    let mut args = support::bootstrap_args(&id, server.xds(), admin);
    args.labels = vec![("istio".into(), "ingressgateway".into())];
    let envoy = Envoy::start(support::render_bootstrap(&args), admin).await;
    envoy.wait_for_listener(&format!("{ip}_80"), WAIT).await;
    envoy.assert_all_acked().await;
    assert!(
        server.logs().contains("\"/config\""),
        "not serving /config: {}",
        server.logs()
    );
}
