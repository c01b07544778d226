#!/bin/bash
# Provision one app VM: the fleetwave agent from the .deb built in packaging/
# (dist/, synced to /vagrant), the lab's release key as the trusted key, the deploy key
# pinned to the agent's RPC entry point, and the exporter listening on the lab network.
#   app.sh NAME IP AZ CELL
set -euo pipefail
name=$1 ip=$2 az=$3 cell=$4
export DEBIAN_FRONTEND=noninteractive

debs=(/vagrant/dist/fleetwave-agent_*_all.deb)
if [[ ! -f ${debs[0]} ]] || ((${#debs[@]} != 1)); then
    echo "app.sh: expected one /vagrant/dist/fleetwave-agent_*.deb; run packaging/vagrant/prepare, then vagrant rsync" >&2
    exit 1
fi
for f in release.pub deploy_key.pub; do
    [[ -f /vagrant/.vagrant-lab/$f ]] || { echo "app.sh: /vagrant/.vagrant-lab/$f missing; run packaging/vagrant/prepare" >&2; exit 1; }
done
apt-get update -qq
# apt resolves the package's Depends (Debian's python3-* libraries, adduser).
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
    "${debs[0]}" socat >/dev/null

install -d -m 0755 /etc/fleetwave/keys
install -m 0644 /vagrant/.vagrant-lab/release.pub /etc/fleetwave/keys/release.pub
cat >/etc/fleetwave/agent.yaml <<YAML
# Written by packaging/vagrant/app.sh for $name ($az, $cell).
root: /var/lib/fleetwave
trusted_keys: [/etc/fleetwave/keys/release.pub]
exporter:
  listen: $ip            # Prometheus on the mon VM scrapes it
  port: 9731
app:
  metrics:
    prometheus:                 # the demo app's own endpoint and metric names
      url: http://127.0.0.1:8080/metrics
      requests_metric: demo_http_requests_total
      duration_metric: demo_http_request_duration_seconds
      status_label: code
  process: {pid_file: /var/lib/fleetwave/run/demo-app.pid}
YAML

# The controller's deploy key may run nothing but the agent's RPC entry point.
install -d -m 0700 -o fleetwave -g fleetwave /var/lib/fleetwave/.ssh
printf 'command="/usr/bin/fleetwave-agent rpc",restrict %s\n' \
    "$(cat /vagrant/.vagrant-lab/deploy_key.pub)" >/var/lib/fleetwave/.ssh/authorized_keys
chown fleetwave:fleetwave /var/lib/fleetwave/.ssh/authorized_keys
chmod 0600 /var/lib/fleetwave/.ssh/authorized_keys

systemctl restart fleetwave-agent
systemctl is-active --quiet fleetwave-agent
echo "app.sh: $name ready: agent $(fleetwave-agent --version), exporter http://$ip:9731/metrics"
