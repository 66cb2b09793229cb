# KEY VALUE arguments for the scripts' bash front ends (sourced, not run).
#
# parse_key_values NAME "VALID KEYS" "$@" sets the shell variable of each KEY given to its VALUE;
# an argument "--" ends the pairs and what follows it is left in the array KV_REST. An unknown key
# or a key without a value prints "NAME: ..." to stderr and exits with code 2.
parse_key_values() {
    local name="$1" valid="$2"
    shift 2
    KV_REST=()
    while [[ $# -gt 0 ]]; do
        if [[ "$1" == "--" ]]; then
            shift
            KV_REST=("$@")
            return 0
        fi
        [[ " $valid " == *" $1 "* ]] || { echo "$name: unknown key '$1' (valid: $valid)" >&2; exit 2; }
        [[ $# -ge 2 ]] || { echo "$name: $1 needs a value" >&2; exit 2; }
        printf -v "$1" '%s' "$2"
        shift 2
    done
}
