#!/bin/sh
# The pinned runtime block of requirements.txt: the lines under "# Runtime" up to the next
# section ("# " and a capital letter), without comments or blank lines. The Dockerfile installs exactly this list, and
# tests/test_packaging.py runs this same script to check what is (and is not) in it.
set -eu
sed -n '/^# Runtime/,/^# [A-Z]/{/^#/d;/^[[:space:]]*$/d;p;}' "${1:-requirements.txt}"
