#!/usr/bin/env bash
# On-behalf-of at an external authority, end to end: a user's id_token is
# exchanged for a refgate token (refgate keeps the id_token, sealed), and
# the gateway exchanges it at a real OAuth server (oidc-provider, the test
# authority in tests/peers/oidc-as) with an Entra-style on-behalf-of
# request, authenticating with private_key_jwt, and forwards the answer.
# The configuration is examples/external_exchange.toml.
#
# Needs node (scripts/setup --with-test-peers installs the authority's
# packages), openssl, curl and jq, and free ports 8180, 8181 (refgate), 9301
# (the authority), 9100 and 9200 (the demo upstream). PROFILE=debug builds
# faster than the default release profile. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
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

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# refgate's client key at the authority: EC P-256, PKCS#8 PEM. The
# authority registers its public half; `kid` is the RFC 7638 thumbprint.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$data/gateway-key.pem" 2>/dev/null
# The DER public key ends with the point's x and y, 32 bytes each.
openssl pkey -in "$data/gateway-key.pem" -pubout -outform DER -out "$data/gateway-public.der"
x=$(tail -c 64 "$data/gateway-public.der" | head -c 32 | b64url)
y=$(tail -c 32 "$data/gateway-public.der" | b64url)
kid=$(printf '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' "$x" "$y" | openssl dgst -sha256 -binary | b64url)
clients=$(jq -cn --arg x "$x" --arg y "$y" --arg kid "$kid" '[{
  client_id: "gateway",
  grant_types: ["refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
  token_endpoint_auth_method: "private_key_jwt",
  jwks: {keys: [{kty: "EC", crv: "P-256", x: $x, y: $y, kid: $kid, alg: "ES256", use: "sig"}]}
}]')

"$bin/examples/demo_upstream" >"$data/upstream.log" 2>&1 &
pids+=($!)
(cd tests/peers/oidc-as && PORT=9301 CLIENTS="$clients" \
  SUBJECT_JWKS_FILE="$root/tests/fixtures/issuer-jwks.json" \
  SUBJECT_ISSUER=https://accounts.test.example SUBJECT_AUDIENCE=refgate-test-client \
  exec node server.js) >"$data/authority.log" 2>"$data/authority.err" &
pids+=($!)
sed -e "s|@ROOT@|$root|g" -e "s|@DATA@|$data|g" examples/external_exchange.toml >"$data/refgate.toml"
NO_COLOR=1 "$bin/refgate" serve --config "$data/refgate.toml" >"$data/refgate.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
  curl -sf "$TS/readyz" >/dev/null 2>&1 && curl -s "$AS/_stats" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$TS/readyz" >/dev/null || { echo "example: refgate did not start:" >&2; cat "$data/refgate.log" >&2; exit 1; }

step "1. alice signs in at accounts.test.example: an id_token (signed with the fixture key)"
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"test-key-1"}' | b64url)
payload=$(printf '{"iss":"https://accounts.test.example","sub":"alice","aud":"refgate-test-client","iat":%d,"exp":%d}' "$now" "$((now + 600))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign tests/fixtures/issuer-key.pem | b64url)
ID_TOKEN="$header.$payload.$signature"
echo "${ID_TOKEN:0:60}..."

step "2. The app exchanges it for a refgate token (the issuer has keep_subject_token = true)"
TOKEN=$(curl -s -u app:app-secret \
  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$ID_TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:id_token \
  -d scope=graph.read "$TS/oauth2/token" | jq -r .access_token)
echo "$TOKEN"

step "3. The app calls the graph route: the gateway exchanges alice's id_token at the authority"
curl -s -H "Authorization: Bearer $TOKEN" "$GW/graph/me"
echo
sleep 0.3
grep -v listening "$data/upstream.log" || true

step "4. The authority saw one on-behalf-of exchange, authenticated by private_key_jwt"
curl -s "$AS/_exchanges" | jq '.[] | {grant_type, requested_token_use, sub, client_auth, scope}'

step "5. The credential is stored in alice's grant (introspection as middle); the id_token is not"
curl -s -u middle:middle-secret -d token="$TOKEN" "$TS/oauth2/introspect" | jq '{sub, idp, custom: {credentials: {graph: (.custom.credentials.graph | {authority, exchanged, expires_at, scope})}}}'

step "6. The next call reuses it: still one exchange"
curl -s -o /dev/null -w 'gateway: %{http_code}\n' -H "Authorization: Bearer $TOKEN" "$GW/graph/me"
curl -s "$AS/_stats" | jq '{exchange, exchange_ok}'
