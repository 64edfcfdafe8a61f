#!/usr/bin/env bash
# Local sandbox: N Debian 12 hosts with real systemd and real sshd on 127.0.0.1:<base+i>,
# shaped like the production VPS (an unprivileged `linuxuser` login with sudo).
#
#   scripts/sandbox.sh up       build the image once, start the hosts, write inventory/sandbox/hosts.yml
#   scripts/sandbox.sh down     remove every sandbox container and the egress rule
#   scripts/sandbox.sh status   one line per host
#   scripts/sandbox.sh image    only build the image (molecule scenarios use it)
#
# Settings (environment): SANDBOX_HOSTS (default 3), SANDBOX_BASE_PORT (default 2200: hosts on 2201..),
# SANDBOX_DIR (default .sandbox; podman storage, ssh key, image build log live here),
# SANDBOX_NAME (default virtuoso-sandbox; a second name gives a second, independent sandbox) and
# SANDBOX_INVENTORY (default inventory/sandbox/hosts.yml; the file is self-contained) and
# SANDBOX_APP_TMPFS (e.g. 600m: /home/linuxuser/trading becomes a tmpfs of that size, so tests can
# run a host out of disk space; default: no tmpfs).
set -euo pipefail

readonly REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly SANDBOX_HOSTS=${SANDBOX_HOSTS:-3}
readonly SANDBOX_BASE_PORT=${SANDBOX_BASE_PORT:-2200}
readonly SANDBOX_DIR=$(realpath -m "${SANDBOX_DIR:-$REPO_ROOT/.sandbox}")
# Bump the tag whenever the image recipe below changes, so an old image is never reused.
readonly IMAGE=localhost/virtuoso-sandbox:bookworm-3
readonly SANDBOX_NAME=${SANDBOX_NAME:-virtuoso-sandbox}
readonly LABEL_KEY=io.virtuoso.sandbox
readonly LABEL=$LABEL_KEY=$SANDBOX_NAME
readonly NAME_PREFIX=$SANDBOX_NAME-
readonly PODMAN_SUBNET=10.88.0.0/16
readonly EGRESS_RULE=(FORWARD -s "$PODMAN_SUBNET" ! -d "$PODMAN_SUBNET" -m comment --comment virtuoso-sandbox-no-egress -j REJECT)
readonly INVENTORY=$(realpath -m "${SANDBOX_INVENTORY:-$REPO_ROOT/inventory/sandbox/hosts.yml}")
readonly SSH_KEY=$SANDBOX_DIR/ssh/id_ed25519
# Everything the roles install from apt lives in the image: the hosts have no network during tests.
readonly IMAGE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,python3-apt,openssh-server,sudo,procps,iproute2,acl,ca-certificates

die() { printf 'sandbox: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'sandbox: %s\n' "$*"; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "the sandbox needs root (podman, iptables, debootstrap): run as root, e.g. 'sudo make sandbox-up'"
}

require_tools() {
  local missing=()
  for tool in podman runc debootstrap iptables ssh ssh-keygen; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run 'make setup' (installs them with apt-get)"
}

podman_env() {
  # Project-owned podman config: runc (crun rejects hybrid cgroups here) and explicit ulimits
  # (podman's default nofile needs CAP_SYS_RESOURCE, which this kind of machine does not grant).
  local nofile
  nofile=$(ulimit -Hn)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; then nofile=1048576; fi
  mkdir -p "$SANDBOX_DIR/containers/storage" "$SANDBOX_DIR/containers/run"
  cat >"$SANDBOX_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$SANDBOX_DIR/containers/storage"
runroot = "$SANDBOX_DIR/containers/run"
EOF
  cat >"$SANDBOX_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_STORAGE_CONF=$SANDBOX_DIR/storage.conf CONTAINERS_CONF=$SANDBOX_DIR/containers.conf
}

apt_mirror() {
  local mirror
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1 || true)
  echo "${mirror:-http://deb.debian.org/debian}"
}

customise_rootfs() {
  local rootfs=$1
  : >"$rootfs/etc/machine-id" # empty: systemd makes a unique id per container boot
  rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/var/cache/apt/archives/*.deb
  echo localhost >"$rootfs/etc/hostname" # debootstrap copies the build machine's name
  # Timers and gettys that would reach the network or fight the container runtime.
  for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
    e2scrub_reap.service getty@tty1.service systemd-pstore.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  rm -f "$rootfs"/etc/systemd/system/timers.target.wants/*.timer \
    "$rootfs/etc/systemd/system/getty.target.wants/getty@tty1.service"
  # Host keys are made per container at first start, never baked into the image.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$rootfs/etc/systemd/system/ssh.service.d/10-hostkeys.conf"
  printf 'PasswordAuthentication no\nPermitRootLogin no\n' >"$rootfs/etc/ssh/sshd_config.d/10-sandbox.conf"
  # The VPS shape: an unprivileged login user with passwordless sudo.
  chroot "$rootfs" useradd --create-home --shell /bin/bash linuxuser
  install -d -m 0700 -o 1000 -g 1000 "$rootfs/home/linuxuser/.ssh"
  printf 'linuxuser ALL=(ALL) NOPASSWD:ALL\n' >"$rootfs/etc/sudoers.d/linuxuser"
  chmod 0440 "$rootfs/etc/sudoers.d/linuxuser"
}

build_image() {
  podman image exists "$IMAGE" && return 0
  local rootfs=$SANDBOX_DIR/rootfs mirror
  mirror=$(apt_mirror)
  say "building $IMAGE with debootstrap from $mirror (about a minute, once)"
  rm -rf "$rootfs"
  if ! debootstrap --variant=minbase --include="$IMAGE_PACKAGES" bookworm "$rootfs" "$mirror" \
    >"$SANDBOX_DIR/debootstrap.log" 2>&1; then
    tail -20 "$SANDBOX_DIR/debootstrap.log" >&2
    die "debootstrap failed (log: $SANDBOX_DIR/debootstrap.log): check that apt can reach $mirror"
  fi
  customise_rootfs "$rootfs"
  tar --numeric-owner -C "$rootfs" -c . |
    podman import --change 'CMD ["/lib/systemd/systemd"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$IMAGE" >/dev/null
  rm -rf "$rootfs"
}

host_name() { echo "${NAME_PREFIX}$1"; }
# The default sandbox's hosts are sandbox1..N; another SANDBOX_NAME's hosts are <name>1..N.
inventory_name() { if [ "$SANDBOX_NAME" = virtuoso-sandbox ]; then echo "sandbox$1"; else echo "$SANDBOX_NAME$1"; fi; }
host_port() { echo $((SANDBOX_BASE_PORT + $1)); }

port_busy() { ss -Htln "sport = :$1" | grep -q .; }

container_running() {
  [ "$(podman inspect --format '{{.State.Running}}' "$1" 2>/dev/null || true)" = true ]
}

start_host() {
  local i=$1 name port
  name=$(host_name "$i")
  port=$(host_port "$i")
  if container_running "$name"; then return 0; fi
  podman rm -f "$name" >/dev/null 2>&1 || true
  port_busy "$port" && die "port 127.0.0.1:$port is already in use by another program: free it, or pick other ports with SANDBOX_BASE_PORT=<n> (hosts use n+1..n+$SANDBOX_HOSTS)"
  local extra=()
  [ -z "${SANDBOX_APP_TMPFS:-}" ] ||
    extra+=(--mount "type=tmpfs,destination=/home/linuxuser/trading,tmpfs-size=$SANDBOX_APP_TMPFS,tmpfs-mode=0755")
  podman run -d --name "$name" --hostname "$(inventory_name "$i")" --label "$LABEL" --systemd=always \
    -p "127.0.0.1:$port:22" "${extra[@]}" \
    -v "$SSH_KEY.pub:/home/linuxuser/.ssh/authorized_keys:ro" \
    "$IMAGE" >/dev/null
}

wait_ready() {
  local i=$1 name port state=""
  name=$(host_name "$i")
  port=$(host_port "$i")
  for _ in $(seq 300); do
    state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.2
  done
  case "$state" in running | degraded) ;; *) die "$name: systemd did not come up (state '$state'); see 'podman logs $name'" ;; esac
  for _ in $(seq 100); do
    ssh_host "$port" true 2>/dev/null && return 0
    sleep 0.2
  done
  die "$name: sshd on 127.0.0.1:$port does not accept the sandbox key; see 'podman exec $name journalctl -u ssh'"
}

ssh_host() {
  local port=$1
  shift
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=3 \
    -i "$SSH_KEY" -p "$port" linuxuser@127.0.0.1 "$@"
}

block_egress() {
  # Podman's firewall plugin puts its own ACCEPT jump at the top of FORWARD whenever a container
  # starts, so the rule is (re)inserted after the hosts are up, as the first rule of the chain.
  unblock_egress
  iptables -I "${EGRESS_RULE[0]}" 1 "${EGRESS_RULE[@]:1}"
}

unblock_egress() {
  while iptables -D "${EGRESS_RULE[@]}" 2>/dev/null; do :; done
}

write_inventory() {
  local tmp
  mkdir -p "$(dirname "$INVENTORY")"
  tmp=$(mktemp "$INVENTORY.XXXXXX")
  {
    echo "---"
    echo "# Generated by scripts/sandbox.sh up — do not edit; 'make sandbox-down' removes it."
    echo "all:"
    echo "  children:"
    echo "    virtuoso:"
    echo "      hosts:"
    for i in $(seq "$SANDBOX_HOSTS"); do
      echo "        $(inventory_name "$i"):"
      echo "          ansible_port: $(host_port "$i")"
      echo "          virtuoso_sandbox_container: $(host_name "$i")"
    done
    echo "      vars:"
    echo "        ansible_host: 127.0.0.1"
    echo "        ansible_user: linuxuser"
    echo "        ansible_become: true"
    echo "        ansible_python_interpreter: /usr/bin/python3"
    echo "        ansible_ssh_private_key_file: $SSH_KEY"
    echo "        # Each sandbox host makes fresh SSH host keys when it starts: known_hosts cannot pin them."
    echo "        ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    echo "        ansible_host_key_checking: false"
    echo "        virtuoso_inventory_hint: the sandbox is not running or not reachable; run \`make sandbox-up\`"
  } >"$tmp"
  if cmp -s "$tmp" "$INVENTORY"; then rm -f "$tmp"; else mv "$tmp" "$INVENTORY"; fi
}

remove_extra_hosts() {
  # Hosts beyond SANDBOX_HOSTS from an earlier, larger sandbox.
  local name index
  for name in $(podman ps -a --filter "label=$LABEL" --format '{{.Names}}'); do
    index=${name#"$NAME_PREFIX"}
    if ! [[ "$index" =~ ^[0-9]+$ ]] || [ "$index" -gt "$SANDBOX_HOSTS" ]; then
      podman rm -f -t 5 "$name" >/dev/null
    fi
  done
}

cmd_up() {
  [[ "$SANDBOX_HOSTS" =~ ^[1-9][0-9]?$ ]] || die "SANDBOX_HOSTS must be a number from 1 to 99, got '$SANDBOX_HOSTS'"
  [[ "$SANDBOX_BASE_PORT" =~ ^[0-9]+$ ]] && [ "$SANDBOX_BASE_PORT" -ge 1024 ] && [ "$((SANDBOX_BASE_PORT + SANDBOX_HOSTS))" -le 65535 ] ||
    die "SANDBOX_BASE_PORT must be a number from 1024 to $((65535 - SANDBOX_HOSTS)), got '$SANDBOX_BASE_PORT'"
  require_root
  require_tools
  podman_env
  mkdir -p "$SANDBOX_DIR/ssh"
  [ -f "$SSH_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C virtuoso-sandbox -f "$SSH_KEY"
  build_image
  remove_extra_hosts
  for i in $(seq "$SANDBOX_HOSTS"); do start_host "$i"; done
  block_egress
  for i in $(seq "$SANDBOX_HOSTS"); do wait_ready "$i"; done
  write_inventory
  say "$SANDBOX_HOSTS host(s) up: ssh -i $SSH_KEY -p $(host_port 1) linuxuser@127.0.0.1 (inventory: $INVENTORY)"
}

cmd_down() {
  require_root
  if command -v podman >/dev/null; then
    podman_env
    local names
    names=$(podman ps -a --filter "label=$LABEL" --format '{{.Names}}')
    [ -z "$names" ] || podman rm -f -t 5 $names >/dev/null
    # The egress rule covers every sandbox: it goes with the last one.
    if [ -z "$(podman ps -a --filter "label=$LABEL_KEY" --format '{{.Names}}')" ] && command -v iptables >/dev/null; then
      unblock_egress
    fi
  elif command -v iptables >/dev/null; then
    unblock_egress
  fi
  rm -f "$INVENTORY"
  say "down: $SANDBOX_NAME removed"
}

cmd_image() {
  require_root
  require_tools
  podman_env
  build_image
  say "image $IMAGE ready"
}

cmd_status() {
  require_tools
  podman_env
  podman ps -a --filter "label=$LABEL" --format '{{.Names}}  {{.Status}}  {{.Ports}}'
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  image) cmd_image ;;
  *) die "usage: $0 up|down|status|image" ;;
esac
