# Pieces shared by the measurement scripts in scripts/. Source it once GRAFT and RESULTS are set:
#   . "$(dirname "$0")/demo-lib.sh"

# Succeeds when RESULTS already has a line for this run (its `name` and `seed`, and where given
# one more KEY whose value, as text, is VALUE), so that a rerun skips finished work.
done_already() { # NAME SEED [KEY VALUE]
    [ -e "$RESULTS" ] || return 1
    jq -se --arg n "$1" --argjson s "$2" --arg k "${3:-}" --arg v "${4:-}" \
        'any(.[]; .name == $n and .seed == $s and ($k == "" or (.[$k] | tostring) == $v))' "$RESULTS" > /dev/null
}

# `graft data build KIND --out DIR ARGS...`, once: DIR/.complete marks a finished build, so a
# build cut short is redone.
build_once() { # KIND DIR [ARGS...]
    [ -e "$2/.complete" ] && return
    "$GRAFT" data build "$1" --out "$2" "${@:3}" >&2
    touch "$2/.complete"
}
