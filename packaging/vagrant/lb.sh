#!/bin/bash
# Provision the HAProxy VM: port 80 balances the six app VMs (port 8080, health check
# /health), and the Runtime API listens on the lab network for the controller's
# `haproxy` driver (tcp: 192.168.56.10:9999; lab only: it is unauthenticated).
#   lb.sh NAME=IP ...
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends haproxy >/dev/null

servers=""
for arg in "$@"; do
    servers+="    server ${arg%%=*} ${arg#*=}:8080 check inter 1s fall 2 rise 2"$'\n'
done
install -d -m 0755 /var/lib/haproxy
cat >/etc/haproxy/haproxy.cfg.new <<CFG
global
    log stdout format raw local0
    stats socket /run/haproxy/admin.sock mode 600 level admin
    stats socket ipv4@192.168.56.10:9999 level admin
    server-state-file /var/lib/haproxy/server-state

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global

frontend app
    bind :80
    default_backend app

backend app
    option httpchk GET /health
    balance roundrobin
${servers}
CFG
haproxy -c -q -f /etc/haproxy/haproxy.cfg.new
mv /etc/haproxy/haproxy.cfg.new /etc/haproxy/haproxy.cfg
systemctl enable --now haproxy >/dev/null
systemctl reload haproxy
echo "lb.sh: haproxy balancing $# app VMs on :80, Runtime API on 192.168.56.10:9999"
