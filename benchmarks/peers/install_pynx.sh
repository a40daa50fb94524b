#!/usr/bin/env bash
# Unpack PyNX (ESRF) from Debian's backports suite (bookworm-backports ships it) into
# benchmarks/peers/pynx/, for running it side by side with lensfree
# (benchmarks/bench_phase.py). PyNX is not on the Python package index (the `pynx` name
# there is an unrelated tool).
#
# The backports suite goes in a sources list of its own, with its own package lists and
# cache under a temporary folder: the system's apt configuration and state are not touched,
# and nothing is installed system-wide (apt-get download + dpkg -x, no dpkg -i).
#
#   bash benchmarks/peers/install_pynx.sh [--dry-run]
#   .venv/bin/pip install scipy fabio silx h5py hdf5plugin scikit-image matplotlib \
#       numexpr pytools                      # what PyNX imports; not lensfree dependencies
#   export PYTHONPATH=$PWD/benchmarks/peers/pynx/usr/lib/python3/dist-packages
#   PYNX_PU=cpu .venv/bin/python -c "import pynx.cdi"
#   PYNX_PU=cpu .venv/bin/python benchmarks/bench_phase.py
#
# (bench_phase.py puts that dist-packages folder on sys.path itself when it exists, so
# PYTHONPATH is only needed for using PyNX by hand.) The package source is the machine's
# own: the Debian archive and release that apt is configured with (/etc/apt/sources.list,
# /etc/apt/sources.list.d/*.list and *.sources), with "-backports" added to the release
# name. --dry-run prints the sources line it would use and stops. DEBIAN_MIRROR=URI and
# SUITE=NAME override what it finds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${PYNX_DEST:-$here/pynx}"
apt_dir=/etc/apt
default_keyring=/usr/share/keyrings/debian-archive-keyring.gpg

# "URI SUITE KEYRING" for every enabled binary (deb) source apt has, one suite a line
# (KEYRING "-" when the entry names none), in apt's order: one-line lists, then deb822.
apt_sources() {
  local f
  for f in "$apt_dir/sources.list" "$apt_dir"/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk '$1 == "deb" {
      i = 2; key = "-"
      if ($2 ~ /^\[/) {  # options such as [arch=amd64 signed-by=/path/key.gpg]
        for (; i <= NF; i++) {
          if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) }
          if ($i ~ /\]$/) break
        }
        i++
      }
      print $i, $(i + 1), key
    }' "$f"
  done
  for f in "$apt_dir"/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk 'function flush(   n, m, j, k, u, s) {
        if (types ~ /(^| )deb( |$)/ && enabled != "no") {
          n = split(uris, u, " "); m = split(suites, s, " "); if (key == "") key = "-"
          for (j = 1; j <= n; j++) for (k = 1; k <= m; k++) print u[j], s[k], key
        }
        types = uris = suites = key = enabled = ""
      }
      /^#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[A-Za-z-]+:/ {
        field = tolower($1); sub(/:$/, "", field)
        value = $0; sub(/^[^:]*:[[:space:]]*/, "", value)
        if (field == "types") types = value
        else if (field == "uris") uris = value
        else if (field == "suites") suites = value
        else if (field == "signed-by" && value ~ /^\//) key = value  # a path, not an inline key
        else if (field == "enabled") enabled = tolower(value)
      }
      END { flush() }' "$f"
  done
}

# The Debian release itself: a suite without a "-updates"/"-security" tail, from an
# archive that is not the security one; the one named in /etc/os-release if there is one.
codename="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)"
read -r found_uri found_suite found_key < <(apt_sources | awk -v c="$codename" '
  $1 !~ /security/ && $2 !~ /-/ && (c == "" || $2 == c) { print; exit }') || true
mirror="${DEBIAN_MIRROR:-${found_uri:-}}"
release="${found_suite:-$codename}"
if [[ -z $mirror || ( -z ${SUITE:-} && -z $release ) ]]; then
  echo "no Debian source found in $apt_dir/sources.list or $apt_dir/sources.list.d/;" \
       "set DEBIAN_MIRROR=URI and SUITE=RELEASE-backports" >&2
  exit 1
fi
suite="${SUITE:-$release-backports}"
keyring="${found_key:--}"
[[ $keyring != - ]] || keyring="$default_keyring"
options=""
[[ ! -f $keyring ]] || options="[signed-by=$keyring] "
line="deb ${options}$mirror $suite main"
echo "$line"
[[ ${1:-} != --dry-run ]] || exit 0

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt drops root to _apt for downloads
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$dest"
echo "$line" > "$tmp/sources.list"

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
