#!/usr/bin/env bash
# Refresh the vendored ONNX Runtime Web files that `pokemon-classifier export --web` puts in the site.
#
#     scripts/refresh_onnxruntime_web.sh            # the version in src/pokemon_classifier/vendor/onnxruntime-web/VERSION
#     scripts/refresh_onnxruntime_web.sh 1.32.0     # another version (then run tests/test_web.py)
#
# Takes the npm package through `npm pack` (the registry, never a CDN) and keeps only what the page loads:
# the ES-module bundle with ORT's loader inside, and the one WebAssembly file it fetches (SIMD; threads
# only where the page is cross-origin isolated, otherwise one thread).
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/src/pokemon_classifier/vendor/onnxruntime-web"
version="${1:-$(cat "$dest/VERSION" 2>/dev/null || echo 1.31.1)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "onnxruntime-web@$version" >/dev/null && tar xzf onnxruntime-web-*.tgz)
pkg="$work/package"
[ "$(node -p "require('$pkg/package.json').license")" = "MIT" ] || { echo "onnxruntime-web $version: licence is not MIT" >&2; exit 1; }
mkdir -p "$dest"
for f in ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm; do
  [ -f "$pkg/dist/$f" ] || { echo "onnxruntime-web $version: dist/$f missing (the bundle layout changed)" >&2; exit 1; }
  cp "$pkg/dist/$f" "$dest/$f.tmp" && mv "$dest/$f.tmp" "$dest/$f"
done
# the npm package names its licence in package.json only; the text is the project's LICENSE (MIT)
cat > "$dest/LICENSE" <<LICENSE
ONNX Runtime Web $version (npm package onnxruntime-web), files ort.wasm.bundle.min.mjs and
ort-wasm-simd-threaded.wasm, from https://github.com/microsoft/onnxruntime. Third-party notices for
the libraries built into the WebAssembly: https://github.com/microsoft/onnxruntime/blob/main/ThirdPartyNotices.txt

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENSE
echo "$version" > "$dest/VERSION"
( cd "$dest" && sha256sum ort.wasm.bundle.min.mjs ort-wasm-simd-threaded.wasm > SHA256SUMS )
echo "onnxruntime-web $version -> $dest ($(du -sh "$dest" | cut -f1))"
