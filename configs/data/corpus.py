"""The offline text corpus. Variants: smoke (a few MB, 2k vocab, seconds), default (installed packages +
stdlib, 32k BPE), large (default + Linux kernel C from an extracted linux-source-6.1 at kernel_dir)."""

from core.config import parse_arg
from core.data.corpus import corpus_config


def get_config(arg=None):
    args = parse_arg(arg, variant="default", smoke=False, kernel_dir="")
    if args.smoke or args.variant == "smoke":
        return corpus_config(packages=["absl", "ml_collections"], include_stdlib=True, max_bytes=3_000_000,
                             max_file_bytes=200_000, validation_percent=5, vocab_size=2048)
    if args.variant == "large":
        return corpus_config(kernel_dir=args.kernel_dir or "data/sources/linux-source-6.1")
    if args.variant != "default":
        raise ValueError(f"Unknown corpus variant {args.variant!r}; use smoke, default or large.")
    return corpus_config()
