#!/bin/sh
# Build a minimal container image (FROM scratch) from one dynamically linked
# binary and the shared libraries `ldd` lists for it, with `podman import`.
# No registry and no base image are needed.
#
#   deploy/build-image.sh IMAGE BINARY [podman-import-option...]
#
# Given as an absolute path, the binary keeps that path in the image; given as
# a relative one, it goes to /usr/local/bin/NAME. Examples (run as root on the
# machine that runs the containers):
#
#   # idlegate itself, for deploy/quadlet:
#   deploy/build-image.sh localhost/idlegate:latest target/release/idlegate \
#       --change 'ENTRYPOINT ["/usr/local/bin/idlegate"]'
#
#   # a stand-in for docker.io/library/caddy:2.6 from Debian's caddy package
#   # (apt-get install caddy), for deploy/tidings:
#   deploy/build-image.sh docker.io/library/caddy:2.6 /usr/bin/caddy \
#       --change 'ENV XDG_CONFIG_HOME=/config' --change 'ENV XDG_DATA_HOME=/data' \
#       --change 'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]'
#
# IMAGE_DIRS (absolute paths, separated by spaces) are made empty in the image:
# the official Caddy image has /config and /data, where Caddy keeps its state.
set -eu
if [ $# -lt 2 ]; then
	echo "usage: $0 IMAGE BINARY [podman-import-option...]" >&2
	exit 2
fi
image=$1 path=$2 bin=$(readlink -f "$2")
case $path in /*) ;; *) path=/usr/local/bin/$(basename "$path") ;; esac
shift 2
[ -x "$bin" ] || { echo "$0: $bin is not an executable file" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/tmp" "$root/etc" "$root$(dirname "$path")"
for dir in ${IMAGE_DIRS:-}; do
	case $dir in /*) mkdir -p "$root$dir" ;; *) echo "$0: IMAGE_DIRS: $dir is not absolute" >&2; exit 2 ;; esac
done
chmod 1777 "$root/tmp"
cp "$bin" "$root$path"
# The libraries and the loader, each at the path the binary looks for it
# (a library found through a symlink is copied to the symlink's path).
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
while read -r lib; do
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
# Numeric users work without these; names like "nobody" need them.
printf 'root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

tar -C "$root" -c . | podman import --quiet "$@" - "$image" >/dev/null
echo "built $image from $bin:"
podman image ls --format '  {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
