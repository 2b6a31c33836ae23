#!/usr/bin/env bash
# The project's one test command (README, "Set up"; .ci/run calls it). On a fresh machine it
#   1. makes .venv from the python3 minigun builds against, and installs examples/requirements.txt
#      into it (skipped on later runs while requirements.txt is unchanged);
#   2. installs from Debian what the tests run and is missing: nginx, openssl and unshare
#      (tests/deploy.rs), haproxy (tests/proxy.rs), and the reader's tools for the book's commands (curl, netcat-openbsd,
#      wrk, procps, iproute2) and headless Chromium (tests/book_*.rs);
#   3. installs mdbook with cargo if it is not on PATH;
#   4. runs cargo fmt --check, clippy with warnings as errors, every workspace test (the framework
#      tests must run, not skip), and builds the book;
# then prints one line per check and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

started=$SECONDS
say() { printf '\n==> %s\n' "$*"; }

# -- Python ---------------------------------------------------------------------------------
# The base interpreter, resolved before any venv is activated: pyo3 links against its libpython,
# and the venv is made from it so both agree on the version.
python=${PYTHON:-python3}
base_python=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
base_version=$("$base_python" -c 'import sys; print(sys.version)')

venv=$root/.venv
if [ -x "$venv/bin/python" ] &&
  [ "$("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" != "$base_version" ]; then
  say "recreating .venv: it was made from another Python"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating .venv from $base_python"
  "$base_python" -m venv "$venv"
fi

requirements=$root/examples/requirements.txt
stamp=$venv/.requirements.sha256
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  say "installing examples/requirements.txt into .venv"
  PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$requirements"
  echo "$wanted" >"$stamp"
fi

# -- Debian packages --------------------------------------------------------------------------
# tests/deploy.rs runs the shipped nginx site config in front of minigun (nginx, with openssl
# for its throwaway certificate) and minigun as PID 1 of a new PID namespace (util-linux's
# unshare); tests/proxy.rs runs HAProxy in front with send-proxy and send-proxy-v2.
# tests/book_commands.rs runs every command the book prints, with the reader's tools,
# and tests/book_browser.rs opens the built book in headless Chromium. Whatever is missing is
# installed as root on Debian; elsewhere install it yourself. With MINIGUN_REQUIRE_BOOK_TOOLS
# set (below), a book tool still missing fails those tests instead of skipping them.
wanted_tools=(nginx:nginx-light openssl:openssl unshare:util-linux haproxy:haproxy curl:curl nc:netcat-openbsd
  wrk:wrk ps:procps pgrep:procps ss:iproute2 chromium-headless-shell:chromium-headless-shell)
missing=()
for pair in "${wanted_tools[@]}"; do
  tool=${pair%%:*} package=${pair#*:}
  if command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ]; then continue; fi
  [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
done
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} (apt-get)"
    # Without a policy-rc.d that says no, the packages' postinst would start nginx (on port 80)
    # and haproxy as services; the tests start their own, so keep that from happening.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    installed=0
    if apt-get update -qq; then
      # Debian releases before bookworm ship the headless browser only inside chromium.
      apt_install "${missing[@]}" ||
        apt_install "${missing[@]/chromium-headless-shell/chromium}" || installed=$?
    else
      installed=1
    fi
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    if [ "$installed" -ne 0 ]; then
      say "apt-get install ${missing[*]} failed: tests/deploy.rs, tests/proxy.rs or the book's tests will fail"
    fi
  else
    say "missing ${missing[*]}: tests/deploy.rs, tests/proxy.rs or the book's tests will fail; install them (not root or not Debian)"
  fi
fi
export PATH="$PATH:/usr/sbin"

# -- mdbook -----------------------------------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if [ -f book/book.toml ] && ! command -v mdbook >/dev/null 2>&1; then
  say "installing mdbook (cargo install mdbook --locked)"
  cargo install mdbook --locked --quiet
fi
export MINIGUN_REQUIRE_BOOK_TOOLS=1

# -- the checks -------------------------------------------------------------------------------
export PYO3_PYTHON=$base_python
export VIRTUAL_ENV=$venv
export PATH="$venv/bin:$PATH"
# The framework tests skip when Flask, Django or Pyramid are missing; here they must run.
export MINIGUN_REQUIRE_FRAMEWORKS=1

results=()
failed=0
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT

check() {
  local name=$1
  shift
  say "$name: $*"
  local t0=$SECONDS
  if "$@"; then
    results+=("ok      $name ($((SECONDS - t0))s)")
  else
    results+=("FAILED  $name ($((SECONDS - t0))s)")
    failed=$((failed + 1))
  fi
}

run_tests() {
  cargo test --workspace --no-fail-fast 2>&1 | tee "$test_log"
  return "${PIPESTATUS[0]}"
}

check fmt cargo fmt --all -- --check
check clippy cargo clippy --workspace --all-targets --quiet -- -D warnings
check test run_tests
if [ -f book/book.toml ]; then
  check book mdbook build book
else
  results+=("FAILED  book (book/book.toml is missing)")
  failed=$((failed + 1))
fi

# -- summary ----------------------------------------------------------------------------------
read -r passed failed_tests < <(awk '/^test result:/ {
    for (i = 2; i <= NF; i++) { if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1) }
  } END { print p + 0, f + 0 }' "$test_log")
echo
echo "== Summary ($((SECONDS - started))s)"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
  echo "  $failed check(s) failed"
fi
echo "tests: $passed passed, $failed_tests failed"
[ "$failed" -eq 0 ]
