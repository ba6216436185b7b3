#!/usr/bin/env bash
# The other local DynamoDB servers, for side-by-side runs with `keeldb bench` (or the reference
# harness's compare.py). Everything lives under $PEERS_DIR (default /tmp/keeldb-peers); servers
# listen on 127.0.0.1 only and are stopped by the PIDs this script recorded.
#
#   benchmarks/peers.sh install                     moto (server mode, PyPI) and dynalite (npm)
#   benchmarks/peers.sh start moto PORT             moto's server (in memory); prints its PID
#   benchmarks/peers.sh start dynalite PORT [DIR]   dynalite, on disk in DIR or in memory
#   benchmarks/peers.sh stop                        stop every server started here
set -euo pipefail

MOTO_VERSION=5.2.5
DYNALITE_VERSION=4.0.0
peers=${PEERS_DIR:-/tmp/keeldb-peers}
mkdir -p "$peers/pids" "$peers/logs"

wait_for_port() {
  local port=$1
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port" >&2
  return 1
}

case "${1:-}" in
  install)
    if [ ! -x "$peers/moto-venv/bin/moto_server" ]; then
      python3 -m venv "$peers/moto-venv"
      "$peers/moto-venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"
    fi
    if [ ! -f "$peers/dynalite/node_modules/dynalite/cli.js" ]; then
      mkdir -p "$peers/dynalite"
      (cd "$peers/dynalite" && npm install --silent --no-audit --no-fund "dynalite@$DYNALITE_VERSION" >/dev/null)
    fi
    echo "moto $MOTO_VERSION and dynalite $DYNALITE_VERSION are under $peers"
    ;;
  start)
    name=${2:?peer name}
    port=${3:?port}
    log="$peers/logs/$name-$port.log"
    case "$name" in
      moto)
        "$peers/moto-venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
        ;;
      dynalite)
        args=(--host 127.0.0.1 --port "$port" --createTableMs 0 --deleteTableMs 0 --updateTableMs 0)
        if [ -n "${4:-}" ]; then args+=(--path "$4"); fi
        node "$peers/dynalite/node_modules/dynalite/cli.js" "${args[@]}" >"$log" 2>&1 &
        ;;
      *)
        echo "unknown peer: $name (moto or dynalite)" >&2
        exit 2
        ;;
    esac
    pid=$!
    echo "$pid" >"$peers/pids/$name-$port"
    wait_for_port "$port"
    echo "$pid"
    ;;
  stop)
    for file in "$peers"/pids/*; do
      [ -f "$file" ] || continue
      kill "$(cat "$file")" 2>/dev/null || true
      rm -f "$file"
    done
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
