#!/usr/bin/env bash
# Installs what ragstream needs on a fresh machine: uv, the locked Python environment in .venv/,
# and, with --test-tools (scripts/test.sh), the dev group and the test-only tools (Debian documents, Helm,
# kubeconform, Chromium); the main job (scripts/demo.sh) installs only what it runs.
# Slow artifacts are cached outside the checkout: ~/.cache/uv (wheels), ~/.cache/ragstream (jars, Weaviate).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  echo "==> installing uv $UV_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
    || python3 -m pip install --quiet --user --disable-pip-version-check "uv==$UV_VERSION"
  export PATH="$HOME/.local/bin:$PATH"
fi

# The main job gets the runtime packages only; `--test-tools` (scripts/test.sh) adds the dev group (pytest,
# ruff, Playwright, manifest validators). --inexact: a main-job run never uninstalls what the tests added.
echo "==> python environment (.venv, uv.lock)"
if [ "${1:-}" = "--test-tools" ]; then
  uv sync --frozen --python 3.11
else
  uv sync --frozen --python 3.11 --no-dev --inexact
  exit 0
fi

# --- test-only tools from here on -------------------------------------------------------------------------------
need=()
for pkg in debian-faq debian-reference-en; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> apt-get install ${need[*]} (real HTML/PDF/text documents for the ingestion tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null \
    || echo "warning: could not install ${need[*]}; tests that read them will fail" >&2
fi

# --- validation tools (Helm, kubeconform, Strimzi CRDs, the AsyncAPI parser) ------------------------------------
# Only the tests need them (`bootstrap.sh --test-tools`, which scripts/test.sh passes); the main job does not.
# Cached in ~/.cache/ragstream/tools (Go module proxy + Maven Central + npm, once); tests/unit/test_deploy_*.py
# render the Helm chart and validate it offline with them, tests/unit/test_asyncapi.py runs @asyncapi/parser.
echo "==> manifest validation tools (~/.cache/ragstream/tools)"
bash deploy/tools/fetch-tools.sh >/dev/null \
  || echo "warning: deploy/tools/fetch-tools.sh failed; tests/unit/test_deploy_manifests.py will retry it" >&2

# --- the console's browser test (tests/e2e/test_console.py) ----------------------------------------------------
# Debian's Chromium, driven by Playwright (a dev dependency) through executable_path: never `playwright
# install` (it downloads browsers). Without apt (or root) the test skips and says why.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install chromium chromium-driver (headless browser for tests/e2e/test_console.py)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
      >/dev/null || echo "warning: could not install chromium; tests/e2e/test_console.py will skip" >&2
  else
    echo "note: /usr/bin/chromium missing and apt-get unavailable (or not root); tests/e2e/test_console.py will skip" >&2
  fi
fi
