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

# N of the {"text"} lines on stdin at even intervals through them, each cut to at most CHARS
# characters (at a space), as {"text", "label": LABEL} lines: a probe's class, drawn evenly.
spread() { # N LABEL CHARS
    jq -cs --argjson n "$1" --arg class "$2" --argjson chars "$3" '
        map(.text | select(length > 0)) as $all
        | if ($all | length) < $n then error("\($all | length) texts, \($n) asked") else . end
        | range(0; $n) | $all[(. * ($all | length) / $n | floor)]
        | {text: (if length <= $chars then . else .[:$chars] | sub(" [^ ]*$"; "") end), "label": $class}'
}

# The AppStream component descriptions of a summarize file (dataset:appstream/summarize.*.jsonl:
# the user turn is an instruction line, a blank line, then the description) as {"text"} lines.
descriptions() { # FILE
    jq -c '{text: (.messages[0].content | split("\n\n")[1:] | join("\n\n"))}' "$1"
}
