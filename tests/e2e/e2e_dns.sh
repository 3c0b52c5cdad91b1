#!/usr/bin/env bash
# DNS-01 around the batch, with the real certfleet command: 100 hosts confirmed in one
# propagation wait on the servers zone discovery finds; an interrupted run that still
# removes its records; two values on one name (a name and its wildcard); and, against a
# BIND9 and a Pebble this script starts for itself, challenge aliases, a CNAME at a
# challenge name, and the CAA pre-check. Everything stays on 127.0.0.1.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

work=$(mktemp -d)
deploy_root="$HOST1_DIR/e2e-dns"
own_pids=()
cleanup() {
  local pid
  for pid in "${own_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work" "$deploy_root"
}
trap cleanup EXIT

E2E_DNS_PORT=${DNS_SERVER##*:}
export E2E_DNS_PORT

# A folder per host on web1 for the deploy stage, which creates files but not folders.
make_deploy_dirs() {
  local name
  for name in "$@"; do
    install -d -m 0755 -o "$SSH_USER" -g "$(id -gn "$SSH_USER")" "$deploy_root/$name"
  done
}
install -d -m 0755 -o "$SSH_USER" -g "$(id -gn "$SSH_USER")" "$deploy_root"

# The TXT values served at each name, one "name value" line each, asked in one dig call.
txt_left() {
  local server=$1 name questions=()
  shift
  for name in "$@"; do
    questions+=("$name" TXT)
  done
  dig @"${server%:*}" -p "${server#*:}" +norecurse +noall +answer "${questions[@]}" |
    awk '$4 == "TXT"' || true
}

free_port() {
  local port _
  for _ in $(seq 200); do
    # Below the kernel's ephemeral range (32768-60999), where an outgoing connection may
    # hold the TCP port while ss -l still calls it free.
    port=$((10000 + RANDOM % 10000))
    if [[ -z "$(ss -Hlntu "sport = :$port")" ]]; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

echo "# 100 hosts, 200 names, one propagation wait on the discovered servers"
export E2E_STATE=$work/fleet
pipeline=$work/fleet.yaml
cp "$E2E_ROOT/pipelines/dns-fleet.yaml" "$pipeline"
challenge_names=()
hosts=()
for ((n = 0; n < 100; n++)); do
  if ((n % 2 == 0)); then
    names="[host$n.example.test, \"*.host$n.example.test\"]"
  else
    names="[host$n.example.test, www.host$n.example.test]"
    challenge_names+=("_acme-challenge.www.host$n.example.test")
  fi
  challenge_names+=("_acme-challenge.host$n.example.test")
  hosts+=("host$n")
  cat >>"$pipeline" <<EOF
  host$n:
    address: 127.0.0.1
    port: \${env:HOST1_SSH_PORT}
    user: \${env:SSH_USER}
    names: $names
    stages:
      deploy: { key_path: "$deploy_root/host$n/key.pem",
                chain_path: "$deploy_root/host$n/fullchain.pem" }
EOF
done
make_deploy_dirs "${hosts[@]}"
started=$(now_ms)
run_certfleet run "$pipeline"
took=$(($(now_ms) - started))
check_eq "a run of 100 hosts exits 0" "$rc" 0
[[ $rc -eq 0 ]] || echo "$err" | grep -v " debug " | tail -n 20 >&2
check_eq "all 100 hosts issued and deployed" "$(grep -cE '^host[0-9]+ +issued' <<<"$out")" 100
waits=$(grep -c "dns propagation: confirmed" <<<"$err" || true)
check_eq "one propagation wait for the whole batch" "$waits" 1
check_contains "the wait asked the zone's one server" "$err" "record(s) on 1 server(s)"
confirmed=$(grep -oE "confirmed [0-9]+ record" <<<"$err" | grep -oE "[0-9]+" || true)
check "the wait covered the batch's records (${confirmed:-none} of at most 200)" \
  test "${confirmed:-0}" -ge 100 -a "${confirmed:-0}" -le 200
check "the run took under 60 s (${took} ms)" test "$took" -lt 60000
check_eq "the even hosts' certificates hold the wildcard" \
  "$(openssl x509 -noout -ext subjectAltName -in "$deploy_root/host42/fullchain.pem" |
    tail -n +2 | tr -d ' ')" "DNS:host42.example.test,DNS:*.host42.example.test"
check_eq "no _acme-challenge record is left in the zone" \
  "$(txt_left "$DNS_SERVER" "${challenge_names[@]}")" ""

echo "# an interrupted run removes the records it presented"
export E2E_STATE=$work/interrupt
pipeline=$work/interrupt.yaml
cp "$E2E_ROOT/pipelines/dns-fleet.yaml" "$pipeline"
interrupt_names=()
for ((n = 0; n < 5; n++)); do
  interrupt_names+=("_acme-challenge.intr$n.example.test")
  cat >>"$pipeline" <<EOF
  intr$n:
    address: 127.0.0.1
    port: \${env:HOST1_SSH_PORT}
    user: \${env:SSH_USER}
    names: [intr$n.example.test]
    stages:
      deploy: { key_path: "$deploy_root/intr$n/key.pem",
                chain_path: "$deploy_root/intr$n/fullchain.pem" }
EOF
done
"$CERTFLEET_BIN" run "$pipeline" --env interrupt --log-level debug \
  >"$work/interrupt.out" 2>"$work/interrupt.err" &
runner=$!
own_pids+=("$runner")
# The dns plugin logs "adding" as it sends the batch; then wait to see a record served.
seen=""
for _ in $(seq 300); do
  if grep -q "adding" "$work/interrupt.err" &&
    [[ -n "$(txt_left "$DNS_SERVER" "${interrupt_names[@]}")" ]]; then
    seen=yes
    break
  fi
  kill -0 "$runner" 2>/dev/null || break
  sleep 0.05
done
check_eq "the records were presented before the interrupt" "$seen" yes
kill -INT "$runner" 2>/dev/null || true
signalled=$(now_ms)
set +e
for _ in $(seq 200); do
  kill -0 "$runner" 2>/dev/null || break
  sleep 0.05
done
wait "$runner"
interrupt_rc=$?
set -e
check "the interrupted run exits within 10 s ($(($(now_ms) - signalled)) ms)" \
  test $(($(now_ms) - signalled)) -lt 10000
check "the interrupted run exits non-zero ($interrupt_rc)" test "$interrupt_rc" -ne 0
check_contains "the hosts say they were interrupted" "$(<"$work/interrupt.err")" "interrupted"
check_eq "no _acme-challenge record is left after the interrupt" \
  "$(txt_left "$DNS_SERVER" "${interrupt_names[@]}")" ""

echo "# a name and its wildcard: two values on one name, served by web1's nginx"
export E2E_STATE=$work/wildcard
run_certfleet run "$E2E_ROOT/pipelines/dns-wildcard.yaml"
check_eq "the apex and wildcard run exits 0" "$rc" 0
[[ $rc -eq 0 ]] || echo "$err" | tail -n 20 >&2
check_contains "web1 issued" "$out" "web1             issued"
check_eq "web1 serves the name and its wildcard" \
  "$(served names "$HOST1_TLS_PORT" web5.example.test)" \
  "DNS:web5.example.test,DNS:*.web5.example.test"
check_eq "no _acme-challenge record is left for web5" \
  "$(txt_left "$DNS_SERVER" _acme-challenge.web5.example.test)" ""

echo "# challenge aliases, a CNAME at a challenge name and CAA, on a BIND and Pebble of our own"
own=$work/own
mkdir -p "$own/managed-keys"
own_dns_port=$(free_port)
pebble_port=$(free_port)
pebble_mgmt_port=$(free_port)
cat >"$own/dns.test.zone" <<'EOF'
$TTL 60
@ SOA ns1.dns.test. hostmaster.dns.test. ( 1 60 30 600 5 )
@ NS ns1.dns.test.
ns1 A 127.0.0.1
@ CAA 0 issue "pebble.test"
denied CAA 0 issue "other-ca.test"
_acme-challenge.app1 CNAME _acme-challenge.alias.dns.test.
_acme-challenge.app3 CNAME _acme-challenge.app3.moved.dns.test.
EOF
cat >"$own/named.conf" <<EOF
// Like tests/env/start-env's: loopback only, no recursion, no NOTIFY, no rndc channel.
options {
  directory "$own";
  pid-file "$own/named.pid";
  session-keyfile "$own/session.key";
  managed-keys-directory "$own/managed-keys";
  listen-on port $own_dns_port { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  notify no;
  allow-transfer { none; };
  allow-query { 127.0.0.1; };
};
controls { };
key "$TSIG_NAME" { algorithm $TSIG_ALGORITHM; secret "$CERTFLEET_TSIG_SECRET"; };
zone "dns.test" {
  type primary;
  file "$own/dns.test.zone";
  update-policy { grant $TSIG_NAME zonesub TXT; };
};
EOF
named_bin=$(command -v named)
[[ -x "$CF_ENV_DIR/bin/named" ]] && named_bin=$CF_ENV_DIR/bin/named
(cd / && exec setsid "$named_bin" -g -4 -c "$own/named.conf") </dev/null >"$own/named.log" 2>&1 &
own_pids+=($!)
cat >"$own/pebble.json" <<EOF
{ "pebble": { "listenAddress": "127.0.0.1:$pebble_port",
              "managementListenAddress": "127.0.0.1:$pebble_mgmt_port",
              "certificate": "$CF_ENV_DIR/pki/listener.pem",
              "privateKey": "$CF_ENV_DIR/pki/listener.key",
              "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
              "externalAccountBindingRequired": false } }
EOF
(cd / && exec setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PEBBLE_VA_NOSLEEP=1 \
  pebble -config "$own/pebble.json" -dnsserver "127.0.0.1:$own_dns_port" -strict=false) \
  </dev/null >"$own/pebble.log" 2>&1 &
own_pids+=($!)
ready=""
for _ in $(seq 200); do
  if dig +short +norec +time=1 +tries=1 @127.0.0.1 -p "$own_dns_port" dns.test SOA |
    grep -q hostmaster &&
    curl --noproxy '*' -fsS --max-time 1 --cacert "$PEBBLE_CA_BUNDLE" -o /dev/null \
      "https://127.0.0.1:$pebble_port/dir" 2>/dev/null; then
    ready=yes
    break
  fi
  sleep 0.05
done
check_eq "our own BIND and Pebble are up" "$ready" yes
[[ -n "$ready" ]] || tail -n 5 "$own/named.log" "$own/pebble.log" >&2

export E2E_STATE=$work/alias E2E_OWN_DNS=127.0.0.1:$own_dns_port
export E2E_OWN_DNS_PORT=$own_dns_port E2E_OWN_PEBBLE=https://127.0.0.1:$pebble_port/dir
export E2E_DEPLOY_DIR=$deploy_root
make_deploy_dirs app1 app2 app3 app4
run_certfleet check "$E2E_ROOT/pipelines/dns-alias.yaml"
check_eq "check accepts the alias pipeline offline" "$rc" 0
run_certfleet run "$E2E_ROOT/pipelines/dns-alias.yaml" --log-level debug
check_eq "the run with a failing host exits 1" "$rc" 1
check_contains "app1 issued through the alias" "$out" "app1             issued"
check_contains "its records were written at the alias" "$err" \
  "_acme-challenge.app1.dns.test is a CNAME to _acme-challenge.alias.dns.test"
check_eq "app1's certificate holds the name and its wildcard" \
  "$(openssl x509 -noout -ext subjectAltName -in "$deploy_root/app1/fullchain.pem" |
    tail -n +2 | tr -d ' ')" "DNS:app1.dns.test,DNS:*.app1.dns.test"
check_contains "app2, without the delegation, failed" "$out" "app2             failed"
check_contains "the failure names both names" "$out" \
  "_acme-challenge.app2.dns.test must be a CNAME to _acme-challenge.alias.dns.test, but it has no"
check_contains "app3 issued through its own CNAME" "$out" "app3             issued"
check_contains "app3's record was written where its CNAME points" "$err" \
  "is a CNAME to _acme-challenge.app3.moved.dns.test"
check_contains "app4 was refused" "$out" "app4             failed"
check_contains "the refusal names the CAA record and where it is" "$out" \
  "x.denied.dns.test: CAA 0 issue \"other-ca.test\" at denied.dns.test does not allow pebble.test"
check_eq "app4 was refused before a key or an order was made" \
  "$(find "$E2E_STATE/default/hosts/app4" -type f 2>/dev/null)" ""
check_eq "no record is left at the alias or the CNAME targets" \
  "$(txt_left "$E2E_OWN_DNS" _acme-challenge.alias.dns.test \
    _acme-challenge.app3.moved.dns.test _acme-challenge.app2.dns.test)" ""

finish
