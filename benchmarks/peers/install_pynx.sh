#!/usr/bin/env bash
# Unpack PyNX (ESRF) from Debian bookworm-backports into benchmarks/peers/pynx/, for
# running it side by side with lensfree (benchmarks/bench_phase.py). PyNX is not on the
# Python package index (the `pynx` name there is an unrelated tool).
#
# The backports suite goes in a sources list of its own, with its own package lists and
# cache under a temporary folder: the system's apt configuration and state are not touched,
# and nothing is installed system-wide (apt-get download + dpkg -x, no dpkg -i).
#
#   bash benchmarks/peers/install_pynx.sh
#   .venv/bin/pip install scipy fabio silx h5py hdf5plugin scikit-image matplotlib \
#       numexpr pytools                      # what PyNX imports; not lensfree dependencies
#   export PYTHONPATH=$PWD/benchmarks/peers/pynx/usr/lib/python3/dist-packages
#   PYNX_PU=cpu .venv/bin/python -c "import pynx.cdi"
#   PYNX_PU=cpu .venv/bin/python benchmarks/bench_phase.py
#
# (bench_phase.py puts that dist-packages folder on sys.path itself when it exists, so
# PYTHONPATH is only needed for using PyNX by hand.) Override the mirror with
# DEBIAN_MIRROR=http://... and the suite with SUITE=... .
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${PYNX_DEST:-$here/pynx}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${SUITE:-bookworm-backports}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt drops root to _apt for downloads
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$dest"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$tmp/sources.list"

apt_opts=(
  -o "Dir::Etc::sourcelist=$tmp/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "APT::Get::List-Cleanup=0"
)
apt-get "${apt_opts[@]}" update
cd "$tmp"
apt-get "${apt_opts[@]}" download python3-pynx pynx
for deb in "$tmp"/*.deb; do
  echo "unpacking $(basename "$deb")"
  dpkg -x "$deb" "$dest"
done
site="$dest/usr/lib/python3/dist-packages"
test -d "$site/pynx" || { echo "no pynx package under $site" >&2; exit 1; }
echo "PyNX unpacked: put $site on PYTHONPATH and run with PYNX_PU=cpu"
