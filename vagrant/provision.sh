#!/usr/bin/env bash
# Provisions one host of the Vagrant pair with the same host set-up as the local lab.
#
#   provision.sh NAME ADDRESS GUEST_BRIDGE_ADDR NFS_SERVER PEERS
#   e.g. provision.sh lab1 192.168.77.11 10.78.0.1/24 192.168.77.11 lab1=192.168.77.11,lab2=192.168.77.12
#
# Steps: the lab's Debian packages (QEMU from backports) via labmig/lab/host-packages.sh;
# what a real host adds (systemd's libvirtd, NFS); labmig in a virtualenv; NFS shared
# storage exported by the first host and mounted at the same path on both; libvirtd
# configuration, the guest build and the guest bridge via `labmig lab host-setup`;
# libvirtd listening on TCP; root ssh keys between the hosts. Safe to run again.
set -euo pipefail

NAME=$1
ADDRESS=$2
BRIDGE_ADDR=$3
NFS_SERVER=$4
PEERS=$5
REPO=${LABMIG_REPO:-/labmig}
LAB=${LABMIG_LAB:-labmig}
SHARED=/var/lib/labmig/$LAB/shared
EXPORT=/srv/labmig-shared
VENV=/opt/labmig
export DEBIAN_FRONTEND=noninteractive

say() { echo "provision $NAME: $*"; }

say "lab packages"
bash "$REPO/labmig/lab/host-packages.sh"

say "real-host packages"
extra=(libvirt-daemon-system nfs-common python3-venv python3-dev libxxhash-dev)
[[ $NAME == lab1 ]] && extra+=(nfs-kernel-server)
apt-get install -y -qq --no-install-recommends "${extra[@]}"

say "labmig"
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e "${REPO}[lab]"
ln -sf "$VENV/bin/labmig" /usr/local/bin/labmig

say "NFS shared storage"
if [[ $NAME == lab1 ]]; then
    mkdir -p "$EXPORT"
    mkdir -p /etc/exports.d
    echo "$EXPORT ${ADDRESS%.*}.0/24(rw,sync,no_root_squash,no_subtree_check)" >/etc/exports.d/labmig.exports
    systemctl enable --now nfs-server
    exportfs -ra
fi
mkdir -p "$SHARED"
if ! grep -qs " $SHARED nfs" /proc/mounts; then
    # Both hosts, the exporter included, use the NFS mount: libvirt then knows the storage is shared.
    grep -qs " $SHARED " /etc/fstab || echo "$NFS_SERVER:$EXPORT $SHARED nfs4 defaults,_netdev 0 0" >>/etc/fstab
    mount "$SHARED"
fi

say "libvirtd configuration, guest build, guest bridge"
iface=$(ip -o -4 addr show | awk -v a="$ADDRESS" '{split($4, p, "/"); if (p[1] == a) print $2}' | head -n1)
if [[ -n $iface && $iface != br0 ]]; then
    labmig lab host-setup --name "$LAB" --host "$NAME" --address "$ADDRESS" \
        --bridge-interface "$iface" --bridge-address "$ADDRESS/24"
else
    labmig lab host-setup --name "$LAB" --host "$NAME" --address "$ADDRESS"
fi
ip addr replace "$BRIDGE_ADDR" dev br0

say "libvirtd on TCP (no auth, the private network only)"
systemctl stop libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket 2>/dev/null || true
systemctl enable --now libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd-tcp.socket
systemctl restart libvirtd.service

say "hosts and ssh keys"
IFS=, read -ra pairs <<<"$PEERS"
for pair in "${pairs[@]}"; do
    peer=${pair%%=*}
    ip=${pair#*=}
    grep -qE "^${ip}[[:space:]]" /etc/hosts || echo "$ip $peer" >>/etc/hosts
done
keys=$SHARED/.ssh-pair
install -d -m 700 "$keys" /root/.ssh
[[ -f $keys/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N "" -C labmig-pair -f "$keys/id_ed25519"
install -m 600 "$keys/id_ed25519" /root/.ssh/id_ed25519
install -m 644 "$keys/id_ed25519.pub" /root/.ssh/id_ed25519.pub
touch /root/.ssh/authorized_keys
grep -qF "$(cat "$keys/id_ed25519.pub")" /root/.ssh/authorized_keys || cat "$keys/id_ed25519.pub" >>/root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keyscan -t ed25519 "$ADDRESS" 2>/dev/null | sed "s/^$ADDRESS/$NAME,$ADDRESS/" >"$keys/known_hosts.$NAME"
cat "$keys"/known_hosts.* >/root/.ssh/known_hosts 2>/dev/null || true
if [[ $NAME != lab1 ]]; then
    # lab1 was provisioned before this host's key existed: refresh its known_hosts.
    ssh -o BatchMode=yes root@lab1 "cat $keys/known_hosts.* >/root/.ssh/known_hosts" || say "could not refresh lab1's known_hosts"
fi

say "done: libvirt URI qemu+tcp://$NAME/system, shared images $SHARED"
