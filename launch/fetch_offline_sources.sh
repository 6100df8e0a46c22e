#!/usr/bin/env bash
# Optional larger corpus sources from Debian bookworm (not needed by CI; needs apt sources and network once):
# Linux 6.1 kernel C (the `large` variant) and English prose for the out-of-domain `prose` eval split.
#   bash launch/fetch_offline_sources.sh /scratch/sources
# Debian replaces these .debs with security updates: the printed versions and the corpus manifest's sha256
# identify what was built.
set -euo pipefail
dest=$(mkdir -p "${1:-data/sources}" && cd "${1:-data/sources}" && pwd)
mkdir -p "$dest/debs" "$dest/extracted"
cd "$dest/debs"
apt-get download linux-source-6.1 python3.11-doc dict-wn
for deb in *.deb; do
  dpkg-deb -f "$deb" Package Version | paste -sd' '
  dpkg -x "$deb" "$dest/extracted"
done
cd "$dest"
[ -d linux-source-6.1 ] || tar xJf extracted/usr/src/linux-source-6.1.tar.xz
cat <<MSG
kernel tree: $dest/linux-source-6.1
prose dirs:  $dest/extracted/usr/share/doc/python3.11/html/_sources:$dest/extracted/usr/share/dictd
build:       python -m launch.build_corpus --out data/corpus_large \\
  --config configs/data/corpus.py:large,kernel_dir=$dest/linux-source-6.1,prose_dirs=$dest/extracted/usr/share/doc/python3.11/html/_sources:$dest/extracted/usr/share/dictd
MSG
