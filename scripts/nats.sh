#!/usr/bin/env bash
# nats-server for ferrocsp's networked channels (tests, examples, benchmarks).
#   scripts/nats.sh install       install Debian's nats-server if `nats-server` is missing
#   scripts/nats.sh start DIR     start it with JetStream on 127.0.0.1 on a free port, storing
#                                 in DIR; prints the URL (nats://127.0.0.1:PORT); the pid is in
#                                 DIR/nats.pid and the log in DIR/nats.log
#   scripts/nats.sh stop DIR      stop the server started with DIR
# The test fixtures (tests/_nats.py) start their own servers the same way.
set -euo pipefail

say() { printf '[nats] %s\n' "$*" >&2; }
die() { printf '[nats] error: %s\n' "$*" >&2; exit 1; }

install() {
  command -v nats-server >/dev/null && return 0
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "apt-get install nats-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends nats-server >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends nats-server >/dev/null
    fi
  else
    die "nats-server not found: install it (Debian: apt-get install nats-server; or https://nats.io)"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=${1:?usage: nats.sh start DIR}
  install
  mkdir -p "$dir"
  local port
  port=$(free_port)
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/js" -l "$dir/nats.log" -P "$dir/nats.pid" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "nats://127.0.0.1:$port"
      return 0
    fi
    sleep 0.05
  done
  die "nats-server did not listen on 127.0.0.1:$port within 5 s (log: $dir/nats.log)"
}

stop() {
  local dir=${1:?usage: nats.sh stop DIR}
  [ -f "$dir/nats.pid" ] || return 0
  kill "$(cat "$dir/nats.pid")" 2>/dev/null || true
  rm -f "$dir/nats.pid"
}

case "${1:-}" in
  install) install; say "$(nats-server --version)" ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: nats.sh install | start DIR | stop DIR" ;;
esac
