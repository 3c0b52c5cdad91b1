#!/usr/bin/env bash
# The command line's answers to bad input: exit 2 with the file, line and column, and the
# plugin listing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf 'stages:\n  key: { plugin: openssl\nhosts: {}\n' >"$work/broken.yaml"
run_certfleet check "$work/broken.yaml"
check_eq "broken YAML exits 2" "$rc" 2
check_contains "broken YAML names file and line" "$err" "$work/broken.yaml:3:"

sed 's/plugin: rfc2136/plugin: nosuchdns/' "$E2E_ROOT/../../pipelines/demo.yaml" \
  >"$work/missing-plugin.yaml"
run_certfleet check "$work/missing-plugin.yaml"
check_eq "a missing plugin exits 2" "$rc" 2
check_contains "the missing plugin is named" "$err" "dns plugin 'nosuchdns' not found"
check_contains "the stage's line is named" "$err" "missing-plugin.yaml:11:"

sed 's/tsig_secret: .*/tsig_secret: inline-secret-value/' \
  "$E2E_ROOT/../../pipelines/demo.yaml" >"$work/inline.yaml"
run_certfleet check "$work/inline.yaml"
check_eq "an inline secret exits 2" "$rc" 2
check_contains "the inline secret is refused with its position" "$err" "inline.yaml:17:"
check "the error does not repeat the secret" test "${err/inline-secret-value/}" = "$err"

run_certfleet plugins
check_eq "plugins exits 0" "$rc" 0
for plugin in "key     openssl" "dns     rfc2136" "ca      acme" "deploy  sftp" \
  "hook    ssh-command" "hook    tls-verify"; do
  check_contains "plugins lists $plugin" "$out" "$plugin"
done

run_certfleet run "$E2E_ROOT/../../pipelines/demo.yaml" --env nowhere
check_eq "an unknown environment exits 2" "$rc" 2

finish
