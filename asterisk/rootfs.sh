#!/bin/sh
# Build, once, a Debian sid root filesystem with Asterisk 22 from Debian
# packages, for the integration tests and container-less `make up`.
#
#   asterisk/rootfs.sh [DEST]     (default /var/cache/ari-agent/rootfs)
#
# Idempotent: a DEST that holds /usr/sbin/asterisk is reused as is. The build
# goes to DEST.tmp and is renamed only when debootstrap succeeded, so an
# interrupted build is never mistaken for a finished one. Needs root and the
# host's `debootstrap` package; ARI_AGENT_MIRROR overrides the mirror.
set -eu

DEST=${1:-/var/cache/ari-agent/rootfs}
MIRROR=${ARI_AGENT_MIRROR:-http://deb.debian.org/debian}
SUITE=sid
PACKAGES=asterisk,asterisk-modules,asterisk-config,asterisk-core-sounds-en

if [ -x "$DEST/usr/sbin/asterisk" ]; then
    echo "rootfs.sh: reusing $DEST"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "rootfs.sh: building $DEST needs root (debootstrap and chroot)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "rootfs.sh: debootstrap not found; install it: apt-get install -y debootstrap" >&2
    exit 1
fi

mkdir -p "$(dirname "$DEST")"
# Two test sessions may start at once: one builds, the other waits.
exec 9>"$DEST.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [ -x "$DEST/usr/sbin/asterisk" ]; then
    echo "rootfs.sh: reusing $DEST (built while waiting)"
    exit 0
fi

TMP="$DEST.tmp"
# A leftover from an interrupted build may still have /proc mounted.
if [ -d "$TMP" ]; then
    umount "$TMP/proc" 2>/dev/null || true
    rm -rf "$TMP"
fi
echo "rootfs.sh: building $DEST from $MIRROR ($SUITE: $PACKAGES); about a minute"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP" "$MIRROR"
test -x "$TMP/usr/sbin/asterisk"
if [ -e "$DEST" ]; then
    umount "$DEST/proc" 2>/dev/null || true
    rm -rf "$DEST"
fi
mv "$TMP" "$DEST"
echo "rootfs.sh: built $DEST"
