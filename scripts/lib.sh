# Functions the benchmark scripts share. Sourced, not run.

# Prints the first loopback address written to file $1 after the text $2
# (none by default), waiting up to 10 s for it to appear.
address_in() {
  local file="$1" prefix="${2:-}" deadline=$((SECONDS + 10)) found
  while ((SECONDS < deadline)); do
    found="$(grep -oE "${prefix}127\.0\.0\.1:[0-9]+" "$file" | head -n 1 || true)"
    if [[ -n "$found" ]]; then
      echo "${found#"$prefix"}"
      return 0
    fi
    sleep 0.1
  done
  echo "no address in $file after 10 s:" >&2
  cat "$file" >&2
  return 1
}
