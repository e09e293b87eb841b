#!/usr/bin/env bash
# Builds the root filesystem of the `meshpilot:0.1.0` image that manifests/install/ runs — the
# same contents as the Dockerfile's runtime stage — without Docker, a daemon or a registry:
# the binary, the shared libraries `ldd` says it links, /etc/passwd and /etc/group with the
# non-root user 65532 the Deployment runs as, and an empty /tmp. Also writes an OCI image
# layout beside it (one uncompressed layer, made with tar and sha256sum), which
# `skopeo copy oci:DIR docker-daemon:meshpilot:0.1.0` or `podman load` can take from there.
#
#   scripts/build-image.sh [--binary PATH] [--out DIR] [--no-oci]
#
# Without --binary, builds `cargo build --release -p meshpilot` first. DIR defaults to
# target/image; the root filesystem goes to DIR/rootfs, the OCI layout to DIR/oci.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

binary=""
out="$root/target/image"
oci=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-oci) oci=0; shift ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR] [--no-oci]" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release --locked -p meshpilot)
  binary="${CARGO_TARGET_DIR:-$root/target}/release/meshpilot"
fi
[ -x "$binary" ] || { echo "not an executable: $binary" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"
rootfs="$out/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 0755 "$out" "$rootfs"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/usr/local/bin/meshpilot"

# What the binary links, at the paths the dynamic loader looks for them (the loader too).
ldd "$binary" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\// { print $1 }
' | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

# The user the Deployment runs as (runAsUser/runAsGroup 65532), as distroless names it.
cat > "$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
echo "rootfs: $rootfs ($(du -sh "$rootfs" | cut -f1))"

[ "$oci" = 1 ] || exit 0

# An OCI image layout (image-spec v1): one uncompressed layer, reproducible (sorted names,
# fixed times and owners), a config naming the user, entrypoint and ports, a manifest and
# an index that tags it meshpilot:VERSION.
layout="$out/oci"
rm -rf "$layout"
mkdir -p "$layout/blobs/sha256"
layer="$out/layer.tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -C "$rootfs" -cf "$layer" .
blob() { # FILE → moves it into the blob store, prints "DIGEST SIZE"
  local digest size
  digest="$(sha256sum "$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$1")"
  mv "$1" "$layout/blobs/sha256/$digest"
  echo "$digest $size"
}
read -r layer_digest layer_size < <(blob "$layer")
config="$out/config.json"
cat > "$config" <<EOF
{"architecture":"amd64","os":"linux","config":{"User":"65532:65532","Entrypoint":["/usr/local/bin/meshpilot"],"Cmd":["serve","--kube"],"ExposedPorts":{"15010/tcp":{},"15014/tcp":{}},"Env":["RUST_LOG=info"]},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]},"history":[{"created_by":"scripts/build-image.sh"}]}
EOF
read -r config_digest config_size < <(blob "$config")
manifest="$out/manifest.json"
cat > "$manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer_digest","size":$layer_size}]}
EOF
read -r manifest_digest manifest_size < <(blob "$manifest")
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
cat > "$layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"$version","io.containerd.image.name":"meshpilot:$version"}}]}
EOF
echo "oci layout: $layout (meshpilot:$version, manifest sha256:$manifest_digest)"
