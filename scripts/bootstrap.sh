# Sourced by scripts/test and scripts/demo: installs what fleetwave needs, idempotently.
#   bootstrap_system   Debian packages for the test fleet (needs root the first time)
#   bootstrap_venv     .venv with fleetwave and its dev tools; exports VENV and PATH

FLEETWAVE_APT_PACKAGES=(openssh-server haproxy prometheus socat iproute2 nftables procps util-linux systemd lintian python3-cryptography python3-yaml python3-psutil python3-prometheus-client tmux)

bootstrap_system() {
    local missing=()
    local pkg
    for pkg in "${FLEETWAVE_APT_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) != 0 ]]; then
        echo "fleetwave: need root to install Debian packages: ${missing[*]}" >&2
        echo "  run: sudo apt-get install -y ${missing[*]}" >&2
        return 1
    fi
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

bootstrap_venv() {
    VENV="${FLEETWAVE_VENV:-$PWD/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "==> creating $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    echo "==> pip install -e .[dev]"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev]'
    export VENV
    export PATH="$VENV/bin:$PATH"
}
