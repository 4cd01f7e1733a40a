#!/usr/bin/env bash
# FlashWatch bootstrap: system packages for the test suite + the project's virtualenv.
#
# Usage (from the repo root, as root on Debian 12 for the apt part):
#   bash scripts/bootstrap.sh                 # apt packages for tests + .venv with requirements-dev.txt
#   bash scripts/bootstrap.sh --no-apt        # skip apt entirely
#   bash scripts/bootstrap.sh --runtime-only  # .venv with requirements.txt only; no apt (PyAV bundles FFmpeg)
#   bash scripts/bootstrap.sh --force         # reinstall Python packages even if the stamp says up to date
#
# Idempotent. Fast paths:
#   * apt is skipped when every needed Debian package is already installed (dpkg -s);
#   * pip is skipped when .venv/.fw-bootstrap-stamp matches the hash of the requirements
#     files, pyproject.toml and the install mode.
# Environment: PYTHON (default python3.11), VENV (default .venv).
# torch is pinned (==) in requirements.txt; pip takes the machine's CPU wheel. Never install it unpinned.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT=1
RUNTIME_ONLY=0
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --no-apt) APT=0 ;;
        --runtime-only) RUNTIME_ONLY=1 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "bootstrap: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
say() { printf 'bootstrap: %s\n' "$*"; }
t0=$SECONDS

# --- 1. Debian packages (tests only: local servers, RTSP test server, ffmpeg CLI) -----------
TEST_PKGS=(
    redis-server postgresql mosquitto ffmpeg
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 python3-gi
)
if [[ $RUNTIME_ONLY == 1 ]]; then
    say "runtime only: no apt packages needed (PyAV bundles FFmpeg)"
elif [[ $APT == 0 ]]; then
    say "--no-apt: skipping apt"
else
    missing=()
    for p in "${TEST_PKGS[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [[ ${#missing[@]} == 0 ]]; then
        say "apt: all ${#TEST_PKGS[@]} packages present"
    else
        say "apt: installing ${missing[*]}"
        SUDO=()
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || { echo "bootstrap: need root (or sudo) for apt-get; or pass --no-apt" >&2; exit 1; }
            SUDO=(sudo)
        fi
        export DEBIAN_FRONTEND=noninteractive
        "${SUDO[@]}" apt-get update -qq
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        say "apt: done ($((SECONDS - t0)) s)"
    fi
fi

# --- 2. virtualenv --------------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    command -v "$PYTHON" >/dev/null || { echo "bootstrap: $PYTHON not found (set PYTHON=...)" >&2; exit 1; }
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

if [[ $RUNTIME_ONLY == 1 ]]; then REQ=requirements.txt; MODE=runtime; else REQ=requirements-dev.txt; MODE=dev; fi
stamp_file=$VENV/.fw-bootstrap-stamp
stamp=$( { echo "$MODE"; "$VENV/bin/python" -VV; cat requirements.txt requirements-dev.txt pyproject.toml; } \
         | sha256sum | cut -d' ' -f1 )
if [[ $FORCE == 0 && -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
    say "python packages up to date ($MODE; stamp matches)"
else
    rm -f "$stamp_file"
    errlog=$(mktemp)
    trap 'rm -f "$errlog"' EXIT
    # Quiet pip; drop the machine pip config's "Location ... is ignored" noise from stderr.
    pip_q() {
        local rc=0
        "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>"$errlog" || rc=$?
        grep -v "is ignored: it is neither a file nor a directory" "$errlog" >&2 || true
        return "$rc"
    }
    say "pip install -r $REQ"
    pip_q install -r "$REQ"
    say "pip install -e . --no-deps"
    pip_q install -e . --no-deps
    rm -f "$errlog"
    echo "$stamp" > "$stamp_file"
fi
# --- 3. helm (dev only: the chart tests render the chart with the real binary) ---------------
if [[ $RUNTIME_ONLY == 0 ]]; then
    "$VENV/bin/python" scripts/install_helm.py "$VENV" 2> >(grep -v "is ignored: it is neither" >&2)
fi
say "ready in $((SECONDS - t0)) s"
