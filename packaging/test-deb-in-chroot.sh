#!/bin/sh
# Build the Debian package, install it into a clean minimal Debian root and run it.
#
#   packaging/test-deb-in-chroot.sh [DEB]
#
# Without DEB, builds it first (dpkg-buildpackage -us -uc in the repository; the
# package lands in the parent directory). Then: a fresh copy of a minimal bookworm
# root (debootstrap --variant=minbase, cached as a tarball under $CACHE so that only
# the first test downloads it), dpkg -i of the package, apt-get -f install of its
# dependencies (python3 comes from Debian, the rest is bundled), and as root in the
# chroot: syschangemon run (exit 0, the baseline), /var/lib/syschangemon/storage/
# db.duckdb with mode 0600, a second run, list-sessions, nothing written below
# /usr/lib/syschangemon, then purge. Needs root, debootstrap and the Debian mirror.
#
# Environment: CACHE (default /var/cache/syschangemon-chroot), MIRROR (default
# http://deb.debian.org/debian), SUITE (default bookworm), KEEP=1 keeps the root.
set -eu

CACHE=${CACHE:-/var/cache/syschangemon-chroot}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
repo=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)

step() { echo "== [$(( $(date +%s) - start ))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install -y debootstrap"

if [ $# -ge 1 ]; then
    deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
    step "building the package"
    (cd "$repo" && dpkg-buildpackage -us -uc) > "${TMPDIR:-/tmp}/syschangemon-deb-build.log" 2>&1 \
        || { tail -30 "${TMPDIR:-/tmp}/syschangemon-deb-build.log"; fail "dpkg-buildpackage"; }
    version=$(cd "$repo" && dpkg-parsechangelog -S Version)
    deb=$(dirname "$repo")/syschangemon_${version}_$(dpkg --print-architecture).deb
fi
[ -f "$deb" ] || fail "no package at $deb"
step "package: $deb ($(du -h "$deb" | cut -f1))"

base=$CACHE/$SUITE-minbase.tar.gz
if [ ! -f "$base" ]; then
    step "debootstrap $SUITE (cached afterwards as $base)"
    mkdir -p "$CACHE"
    boot=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
    debootstrap --variant=minbase "$SUITE" "$boot" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log"; rm -rf "$boot"; fail "debootstrap"; }
    tar -C "$boot" -czf "$base.tmp" . && mv "$base.tmp" "$base"
    rm -rf "$boot"
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/syschangemon-chroot.XXXXXX")
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "root kept: $root"; else rm -rf "$root"; fi
}
trap cleanup EXIT INT TERM
step "unpacking a fresh root into $root"
tar -C "$root" -xzf "$base"
chmod 0755 "$root"  # not mktemp's 0700: apt drops to the _apt user inside
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/syschangemon.deb"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"; }

step "dpkg -i, then apt-get -f install for its dependencies"
in_root dpkg -i /tmp/syschangemon.deb > "$root/tmp/dpkg.log" 2>&1 || true
in_root apt-get update -qq
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get -f install -y -qq' > "$root/tmp/apt.log" 2>&1 \
    || { tail -20 "$root/tmp/apt.log"; fail "apt-get -f install"; }
status=$(in_root dpkg-query -W -f '${db:Status-Abbrev}' syschangemon)
[ "$status" = "ii " ] || fail "syschangemon is not installed (dpkg status '$status')"

step "checking the installed files"
for path in /usr/sbin/syschangemon /etc/cron.d/syschangemon /etc/syschangemon/syschangemon.conf \
        /lib/systemd/system/syschangemon.service /lib/systemd/system/syschangemon.timer \
        /usr/share/man/man1/syschangemon.1.gz /usr/share/bash-completion/completions/syschangemon; do
    [ -e "$root$path" ] || fail "$path is missing"
done
[ "$(stat -c %a "$root/var/lib/syschangemon")" = 700 ] || fail "/var/lib/syschangemon is not 0700"
[ "$(stat -c %a:%G "$root/var/log/syschangemon")" = 750:adm ] || fail "/var/log/syschangemon is not 0750 root:adm"
in_root dpkg-query -W -f '${Conffiles}\n' syschangemon | grep -q ' /etc/syschangemon/plugins.d/file.conf ' \
    || fail "plugins.d/file.conf is not a conffile"
touch "$root/tmp/before-run"

step "syschangemon run (the baseline)"
code=0
in_root /usr/sbin/syschangemon run || code=$?
[ "$code" = 0 ] || fail "syschangemon run exited $code"
db=$root/var/lib/syschangemon/storage/db.duckdb
[ -f "$db" ] || fail "$db was not created"
[ "$(stat -c %a "$db")" = 600 ] || fail "db.duckdb has mode $(stat -c %a "$db"), not 0600"

step "second run: the cron line, in cron's environment"
line=$(grep -v '^#' "$root/etc/cron.d/syschangemon" | grep . | cut -d' ' -f7-)
code=0
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root SHELL=/bin/sh LOGNAME=root sh -c "$line" \
    > "$root/tmp/run2.out" 2>&1 || code=$?
case $code in
    0) [ ! -s "$root/tmp/run2.out" ] || { cat "$root/tmp/run2.out"; fail "a clean run printed (cron would mail it)"; } ;;
    1) echo "(the second run found changes: cron mails its report)" ;;
    *) cat "$root/tmp/run2.out"; fail "second run exited $code" ;;
esac
sessions=$(in_root /usr/sbin/syschangemon list-sessions | grep -c -E '[0-9a-f]{8}-' || true)
[ "$sessions" = 2 ] || fail "list-sessions shows $sessions sessions, not 2"
written=$(find "$root/usr/lib/syschangemon" -newer "$root/tmp/before-run" | head -5)
[ -z "$written" ] || fail "runs wrote below /usr/lib/syschangemon: $written"

step "purge"
in_root dpkg --purge syschangemon > "$root/tmp/purge.log" 2>&1 || fail "dpkg --purge"
[ ! -e "$root/var/lib/syschangemon" ] || fail "purge left /var/lib/syschangemon"
[ ! -e "$root/usr/lib/syschangemon" ] || fail "purge left /usr/lib/syschangemon"

step "all checks passed"
