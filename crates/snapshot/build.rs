//! Locates the Envoy API FileDescriptorSet that ships inside the `envoy-types` crate source
//! (`src/generated/types.bin`) and copies it to `OUT_DIR`, so `debug`/golden output can render
//! resources as Envoy's own protobuf JSON through `prost-reflect`. The crate does not export the
//! file, so we ask `cargo metadata` where the resolved `envoy-types` lives.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("TARGET is set by cargo");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &target,
        ])
        .current_dir(&manifest_dir)
        .output()
        .expect("run cargo metadata");
    if !output.status.success() {
        panic!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages array");
    let envoy = packages
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .expect("envoy-types is a dependency");
    let manifest = PathBuf::from(envoy["manifest_path"].as_str().expect("manifest_path"));
    let src = manifest
        .parent()
        .expect("manifest has a parent")
        .join("src/generated/types.bin");
    std::fs::copy(&src, out.join("envoy_descriptors.bin"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}
