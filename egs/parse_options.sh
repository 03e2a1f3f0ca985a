# Sourced by the recipes after their defaults: "--name value" arguments set the shell variable
# `name` ("-" in names becomes "_"); only the names listed in $vars are accepted.
while [ $# -gt 0 ]; do
  name=${1#--}
  name=${name//-/_}
  if [[ $1 != --* || $vars != *" $name "* || $# -lt 2 ]]; then
    echo "usage: $0 [--name value ...] with name in:$vars" >&2
    exit 2
  fi
  printf -v "$name" '%s' "$2"
  shift 2
done
