#!/usr/bin/env bash
# The end-to-end demo of examples/README.md, run automatically: starts the
# demo upstream, the demo authority and refgate (default configuration),
# stores a downstream credential inside an app's token, calls through the
# gateway, waits, and calls again to watch the gateway refresh it.
#
# Needs the ports of config/refgate.toml to be free: 8080, 8081, 9090 (refgate),
# 9100, 9200 (demo upstream) and 9101 (demo authority). Stops everything it
# started when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

TS=http://127.0.0.1:8081
GW=http://127.0.0.1:8080

for port in 8080 8081 9090 9100 9101 9200; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use; stop what listens there first" >&2
    exit 1
  fi
done

scripts/setup
echo "demo: building refgate and the demo servers (the first build takes a few minutes)"
cargo build --release --quiet --bin refgate --example demo_upstream --example demo_authority
bin=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
[ -x "$bin/refgate" ] || bin=target/release

logs=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped; logs are in $logs"
}
trap cleanup EXIT

"$bin/examples/demo_upstream" >"$logs/upstream.log" 2>&1 &
pids+=($!)
"$bin/examples/demo_authority" >"$logs/authority.log" 2>&1 &
pids+=($!)
NO_COLOR=1 "$bin/refgate" serve >"$logs/refgate.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  curl -sf "$TS/readyz" >/dev/null 2>&1 && (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done
curl -sf "$TS/readyz" >/dev/null || { echo "demo: refgate did not start:" >&2; cat "$logs/refgate.log" >&2; exit 1; }

# Prints what the demo servers printed since the last call.
seen_upstream=0
seen_authority=0
servers_said() {
  sleep 0.3
  local lines
  lines=$(wc -l <"$logs/upstream.log")
  tail -n +"$((seen_upstream + 1))" "$logs/upstream.log" | grep -v listening || true
  seen_upstream=$lines
  lines=$(wc -l <"$logs/authority.log")
  tail -n +"$((seen_authority + 1))" "$logs/authority.log" | grep -v 'token endpoint' || true
  seen_authority=$lines
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

step "1. The app gets a token (client_credentials)"
answer=$(curl -s -u app:app-secret -d grant_type=client_credentials -d scope=photos.read "$TS/oauth2/token")
echo "$answer"
TOKEN=$(echo "$answer" | field access_token)

step "2. The middle tier stores a photos credential in it (expires in 65 s; refresh_skew is 60 s)"
curl -s -u middle:middle-secret -H 'Content-Type: application/json' \
  -d '{"token": "'"$TOKEN"'", "patch": {"credentials": {"photos": {
        "access_token": "photos-at-0", "refresh_token": "photos-rt-0",
        "token_type": "Bearer", "expires_at": '$(($(date +%s) + 65))',
        "authority": "photos-as"}}}}' \
  "$TS/oauth2/mutate"
echo

step "3. The app calls the photos API through the gateway"
curl -s -H "Authorization: Bearer $TOKEN" "$GW/photos/albums"
echo
servers_said

step "4. Six seconds later the credential is inside the refresh skew"
sleep 6
curl -s -H "Authorization: Bearer $TOKEN" "$GW/photos/albums"
echo
servers_said

step "5. The rotated credential is stored in the grant (introspection as middle)"
curl -s -u middle:middle-secret -d token="$TOKEN" "$TS/oauth2/introspect"
echo

step "6. The next call uses it without another refresh"
curl -s -H "Authorization: Bearer $TOKEN" "$GW/photos/albums"
echo
servers_said

step "7. The upstream rejects a stale token: the gateway refreshes once and replays"
curl -s -u middle:middle-secret -H 'Content-Type: application/json' \
  -d '{"token": "'"$TOKEN"'", "patch": {"credentials": {"photos": {"access_token": "photos-at-stale"}}}}' \
  "$TS/oauth2/mutate"
echo
curl -s -H "Authorization: Bearer $TOKEN" "$GW/photos/albums"
echo
servers_said

step "8. The app's token is revoked: the gateway refuses it at once"
curl -s -o /dev/null -w 'revoke: %{http_code}\n' -u app:app-secret -d token="$TOKEN" "$TS/oauth2/revoke"
curl -s -w '\n' -H "Authorization: Bearer $TOKEN" "$GW/photos/albums"
