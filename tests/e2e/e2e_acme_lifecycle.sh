#!/usr/bin/env bash
# The certificate's life after issuance: renewal when the CA's renewal window (ARI) says
# so, with `replaces`; revocation and replacement; account key rollover and deactivation.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

work=$(mktemp -d)
/usr/bin/python3 "$E2E_ROOT/../doubles/acme_double.py" --cert "$CF_ENV_DIR/pki/listener.pem" \
  --key "$CF_ENV_DIR/pki/listener.key" --port-file "$work/port" >"$work/double.log" 2>&1 &
double=$!
trap 'kill "$double" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do [[ -s "$work/port" ]] && break; sleep 0.05; done
base="https://127.0.0.1:$(<"$work/port")"
control() {
  curl -sS --cacert "$PEBBLE_CA_BUNDLE" -X POST -H 'Content-Type: application/json' \
    --data "$1" "$base/control/reset" >/dev/null
}
double_state() { curl -sS --cacert "$PEBBLE_CA_BUNDLE" "$base/control/state"; }
at() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }

pipeline="$E2E_ROOT/pipelines/ari.yaml"
export E2E_ACME_DIRECTORY="$base/directory" E2E_STATE=$work/ari

echo "# a renewal window in the future: issued once, then left alone"
window_start=$(date -u -d '+10 days' +%s)
window_end=$(date -u -d '+11 days' +%s)
control "{\"renewal_window\": {\"start\": \"$(at '+10 days')\", \"end\": \"$(at '+11 days')\",
          \"retry_after\": 1}}"
run_certfleet run "$pipeline"
check_eq "first run exits 0" "$rc" 0
check_contains "web1 issued" "$out" "web1             issued"
first_serial=$(served serial "$HOST1_TLS_PORT" web1.example.test)
sleep 1.2
run_certfleet run "$pipeline"
check_contains "inside no window yet: web1 up to date" "$out" "web1             up-to-date"
run_certfleet status --output json "$pipeline"
renew_at=$(sed -n 's/.*"renew_at": \([0-9]*\).*/\1/p' <<<"$out")
check "the renewal moment lies inside the CA's window" \
  test "$renew_at" -ge "$window_start" -a "$renew_at" -le "$window_end"

echo "# the CA moves the window into the past: renewed, replacing the old certificate"
control "{\"renewal_window\": {\"start\": \"$(at '-2 hours')\", \"end\": \"$(at '-1 hour')\",
          \"retry_after\": 1}}"
sleep 1.2
run_certfleet run "$pipeline"
check_eq "the run inside the window exits 0" "$rc" 0
check_contains "web1 renewed because of the window" "$out" "inside the CA's renewal window"
check_ne "web1 serves a new certificate" "$(served serial "$HOST1_TLS_PORT" web1.example.test)" \
  "$first_serial"
check "the new order named the certificate it replaces" \
  grep -Eq '"replaces": "[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"' <<<"$(double_state)"

echo "# revocation: the next run replaces the certificate"
control '{}'
serial_before=$(served serial "$HOST1_TLS_PORT" web1.example.test)
run_certfleet revoke --host web1 --reason superseded "$pipeline"
check_eq "revoke exits 0" "$rc" 0
check "the CA received one revocation" grep -Eq '"revoke-cert": 1' <<<"$(double_state)"
run_certfleet run "$pipeline"
check_contains "the next run replaces the revoked certificate" "$out" "the certificate was revoked"
check_ne "web1 serves a new certificate" "$(served serial "$HOST1_TLS_PORT" web1.example.test)" \
  "$serial_before"

echo "# account key rollover and deactivation against Pebble"
export E2E_STATE=$work/account E2E_KNOWN_HOSTS=$SSH_KNOWN_HOSTS E2E_WEB2_RELOAD=$HOST2_RELOAD
export E2E_DNS_SERVER=$DNS_SERVER E2E_DEAD_PORT=1
failures="$E2E_ROOT/pipelines/failures.yaml"
run_certfleet run "$failures"
check_eq "a first run with a new account" "$rc" 0
account_key="$E2E_STATE/default/plugins/ca-acme/account.key.pem"
key_before=$(sha256sum <"$account_key")
run_certfleet account rollover "$failures"
check_eq "account rollover exits 0" "$rc" 0
check_ne "the account key changed" "$(sha256sum <"$account_key")" "$key_before"
check_eq "the new key is 0600" "$(mode_of "$account_key")" 600
run_certfleet run --force "$failures"
check_eq "the account still orders after the rollover" "$rc" 0
run_certfleet account deactivate "$failures"
check_eq "account deactivate exits 0" "$rc" 0
run_certfleet run --force "$failures"
check_eq "a run with a deactivated account fails" "$rc" 1
check_contains "and says the account is deactivated" "$out$err" "deactivated"

finish
