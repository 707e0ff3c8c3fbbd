#!/usr/bin/env bash
# The idle-connection runs of docs/benchmarks.md at counts this sandbox's open-file limit
# (20,000 per process, with no CAP_SYS_RESOURCE to raise it) does not allow: the same
# binaries, run inside a small virtual machine (qemu with KVM, its own Linux kernel, an
# initramfs and no disk) whose limits are set by its own init. Everything runs in the guest:
# the server, and crier-bench holding the connections over the guest's loopback. One JSON
# line per run is appended to $OUT, as compare.sh does.
#
#   cargo build --release -p crier -p crier-bench
#   (cp -r /work/shared/faye-peer /tmp/faye-peer && cd /tmp/faye-peer && npm install)
#   crates/crier-bench/scripts/idle-vm.sh
#   IDLE_COUNTS="50000" SERVERS=crier crates/crier-bench/scripts/idle-vm.sh
#
# Needs qemu-system-x86_64 and a static busybox (Debian: qemu-system-x86, busybox-static),
# and a kernel: $KERNEL, or else Debian's linux-image-cloud-amd64, fetched with
# `apt-get download` into $CACHE and unpacked there (not installed).
#
# Settings (environment): CRIER, BENCH (binaries), FAYE_DIR (the installed faye-peer),
# OUT (results file), IDLE_COUNTS (default "10000 50000"), SERVERS (default "crier faye"),
# DURATION (seconds to hold the connections, default 10), VM_CPUS (default 2), VM_MEM_MB
# (default 8192), CONSOLE (the guest's console log, default $OUT.console.log), TIMEOUT (seconds for the whole VM run, default 14400), ACCEL (kvm or tcg; default kvm where the CPU allows it), KERNEL, CACHE
# (default /tmp/crier-idle-vm).
set -euo pipefail

CRIER=${CRIER:-target/release/crier}
BENCH=${BENCH:-target/release/crier-bench}
FAYE_DIR=${FAYE_DIR:-/tmp/faye-peer}
OUT=${OUT:-bench-results.jsonl}
IDLE_COUNTS=${IDLE_COUNTS:-10000 50000}
SERVERS=${SERVERS:-crier faye}
DURATION=${DURATION:-10}
VM_CPUS=${VM_CPUS:-2}
VM_MEM_MB=${VM_MEM_MB:-8192}
CACHE=${CACHE:-/tmp/crier-idle-vm}

log() { echo "idle-vm.sh: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "$1 is missing (${2:-})"; exit 1; }; }

need qemu-system-x86_64 "Debian: qemu-system-x86"
need busybox "Debian: busybox-static"
need strip "Debian: binutils"
[ -x "$CRIER" ] && [ -x "$BENCH" ] || { log "build first: cargo build --release -p crier -p crier-bench"; exit 1; }
if [[ " $SERVERS " == *" faye "* ]]; then
    need node "Node.js, for Faye"
    [ -d "$FAYE_DIR/node_modules/faye" ] || { log "no faye-peer installed in $FAYE_DIR"; exit 1; }
fi
# A dynamically linked busybox would need its libraries in the guest too.
if ldd "$(command -v busybox)" >/dev/null 2>&1; then log "busybox must be the static build (busybox-static)"; exit 1; fi

mkdir -p "$CACHE"
if [ -z "${KERNEL:-}" ]; then
    KERNEL=$(ls "$CACHE"/kernel/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
    if [ -z "$KERNEL" ]; then
        log "fetching Debian's linux-image-cloud-amd64 into $CACHE"
        pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
        (cd "$CACHE" && apt-get download "$pkg" >/dev/null) || { log "apt-get download $pkg failed"; exit 1; }
        dpkg -x "$CACHE/${pkg}"_*.deb "$CACHE/kernel"
        KERNEL=$(ls "$CACHE"/kernel/boot/vmlinuz-* | head -n1)
    fi
fi

# Per run, so that two runs at once do not share files.
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
CONSOLE=${CONSOLE:-$OUT.console.log}
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp,opt}
cp "$(command -v busybox)" "$ROOT/bin/busybox"
# Stripped copies: the debug info would only take guest memory.
strip -o "$ROOT/opt/crier" "$CRIER"
strip -o "$ROOT/opt/crier-bench" "$BENCH"
bins=("$ROOT/opt/crier" "$ROOT/opt/crier-bench")
if [[ " $SERVERS " == *" faye "* ]]; then
    cp "$(readlink -f "$(command -v node)")" "$ROOT/opt/node"
    cp -r "$FAYE_DIR" "$ROOT/opt/faye-peer"
    bins+=("$ROOT/opt/node")
fi
# The shared libraries the binaries load, at the paths the loader looks for them.
for lib in $(ldd "${bins[@]}" | awk '/=> \// { print $3 } /^[[:space:]]+\// { print $1 }' | sort -u); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done

# KVM where the CPU offers virtualisation to this machine; otherwise qemu's emulation
# (TCG), much slower: the memory figures hold, the handshake rates mean nothing then.
# (A /dev/kvm without vmx or svm in /proc/cpuinfo, as in this sandbox, hangs the guest.)
if [ -z "${ACCEL:-}" ]; then
    ACCEL=tcg
    [ -w /dev/kvm ] && grep -q -w -E 'vmx|svm' /proc/cpuinfo && ACCEL=kvm
fi
case $ACCEL in
    kvm) accel=(-accel kvm -cpu host) ;;
    *) accel=(-accel tcg,thread=multi -cpu max) ;;
esac

cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ip link set lo up
# What a host tuned for many connections would set: enough ports and backlog for the ramp,
# and an open-file limit above the connection count (server and load generator each).
sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.core.somaxconn=4096 \
    net.ipv4.tcp_max_syn_backlog=4096 fs.nr_open=1048576 fs.file-max=2097152
ulimit -n 1000000
cd /opt
echo "guest: \$(nproc) cpus, \$(grep MemTotal /proc/meminfo)"
port=18001
for n in $IDLE_COUNTS; do
    for server in $SERVERS; do
        if [ "\$server" = crier ]; then
            ./crier serve --listen 127.0.0.1:\$port >/tmp/crier.log 2>&1 &
        else
            (cd faye-peer && exec ../node server.js \$port) >/tmp/faye.log 2>&1 &
        fi
        pid=\$!
        # Ready when it says so (busybox's nc has no -z); node starts slowly when emulated.
        for i in \$(seq 1200); do grep -q -E 'crier listening|faye peer on' /tmp/\$server.log && break; sleep 0.1; done
        echo "guest: \$server/single/idle-\$n"
        # At least 10 handshakes/s under emulation, within crier-bench's most (an hour).
        setup=\$((n / 10 + 120)); [ \$setup -gt 3600 ] && setup=3600
        ./crier-bench --label "\$server/vm-$ACCEL/idle-\$n" --json --mode idle --url http://127.0.0.1:\$port/faye \
            --clients \$n --duration $DURATION --setup-timeout \$setup --server-pid \$pid 2>/tmp/bench.err | sed 's/^/RESULT /'
        # What the load generator and the server said, if anything went wrong.
        tail -n 5 /tmp/bench.err | sed 's/^/guest: bench: /'
        grep -v -i ' info ' /tmp/\$server.log | tail -n 5 | sed 's/^/guest: server: /'
        kill \$pid; wait \$pid 2>/dev/null
        port=\$((port + 1))
    done
done
poweroff -f
EOF
chmod +x "$ROOT/init"

(cd "$ROOT" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initrd.gz"
log "booting $(basename "$KERNEL") ($ACCEL) with $VM_CPUS cpus, $VM_MEM_MB MiB; runs: $IDLE_COUNTS x ($SERVERS); console: $CONSOLE"
# The whole console is kept (a kernel or init failure shows only there); result lines are
# appended to $OUT, the guest's progress lines shown.
timeout "${TIMEOUT:-14400}" qemu-system-x86_64 "${accel[@]}" -smp "$VM_CPUS" -m "$VM_MEM_MB" -no-reboot \
    -display none -serial stdio -monitor none -nic none \
    -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -append "console=ttyS0 quiet panic=-1" |
    tr -d '\r' | tee "$CONSOLE" | while IFS= read -r line; do
        case $line in
            RESULT\ *)
                echo "${line#RESULT }" | tee -a "$OUT"
                case $line in *'"errors":{}'*) ;; *) log "that run had errors (see its \"errors\")" ;; esac
                ;;
            guest:*) log "$line" ;;
        esac
    done
runs=$(($(wc -w <<<"$IDLE_COUNTS") * $(wc -w <<<"$SERVERS")))
got=$(grep -c '^RESULT ' "$CONSOLE" || true)
if [ "$got" -ne "$runs" ]; then
    log "$got of $runs runs reported; the console is in $CONSOLE"
    exit 1
fi
