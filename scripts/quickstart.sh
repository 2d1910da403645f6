#!/usr/bin/env bash
# The README quick start, run as a test: a clean copy of this checkout (no
# node_modules, dist, certs or data), `npm ci`, `npm start`, then the
# README's device add / listen / send. Passes when the listener prints the
# message it received (signature verified by the SDK) and the daemon drains
# and exits 0 on SIGTERM. Every command below must appear verbatim in
# README.md, so the README cannot drift from what is tested.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readme="$repo/README.md"

PSK=000102030405060708090a0b0c0d0e0f
ADD="npx dtlspush device add sensor-1 --psk $PSK"
LISTEN="npx dtlspush listen --server 127.0.0.1:5684 --device sensor-1 --psk $PSK"
SEND='npx dtlspush send --device sensor-1 --data "hello, device"'
for cmd in "npm ci" "npm start" "$ADD" "$LISTEN" "$SEND"; do
  grep -qF -- "$cmd" "$readme" || { echo "quickstart: README.md no longer contains: $cmd" >&2; exit 1; }
done

for port in 5684/udp 8080/tcp; do
  if (ss -Hlnu 2>/dev/null; ss -Hlnt 2>/dev/null) | grep -qE "127\.0\.0\.1:${port%/*}\b|\*:${port%/*}\b|0\.0\.0\.0:${port%/*}\b"; then
    echo "quickstart: port $port is in use; the quick start needs the default ports" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
daemon=""
group=""
listener=""
cleanup() {
  [ -n "$listener" ] && kill "$listener" 2>/dev/null || true
  [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# a clean checkout of the working tree: tracked and new files, nothing ignored
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' | tar -cf - -T -) | tar -xf - -C "$work"
cd "$work"
echo "quickstart: npm ci in a clean copy ($work)"
npm ci --no-audit --no-fund --loglevel=error >npm-ci.log 2>&1 || { tail -40 npm-ci.log >&2; exit 1; }

# terminal 1: npm start (setsid: SIGTERM goes to the daemon's whole process group)
setsid npm start >daemon.out 2>daemon.err &
daemon=$!
group=$daemon
for _ in $(seq 1 600); do
  grep -q "dtlspush is running" daemon.err 2>/dev/null && break
  kill -0 "$daemon" 2>/dev/null || { echo "quickstart: the daemon exited" >&2; cat daemon.err >&2; exit 1; }
  sleep 0.1
done
grep -q "dtlspush is running" daemon.err || { echo "quickstart: the daemon did not start in 60 s" >&2; cat daemon.err >&2; exit 1; }

# terminal 2 and 3: add a device, listen, send
eval "$ADD"
eval "$LISTEN --count 1 --timeout 60" >listen.out 2>listen.err &
listener=$!
id="$(eval "$SEND")"
echo "quickstart: sent message $id"
if ! wait "$listener"; then
  listener=""
  echo "quickstart: the listener failed" >&2
  cat listen.err >&2
  exit 1
fi
listener=""
got="$(cat listen.out)"
if [ "$got" != "hello, device" ]; then
  echo "quickstart: the listener printed '$got', expected 'hello, device'" >&2
  exit 1
fi
echo "quickstart: the device received '$got'"

# the daemon drains and exits 0 on SIGTERM (signalled itself, as a service manager would: npm
# reports a signal to itself as exit 143); npm start then exits with the daemon's code
node_pid="$(pgrep -s "$daemon" -f "^[^ ]*node [^ ]*dtlspush.js serve" | head -n 1)"
[ -n "$node_pid" ] || { echo "quickstart: cannot find the daemon process" >&2; exit 1; }
kill -TERM "$node_pid"
rc=0
wait "$daemon" || rc=$?
daemon=""
if [ "$rc" -ne 0 ]; then
  echo "quickstart: the daemon exited $rc after SIGTERM" >&2
  tail -n 20 daemon.err daemon.out >&2
  exit 1
fi
echo "quickstart: passed"
