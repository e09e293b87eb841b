//! Hostile entries appearing in a served config directory — a symlink loop, a file that cannot
//! be read, a directory named like a manifest, binary content — against the real server (no
//! Envoy needed): each ends in a diagnostic naming its path, in `/debug/diagnosticz` and in the
//! log, the server stays up and every other file keeps serving.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::Meshpilot;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(10);

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n"
    )
}

/// Creates one hostile entry named `name` in `dir`.
fn make(dir: &Path, name: &str) {
    let path = dir.join(name);
    match name {
        "loop-a.yaml" => {
            std::os::unix::fs::symlink("loop-b.yaml", &path).expect("symlink");
            std::os::unix::fs::symlink("loop-a.yaml", dir.join("loop-b.yaml")).expect("symlink");
        }
        // Root reads any file mode, so this is a file whose every read fails.
        "unreadable.yaml" => std::os::unix::fs::symlink("/proc/self/mem", &path).expect("symlink"),
        "mounted.yaml" => std::fs::create_dir(&path).expect("mkdir"),
        "blob.yaml" => std::fs::write(&path, [0xffu8, 0xfe, 0x00, 0x9f, 0x92]).expect("write"),
        other => unreachable!("{other}"),
    }
}

async fn get(server: &Meshpilot, path: &str) -> Value {
    let r = server.debug_get(path).await.expect(path);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body))
}

fn services(configz: &Value) -> Vec<String> {
    configz["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["key"]["kind"] == "Service")
        .map(|o| o["key"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn each_hostile_entry_is_named_and_everything_else_served() {
    for name in [
        "loop-a.yaml",
        "unreadable.yaml",
        "mounted.yaml",
        "blob.yaml",
    ] {
        let dir = TempDir::new().expect("tempdir");
        support::write_manifests(dir.path(), &[("good.yaml", &service("good"))]);
        let server = Meshpilot::start(&[dir.path()]).await;
        make(dir.path(), name);
        // An edit after it shows the server still reads the directory.
        support::write_manifests(dir.path(), &[("later.yaml", &service("later"))]);
        support::eventually(&format!("{name} reported"), WAIT, || async {
            let d = get(&server, "/debug/diagnosticz").await.to_string();
            if d.contains(name) { Ok(()) } else { Err(d) }
        })
        .await;
        support::eventually("the other files served", WAIT, || async {
            let s = services(&get(&server, "/debug/configz").await);
            if s == ["good", "later"] {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await;
        assert!(server.exited().is_none(), "{name}: the server exited");
        assert_eq!(
            server.debug_get("/ready").await.map(|r| r.status).ok(),
            Some(200)
        );
        support::wait_until(&format!("{name} in the log"), WAIT, || async {
            server
                .logs()
                .lines()
                .any(|l| l.contains("WARN") && l.contains(name))
        })
        .await;
    }
}
