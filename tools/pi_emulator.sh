#!/usr/bin/env bash
# An emulated Raspberry Pi for tests: an aarch64 Debian bookworm userland run under qemu-user,
# with python3, numpy and ai-edge-litert (installed from aarch64 wheels on the host: pip under
# emulation is slow; a .pth file puts them on python3's path, like a Pi with the runtime
# installed), and openssh-server for a real "Pi over SSH" target. Root only.
#
#   sudo bash tools/pi_emulator.sh          # set up (first time about 5 min; cached afterwards)
#   sudo bash tools/pi_emulator.sh check    # exit 0 when the emulator is ready to use
#
# The root file system lives in .cache/pi-emulator/rootfs (gitignored) and is cached as
# .cache/pi-emulator/rootfs-arm64-bookworm.tar.gz, so a later setup only unpacks it. Never
# mount /sys into it: the TFLite runtimes segfault under emulation when they can read the host's
# CPU topology (DESIGN.md). Emulated latency is 8-20x slower than a Pi: correctness only.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${EDGEKIT_PI_CACHE:-$PWD/.cache/pi-emulator}
ROOTFS=$CACHE/rootfs
TARBALL=$CACHE/rootfs-arm64-bookworm.tar.gz
SITE=/opt/edgekit-site                     # inside the rootfs; on python3's path through $PTH
PTH=/usr/lib/python3/dist-packages/edgekit-site.pth
# The bundle's runtime (edgekit/convert.py BUNDLE_REQUIREMENTS) and the numpy edgekit pins.
NUMPY=$(sed -n 's/^numpy==//p' tools/constraints.txt)
WHEELS="ai-edge-litert==2.3.0 numpy==${NUMPY:-2.4.6}"

say() { echo "pi-emulator: $*" >&2; }

binfmt_ready() { [ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; }
rootfs_ready() { [ -x "$ROOTFS/usr/bin/python3" ] && [ -f "$ROOTFS$PTH" ] && [ -f "$ROOTFS$SITE/.edgekit-wheels" ] \
                 && [ "$(cat "$ROOTFS$SITE/.edgekit-wheels")" = "$WHEELS" ]; }

if [ "${1:-setup}" = check ]; then
  binfmt_ready && rootfs_ready && chroot "$ROOTFS" /usr/bin/python3 -c \
    'import platform, numpy, ai_edge_litert.interpreter; assert platform.machine() == "aarch64"'
  exit
fi

[ "$(id -u)" = 0 ] || { say "run as root (debootstrap, chroot and binfmt_misc need it)"; exit 1; }

pkgs=""
[ -x /usr/bin/qemu-aarch64-static ] || pkgs="$pkgs qemu-user-static"
command -v debootstrap >/dev/null || pkgs="$pkgs debootstrap"
command -v update-binfmts >/dev/null || pkgs="$pkgs binfmt-support"
if [ -n "$pkgs" ]; then
  say "apt-get install$pkgs"
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
if ! binfmt_ready; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64
fi

mkdir -p "$CACHE"
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS" "$ROOTFS.partial"
  if [ -f "$TARBALL" ]; then
    say "unpacking $TARBALL"
    mkdir -p "$ROOTFS.partial"
    tar -xzf "$TARBALL" -C "$ROOTFS.partial"
  else
    say "debootstrap arm64 bookworm (about 5 min)"
    debootstrap --arch=arm64 --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates,openssh-server \
      bookworm "$ROOTFS.partial" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
      || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
    rm -rf "$ROOTFS.partial/var/cache/apt/archives/"*.deb
    tar -czf "$TARBALL.partial" -C "$ROOTFS.partial" . && mv "$TARBALL.partial" "$TARBALL"
  fi
  mv "$ROOTFS.partial" "$ROOTFS"
fi

if ! rootfs_ready; then
  say "installing aarch64 wheels: $WHEELS"
  rm -rf "$ROOTFS$SITE"
  platforms=""
  for v in 36 35 34 33 32 31 30 29 28 27 26 17; do platforms="$platforms --platform manylinux_2_${v}_aarch64"; done
  # --no-deps: the evaluator imports only ai_edge_litert.interpreter, which needs numpy alone
  # (the wheel's other dependencies serve its model tools).
  # shellcheck disable=SC2086
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$ROOTFS$SITE" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    $platforms --platform manylinux2014_aarch64 $WHEELS
  echo "$WHEELS" > "$ROOTFS$SITE/.edgekit-wheels"
fi
echo "$SITE" > "$ROOTFS$PTH"
mkdir -p "$ROOTFS/run/sshd"                # sshd's privilege separation folder
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || true
bash "$0" check && say "ready: chroot $ROOTFS python3 evaluate.py ... (or sshd inside it: tests/test_deploy.py)"
