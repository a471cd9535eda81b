#!/usr/bin/env bash
# Fetches Apache Kafka (broker jars and their dependencies) from Maven Central into the syncgov
# cache, keyed by version, and prints the directory whose lib/ holds the classpath.
#
#   test/env/obtain/kafka.sh           -> prints <cache>/kafka-<version>
#
# Needs: mvn and a Java 17+ runtime. Kafka 3.9 is used because kafkajs does not speak the protocol
# versions that Kafka 4 kept.
set -euo pipefail

KAFKA_VERSION="${SYNCGOV_KAFKA_VERSION:-3.9.1}"
SCALA_VERSION="2.13"
CACHE="${SYNCGOV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/syncgov}"
OUT="$CACHE/kafka-$KAFKA_VERSION"

if [[ -f "$OUT/lib/.complete" ]]; then
  echo "$OUT"
  exit 0
fi

command -v mvn >/dev/null || { echo "kafka.sh: 'mvn' is required to fetch Kafka from Maven Central" >&2; exit 1; }
command -v java >/dev/null || { echo "kafka.sh: 'java' (17+) is required to run Kafka" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.kafka-fetch.lock"
flock 9
if [[ -f "$OUT/lib/.complete" ]]; then
  echo "$OUT"
  exit 0
fi

WORK="$(mktemp -d "$CACHE/.kafka-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.syncgov.env</groupId>
  <artifactId>kafka-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_VERSION}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
EOF
echo "kafka.sh: fetching Kafka $KAFKA_VERSION from Maven Central" >&2
mvn -q -B -f "$WORK/pom.xml" dependency:copy-dependencies -DoutputDirectory="$WORK/lib" -DincludeScope=runtime >&2
rm -rf "$OUT"
mkdir -p "$OUT"
mv "$WORK/lib" "$OUT/lib"
touch "$OUT/lib/.complete"
echo "kafka.sh: cached in $OUT" >&2
echo "$OUT"
