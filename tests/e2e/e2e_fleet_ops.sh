#!/usr/bin/env bash
# Operations an unattended fleet run must survive: SIGKILL at any point, two runs at
# once, an nginx whose config broke, and the status and metrics people watch.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pipeline="$E2E_ROOT/pipelines/failures.yaml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export E2E_KNOWN_HOSTS=$SSH_KNOWN_HOSTS E2E_WEB2_RELOAD=$HOST2_RELOAD E2E_DNS_SERVER=$DNS_SERVER
export E2E_DEAD_PORT=1

# The public key of a PEM certificate or private key, for comparing a pair.
pubkey_of_cert() { openssl x509 -noout -pubkey 2>/dev/null <<<"$1"; }
pubkey_of_key() { openssl pkey -pubout -in "$1" 2>/dev/null; }

hosts_serve_matching_pairs() {
  # nginx reloads asynchronously: give a reload that just happened a moment to land.
  for _ in $(seq 1 20); do
    hosts_serve_matching_pairs_now && return 0
    sleep 0.1
  done
  return 1
}
hosts_serve_matching_pairs_now() {
  local ok=0
  for n in 1 2; do
    local port_var="HOST${n}_TLS_PORT" dir_var="HOST${n}_TLS_DIR"
    local served_pem
    served_pem=$(served pem "${!port_var}" "web$n.example.test")
    [[ "$(pubkey_of_cert "$served_pem")" == "$(pubkey_of_key "${!dir_var}/key.pem")" ]] || ok=1
    [[ -n "$served_pem" ]] || ok=1
  done
  return $ok
}

echo "# SIGKILL at many points, then a normal run finishes the work"
export E2E_STATE=$work/crash
run_certfleet run "$pipeline"
check_eq "a clean first run" "$rc" 0
for point in "due:" "plugin=acme order" "plugin=rfc2136 adding" "issued serial" \
  "plugin=rfc2136 removing" "stage=deploy" "stage=reload" "stage=verify"; do
  log=$work/kill.log
  "$CERTFLEET_BIN" run --force --log-level debug "$pipeline" >/dev/null 2>"$log" &
  pid=$!
  for _ in $(seq 1 2000); do
    grep -q -- "$point" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.002
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  keys_before=$(sha256sum "$E2E_STATE"/default/hosts/*/current/key.pem 2>/dev/null)
  run_certfleet run "$pipeline"
  check_eq "after a kill at '$point' the next run exits 0" "$rc" 0
  [[ $rc -eq 0 ]] || echo "$out $err" >&2
  check "after a kill at '$point' every host serves a matching pair" hosts_serve_matching_pairs
  for n in 1 2; do
    check "after a kill at '$point' web$n holds the orchestrator's current key" \
      cmp -s "$E2E_STATE/default/hosts/web$n/current/key.pem" "$(eval echo "\$HOST${n}_TLS_DIR")/key.pem"
  done
  if [[ "$out" != *issued* ]]; then
    check_eq "after a kill at '$point' no key was rewritten needlessly" \
      "$(sha256sum "$E2E_STATE"/default/hosts/*/current/key.pem)" "$keys_before"
  fi
  for name in web1.example.test web2.example.test; do
    check_eq "after a kill at '$point' no TXT left for $name" \
      "$(txt_records "$DNS_SERVER" "_acme-challenge.$name")" ""
  done
done

echo "# two runs at once never both issue for a host"
export E2E_STATE=$work/twice
"$CERTFLEET_BIN" run "$pipeline" >"$work/a.out" 2>"$work/a.err" &
first=$!
"$CERTFLEET_BIN" run "$pipeline" >"$work/b.out" 2>"$work/b.err" &
second=$!
set +e
wait "$first"
rc_first=$?
wait "$second"
rc_second=$?
set -e
issued=$(cat "$work/a.out" "$work/b.out" | grep -c " issued ") || true
check_eq "each host issued exactly once across both runs" "$issued" 2
if [[ $rc_first -ne 0 || $rc_second -ne 0 ]]; then
  check_contains "the refused run says another run holds the lock" \
    "$(cat "$work/a.err" "$work/b.err")" "another run"
else
  pass "the runs did not overlap; the second found nothing due"
fi

echo "# an nginx whose config broke keeps serving the previous certificate"
export E2E_STATE=$work/broken
run_certfleet run "$pipeline"
check_eq "a clean run first" "$rc" 0
serial2_good=$(served serial "$HOST2_TLS_PORT" web2.example.test)
cp "$HOST2_DIR/nginx.conf" "$work/nginx.conf.good"
echo "this is not nginx syntax;" >>"$HOST2_DIR/nginx.conf"
run_certfleet run --force --host web2 "$pipeline"
cp "$work/nginx.conf.good" "$HOST2_DIR/nginx.conf"
check_eq "the run with a broken config exits 1" "$rc" 1
check_contains "web2 failed in its reload" "$out" "reload"
check_eq "web2 still serves its previous certificate" \
  "$(served serial "$HOST2_TLS_PORT" web2.example.test)" "$serial2_good"
run_certfleet run "$pipeline"
check_eq "once the config is repaired the next run completes" "$rc" 0
check_ne "and web2 serves the new certificate" \
  "$(served serial "$HOST2_TLS_PORT" web2.example.test)" "$serial2_good"

echo "# status and metrics hold each host's figures"
run_certfleet status --output json "$pipeline"
check_eq "status exits 0" "$rc" 0
not_after=$(grep -A8 '"host": "web1"' <<<"$out" | sed -n 's/.*"not_after": \([0-9]*\).*/\1/p')
check "status has web1's not_after in the future" test "${not_after:-0}" -gt "$(date +%s)"
check_contains "status shows web1 deployed" "$(grep -B3 -A8 '"host": "web1"' <<<"$out")" \
  '"deployed": true'
metrics=$(<"$E2E_STATE/default/metrics.prom")
check_contains "metrics carry web1's expiry" "$metrics" \
  "certfleet_certificate_not_after_timestamp_seconds{pipeline=\"failures\",environment=\"default\",host=\"web1\"} $not_after"
check_contains "metrics say web1's last run succeeded" "$metrics" \
  "certfleet_last_run_success{pipeline=\"failures\",environment=\"default\",host=\"web1\"} 1"

finish
