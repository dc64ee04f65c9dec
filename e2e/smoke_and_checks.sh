#!/usr/bin/env bash
# Smoke test of a running CricAlgo workload: health, user registration, a signed deposit
# webhook (and its duplicate), the transaction until it is credited, and the metrics.
# Works against the local stack or any base URL. Exits non-zero on the first failed check;
# every request and response is saved under $ARTIFACTS_DIR.
#
#   BASE_URL=http://127.0.0.1:8000 WEBHOOK_SECRET=whsec_... API_TOKEN=... e2e/smoke_and_checks.sh
#
# Environment:
#   BASE_URL        the webhook app (default http://127.0.0.1:8000)
#   WEBHOOK_SECRET  a whsec_<base64> secret the app accepts (CRICALGO_WEBHOOK_SECRET)
#   API_TOKEN       the bearer token of the users/transactions API (CRICALGO_API_TOKEN)
#   ARTIFACTS_DIR   where to save what was sent and received (default ./smoke-artifacts/<time>)
#   CREDIT_TIMEOUT  seconds to wait for the worker to credit the deposit (default 30)
#   HOST_HEADER     optional Host header, for a mesh or ingress that routes by host
set -euo pipefail

BASE_URL=${BASE_URL:-http://127.0.0.1:8000}
BASE_URL=${BASE_URL%/}
: "${WEBHOOK_SECRET:?set WEBHOOK_SECRET to the app's whsec_ secret}"
: "${API_TOKEN:?set API_TOKEN to the app's API bearer token}"
ARTIFACTS_DIR=${ARTIFACTS_DIR:-./smoke-artifacts/$(date -u +%Y%m%dT%H%M%SZ)}
CREDIT_TIMEOUT=${CREDIT_TIMEOUT:-30}
mkdir -p "$ARTIFACTS_DIR"

for tool in curl openssl base64 od; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is required" >&2; exit 2; }
done

checks=0
pass() { checks=$((checks + 1)); printf 'ok   %s\n' "$1" | tee -a "$ARTIFACTS_DIR/summary.txt"; }
fail() {
  printf 'FAIL %s\n' "$1" | tee -a "$ARTIFACTS_DIR/summary.txt" >&2
  echo "artefacts: $ARTIFACTS_DIR" >&2
  exit 1
}

host_args=()
[ -n "${HOST_HEADER:-}" ] && host_args=(-H "Host: $HOST_HEADER")

# request NAME METHOD PATH [curl args...]: saves NAME.body and NAME.headers; prints the status.
request() {
  local name=$1 method=$2 path=$3
  shift 3
  curl -sS -o "$ARTIFACTS_DIR/$name.body" -D "$ARTIFACTS_DIR/$name.headers" \
    -w '%{http_code}' -X "$method" "${host_args[@]}" "$@" "$BASE_URL$path" \
    || echo "000"
}

json_field() {  # json_field FILE FIELD: a top-level string/number/bool field of a JSON file
  sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p" "$1" | head -n 1
}

sign() {  # sign ID TIMESTAMP BODYFILE: the webhook-signature header value
  local key
  key=$(printf '%s' "${WEBHOOK_SECRET#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  { printf '%s.%s.' "$1" "$2"; cat "$3"; } \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64 | sed 's/^/v1,/'
}

echo "CricAlgo smoke test against $BASE_URL (artefacts in $ARTIFACTS_DIR)"

status=$(request healthz GET /healthz)
[ "$status" = 200 ] && pass "GET /healthz is 200" || fail "GET /healthz answered $status"

status=$(request readyz GET /readyz)
[ "$status" = 200 ] && pass "GET /readyz is 200 (PostgreSQL and Redis reachable)" \
  || fail "GET /readyz answered $status: $(cat "$ARTIFACTS_DIR/readyz.body")"

user="smoke-$(date +%s)-$RANDOM"
status=$(request user-create POST /api/v1/users -H "Authorization: Bearer $API_TOKEN" \
  -H 'Content-Type: application/json' --data "{\"user_id\": \"$user\"}")
[ "$status" = 201 ] && pass "POST /api/v1/users registers $user" \
  || fail "POST /api/v1/users answered $status: $(cat "$ARTIFACTS_DIR/user-create.body")"

status=$(request user-read GET "/api/v1/users/$user" -H "Authorization: Bearer $API_TOKEN")
[ "$status" = 200 ] && pass "GET /api/v1/users/$user is 200" || fail "GET user answered $status"

status=$(request user-unauthorized GET "/api/v1/users/$user")
[ "$status" = 401 ] && pass "the users API refuses a request without the token" \
  || fail "GET user without a token answered $status"

body="$ARTIFACTS_DIR/deposit-request.json"
printf '{"user_id": "%s", "amount": "12.50", "currency": "EUR", "provider_reference": "smoke-%s"}' \
  "$user" "$(date +%s)-$RANDOM$RANDOM" > "$body"  # a reference names one deposit
msg_id="msg_smoke_$(date +%s)_$RANDOM"
ts=$(date +%s)
signature=$(sign "$msg_id" "$ts" "$body")
webhook() {
  request "$1" POST /api/v1/webhooks/deposit -H 'Content-Type: application/json' \
    -H "webhook-id: $msg_id" -H "webhook-timestamp: $ts" -H "webhook-signature: $2" \
    --data-binary "@$body"
}

status=$(webhook deposit "$signature")
[ "$status" = 202 ] || fail "signed deposit webhook answered $status: $(cat "$ARTIFACTS_DIR/deposit.body")"
tx_id=$(json_field "$ARTIFACTS_DIR/deposit.body" tx_id)
[ -n "$tx_id" ] && grep -q '"ok": *true' "$ARTIFACTS_DIR/deposit.body" \
  && pass "signed deposit webhook is 202 {\"ok\": true, \"tx_id\": \"$tx_id\"}" \
  || fail "202 without ok/tx_id: $(cat "$ARTIFACTS_DIR/deposit.body")"

status=$(webhook deposit-duplicate "$signature")
duplicate_tx=$(json_field "$ARTIFACTS_DIR/deposit-duplicate.body" tx_id)
[ "$status" = 202 ] && [ "$duplicate_tx" = "$tx_id" ] \
  && pass "a duplicate delivery is 202 with the same tx_id" \
  || fail "duplicate delivery answered $status with tx_id '$duplicate_tx'"

status=$(webhook deposit-bad-signature "v1,$(printf 'forged' | base64)")
[ "$status" = 401 ] && pass "a forged signature is refused with 401" \
  || fail "forged signature answered $status"

deadline=$(( $(date +%s) + CREDIT_TIMEOUT ))
tx_status=""
while [ "$(date +%s)" -le "$deadline" ]; do
  status=$(request transaction GET "/api/v1/transactions/$tx_id" -H "Authorization: Bearer $API_TOKEN")
  tx_status=$(json_field "$ARTIFACTS_DIR/transaction.body" status)
  [ "$status" = 200 ] && [ "$tx_status" = done ] && break
  sleep 0.5
done
[ "$tx_status" = done ] && pass "the worker credited $tx_id (status done)" \
  || fail "transaction $tx_id is '$tx_status' after ${CREDIT_TIMEOUT}s"

request user-after GET "/api/v1/users/$user" -H "Authorization: Bearer $API_TOKEN" >/dev/null
grep -q '12.5' "$ARTIFACTS_DIR/user-after.body" && pass "$user's balance shows the deposit" \
  || fail "balance does not show the deposit: $(cat "$ARTIFACTS_DIR/user-after.body")"

status=$(request metrics GET /metrics)
[ "$status" = 200 ] || fail "GET /metrics answered $status"
for series in cricalgo_http_requests_total cricalgo_http_request_duration_seconds_bucket \
  cricalgo_deposits_total; do
  grep -q "^$series" "$ARTIFACTS_DIR/metrics.body" || fail "/metrics lacks $series"
done
pass "GET /metrics exports the request, latency and deposit series"

echo "$checks passed, 0 failed" | tee -a "$ARTIFACTS_DIR/summary.txt"
