# shellcheck shell=bash
# Shared helpers for the example agents in examples/ (sourced, not run).
#
# Every agent talks to the broker only through the `prontodb` CLI, so PRONTODB_DATA_DIR,
# PRONTODB_URL, PRONTODB_SOCKET and PRONTODB_TOKEN pass through untouched: point them at a broker
# (or a private data directory) and the first call starts one if none runs (docs/CLI.md).
#
# Stopping: SIGTERM or SIGINT (Ctrl-C). An agent started with `&` by another script ignores
# SIGINT, as bash starts every background command of a non-interactive shell, and no trap can
# undo that: stop such an agent with SIGTERM.

# Called once the options are read, so that --help works anywhere.
need_prontodb() {
  command -v prontodb >/dev/null 2>&1 && return 0
  echo "${0##*/}: prontodb is not on PATH; activate the project's .venv first" >&2
  exit 1
}

# Print an error and exit 2 (a usage error, as the CLI's own).
die() {
  echo "${0##*/}: $*" >&2
  exit 2
}

# need_value OPTION VALUE: an option's value must be there and must not be another option.
need_value() {
  [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value (see --help)"
}

# need_int OPTION VALUE: a non-negative whole number.
need_int() {
  [[ $2 =~ ^[0-9]+$ ]] || die "$1 wants a whole number, not '$2'"
}

# need_seconds OPTION VALUE: a non-negative number of seconds, fractions allowed.
need_seconds() {
  [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$1 wants seconds (e.g. 2 or 0.5), not '$2'"
}

# need_name OPTION VALUE: agent names become parts of keys and of JSON documents we build.
need_name() {
  [[ $2 =~ ^[A-Za-z0-9_-]+$ ]] || die "$1 wants letters, digits, _ or -, not '$2'"
}

# Bash 5.2 re-parses the text of a $(...) or <(...) when it expands it, and a trap that falls due
# at that moment runs inside that parse: it fails ("trap: unexpected EOF while looking for matching
# `)'"), and the script dies or spins instead of stopping cleanly. A SIGTERM can land at any time,
# so once their traps are set these scripts never use $(...) or <(...): `capture` puts a command's
# output in a file instead, and the helpers below set REPLY rather than print.
CAPTURE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/prontodb-example.XXXXXX") # no trap is set yet

# A child forked for `cmd &` still runs the script's traps if a signal reaches it before it has
# exec'd cmd: a SIGTERM then sets the child's STOP flag and is lost, and an EXIT trap runs twice.
# So every EXIT trap starts with `in_script || return 0`, and a background child that holds no
# state (a watch, the simulated work) is ended with SIGKILL, which no trap can swallow.
SCRIPT_PID=$BASHPID
in_script() { ((BASHPID == SCRIPT_PID)); }
trap 'in_script && rm -rf "$CAPTURE_DIR"' EXIT # a script's own EXIT trap removes it there

# capture VAR COMMAND...: VAR=$(COMMAND...) without $(...): the output less its trailing newlines;
# the status is COMMAND's. One file per process ($BASHPID), so background subshells can use it.
capture() {
  local -n captured_=$1
  local file_="$CAPTURE_DIR/out.$BASHPID" status_=0
  shift
  "$@" >"$file_" || status_=$?
  captured_=""
  IFS= read -r -d '' captured_ <"$file_" || true
  while [[ $captured_ == *$'\n' ]]; do captured_=${captured_%$'\n'}; done
  return "$status_"
}

# count_lines TEXT: REPLY = how many lines TEXT has (`| wc -l` of what `keys` printed).
count_lines() {
  local -a lines_=()
  [[ -z $1 ]] || mapfile -t lines_ <<<"$1"
  REPLY=${#lines_[@]}
}

# json_field FIELD DOCUMENT: REPLY = FIELD of the CLI's one-line --json output, a string or a
# number (the CLI prints `"key": value` with one space); false if it is not there.
json_field() {
  REPLY=""
  [[ $2 =~ \"$1\":\ \"([^\"]*)\" || $2 =~ \"$1\":\ (-?[0-9.]+) ]] || return 1
  REPLY=${BASH_REMATCH[1]}
}

# now_ms: REPLY = milliseconds since the epoch, from bash's own clock.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  REPLY=$((10#$t / 1000))
}

# utc_now: REPLY = the time in UTC, ISO 8601, without starting `date`.
utc_now() {
  TZ=UTC0 printf -v REPLY '%(%Y-%m-%dT%H:%M:%SZ)T' -1
}

# log_entry USER KIND WHAT...: the cookbook's audit trail (section 10) in the logs cursor.
# Race avoided: the usual recipe keys entries by `$(date +%s)`, so two entries written in the same second
# (by one agent or by two) overwrite each other and one is lost. `incr seq.KIND` hands every entry
# its own number; zero-padding keeps `scan audit` in the order the entries were made.
log_entry() {
  local user=$1 kind=$2 seq key
  shift 2
  capture seq prontodb --user "$user" --cursor logs incr "seq.$kind"
  printf -v key '%s.%08d' "$kind" "$seq"
  utc_now
  prontodb --user "$user" --cursor logs set "$key" "$REPLY:$user:$*"
}
