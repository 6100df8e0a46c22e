"""Pre-training under infinite compute (Kim, Kotha, Liang, Hashimoto 2025, arXiv 2509.14786), small scale."""
