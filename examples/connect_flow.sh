#!/usr/bin/env bash
# The connect flow, end to end: an app with a refgate token learns from the
# gateway where to connect, asks for a connect_uri, a person signs in at a
# real OAuth server (oidc-provider, the test authority in tests/peers/oidc-as)
# and refgate stores the credential it obtained in the token's grant; the
# gateway then forwards it. The configuration is examples/connect_flow.toml.
#
# By default curl plays the browser (it keeps cookies and submits the sign-in
# form as "alice"). BROWSER=1 prints the connect_uri for you to open in a
# real browser on this machine instead, and waits.
#
# Needs node (scripts/setup --with-test-peers installs the authority's
# packages), curl and jq, and free ports 8180, 8181 (refgate), 9301 (the
# authority), 9100 and 9200 (the demo upstream). PROFILE=debug builds
# faster than the default release profile. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}

TS=http://127.0.0.1:8181
GW=http://127.0.0.1:8180
AS=http://127.0.0.1:9301

for port in 8180 8181 9100 9200 9301; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "example: port $port is in use; stop what listens there first" >&2
    exit 1
  fi
done
[ -d tests/peers/oidc-as/node_modules ] || scripts/setup --with-test-peers

echo "example: building refgate and the demo upstream ($profile)"
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build $flag --quiet --bin refgate --example demo_upstream
bin=target/$profile

data=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "example: stopped; logs are in $data"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# refgate's client at the authority: authorization code with PKCE, its
# callback registered exactly.
clients='[{"client_id":"refgate-connect","client_secret":"refgate-connect-secret",
  "grant_types":["authorization_code","refresh_token"],"response_types":["code"],
  "redirect_uris":["http://127.0.0.1:8181/connect/callback"]}]'

"$bin/examples/demo_upstream" >"$data/upstream.log" 2>&1 &
pids+=($!)
(cd tests/peers/oidc-as && PORT=9301 CLIENTS="$clients" exec node server.js) \
  >"$data/authority.log" 2>"$data/authority.err" &
pids+=($!)
sed -e "s|@DATA@|$data|g" examples/connect_flow.toml >"$data/refgate.toml"
NO_COLOR=1 "$bin/refgate" serve --config "$data/refgate.toml" >"$data/refgate.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "$TS/readyz" >/dev/null 2>&1 && curl -s "$AS/_stats" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$TS/readyz" >/dev/null || { echo "example: refgate did not start:" >&2; cat "$data/refgate.log" >&2; exit 1; }

step "1. The app gets a refgate token"
TOKEN=$(curl -s -u app:app-secret -d grant_type=client_credentials "$TS/oauth2/token" | jq -r .access_token)
echo "$TOKEN"

step "2. The photos route has no credential yet; the answer says where to connect"
curl -s -D "$data/headers" -H "Authorization: Bearer $TOKEN" "$GW/photos/album" | jq .
grep -i '^www-authenticate' "$data/headers"

step "3. The app asks for a connect_uri (return_to must be on the allow-list)"
CONNECT_URI=$(curl -s -H "Authorization: Bearer $TOKEN" -d authority=photos-idp \
  -d return_to=http://127.0.0.1:8181/healthz "$TS/oauth2/connect" | jq -r .connect_uri)
echo "$CONNECT_URI"

if [ "${BROWSER:-0}" = 1 ]; then
  step "4. Open the connect_uri above in a browser, sign in with any name, allow; then press Enter"
  read -r _
else
  step "4. A browser (curl) opens it, signs in at the authority as alice and allows"
  jar="$data/cookies"
  # refgate → the authority → its sign-in page.
  page=$(curl -s -c "$jar" -b "$jar" -L -w '\n%{url_effective}' "$CONNECT_URI")
  signin=$(tail -n 1 <<<"$page")
  echo "sign-in page: $signin"
  # Submitting it redirects back through the authority to refgate's callback
  # and on to return_to.
  curl -s -c "$jar" -b "$jar" -L -o /dev/null -w 'landed on: %{url_effective} (%{http_code})\n' \
    -d login=alice -d decision=allow "$signin"
fi

step "5. The gateway now forwards the credential refgate obtained"
curl -s -H "Authorization: Bearer $TOKEN" "$GW/photos/album"
echo
sleep 0.3
grep -v listening "$data/upstream.log" | tail -n 2 || true

step "6. The authority redeemed one authorization code"
curl -s "$AS/_stats" | jq '{authorization_code}'
