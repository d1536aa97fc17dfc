#!/usr/bin/env bash
# Makes a CA and one certificate per cluster member for the raft port's
# mutual TLS (cluster.tls_*), with openssl: a starting point for a test or
# a small deployment, not a PKI.
#
#   bash scripts/peer-certs.sh DIR NAME=HOST [NAME=HOST...]
#   bash scripts/peer-certs.sh certs node1=127.0.0.1 node2=127.0.0.1 node3=127.0.0.1
#
# writes DIR/ca.pem (keep DIR/ca-key.pem away from the nodes), and
# DIR/NAME.pem, DIR/NAME-key.pem for each member. HOST is what the other
# members dial (the host of its raft address): an IP address or a DNS
# name. Certificates are valid for 825 days and carry both the serverAuth
# and clientAuth key usages, since each serves both ends of a connection.
set -euo pipefail

if [ $# -lt 2 ]; then
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 3650 \
		-subj "/CN=kv cluster CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
for spec in "$@"; do
	name=${spec%%=*}
	host=${spec#*=}
	if [ -z "$name" ] || [ -z "$host" ] || [ "$name" = "$spec" ]; then
		echo "peer-certs: want NAME=HOST, got $spec" >&2
		exit 2
	fi
	if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
		san="IP:$host"
	else
		san="DNS:$host"
	fi
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$name-key.pem" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
		-CAcreateserial -out "$dir/$name.pem" -days 825 \
		-extfile <(printf 'subjectAltName=%s\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san") 2>/dev/null
	rm -f "$dir/$name.csr"
	echo "$dir/$name.pem $dir/$name-key.pem ($san)"
done
