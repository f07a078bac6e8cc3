#!/bin/sh
# Smoke test of a built syschangemon: two runs over a small tree, with a private
# configuration, database and log (nothing of the host's is read or written).
#   packaging/smoke-test.sh COMMAND WORKDIR
# Used by debian/rules (dh_auto_test) on the bundle before it is packaged.
set -eu

cmd=$1
work=$2
rm -rf "$work"
mkdir -p "$work/conf" "$work/tree/sub"
# As root the configuration must not be writable by group or others.
chmod 0755 "$work" "$work/conf"
echo one > "$work/tree/a"
echo two > "$work/tree/sub/b"
work=$(cd "$work" && pwd)
cat > "$work/conf/syschangemon.conf" <<CONF
[storage]
enable_plugin = true
dir = $work/storage

[log.logging]
file = $work/syschangemon.log

[file]
enable_plugin = true
include = $work/tree/**

[conffile]
enable_plugin = true
include = $work/tree/**
CONF
chmod 0644 "$work/conf/syschangemon.conf"

# A hang (a worker stuck, a lock never released) fails the test instead of the build.
run() { timeout 300 "$cmd" "$@"; }

run --version
run -c "$work/conf" run --skip-empty-mail
echo changed > "$work/tree/a"
status=0
run -c "$work/conf" run --skip-empty-mail > "$work/report.txt" || status=$?
if [ "$status" -ne 1 ]; then
    echo "smoke test: second run exited $status, expected 1 (changes found)" >&2
    exit 1
fi
grep -q "tree/a" "$work/report.txt" || { echo "smoke test: report does not name tree/a" >&2; exit 1; }
mode=$(stat -c %a "$work/storage/db.duckdb")
[ "$mode" = 600 ] || { echo "smoke test: db.duckdb has mode $mode, expected 600" >&2; exit 1; }
echo "smoke test passed"
