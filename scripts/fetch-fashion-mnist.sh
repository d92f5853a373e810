#!/usr/bin/env bash
# Fashion-MNIST (60,000 + 10,000 labelled 28x28 product images, MIT) from Debian's
# dataset-fashion-mnist package, unpacked without root into datasets/fashion-mnist/ (the idx files
# that `data.source: idx` reads). Idempotent: a second run finds the files and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
       t10k-labels-idx1-ubyte.gz)
if (cd "$target" 2>/dev/null && ls "${files[@]}" >/dev/null 2>&1); then
    echo "fashion-mnist: $target ready"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's lists may be stale or absent on a fresh machine: update once and try again.
(cd "$work" && apt-get download -q dataset-fashion-mnist >/dev/null 2>&1) \
    || { apt-get update -qq && (cd "$work" && apt-get download -q dataset-fashion-mnist >/dev/null); }
dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/root"
mkdir -p "$target"
for file in "${files[@]}"; do
    cp "$work/root/usr/share/datasets/fashion-mnist/$file" "$target/$file"
done
echo "fashion-mnist: $target ready ($(dpkg-deb -f "$work"/dataset-fashion-mnist_*.deb Version))"
