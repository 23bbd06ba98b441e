"""The command line at scale: a >= 50M-token corpus, one epoch, streamed.

Builds the corpus from the shared data (text8 prefix, WikiText-2, PTB,
repeated), trains one epoch of BidirMoE with ``bidirmoe train`` and the same
with the Python API, each in its own subprocess (wall time of vocabulary +
training), and prints words/s, the CLI/API ratio and each run's peak RSS
against the target ``1.5 x parameter bytes + 300 MB``. Peak RSS is each
process's own high-water mark (VmHWM, see ``_data.peak_rss_bytes``), also
given right after its imports.

    python benches/bench_cli_scale.py               # 50M tokens, BidirMoE, 1 epoch
    python benches/bench_cli_scale.py --tokens 100000000 --model cbow
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import measured_module_command  # noqa: E402
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
SOURCES = [os.path.join(SHARED, "text8", "text8_prefix.gz"), os.path.join(SHARED, "wikitext-2", "wiki.train.tokens"),
           os.path.join(SHARED, "ptb", "ptb.train.txt")]

API = r"""
import json, sys, time
sys.path.insert(0, sys.argv[5])
from _data import peak_rss_bytes
from bidirmoe import BidirMoE, Word2Vec
rss_import = peak_rss_bytes()
path, model, dim, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = time.perf_counter()
kw = dict(corpus_file=path, vector_size=dim, epochs=1, workers=threads)
m = BidirMoE(**kw).train() if model == "bidirmoe" else Word2Vec(sg=int(model == "skipgram"), **kw)
print(json.dumps({"seconds": time.perf_counter() - t, "words": m.corpus_total_words, "rss": peak_rss_bytes(),
                  "rss_import": rss_import}))
"""

# Peak RSS of a process that only imports the CLI module (the floor under any command).
CLI_IMPORT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from _data import peak_rss_bytes
import bidirmoe.cli
print(peak_rss_bytes())
"""


def build_corpus(path: str, tokens: int) -> int:
    """Write >= tokens words (1000-word lines), streaming the sources in rounds."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        while n < tokens:
            for src in SOURCES:
                opener = gzip.open if src.endswith(".gz") else open
                with opener(src, "rt", encoding="utf-8") as f:
                    buf = []
                    for line in f:
                        buf.extend(line.split())
                        while len(buf) >= 1000:
                            out.write(" ".join(buf[:1000]) + "\n")
                            del buf[:1000]
                            n += 1000
                    if buf:
                        out.write(" ".join(buf) + "\n")
                        n += len(buf)
                if n >= tokens:
                    break
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=50_000_000)
    ap.add_argument("--model", default="bidirmoe", choices=["bidirmoe", "cbow", "skipgram"])
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None, help="where to write the corpus (default: a temp dir)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_cli_", dir=args.dir)
    corpus = os.path.join(tmp, "corpus.txt")
    t = time.perf_counter()
    n = build_corpus(corpus, args.tokens)
    print(f"corpus: {n:,} tokens, {os.path.getsize(corpus) / 2**20:.0f} MiB, built in {time.perf_counter() - t:.0f}s",
          flush=True)

    out = os.path.join(tmp, "vectors.bin")
    rss_file = os.path.join(tmp, "cli.rss")
    t = time.perf_counter()
    r = subprocess.run(measured_module_command("bidirmoe", ["train", corpus, "-o", out, "--model", args.model,
                                                            "--dim", str(args.dim), "--epochs", "1",
                                                            "--threads", str(args.threads), "--quiet"], rss_file),
                       capture_output=True, text=True)
    cli_s = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"CLI failed: {r.stderr}")
    with open(rss_file) as f:
        cli_rss = int(f.read())
    os.unlink(rss_file)
    cli_import_rss = int(subprocess.run([sys.executable, "-c", CLI_IMPORT, HERE], capture_output=True, text=True,
                                        check=True).stdout.strip())
    from bidirmoe import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(out, binary=True)
    vocab = len(kv)
    param_bytes = 2 * vocab * args.dim * 4  # input and output vectors (+ small gate tables)
    api = subprocess.run([sys.executable, "-c", API, corpus, args.model, str(args.dim), str(args.threads), HERE],
                         capture_output=True, text=True, check=True)
    api_res = json.loads(api.stdout.strip().splitlines()[-1])
    cli_wps, api_wps = n / cli_s, api_res["words"] / api_res["seconds"]
    limit = 1.5 * param_bytes + 300 * 2**20
    print(f"\n| run | words/s | peak RSS | of which imports | RSS limit (1.5 x params + 300 MB) |")
    print("|---|---|---|---|---|")
    print(f"| bidirmoe train ({args.model}, 1 epoch, {args.threads} threads) | {cli_wps / 1e6:.2f} M | "
          f"{cli_rss / 2**20:.0f} MiB | {cli_import_rss / 2**20:.0f} MiB | {limit / 2**20:.0f} MiB |")
    print(f"| Python API, same data and settings | {api_wps / 1e6:.2f} M | {api_res['rss'] / 2**20:.0f} MiB | "
          f"{api_res['rss_import'] / 2**20:.0f} MiB | {limit / 2**20:.0f} MiB |")
    print(f"\nvocabulary {vocab:,} words ({param_bytes / 2**20:.0f} MiB of parameters); "
          f"CLI / API words/s = {cli_wps / api_wps:.2f}x, peak RSS = {cli_rss / api_res['rss']:.2f}x; "
          f"RSS target {'met' if max(cli_rss, api_res['rss']) <= limit else 'MISSED'}")
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
