#!/bin/bash
# Provision the monitoring VM: Prometheus (Debian's) with the kit's scrape config and
# alerting rules (examples/observability/), the agents' targets from
# .vagrant-lab/agents.json, and Grafana (Grafana's apt repository) with the kit's
# dashboard and a Prometheus data source provisioned.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
kit=/vagrant/examples/observability
[[ -f /vagrant/.vagrant-lab/agents.json ]] || { echo "mon.sh: /vagrant/.vagrant-lab/agents.json missing; run packaging/vagrant/prepare" >&2; exit 1; }

apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus ca-certificates curl gpg >/dev/null

install -d -m 0755 /etc/prometheus/targets
install -m 0644 "$kit/prometheus.yml" /etc/prometheus/prometheus.yml
install -m 0644 "$kit/fleetwave-rules.yml" /etc/prometheus/fleetwave-rules.yml
install -m 0644 /vagrant/.vagrant-lab/agents.json /etc/prometheus/targets/agents.json
promtool check config /etc/prometheus/prometheus.yml >/dev/null
systemctl enable prometheus >/dev/null
systemctl restart prometheus

if ! command -v grafana-server >/dev/null; then
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL https://apt.grafana.com/gpg.key | gpg --dearmor >/etc/apt/keyrings/grafana.gpg
    echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" \
        >/etc/apt/sources.list.d/grafana.list
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends grafana >/dev/null
fi
cat >/etc/grafana/provisioning/datasources/fleetwave.yaml <<'YAML'
apiVersion: 1
datasources:
  - {name: Prometheus, type: prometheus, uid: prometheus, url: http://127.0.0.1:9090, isDefault: true}
YAML
cat >/etc/grafana/provisioning/dashboards/fleetwave.yaml <<'YAML'
apiVersion: 1
providers:
  - {name: fleetwave, type: file, options: {path: /var/lib/grafana/dashboards/fleetwave}}
YAML
install -d -m 0755 /var/lib/grafana/dashboards/fleetwave
install -m 0644 "$kit/grafana/fleetwave-dashboard.json" /var/lib/grafana/dashboards/fleetwave/
systemctl enable grafana-server >/dev/null
systemctl restart grafana-server
echo "mon.sh: Prometheus http://192.168.56.11:9090, Grafana http://192.168.56.11:3000 (admin/admin)"
