# shellcheck shell=bash
# Real nodes beside the kwok ones: a kubelet (built with the control plane)
# against its own containerd and runc (Debian's packages), so the operator
# runs as users run it, as a pod from its image. Sourced by up.sh (prepare,
# start), down.sh (stop) and image.sh (import); every path is under the
# cluster's DIR, every port is picked free, so clusters never share state.
#
# Each node N (1, 2, ...) is named hgo-node-N, with an address of its own,
# 10.255.T.(N+1) on the loopback interface (T from the cluster's DIR; the
# kubelet refuses 127.0.0.0/8). There is no kube-proxy here, so pods that must
# reach the API server use the host's network (hostNetwork) and 127.0.0.1;
# one address per node lets two such pods listen on the same port, as they
# would on two machines.
# A bridge network (CNI plugins) is configured too, so the runtime reports its
# network ready and the node is Ready. Nodes carry the taint
# healing-guard.io/real-node=true:NoSchedule, so the simulated stack stays on
# the kwok nodes and only pods that tolerate it (the operator's) come here.

REAL_NODE_TAINT=healing-guard.io/real-node
CNI_BIN_DIR=/usr/lib/cni
# The sandbox ("pause") image every pod starts with, built here from the
# Kubernetes module's own pause.c: nothing is pulled.
PAUSE_IMAGE=hgo.local/pause:$K8S_VERSION

node_dir() { echo "$DIR/node-$1"; }
node_name() { echo "hgo-node-$1"; }
cluster_tag() { printf '%s' "$DIR" | cksum | awk '{print $1 % 250}'; }
node_ip() { echo "10.255.$(cluster_tag).$(( $1 + 1 ))"; }
node_socket() { echo "$(node_dir "$1")/containerd/containerd.sock"; }

# The Debian packages a real node needs, installed when missing (as root).
install_node_packages() {
  local missing=() p
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
  [ -x "$CNI_BIN_DIR/bridge" ] || missing+=(containernetworking-plugins)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v gcc >/dev/null || missing+=(gcc)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "a real node needs the Debian packages: ${missing[*]} (install them as root)"
    return 1
  fi
  log "installing ${missing[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  for p in "${missing[@]}"; do log "installed $p"; done
}

# The pause image as an OCI archive, cached by Kubernetes version: pause.c
# from the module, linked statically, in a one-layer image.
build_pause_image() {
  local out=$HGO_CACHE/images/pause-$K8S_VERSION.oci.tar
  if [ ! -s "$out" ]; then
    log "building the pause image from k8s.io/kubernetes@$K8S_VERSION build/pause"
    local mod work
    mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    work=$(mktemp -d)
    mkdir -p "$work/rootfs" "$(dirname "$out")"
    gcc -Os -static -Wall -Werror -DVERSION="\"$K8S_VERSION\"" \
      -o "$work/rootfs/pause" "$mod/build/pause/linux/pause.c"
    oci_archive "$work" "$work/rootfs" "$K8S_VERSION" "$out.tmp" \
      --config.entrypoint /pause --config.user 65535:65535
    mv "$out.tmp" "$out"
    rm -rf "$work"
  fi
  echo "$out"
}

# oci_archive WORK ROOTFS TAG OUT [umoci config args...]: a one-layer image
# of ROOTFS as an OCI archive (an OCI layout, tarred), without an engine.
oci_archive() {
  local work=$1 rootfs=$2 tag=$3 out=$4; shift 4
  local layout=$work/layout
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci insert --image "$layout:$tag" --history.created_by "healing-guard-operator cluster scripts" "$rootfs" /
  umoci config --image "$layout:$tag" --os linux --architecture amd64 "$@"
  umoci gc --layout "$layout"
  tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner -cf "$out" .
}

# Before the API server starts: a token per kubelet (user system:node:NAME in
# group system:nodes, for the Node authorizer), and the client certificate
# the API server shows kubelets (for logs and exec).
prepare_real_nodes() { # count
  local n
  for n in $(seq 1 "$1"); do
    echo "$(openssl rand -hex 24),system:node:$(node_name "$n"),system:node:$(node_name "$n"),\"system:nodes\"" \
      >>"$DIR/pki/tokens.csv"
  done
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=hgo-kubelet-client-ca" \
    -keyout "$DIR/pki/kubelet-client-ca.key" -out "$DIR/pki/kubelet-client-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver-kubelet-client" \
    -keyout "$DIR/pki/apiserver-kubelet-client.key" -out "$DIR/pki/apiserver-kubelet-client.csr" 2>/dev/null
  openssl x509 -req -days 30 -in "$DIR/pki/apiserver-kubelet-client.csr" \
    -CA "$DIR/pki/kubelet-client-ca.crt" -CAkey "$DIR/pki/kubelet-client-ca.key" -CAcreateserial \
    -out "$DIR/pki/apiserver-kubelet-client.crt" 2>/dev/null
  chmod 600 "$DIR/pki/"*.key
}

# free_ports COUNT: COUNT distinct free ports on 127.0.0.1 (up.sh takes its own here too).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
}

# After the API server is up: containerd, then the kubelet, per node.
start_real_nodes() { # count
  local count=$1 n
  local pause; pause=$(build_pause_image)
  # The API server asks the kubelets for logs as this user.
  "$KUBECTL" --kubeconfig="$KC" create clusterrolebinding hgo-apiserver-kubelet-client \
    --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client >/dev/null
  for n in $(seq 1 "$count"); do start_real_node "$n" "$pause"; done
  real_nodes_ready() {
    local ready
    ready=$("$KUBECTL" --kubeconfig="$KC" get nodes -l "$REAL_NODE_TAINT=true" -o \
      'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
    [ "$ready" -eq "$count" ]
  }
  wait_for "kubelet-1" 120 real_nodes_ready
}

start_real_node() { # n pause-archive
  local n=$1 pause=$2
  local d; d=$(node_dir "$n")
  local name; name=$(node_name "$n")
  local ip; ip=$(node_ip "$n")
  local sock; sock=$(node_socket "$n")
  mkdir -p "$d/containerd/root" "$d/containerd/state" "$d/kubelet" "$d/pod-logs" \
    "$d/cni/conf" "$d/cni/ipam" "$d/opt"
  local kubelet_port healthz_port
  read -r kubelet_port healthz_port < <(free_ports 2)
  # One bridge and subnet per node and per cluster (clusters may run side by side).
  local tag; tag=$(cluster_tag)
  ip addr replace "$ip/32" dev lo
  cat >"$d/cni/conf/10-hgo.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "hgo-$n",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "hgo$n-$tag",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "10.$((100 + n)).$tag.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  cat >"$d/containerd/config.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine forbids lowering a process's oom_score_adj, even as root:
  # keep what the kubelet asks for at or above containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "$ip"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc || echo /usr/sbin/runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$d/cni/conf"
EOF
  log "starting containerd and kubelet of $name ($ip)"
  start "containerd-$n" "$(command -v containerd)" --config "$d/containerd/config.toml"
  wait_for "containerd-$n" 30 ctr --address "$sock" version
  ctr --address "$sock" -n k8s.io images import --base-name "${PAUSE_IMAGE%%:*}" "$pause" >/dev/null ||
    fail "containerd-$n" "could not import the pause image"
  local image
  for image in ${HGO_NODE_IMAGES:-}; do import_image "$n" "$image" || fail "containerd-$n" "could not import $image"; done

  local token
  token=$(awk -F, -v u="system:node:$name" '$2 == u {print $1}' "$DIR/pki/tokens.csv")
  write_kubeconfig "$d/kubeconfig" "$name" "$token"
  # cgroup v1 on this machine (failCgroupV1: false); each node's pods under a
  # cgroup root of its own.
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: $ip
healthzPort: $healthz_port
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: /$(cgroup_root "$n")
failCgroupV1: false
failSwapOn: false
podLogsDir: $d/pod-logs
maxPods: 20
serializeImagePulls: false
resolvConf: /etc/resolv.conf
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $DIR/pki/kubelet-client-ca.crt
authorization:
  mode: Webhook
registerWithTaints:
- key: $REAL_NODE_TAINT
  value: "true"
  effect: NoSchedule
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  make_cgroup_root "$(cgroup_root "$n")"
  start "kubelet-$n" "$K8S_BIN/kubelet" \
    --config="$d/kubelet.yaml" \
    --kubeconfig="$d/kubeconfig" \
    --root-dir="$d/kubelet" \
    --cert-dir="$d/kubelet/pki" \
    --hostname-override="$name" \
    --node-ip="$ip" \
    --node-labels="$REAL_NODE_TAINT=true" \
    --v=1
}

# The kubelet wants its cgroup root to exist in every cgroup v1 hierarchy; a
# new cpuset gets its parent's CPUs and memory nodes.
make_cgroup_root() { # name
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [ "$(basename "$h")" = unified ] && continue
    mkdir -p "$h/$1"
  done
  if [ -d /sys/fs/cgroup/cpuset/"$1" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/"$1"/cpuset.cpus
    cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/"$1"/cpuset.mems
  fi
}

cgroup_root() { # n: unique per cluster directory
  echo "hgo-$(printf '%s' "$DIR" | cksum | awk '{print $1}')-node-$1"
}

import_image() { # n archive: import an OCI archive; its ref names become NAME:TAG
  local n=$1 archive=$2 base
  # The archive's index names its tag; the repository comes from a file beside it.
  base=$(cat "$archive.repository" 2>/dev/null) || base=hgo.local/unnamed
  ctr --address "$(node_socket "$n")" -n k8s.io images import --base-name "$base" "$archive" >/dev/null
}

# Stop every node's pods while its containerd still runs (a killed shim would
# leave its containers running), then, once the processes are gone, undo the
# mounts and cgroups the nodes made.
stop_real_node_pods() { # n
  local sock ids id
  sock=$(node_socket "$1")
  [ -S "$sock" ] || return 0
  ids=$(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null) || return 0
  for id in $ids; do ctr --address "$sock" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $ids; do
    for _ in $(seq 1 50); do
      ctr --address "$sock" -n k8s.io tasks delete "$id" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

clean_real_nodes() {
  local m n d cg
  # Deepest mounts first.
  awk -v dir="$DIR/" 'index($2, dir) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for d in "$DIR"/node-*; do
    [ -d "$d" ] || continue
    n=${d##*-}
    for cg in /sys/fs/cgroup/*/"$(cgroup_root "$n")"; do
      [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    ip link delete "hgo$n-$(cluster_tag)" 2>/dev/null || true
    ip addr del "$(node_ip "$n")/32" dev lo 2>/dev/null || true
  done
}
