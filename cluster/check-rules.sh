#!/usr/bin/env bash
# The chart's Prometheus rules: `promtool check rules` (syntax, templates)
# and `promtool test rules` (each alert fires when it should, not before).
# promtool comes from Debian's prometheus package, unpacked into the cache
# by cluster/signals/install.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rules=$(cd "$here/../charts/healing-guard-operator/rules" && pwd)
"$here/signals/install.sh" prometheus >&2
# shellcheck source=signals/versions.sh
source "$here/signals/versions.sh"
"$PROMTOOL" check rules "$rules"/*.rules.yaml
(cd "$rules/tests" && "$PROMTOOL" test rules ./*.test.yaml)
