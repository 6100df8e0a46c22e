#!/usr/bin/env bash
# Optional larger corpus sources from Debian (not needed by CI): Linux 6.1 kernel C, Python docs, WordNet.
#   bash launch/fetch_offline_sources.sh data/sources
# then: python -m launch.build_corpus --config configs/data/corpus.py:large,kernel_dir=data/sources/linux-source-6.1
set -euo pipefail
dest=${1:-data/sources}
mkdir -p "$dest/debs" && cd "$dest/debs"
apt-get download linux-source-6.1 python3.11-doc dict-wn
for deb in *.deb; do dpkg -x "$deb" ../extracted; done
cd ..
tar xJf extracted/usr/src/linux-source-6.1.tar.xz
echo "kernel tree: $PWD/linux-source-6.1; prose: $PWD/extracted/usr/share/doc/python3.11/html/_sources $PWD/extracted/usr/share/dictd"
