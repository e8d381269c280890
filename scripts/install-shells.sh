#!/usr/bin/env bash
# Installs zsh and fish, when they are missing, so tests/test_completion.py drives `peftlab completion zsh|fish`
# through the real shells (bash is always there). Idempotent; installs only when apt may be used (root, or
# passwordless sudo), otherwise names what is missing in one line and exits 0 (those two tests then skip).
set -u
missing=()
for shell in zsh fish; do command -v "$shell" >/dev/null 2>&1 || missing+=("$shell"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
  echo "install-shells: warning: ${missing[*]} missing (apt-get is not available or not permitted);" \
       "their completion tests will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
  || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
  || { echo "install-shells: warning: could not install ${missing[*]}; their completion tests will skip" >&2; exit 0; }
