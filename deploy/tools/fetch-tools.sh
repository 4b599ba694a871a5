#!/usr/bin/env bash
# Fetches, once, what the offline manifest validation needs, into ~/.cache/ragstream/tools (outside the checkout):
#   bin/helm          Helm v3.22.0     (go install through the Go module proxy; about 70 s cold on 2 cores)
#   bin/kubeconform   kubeconform v0.8.0 (go install; about 15 s cold)
#   strimzi/*.yaml    Strimzi 0.49.0 CRDs for Kafka, KafkaNodePool, KafkaTopic, KafkaUser, generated from the Java API model
#                     (io.strimzi:api + io.strimzi:crd-generator from Maven Central; needs Java >= 21)
#   asyncapi/         @asyncapi/parser 3.6.6, the official AsyncAPI parser (npm; needs node >= 18), for
#                     deploy/tools/asyncapi-validate.mjs (tests/unit/test_asyncapi.py)
# Kubernetes 1.37 schemas come from the `kubernetes-validate` wheel and KEDA's from `cloudcoil-models-keda`
# (both dev dependencies in uv.lock); deploy/tools/schemas.py converts all of them for kubeconform.
# Idempotent: a tool already in the cache is not fetched again. Prints the cache directory on its last line.
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
STRIMZI_VERSION=0.49.0
STRIMZI_CRD_GENERATOR_VERSION=1.2.0
ASYNCAPI_PARSER_VERSION=3.6.6

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ragstream"
TOOLS="$CACHE/tools"
mkdir -p "$TOOLS/bin" "$TOOLS/logs"

go_tool() {  # go_tool NAME MODULE@VERSION VERSION
  local name=$1 pkg=$2 version=$3 stamp="$TOOLS/bin/.$1.version"
  if [ -x "$TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || { echo "error: go is not on PATH (needed to build $name)" >&2; return 1; }
  echo "==> go install $pkg" >&2
  GOBIN="$TOOLS/bin" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go install "$pkg" >"$TOOLS/logs/$name.log" 2>&1 \
    || { tail -20 "$TOOLS/logs/$name.log" >&2; return 1; }
  echo "$version" >"$stamp"
}

# First: it needs only node and npm, so a machine without Go or Java still gets it.
asyncapi_dir="$TOOLS/asyncapi"
if [ "$(cat "$asyncapi_dir/.version" 2>/dev/null)" != "$ASYNCAPI_PARSER_VERSION" ] \
  || [ ! -f "$asyncapi_dir/node_modules/@asyncapi/parser/package.json" ]; then
  command -v npm >/dev/null 2>&1 || { echo "error: npm is not on PATH (needed for @asyncapi/parser)" >&2; exit 1; }
  echo "==> npm install @asyncapi/parser@$ASYNCAPI_PARSER_VERSION" >&2
  mkdir -p "$asyncapi_dir"
  npm install --prefix "$asyncapi_dir" --no-audit --no-fund --no-save \
    "@asyncapi/parser@$ASYNCAPI_PARSER_VERSION" >"$TOOLS/logs/asyncapi-npm.log" 2>&1 \
    || { tail -20 "$TOOLS/logs/asyncapi-npm.log" >&2; exit 1; }
  echo "$ASYNCAPI_PARSER_VERSION" >"$asyncapi_dir/.version"
fi

go_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$HELM_VERSION"
go_tool kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" "$KUBECONFORM_VERSION"

strimzi_dir="$TOOLS/strimzi/$STRIMZI_VERSION"
if [ ! -s "$strimzi_dir/kafkatopic.yaml" ] || [ ! -s "$strimzi_dir/kafka.yaml" ] \
  || [ ! -s "$strimzi_dir/kafkanodepool.yaml" ] || [ ! -s "$strimzi_dir/kafkauser.yaml" ]; then
  java_bin=""
  for j in "${RAGSTREAM_JAVA21:-}" /usr/lib/jvm/temurin-25-jdk-amd64/bin/java /usr/lib/jvm/*/bin/java "$(command -v java || true)"; do
    [ -n "$j" ] && [ -x "$j" ] || continue
    major=$("$j" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}')
    if [ "${major:-0}" -ge 21 ]; then java_bin=$j; break; fi
  done
  [ -n "$java_bin" ] || { echo "error: the Strimzi CRD generator needs Java >= 21" >&2; exit 1; }
  command -v mvn >/dev/null 2>&1 || { echo "error: mvn is not on PATH" >&2; exit 1; }
  work="$strimzi_dir/build"
  mkdir -p "$work"
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ragstream.tools</groupId>
  <artifactId>strimzi-crds</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>$STRIMZI_VERSION</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>$STRIMZI_CRD_GENERATOR_VERSION</version></dependency>
  </dependencies>
</project>
POM
  echo "==> Strimzi $STRIMZI_VERSION CRDs (Maven Central + CrdGenerator)" >&2
  (cd "$work" && mvn -q -B "-Dmaven.repo.local=$CACHE/m2" dependency:copy-dependencies \
    -DoutputDirectory=lib) >"$TOOLS/logs/strimzi-mvn.log" 2>&1 \
    || { tail -20 "$TOOLS/logs/strimzi-mvn.log" >&2; exit 1; }
  (cd "$strimzi_dir" && "$java_bin" -cp "$work/lib/*" io.strimzi.crdgenerator.CrdGenerator \
    --yaml --api-versions v1beta2,v1 --storage-version v1beta2 \
    "io.strimzi.api.kafka.model.topic.KafkaTopic=$strimzi_dir/kafkatopic.yaml" \
    "io.strimzi.api.kafka.model.kafka.Kafka=$strimzi_dir/kafka.yaml" \
    "io.strimzi.api.kafka.model.nodepool.KafkaNodePool=$strimzi_dir/kafkanodepool.yaml" \
    "io.strimzi.api.kafka.model.user.KafkaUser=$strimzi_dir/kafkauser.yaml") \
    >"$TOOLS/logs/strimzi-gen.log" 2>&1 || { tail -20 "$TOOLS/logs/strimzi-gen.log" >&2; exit 1; }
fi

echo "$TOOLS"
