#!/usr/bin/env bash
# test/mutation/run.sh (`make mutation`): break one safety check at a time and check that the
# tests named for it fail. Not part of `make test`: it builds once per mutant.
#
#   test/mutation/run.sh [ID...]        every mutant of test/mutation/mutants.txt, or these
#   test/mutation/run.sh --check        only check that every mutant still applies (seconds)
#   FC_MUTATION_BASELINE=1              first run every named test on the unmutated build
#                                       (a test that fails unmutated would "catch" anything)
#   PG_CONFIG=...                       the installation to copy (default: the system's)
#   FC_MUTATION_DIR=...                 scratch directory (default: a new one in /tmp, removed)
#
# Nothing outside the scratch directory is written: the tree is copied to SCRATCH/src, the
# PostgreSQL installation to SCRATCH/pg (PostgreSQL finds its files relative to its binaries),
# and each mutant is built (`make install` with that copy's pg_config) and tested there, through
# test/run-tests.sh with FC_PGBIN pointing at the copy and the filters FC_SUITES, FC_REGRESS,
# FC_ISOLATION, FC_TAP. Every test named for a mutant runs (FC_MUTATION_FIRST=1: stop at the
# first one that fails), so that a check caught in one place only shows. One line per mutant:
# "caught by TEST..." (and "missed by TEST..." for named tests that passed), SURVIVED,
# DOES NOT APPLY (its code is not found exactly once: the code moved or changed, so the mutant
# must be updated) or DOES NOT BUILD; then a summary. Exit status 0 only if every mutant was
# caught.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
MUTANTS=$REPO/test/mutation/mutants.txt
APPLY=$REPO/test/mutation/apply.pl

if [[ ${1:-} == --check ]]; then
  exec perl "$APPLY" check "$MUTANTS" "$REPO"
fi

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$("$PG_CONFIG" --bindir) || { echo "mutation: $PG_CONFIG does not run" >&2; exit 2; }
tail=/usr/lib/postgresql/15/bin
[[ $bindir == *"$tail" ]] || { echo "mutation: $bindir is not a Debian PostgreSQL 15 layout" >&2; exit 2; }
root=${bindir%"$tail"}

mapfile -t LIST < <(perl "$APPLY" list "$MUTANTS") || exit 2
((${#LIST[@]} > 0)) || { echo "mutation: no mutants in $MUTANTS" >&2; exit 2; }
if (($# > 0)); then
  kept=()
  for line in "${LIST[@]}"; do
    for id in "$@"; do [[ ${line%%$'\t'*} == "$id" ]] && kept+=("$line"); done
  done
  LIST=("${kept[@]}")
  ((${#LIST[@]} == $#)) || { echo "mutation: unknown mutant id among: $*" >&2; exit 2; }
fi

if [[ -n ${FC_MUTATION_DIR:-} ]]; then
  S=$FC_MUTATION_DIR; mkdir -p "$S" || exit 2
else
  S=$(mktemp -d /tmp/fc-mutation.XXXXXX) || exit 2
  trap 'rm -rf "$S"' EXIT
fi
chmod 755 "$S"
rm -rf "$S/src" "$S/pg" "$S/logs"
mkdir -p "$S/pg/usr/lib/postgresql" "$S/pg/usr/share/postgresql" "$S/pg/usr/include" "$S/logs"
echo "mutation: copying $root/usr/{lib,share}/postgresql/15 and the server headers to $S/pg"
cp -a "$root/usr/lib/postgresql/15" "$S/pg/usr/lib/postgresql/" &&
  cp -a "$root/usr/share/postgresql/15" "$S/pg/usr/share/postgresql/" &&
  cp -a "$root/usr/include/postgresql" "$S/pg/usr/include/" || exit 2
rm -rf "$S/pg/usr/lib/postgresql/15/lib/bitcode/fieldcrypt" "$S/pg/usr/lib/postgresql/15/lib/bitcode/fieldcrypt.index.bc"
PGC=$S/pg$tail/pg_config
PGB=$S/pg$tail
echo "mutation: copying the tree to $S/src"
mkdir -p "$S/src" &&
  tar -C "$REPO" --exclude=./.git --exclude=./results --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    -cf - . | tar -C "$S/src" -xf - || exit 2

build() {  # LOG: build and install the scratch tree into the scratch installation
  make -C "$S/src" -s -j2 PG_CONFIG="$PGC" with_llvm=no install >"$1" 2>&1
}

# run_test ENTRY LOG: 0 if the test passed, 1 if it failed, 2 if it could not run
run_test() {
  local kind=${1%%:*} arg=${1#*:} envs=(FC_PGBIN="$PGB")
  [[ $1 == *:* ]] || arg=
  case $kind in
    regress)     envs+=(FC_SUITES=regress FC_REGRESS="$arg") ;;
    regress_tam) envs+=(FC_SUITES=regress_tam FC_REGRESS="$arg") ;;
    isolation)   envs+=(FC_SUITES=isolation FC_ISOLATION="$arg") ;;
    tap)         envs+=(FC_SUITES=tap FC_TAP="$arg") ;;
    pgtap)       envs+=(FC_SUITES=pgtap) ;;
    *) echo "unknown test kind in '$1'" >"$2"; return 2 ;;
  esac
  (cd "$S/src" && env "${envs[@]}" timeout -k 20 900 test/run-tests.sh) >"$2" 2>&1
  local rc=$?
  grep -qE '^[0-9]+ passed, [1-9][0-9]* failed$' "$2" && return 1
  ((rc == 0)) && grep -qE '^[1-9][0-9]* passed, 0 failed$' "$2" && return 0
  return 2
}

echo "mutation: building the unmutated tree"
build "$S/logs/build-base.log" || { echo "mutation: the unmutated tree does not build:"; tail -n 30 "$S/logs/build-base.log"; exit 2; }

if [[ ${FC_MUTATION_BASELINE:-0} == 1 ]]; then
  declare -A done_t=()
  base_bad=0
  for line in "${LIST[@]}"; do
    IFS=$'\t' read -r _ _ tests _ <<<"$line"
    for t in $tests; do
      [[ -n ${done_t[$t]:-} ]] && continue
      done_t[$t]=1
      run_test "$t" "$S/logs/baseline-${t//[:\/]/_}.log"
      case $? in
        0) echo "baseline: $t passes" ;;
        *) echo "baseline: $t FAILS unmutated (log $S/logs/baseline-${t//[:\/]/_}.log)"; base_bad=1 ;;
      esac
    done
  done
  ((base_bad == 0)) || { echo "mutation: tests fail without a mutant; fix that first"; exit 2; }
fi

start=$SECONDS
n_caught=0 n_surv=0 n_noapply=0 n_other=0
results=()
for line in "${LIST[@]}"; do
  IFS=$'\t' read -r id file tests check <<<"$line"
  t0=$SECONDS
  cp "$REPO/$file" "$S/src/$file"   # a fresh mtime: make rebuilds it
  if ! why=$(perl "$APPLY" apply "$MUTANTS" "$id" "$REPO" "$S/src"); then
    result="DOES NOT APPLY ($why)"; n_noapply=$((n_noapply + 1))
  elif ! build "$S/logs/$id-build.log"; then
    result="DOES NOT BUILD (log $S/logs/$id-build.log)"; n_other=$((n_other + 1))
  else
    caught=() missed=() broken=()
    for t in $tests; do
      log=$S/logs/$id-${t//[:\/]/_}.log
      run_test "$t" "$log"
      case $? in
        0) missed+=("$t") ;;
        1) caught+=("$t"); [[ ${FC_MUTATION_FIRST:-0} == 1 ]] && break ;;
        2) broken+=("$t (log $log)") ;;
      esac
    done
    if ((${#broken[@]} > 0)); then
      result="ERROR: could not run ${broken[*]}"
    elif ((${#caught[@]} > 0)); then
      result="caught by ${caught[*]}${missed[*]:+; missed by ${missed[*]}}"
    else
      result=SURVIVED
    fi
    case $result in
      caught*) n_caught=$((n_caught + 1)) ;;
      SURVIVED) n_surv=$((n_surv + 1)) ;;
      *) n_other=$((n_other + 1)) ;;
    esac
  fi
  cp "$REPO/$file" "$S/src/$file"
  line_out=$(printf '%-4s %-40s %-34s %s (%ds)' "$id" "${check%%:*}" "$file" "$result" $((SECONDS - t0)))
  echo "$line_out"
  results+=("$line_out")
done
build "$S/logs/build-restored.log" >/dev/null 2>&1

echo "== mutation summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(((SECONDS - start) / 60)) min)"
printf '%s\n' "${results[@]}"
echo "${#LIST[@]} mutants: $n_caught caught, $n_surv survived, $n_noapply do not apply, $n_other did not build or could not run"
((n_caught == ${#LIST[@]}))
