#!/usr/bin/env bash
# Compares probewatch with promtool on a corpus of Prometheus rule files and rule unit
# tests: every *.yml / *.yaml under the given directories whose top level has `groups:` is
# checked with `promtool check rules` and `probewatch rules check`; every one with `tests:`
# is run with `promtool test rules` and `probewatch rules test`. Prints one line per file
# where the two disagree, then the totals the goals in docs/alerting.md are measured by.
#
#   scripts/compare-with-promtool.sh [--probewatch BIN] DIR...
#
# The corpus is not in this repository (it is other people's code): collect it with
# `git clone` of the repositories listed in docs/alerting.md, "Compatibility with real rule
# files", and pass their directories.
set -u
probewatch=${PROBEWATCH:-target/release/probewatch}
if [ "${1:-}" = "--probewatch" ]; then probewatch=$2; shift 2; fi
promtool=${PROMTOOL:-promtool}
command -v "$promtool" >/dev/null || { echo "no promtool (Debian package prometheus)" >&2; exit 2; }
[ -x "$probewatch" ] || { echo "no $probewatch: cargo build --release first" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: $0 [--probewatch BIN] DIR..." >&2; exit 2; }

rules_total=0 rules_promtool_ok=0 rules_both_ok=0 rules_only_ours=0
tests_total=0 tests_agree=0
kind() {
  # `groups` / `tests` / nothing, from the file's top-level keys.
  sed -n -e 's/^\(groups\|tests\):.*/\1/p' "$1" | head -1
}
while IFS= read -r -d '' file; do
  case "$(kind "$file")" in
    groups)
      rules_total=$((rules_total + 1))
      theirs=0; ours=0
      timeout 60 "$promtool" check rules "$file" >/dev/null 2>&1 && theirs=1
      timeout 60 "$probewatch" rules check "$file" >/dev/null 2>&1 && ours=1
      if [ $theirs = 1 ]; then rules_promtool_ok=$((rules_promtool_ok + 1)); fi
      if [ $theirs = 1 ] && [ $ours = 1 ]; then rules_both_ok=$((rules_both_ok + 1)); fi
      if [ $theirs = 0 ] && [ $ours = 1 ]; then rules_only_ours=$((rules_only_ours + 1)); fi
      if [ $theirs != $ours ]; then echo "rules  promtool=$theirs probewatch=$ours  $file"; fi
      ;;
    tests)
      grep -q '^rule_files:' "$file" || continue
      tests_total=$((tests_total + 1))
      theirs=0; ours=0
      (cd "$(dirname "$file")" && timeout 120 "$promtool" test rules "$(basename "$file")" >/dev/null 2>&1) && theirs=1
      (cd "$(dirname "$file")" && timeout 120 "$OLDPWD/$probewatch" rules test "$(basename "$file")" >/dev/null 2>&1 \
        || timeout 120 "$probewatch" rules test "$(basename "$file")" >/dev/null 2>&1) && ours=1
      if [ $theirs = $ours ]; then tests_agree=$((tests_agree + 1)); else
        echo "tests  promtool=$theirs probewatch=$ours  $file"; fi
      ;;
  esac
done < <(find "$@" -type f \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)

pct() { if [ "$2" -gt 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; else echo "-"; fi; }
echo
echo "rule files: $rules_total; promtool accepts $rules_promtool_ok; probewatch accepts" \
     "$rules_both_ok of those ($(pct "$rules_both_ok" "$rules_promtool_ok")); accepted by probewatch only: $rules_only_ours"
echo "unit-test files: $tests_total; same verdict as promtool: $tests_agree ($(pct "$tests_agree" "$tests_total"))"
