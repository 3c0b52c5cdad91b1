#!/usr/bin/env bash
# Failures stay with the host they belong to: a host whose sshd is down, a host whose key
# changed, a reload that fails, and an order the CA refuses, which must still leave no
# TXT record behind.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pipeline="$E2E_ROOT/pipelines/failures.yaml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export E2E_KNOWN_HOSTS=$SSH_KNOWN_HOSTS E2E_WEB2_RELOAD=$HOST2_RELOAD E2E_DNS_SERVER=$DNS_SERVER
# A port on loopback where nothing listens: bind one, note it, release it.
E2E_DEAD_PORT=$(( ${HOST2_SSH_PORT} + 900 ))
export E2E_DEAD_PORT

echo "# a host whose sshd is down fails alone"
export E2E_STATE=$work/dead
run_certfleet run --env dead-host "$pipeline"
check_eq "run with a dead host exits 1" "$rc" 1
check_contains "web1 still issued" "$out" "web1             issued"
check_contains "web2 still issued" "$out" "web2             issued"
check_contains "web3 failed" "$out" "web3             failed"
check_contains "the failure names web3's address" "$out" "127.0.0.1:$E2E_DEAD_PORT"
check_eq "web1 serves its certificate" "$(served names "$HOST1_TLS_PORT" web1.example.test)" \
  "DNS:web1.example.test"

echo "# a changed host key is refused and the host left untouched"
export E2E_STATE=$work/hostkey
ssh-keygen -q -t ed25519 -N '' -f "$work/impostor" >/dev/null
grep -v "^\[127.0.0.1\]:$HOST2_SSH_PORT " "$SSH_KNOWN_HOSTS" >"$work/known_hosts"
echo "[127.0.0.1]:$HOST2_SSH_PORT $(cut -d' ' -f1,2 "$work/impostor.pub")" >>"$work/known_hosts"
E2E_KNOWN_HOSTS=$work/known_hosts
cp "$HOST2_TLS_DIR/key.pem" "$work/web2-key-before.pem"
serial2_before=$(served serial "$HOST2_TLS_PORT" web2.example.test)
run_certfleet run "$pipeline"
check_eq "run with a changed host key exits 1" "$rc" 1
check_contains "web1 unaffected" "$out" "web1             issued"
check_contains "web2 failed" "$out" "web2             failed"
check_contains "the error says the host key changed" "$out" "changed"
check "web2's key file is untouched" cmp -s "$HOST2_TLS_DIR/key.pem" "$work/web2-key-before.pem"
check_eq "web2 serves what it served before" \
  "$(served serial "$HOST2_TLS_PORT" web2.example.test)" "$serial2_before"
E2E_KNOWN_HOSTS=$SSH_KNOWN_HOSTS

echo "# a reload that fails fails the host and puts the previous pair back"
export E2E_STATE=$work/reload
run_certfleet run "$pipeline"
check_eq "a clean run first" "$rc" 0
serial2_good=$(served serial "$HOST2_TLS_PORT" web2.example.test)
E2E_WEB2_RELOAD="exit 3"
run_certfleet run --force --host web2 "$pipeline"
check_eq "run with a failing reload exits 1" "$rc" 1
check_contains "web2 failed" "$out" "web2             failed"
check_contains "the error carries the exit status" "$out" "3"
check_eq "web2 still serves the previous certificate" \
  "$(served serial "$HOST2_TLS_PORT" web2.example.test)" "$serial2_good"
check "web2's files on disk are the previous pair again" \
  cmp -s "$HOST2_TLS_DIR/key.pem" "$E2E_STATE/default/hosts/web2/previous/key.pem"
E2E_WEB2_RELOAD=$HOST2_RELOAD
run_certfleet run "$pipeline"
check_eq "the next run deploys the pending certificate" "$rc" 0
check_contains "web2 deployed without a new order" "$out" "web2             deployed"

echo "# an order the CA refuses leaves no TXT record behind"
# The secondary server is not the one Pebble asks: records written there pass the
# propagation check, then the CA finds nothing and the authorization goes invalid.
export E2E_STATE=$work/order E2E_DNS_SERVER=$DNS_SECONDARY
run_certfleet run "$pipeline"
check_eq "run with refused orders exits 1" "$rc" 1
check_contains "web1 failed" "$out" "web1             failed"
check_contains "the failure names the identifier" "$out" "web1.example.test"
for name in web1.example.test web2.example.test; do
  check_eq "no TXT left on the secondary for $name" \
    "$(txt_records "$DNS_SECONDARY" "_acme-challenge.$name")" ""
  check_eq "no TXT on the primary for $name" \
    "$(txt_records "$DNS_SERVER" "_acme-challenge.$name")" ""
done

finish
