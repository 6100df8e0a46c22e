"""The offline text corpus (core.data.corpus). Variants:
  smoke    a few MB of absl / ml_collections / stdlib source, 2k vocab, builds in seconds;
  default  the installed packages of core.data.corpus.DEFAULT_PACKAGES + the stdlib, 32k BPE;
  large    default + Linux kernel C from an extracted linux-source-6.1 at kernel_dir.
Any variant takes prose_dirs=DIR[:DIR...] (an out-of-domain `prose` eval split) and max_bytes / max_files caps,
e.g. `configs/data/corpus.py:large,kernel_dir=/scratch/linux-source-6.1,prose_dirs=/scratch/x/usr/share/dictd`.
"""

from core.config import parse_arg
from core.data.corpus import corpus_config


def get_config(arg=None):
    args = parse_arg(arg, variant="default", smoke=False, kernel_dir="", prose_dirs="", max_bytes=0, max_files=0)
    caps = dict(prose_dirs=[d for d in args.prose_dirs.split(":") if d])
    caps.update({key: args[key] for key in ("max_bytes", "max_files") if args[key]})
    if args.smoke or args.variant == "smoke":
        return corpus_config(**{**dict(packages=["absl", "ml_collections"], include_stdlib=True,
                                       max_bytes=3_000_000, max_file_bytes=200_000, validation_percent=5,
                                       vocab_size=2048), **caps})
    if args.variant == "large":
        return corpus_config(kernel_dir=args.kernel_dir or "data/sources/linux-source-6.1", **caps)
    if args.variant != "default":
        raise ValueError(f"Unknown corpus variant {args.variant!r}; use smoke, default or large.")
    return corpus_config(**caps)
