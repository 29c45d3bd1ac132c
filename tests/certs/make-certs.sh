#!/bin/sh
# Test-only certificates for tests/test_config.py (a CA, a server cert for "orderflow-test", a client
# cert), valid for 100 years. Regenerate with: sh tests/certs/make-certs.sh (needs openssl).
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj "/CN=orderflow test CA" \
  -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
for name in server client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=orderflow-test-$name" -keyout $name.key -out $name.csr
  if [ $name = server ]; then ext="subjectAltName=DNS:orderflow-test
extendedKeyUsage=serverAuth"; else ext="extendedKeyUsage=clientAuth"; fi
  printf '%s\n' "$ext" > $name.ext
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -out $name.pem -extfile $name.ext
  rm $name.csr $name.ext
done
rm -f ca.srl ca.key
