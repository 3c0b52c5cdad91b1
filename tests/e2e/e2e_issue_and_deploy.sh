#!/usr/bin/env bash
# The shipped demo pipeline over the real local environment: each host gets its own
# Pebble-issued certificate, a second run does nothing, --force renews.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pipeline="$E2E_ROOT/../../pipelines/demo.yaml"
state="$CF_ENV_DIR/state/default"
rm -rf "$CF_ENV_DIR/state"

# Temporary files a killed run of another test may have left are not this run's.
started=$(mktemp)
trap 'rm -f "$started"' EXIT

run_certfleet check "$pipeline"
check_eq "check accepts the demo pipeline" "$rc" 0

run_certfleet run "$pipeline"
check_eq "first run exits 0" "$rc" 0
[[ $rc -eq 0 ]] || echo "$err" >&2
check_contains "web1 reported issued" "$out" "web1             issued"
check_contains "web2 reported issued" "$out" "web2             issued"

check_eq "web1 serves its own names" "$(served names "$HOST1_TLS_PORT" web1.example.test)" \
  "DNS:web1.example.test,DNS:www.web1.example.test"
check_eq "web2 serves its own names" "$(served names "$HOST2_TLS_PORT" web2.example.test)" \
  "DNS:web2.example.test"
serial1=$(served serial "$HOST1_TLS_PORT" web1.example.test)
serial2=$(served serial "$HOST2_TLS_PORT" web2.example.test)
check_ne "the hosts serve different certificates" "$serial1" "$serial2"

# Issued by this Pebble: verify the served chain against the root fetched at start.
chain=$(mktemp)
openssl s_client -showcerts -connect "127.0.0.1:$HOST1_TLS_PORT" \
  -servername web1.example.test </dev/null 2>/dev/null |
  awk '/BEGIN CERT/{n++} n>1' | sed -n '/BEGIN CERT/,/END CERT/p' >"$chain"
served pem "$HOST1_TLS_PORT" web1.example.test >"$chain.leaf"
check "web1's chain verifies against Pebble's root" \
  openssl verify -CAfile "$CF_ENV_DIR/pebble-roots.pem" -untrusted "$chain" "$chain.leaf"
rm -f "$chain" "$chain.leaf"

for name in web1.example.test www.web1.example.test web2.example.test; do
  check_eq "no TXT left at _acme-challenge.$name" \
    "$(txt_records "$DNS_SERVER" "_acme-challenge.$name")" ""
done

check_eq "state directory is 0700" "$(mode_of "$state")" 700
check_eq "orchestrator key of web1 is 0600" "$(mode_of "$state/hosts/web1/current/key.pem")" 600
check_eq "orchestrator key folder is 0700" "$(mode_of "$state/hosts/web1/current")" 700
check_eq "ACME account key is 0600" \
  "$(mode_of "$state/plugins/ca-acme/account.key.pem")" 600
check_eq "key on host web1 is 0600" "$(mode_of "$HOST1_TLS_DIR/key.pem")" 600
check_eq "key on host web2 is 0600" "$(mode_of "$HOST2_TLS_DIR/key.pem")" 600
check "web2 got an ec-384 key" grep -q . <(openssl pkey -in "$state/hosts/web2/current/key.pem" \
  -noout -text 2>/dev/null | grep 'NIST CURVE: P-384')
check "host web1 holds the orchestrator's key" \
  cmp -s "$HOST1_TLS_DIR/key.pem" "$state/hosts/web1/current/key.pem"
leftovers=$(find "$HOST1_TLS_DIR" "$HOST2_TLS_DIR" -name '.*' -type f -newer "$started" | wc -l)
check_eq "no temporary files left on the hosts" "$leftovers" 0

run_certfleet run "$pipeline"
check_eq "second run exits 0" "$rc" 0
check_contains "second run says nothing is due" "$err" "nothing due"
check_contains "second run leaves web1 alone" "$out" "web1             up-to-date"
check_eq "web1 still serves the same certificate" \
  "$(served serial "$HOST1_TLS_PORT" web1.example.test)" "$serial1"

run_certfleet run --force "$pipeline"
check_eq "forced run exits 0" "$rc" 0
check_ne "web1 serves a new certificate after --force" \
  "$(served serial "$HOST1_TLS_PORT" web1.example.test)" "$serial1"
check_ne "web2 serves a new certificate after --force" \
  "$(served serial "$HOST2_TLS_PORT" web2.example.test)" "$serial2"
check "the previous pair of web1 is kept" test -f "$state/hosts/web1/previous/key.pem"

run_certfleet status --output json "$pipeline"
check_contains "status shows web1 deployed" "$out" '"deployed": true'

finish
