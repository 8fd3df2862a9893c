#!/usr/bin/env bash
# Install the system programs medialog's embedded stack needs when they are missing: ffmpeg and
# ffprobe, PostgreSQL's server binaries, and a Java 17+ runtime with Maven (the embedded Apache
# Kafka broker; Maven fetches its jars once). As root on Debian/Ubuntu it uses apt-get;
# otherwise it says what to install and fails. redis-server (the rate limits' shared-storage
# test) is installed along as root, never required: without it that test is skipped.
set -euo pipefail

have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
have_java() { command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] 2>/dev/null; }
missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
have_pg || missing+=(postgresql)
have_java || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
root_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
command -v redis-server >/dev/null 2>&1 || ! root_apt || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if root_apt; then
  echo "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "medialog needs: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
