"""The ``bidirmoe`` command line.

    bidirmoe train INPUT... --output PATH [--model bidirmoe|attention|cbow|skipgram] ...
    bidirmoe eval VECTORS [--analogies google|PATH]... [--pairs wordsim353|simlex999|PATH]... [--json]
    bidirmoe similar VECTORS WORD... [--topn N]
    bidirmoe analogy VECTORS A B C [--topn N]
    bidirmoe demo

Errors print one line on stderr and exit with status 1 (2 for usage errors,
130 when interrupted). Training streams: the text is never held in memory.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from .corpora import RankPieces, compression, open_compressed
from . import training
from .training import SYNC_DTYPES, InterruptLatch

MODELS = ("bidirmoe", "attention", "cbow", "skipgram")
FORMATS = ("word2vec-bin", "word2vec-txt", "native")


class CliError(Exception):
    """A problem to report on one line (exit status 1)."""


class _Checkpoint(Exception):
    """Raised from the progress hook to stop training at a consistent point."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


# ----------------------------------------------------------------------- inputs

def _expand_inputs(inputs: List[str]) -> List[str]:
    files: List[str] = []
    for item in inputs:
        if item == "-":
            files.append("-")
        elif os.path.isdir(item):
            found = sorted(p for p in glob.glob(os.path.join(item, "**", "*"), recursive=True) if os.path.isfile(p))
            if not found:
                raise CliError(f"input directory has no files: {item}")
            files.extend(found)
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise CliError(f"no input file matches {item!r}")
            files.extend(found)
        elif os.path.isfile(item):
            if not os.access(item, os.R_OK):
                raise CliError(f"input file is not readable: {item}")
            files.append(item)
        else:
            raise CliError(f"input not found: {item}")
    if files.count("-") > 1:
        raise CliError("'-' (standard input) can be given only once")
    return files


def _open_any(path: str):
    return sys.stdin.buffer if path == "-" else open_compressed(path)


def _corpus_file(files: List[str], spool_dir: str, log, session=None) -> tuple:
    """What the Rust reader streams, and what to clean up after: the input
    itself when it is one plain or gzip file; in a distributed run this
    rank's segment of the inputs, read in place (``corpora.RankPieces``:
    byte ranges of plain files, whole gzip files; only a bz2/xz file is
    decompressed, into ``spool_dir``); else one temporary file holding all
    inputs decompressed (standard input can be read only once; bz2/xz are
    joined on disk so training reads them at full speed)."""
    if len(files) == 1 and files[0] != "-" and compression(files[0]) not in ("bzip2", "xz"):
        return files[0], None
    if session is not None:
        log(f"{len(files)} input(s): each of the {session.world} ranks reads its own segment of them in place")
        pieces = RankPieces(files, session.rank, session.world, spool_dir)
        return pieces, pieces
    fd, tmp = tempfile.mkstemp(prefix=".bidirmoe-corpus-", suffix=".txt", dir=spool_dir)
    log(f"joining {len(files)} input(s) into {tmp} (streamed, not held in memory)")
    try:
        with os.fdopen(fd, "wb") as out:
            for f in files:
                src = _open_any(f)
                try:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.write(b"\n")
                finally:
                    if src is not sys.stdin.buffer:
                        src.close()
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, tmp


#: Output extensions and the format each means (word2vec files may end in .gz too).
OUTPUT_EXTENSIONS = {".bin": "word2vec-bin", ".txt": "word2vec-txt", ".vec": "word2vec-txt", ".model": "native",
                     ".bm": "native"}


def _output_format(path: str, fmt: Optional[str]) -> str:
    """The format ``--format`` names, else the one ``path``'s extension means;
    an unknown extension is refused rather than guessed."""
    if fmt:
        return fmt
    low = path.lower()
    gz = low.endswith(".gz")
    found = OUTPUT_EXTENSIONS.get(os.path.splitext(low[:-3] if gz else low)[1])
    if found and not (gz and found == "native"):  # the native format is not gzipped
        return found
    known = ", ".join(list(OUTPUT_EXTENSIONS) + [".bin.gz", ".txt.gz", ".vec.gz"])
    raise CliError(f"cannot tell the output format from {os.path.basename(path)!r}: use one of {known} "
                   f"or give --format {{{','.join(FORMATS)}}}")


def _check_writable_dir(path: str, what: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise CliError(f"{what} directory does not exist: {d}")
    if not os.access(d, os.W_OK):
        raise CliError(f"{what} directory is not writable: {d}")


# --------------------------------------------------------------------- progress

class _Progress:
    """A live line on a terminal, a line per interval otherwise, JSON lines to a file."""

    def __init__(self, quiet: bool, log_json: Optional[str], interval: float = 5.0):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self.last = 0.0
        self.json = open(log_json, "a", encoding="utf-8") if log_json else None
        self.started = time.perf_counter()

    def __call__(self, info: Dict[str, Any]) -> None:
        info = dict(info)
        done, total = info["words_done"], max(info["schedule_words"], 1)
        elapsed = time.perf_counter() - self.started
        rate = info["words_per_sec"]
        eta = (total - done) / rate if rate > 0 else float("inf")
        loss = info["loss"] / max(info.get("epoch_words", 0), 1)  # this epoch's loss per corpus word so far
        if self.json is not None:
            self.json.write(json.dumps({"time": time.time(), "epoch": info["epoch"] + 1, "epochs": info["epochs"],
                                        "progress": done / total, "words_done": done, "words_per_sec": rate,
                                        "lr": info["lr"], "loss_per_word": loss, "eta_s": eta}) + "\n")
            self.json.flush()
        if self.quiet:
            return
        line = (f"epoch {info['epoch'] + 1}/{info['epochs']}  {100 * done / total:5.1f}%  {rate / 1e6:.2f} M words/s  "
                f"lr {info['lr']:.5f}  loss {loss:.4f}  ETA {_fmt_time(eta)}")
        if self.tty:
            sys.stderr.write("\r" + line + " " * 4)
            sys.stderr.flush()
        elif elapsed - self.last >= self.interval:
            self.last = elapsed
            print(line, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.end_line()
            print(text, file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")

    def close(self) -> None:
        if self.json is not None:
            self.json.close()


def _fmt_time(s: float) -> str:
    if s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------------ train

def _model_class(name: str):
    from . import BidirectionalAttention, BidirMoE, Word2Vec

    return {"bidirmoe": BidirMoE, "attention": BidirectionalAttention, "cbow": Word2Vec, "skipgram": Word2Vec}[name]


def _model_file_class(path: str):
    """The model class a bidirmoe model file holds, or None if it is not one."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files:
                return None
            name = json.loads(bytes(data["meta"]).decode("utf-8")).get("class")
    except Exception:
        return None
    from . import BidirectionalAttention, BidirMoE, Word2Vec

    classes = {c.__name__: c for c in (Word2Vec, BidirMoE, BidirectionalAttention)}
    if name not in classes:
        raise CliError(f"{path}: unknown model class {name!r}")
    return classes[name]


def _new_model(args):
    variant = dict(layers=args.layers, output_gate=args.output_gate, expert_activation=args.expert_activation,
                   qk_bias=args.qk_bias)
    if args.model != "attention":
        changed = [f"--{k.replace('_', '-')}" for k, v in variant.items() if v not in (None, False, 1)]
        if changed:
            raise CliError(f"{', '.join(changed)}: only for --model attention")
        variant = {}
    common = dict(vector_size=args.dim, window=args.window, epochs=args.epochs, min_count=args.min_count,
                  max_vocab_size=args.max_vocab_size, sample=args.sample, alpha=args.alpha, workers=args.threads,
                  seed=args.seed, device=args.device)
    if args.distributed:
        if args.model not in ("bidirmoe", "cbow", "skipgram"):
            raise CliError(f"--distributed trains --model bidirmoe, cbow or skipgram (not {args.model})")
        common.update(_sync_options(args))
    if args.model in ("cbow", "skipgram"):
        from . import Word2Vec

        if args.loss not in (None, "negative", "hs"):
            raise CliError(f"--loss {args.loss} is not available for {args.model} (negative or hs)")
        hs = args.loss == "hs"
        return Word2Vec(sg=int(args.model == "skipgram"), hs=int(hs), negative=0 if hs else args.negative,
                        batch_targets=args.batch_targets, **common)
    cls = _model_class(args.model)
    if args.model == "attention":
        if args.batch_targets is not None:
            raise CliError("--batch-targets: not for --model attention")
    else:
        variant = dict(batch_targets=args.batch_targets)
    return cls(heads=args.heads, loss=args.loss, negative=args.negative, **variant, **common)


def _save_output(model, path: str, fmt: str) -> None:
    if fmt == "native":
        model.save(path)
    else:
        model.wv.save_word2vec_format(path, binary=fmt == "word2vec-bin")


def _sync_options(args) -> Dict[str, Any]:
    """The model's distributed options from the command line."""
    return dict(distributed=True, sync_words=args.sync_words, sync_overlap=args.sync_overlap,
                sync_dtype=args.sync_dtype or "float32")


def _dist_session(args):
    """The torch.distributed session of a --distributed run (None without it)."""
    if args.sync_words is not None and args.sync_words < 1:
        raise CliError(f"--sync-words must be >= 1, got {args.sync_words}")
    if not args.distributed:
        given = [flag for flag, v in (("--sync-words", args.sync_words), ("--sync-overlap", args.sync_overlap or None),
                                      ("--sync-dtype", args.sync_dtype)) if v is not None]
        if given:
            raise CliError(f"{', '.join(given)}: only with --distributed")
        return None
    try:
        from .torch.distributed import start
    except ImportError:
        raise CliError('--distributed needs PyTorch: pip install "bidirmoe[torch]"') from None
    return start(device=args.device, pin=True)


def _train(args) -> int:
    session = _dist_session(args)
    try:
        return _train_in(args, session)
    finally:
        if session is not None:
            session.close(force=True)  # every collective has completed or failed: no gloo work is pending


def _train_in(args, session) -> int:
    files = _expand_inputs(args.inputs)
    if session is not None and "-" in files:
        raise CliError("--distributed reads files (each rank its shard), not standard input")
    lead = session is None or session.rank == 0  # the process that writes files and reports progress
    fmt = _output_format(args.output, args.format)
    _check_writable_dir(args.output, "output")
    if args.save_model:
        _check_writable_dir(args.save_model, "--save-model")
    ckpt_path = args.checkpoint or (args.save_model or args.output) + ".checkpoint"
    _check_writable_dir(ckpt_path, "checkpoint")
    for name in ("dim", "window", "epochs", "threads", "heads", "layers"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CliError(f"--{name} must be >= 1, got {v}")
    if args.id_cache_mb is not None and args.id_cache_mb < 0:
        raise CliError(f"--id-cache-mb must be >= 0, got {args.id_cache_mb}")
    progress = _Progress(args.quiet or not lead, args.log_json if lead else None)
    spool_dir = os.path.dirname(os.path.abspath(args.output))
    corpus, spooled = _corpus_file(files, spool_dir, progress.message, session)

    def on_term(signum, frame):  # distributed: SIGTERM stops at once, without a checkpoint
        raise _Terminated()

    # A Ctrl-C never lands in the middle of the bookkeeping between two
    # epochs: training stops at the next point where the checkpoint is
    # consistent (single process: the progress hook or an epoch's end;
    # distributed: the next sync round, for every rank). Single process,
    # before training starts, it stops at once.
    latch = InterruptLatch(session, armed=session is not None)
    old_cap = training.ID_CACHE_BYTES  # this call's cap; restored for whoever calls main() next in this process
    if args.id_cache_mb is not None:
        training.ID_CACHE_BYTES = args.id_cache_mb << 20
    old_term = signal.signal(signal.SIGTERM, on_term if session is not None else latch)
    old_int = signal.signal(signal.SIGINT, latch)
    try:
        if args.resume:
            if not os.path.isfile(args.resume):
                raise CliError(f"checkpoint not found: {args.resume}")
            cls = _model_file_class(args.resume)
            if cls is None:
                raise CliError(f"{args.resume} is not a bidirmoe checkpoint")
            try:
                model = cls.load(args.resume, device=args.device)
            except (OSError, ValueError) as e:
                raise CliError(f"cannot resume from {args.resume}: {e}") from None
            state = dict(model.extra_meta.get("cli", {}))
            if not state:
                raise CliError(f"{args.resume} is not a training checkpoint (no schedule state)")
            model.workers = args.threads
            if session is not None:
                model._set_distributed(**_sync_options(args))
            progress.message(f"resuming {args.resume}: epoch {state['epoch'] + 1}/{state['epochs']}, "
                             f"{state['words_done']:,} of {state['schedule_words']:,} words done")
        else:
            model = _new_model(args)
            t0 = time.perf_counter()
            model.build_vocab(corpus_file=corpus)
            progress.message(f"vocabulary: {len(model.wv):,} words from {model.corpus_total_words:,} tokens "
                             f"in {time.perf_counter() - t0:.1f}s"
                             + (f" ({session.world} ranks, each counting its shard)" if session else ""))
            state = {"epoch": 0, "epochs": args.epochs, "epoch_words": 0, "words_done": 0,
                     "schedule_words": model.corpus_total_words * args.epochs}
        every = args.checkpoint_every * 60 if args.checkpoint_every else None
        t_start = time.perf_counter()
        while state["epoch"] < state["epochs"]:
            deadline = time.perf_counter() + every if every else None

            def hook(info, deadline=deadline):
                progress(info)
                if latch.interrupted and session is None:
                    raise _Checkpoint()
                if deadline is not None and time.perf_counter() >= deadline and lead:
                    if session is None:
                        raise _Checkpoint()
                    session.stop_requested = True  # every rank stops at the next sync round

            def count_epoch(_m=None):
                state["epoch"] += 1
                state["epoch_words"] = 0
                state["resume"] = None

            t_call = time.perf_counter()
            done_at_call = state["words_done"]

            class EpochEnd:
                def on_epoch_end(self, m):
                    count_epoch()
                    state["words_done"] = state["epoch"] * model.corpus_total_words
                    total, done = state["schedule_words"], state["words_done"]
                    frac = min(done / max(total, 1), 1.0)
                    progress({"epoch": state["epoch"] - 1, "epochs": state["epochs"], "words_done": done,
                              "schedule_words": total, "loss": float(m.running_training_loss),
                              "epoch_words": (done - done_at_call) or m.corpus_total_words,
                              "words_per_sec": (done - done_at_call) / max(time.perf_counter() - t_call, 1e-9),
                              "lr": max(m.alpha - (m.alpha - m.min_alpha) * frac, m.min_alpha)})
                    if latch.interrupted and session is None and state["epoch"] < state["epochs"]:
                        raise _Checkpoint()  # Ctrl-C between two epochs: stop at the next one's start

            # Continue the interrupted epoch at every worker's byte position
            # (and generator state), then the remaining epochs.
            resume_from = {"words_done": state["words_done"], "schedule_words": state["schedule_words"],
                           "epoch_words": state["epoch_words"], "resume": state.get("resume")}
            latch.armed = True  # from here on (the result's writing included) Ctrl-C stops at a stop point
            try:
                model.train(corpus_file=corpus, total_words=model.corpus_total_words,
                            epochs=state["epochs"] - state["epoch"], resume_from=resume_from,
                            progress_callback=hook, callbacks=[EpochEnd()], report_delay=0.5, compute_loss=True)
            except KeyboardInterrupt:
                # A second Ctrl-C (or, distributed, SIGTERM): training stopped
                # wherever it was, perhaps mid-bookkeeping, so no consistent
                # state to save; the last checkpoint, if any, still resumes.
                progress.end_line()
                have = os.path.isfile(ckpt_path)
                print("bidirmoe: interrupted" + (f"; the last checkpoint resumes: --resume {ckpt_path}" if have else
                                                 "; no checkpoint was written yet"), file=sys.stderr)
                return 130
            except _sync_stops(session):
                _stop_checkpoint(model, state, ckpt_path, session)
                if (latch.interrupted if session is None else session.all_sum([float(latch.interrupted)])[0] > 0):
                    progress.end_line()  # a rank got Ctrl-C: every rank ends here, after the checkpoint
                    print(f"bidirmoe: interrupted; " + (f"checkpoint written to {ckpt_path} (resume with --resume "
                                                        f"{ckpt_path})" if lead else
                                                        f"rank 0 wrote the checkpoint {ckpt_path}"), file=sys.stderr)
                    return 130
                progress.message(f"checkpoint written: {ckpt_path}")
                continue
        progress.end_line()
        dt = time.perf_counter() - t_start
        progress.message(f"trained {args.model} in {dt:.1f}s")
        if not lead:
            return 0  # rank 0 writes the files: every rank holds the same averaged parameters
        model.extra_meta = {}
        _save_output(model, args.output, fmt)
        if args.save_model:
            model.save(args.save_model)
        if os.path.exists(ckpt_path) and (args.checkpoint_every or args.resume):
            os.unlink(ckpt_path)  # finished: the checkpoint is no longer needed
        progress.message(f"wrote {args.output} ({fmt})" + (f" and {args.save_model}" if args.save_model else ""))
        if latch.interrupted:  # a Ctrl-C after the last epoch's last stop point: the result was finished first
            print(f"bidirmoe: interrupted after training finished; {args.output} is complete", file=sys.stderr)
            return 130
        return 0
    finally:
        training.ID_CACHE_BYTES = old_cap
        signal.signal(signal.SIGTERM, old_term)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        progress.close()
        if isinstance(spooled, RankPieces):
            spooled.close()
        elif spooled:
            try:
                os.unlink(spooled)
            except OSError:
                pass


def _sync_stops(session):
    """The exceptions that end a train() call at a checkpoint: the progress
    hook's own, or (distributed) the stop every rank takes at one sync round."""
    if session is None:
        return _Checkpoint
    from .torch.distributed import SyncStop

    return (_Checkpoint, SyncStop)


def _work_left(resume) -> bool:
    """Whether a stopped epoch's reader state (``bidirmoe_resume``) has
    anything left to read: a worker's byte ranges, or a gzip stream (of
    the file, or of one of its pieces) not decoded to its end."""
    if not resume or resume.get("shard_done"):
        return False
    parts = [resume] + list(resume.get("pieces", ()))
    return (any(w["pending"] for w in resume["workers"])
            or any(p["gzip"] and not p.get("ended", True) for p in parts))


def _stop_checkpoint(model, state, ckpt_path: str, session) -> None:
    """Fold where training stopped (``model.last_stop``) into the schedule
    ``state`` and write the checkpoint (rank 0 only in a distributed run,
    with every rank's position gathered to it)."""
    last = model.last_stop or {}
    got = last.get("words_done", state["words_done"]) - state["words_done"]
    state["epoch_words"] = last.get("epoch_words", state["epoch_words"] + got)
    state["words_done"] += got
    resume = last.get("resume")
    if session is None:
        pending = _work_left(resume)
    else:
        ranks = session.broadcast_from_root(session.gather_to_root(resume))
        pending = any(_work_left(r) for r in ranks)
        resume = {"ranks": ranks}
    state["resume"] = resume
    if not pending and resume is not None:
        # Every worker had finished its share: the epoch is complete (and the
        # model counts it, as the next epoch's random streams depend on it).
        model._epochs_done += 1
        state["epoch"] += 1
        state["epoch_words"] = 0
        state["words_done"] = state["epoch"] * model.corpus_total_words
        state["resume"] = None
    if session is None or session.rank == 0:
        model.extra_meta = {"cli": dict(state)}
        model.save(ckpt_path)
    if session is not None:
        # Every rank goes on from the parameters the checkpoint holds.
        from .torch.distributed import per_word_arrays

        session.broadcast_params(list(per_word_arrays(model).values()))


# ----------------------------------------------------------------- the vectors

def _load_vectors(path: str):
    from . import KeyedVectors
    from .training import TrainableModel

    if not os.path.isfile(path):
        raise CliError(f"vectors file not found: {path}")
    low = path.lower()
    try:
        if low.endswith((".bin", ".bin.gz")):
            return KeyedVectors.load_word2vec_format(path, binary=True)
        if low.endswith((".txt", ".vec", ".txt.gz", ".vec.gz")):
            return KeyedVectors.load_word2vec_format(path, binary=False)
    except (ValueError, UnicodeDecodeError, EOFError, OSError) as e:
        raise CliError(f"cannot read vectors {path}: {e}") from None
    cls = _model_file_class(path)
    if cls is not None:
        return cls.load(path).wv
    try:
        return KeyedVectors.load(path)
    except Exception as e:
        raise CliError(f"cannot read vectors {path}: not a word2vec (.bin/.txt/.vec) or bidirmoe file ({e})") from None


def _eval(args) -> int:
    from . import datasets
    from .evaluation import analogy_report

    wv = _load_vectors(args.vectors)
    analogies = args.analogies or ([] if args.pairs else ["google"])
    out: Dict[str, Any] = {"vectors": args.vectors, "words": len(wv), "analogies": [], "pairs": []}
    for name in analogies:
        path = datasets.resolve(name)
        if not os.path.isfile(path):
            raise CliError(f"analogy set not found: {name} (bundled: google)")
        score, sections = wv.evaluate_word_analogies(path, restrict_vocab=args.restrict_vocab)
        report = analogy_report(wv, path, restrict_vocab=args.restrict_vocab)
        secs = [{"section": s["section"], "correct": len(s["correct"]),
                 "total": len(s["correct"]) + len(s["incorrect"])} for s in sections]
        out["analogies"].append({"set": name, "accuracy": score, "sections": secs, "skipped": report.skipped,
                                 "groups": report.groups_table()})
    for name in args.pairs or []:
        path, delim = datasets.resolve_pairs(name, "\t")
        if not os.path.isfile(path):
            raise CliError(f"word-pair set not found: {name} (bundled: wordsim353, simlex999)")
        pearson, spearman, oov = wv.evaluate_word_pairs(name if name in datasets.names() else path)
        out["pairs"].append({"set": name, "pearson": float(pearson[0]), "spearman": float(spearman[0]), "oov_percent": oov})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for a in out["analogies"]:
        print(f"analogies: {a['set']} (restrict_vocab={args.restrict_vocab})")
        for s in a["sections"]:
            acc = 100 * s["correct"] / s["total"] if s["total"] else 0.0
            print(f"  {s['section']:32s} {acc:6.2f} %  ({s['correct']} / {s['total']})")
        print(f"  questions skipped (words outside the vocabulary): {a['skipped']}")
        print("  paper's metrics (Wibisono & Wang 2023, Tables 1-2):")
        print(f"  {'group':10s} {'questions':>9s} {'top-1':>8s} {'mean cos(d, b-a+c)':>20s} {'median rank':>12s}")
        for g in a["groups"]:
            print(f"  {g['group']:10s} {g['questions']:9d} {100 * g['top1']:7.2f}% {g['mean_cosine']:20.4f} "
                  f"{g['median_rank']:12.1f}")
    for p in out["pairs"]:
        print(f"word pairs: {p['set']}: Spearman {p['spearman']:.4f}, Pearson {p['pearson']:.4f}, "
              f"out of vocabulary {p['oov_percent']:.1f} %")
    return 0


def _similar(args) -> int:
    wv = _load_vectors(args.vectors)
    missing = [w for w in args.words if w not in wv]
    if missing:
        raise CliError(f"not in the vocabulary: {', '.join(missing)}")
    for w in args.words:
        print(w)
        for n, s in wv.most_similar(w, topn=args.topn):
            print(f"  {n}\t{s:.4f}")
    return 0


def _analogy(args) -> int:
    wv = _load_vectors(args.vectors)
    missing = [w for w in (args.a, args.b, args.c) if w not in wv]
    if missing:
        raise CliError(f"not in the vocabulary: {', '.join(missing)}")
    print(f"{args.a} : {args.b} :: {args.c} : ?")
    for n, s in wv.most_similar(positive=[args.b, args.c], negative=[args.a], topn=args.topn):
        print(f"  {n}\t{s:.4f}")
    return 0


def _demo(args) -> int:
    from . import BidirMoE, Word2Vec, datasets, simd_level

    corpus = datasets.path("text8-sample")
    cls = BidirMoE if args.model == "bidirmoe" else Word2Vec
    print(f"bidirmoe demo: {args.model} on the bundled text8 sample ({os.path.getsize(corpus) / 1e6:.1f} MB gzip, "
          f"one 2.1M-word line), {args.epochs} epochs, {args.threads} threads, SIMD: {simd_level()}")
    kw = dict(corpus_file=corpus, vector_size=100, window=5, min_count=5, negative=5, sample=1e-3, epochs=args.epochs,
              workers=args.threads, seed=args.seed)
    t0 = time.perf_counter()
    if cls is BidirMoE:
        model = BidirMoE(heads=args.heads, **kw).train()
    else:
        model = Word2Vec(sg=int(args.model == "skipgram"), **kw)
    dt = time.perf_counter() - t0
    words = model.corpus_total_words * args.epochs
    print(f"trained on {words:,} words in {dt:.1f}s ({words / dt / 1e6:.2f} M words/s), vocabulary {len(model.wv):,} words\n")
    for w in ("king", "france", "computer", "three", "running"):
        if w in model.wv:
            near = ", ".join(f"{n} ({s:.2f})" for n, s in model.wv.most_similar(w, topn=6))
            print(f"  {w:9s} -> {near}")
    if cls is BidirMoE:
        print("\nmasked-word prediction: the ___ of france")
        print("  " + ", ".join(f"{w} ({p:.3f})" for w, p in model.predict_masked(["the"], ["of", "france"], topn=6)))
    score, sections = model.wv.evaluate_word_analogies(datasets.path("google"), restrict_vocab=30000)
    total = sections[-1]
    n = len(total["correct"]) + len(total["incorrect"])
    print(f"\nGoogle analogies (restrict_vocab=30000): {100 * score:.1f} % of {n:,} questions answered correctly")
    if cls is BidirMoE:
        from .moe import format_offset_profile

        print("\noffset profile (mean gate weight per offset and head):")
        print(format_offset_profile(model.offset_profile()))
    return 0


# ----------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bidirmoe", description="Word embeddings by word2vec-style streaming SGD (Rust core).")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (the 'bidirmoe' logger)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a model on text files (streamed)",
                       description="Train on one or more text files, directories or globs (plain, .gz, .bz2, .xz; "
                                   "'-' for standard input) and write the vectors.")
    t.add_argument("inputs", nargs="+", metavar="INPUT")
    t.add_argument("-o", "--output", required=True, help="vectors file (.bin: word2vec binary, .txt/.vec: text, "
                                                          "either + .gz; .model/.bm: the native model; "
                                                          "another extension needs --format)")
    t.add_argument("--model", choices=MODELS, default="bidirmoe")
    t.add_argument("--format", choices=FORMATS, help="override the format chosen from --output's extension")
    t.add_argument("--dim", type=int, default=100)
    t.add_argument("--window", type=int, default=5)
    t.add_argument("--heads", type=int, default=1, help="MoE / attention heads")
    t.add_argument("--layers", type=int, default=1, help="attention layers (--model attention; > 1 trains on torch)")
    t.add_argument("--output-gate", choices=["headwise", "elementwise"], default=None,
                   help="sigmoid gate on each attention head's output (--model attention; trains on torch)")
    t.add_argument("--expert-activation", choices=["tanh", "gelu", "relu"], default=None,
                   help="'active attention': non-linear value vectors (--model attention; trains on torch)")
    t.add_argument("--qk-bias", action="store_true",
                   help="a query bias: polynomial instead of monomial attention scores (--model attention; torch)")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--min-count", type=int, default=5)
    t.add_argument("--max-vocab-size", type=int, default=None,
                   help="cap the counting table (rare words pruned; with --distributed rank 0 counts the whole input)")
    t.add_argument("--sample", type=float, default=1e-3)
    t.add_argument("--negative", type=int, default=5)
    t.add_argument("--loss", choices=["negative", "softmax", "hs"], default=None)
    t.add_argument("--batch-targets", type=int, default=None, metavar="B",
                   help="targets per mini-batch sharing one draw of negatives (1: the exact per-target update; "
                        "default: 1; 16 trains cbow about 40%% faster at a small accuracy cost)")
    t.add_argument("--alpha", type=float, default=0.025)
    t.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker threads (default: all cores)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--device", default="cpu",
                   help="cpu (the Rust core) or a torch device such as cuda, cuda:1 (needs bidirmoe[torch])")
    t.add_argument("--save-model", metavar="PATH", help="also write the full model (for continued training)")
    t.add_argument("--id-cache-mb", type=int, default=None, metavar="MB",
                   help="memory for the words' vocabulary ids kept between epochs, so that later epochs of a plain "
                        "text file skip reading it again (default: 512; 0: read every epoch)")
    t.add_argument("--checkpoint-every", type=float, metavar="MINUTES", help="write a checkpoint this often")
    t.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (default: OUTPUT.checkpoint)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue an interrupted run exactly where it stopped")
    t.add_argument("--distributed", action="store_true",
                   help="one rank of a torchrun job: train on this rank's shard of the input, averaging the "
                        "parameters with the other ranks (torch.distributed; rank 0 writes the files)")
    t.add_argument("--sync-words", type=int, metavar="N", default=None,
                   help="with --distributed: corpus words each rank trains between two parameter averages "
                        "(default 50000)")
    t.add_argument("--sync-overlap", action="store_true",
                   help="with --distributed: train on while the parameter sums travel (they arrive late; "
                        "each epoch still ends in step; off by default)")
    t.add_argument("--sync-dtype", choices=SYNC_DTYPES, default=None,
                   help="with --distributed: what the parameter changes travel as (bfloat16: half the bytes; "
                        "default float32)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    t.add_argument("--log-json", metavar="FILE", help="append machine-readable progress (JSON lines)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="analogy and word-similarity benchmarks of a vectors file",
                       description="Evaluate vectors: per-section analogy accuracy and the paper's rank/cosine "
                                   "summary, and word-pair correlations.")
    e.add_argument("vectors")
    e.add_argument("--analogies", action="append", metavar="google|PATH")
    e.add_argument("--pairs", action="append", metavar="wordsim353|simlex999|PATH")
    e.add_argument("--restrict-vocab", type=int, default=300000)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)

    s = sub.add_parser("similar", help="nearest neighbours of words", description="Print each word's nearest neighbours.")
    s.add_argument("vectors")
    s.add_argument("words", nargs="+", metavar="WORD")
    s.add_argument("--topn", type=int, default=10)
    s.set_defaults(func=_similar)

    a = sub.add_parser("analogy", help="solve a : b :: c : ?", description="Solve a : b :: c : ? (3CosAdd).")
    a.add_argument("vectors")
    a.add_argument("a")
    a.add_argument("b")
    a.add_argument("c")
    a.add_argument("--topn", type=int, default=5)
    a.set_defaults(func=_analogy)

    d = sub.add_parser("demo", help="train BidirMoE on the bundled text8 sample and print what it learned",
                       description="Train on the bundled text8 sample (2.1M words) and print neighbours, a masked-word "
                                   "prediction, the Google analogy accuracy and the offset profile.")
    d.add_argument("--model", choices=["bidirmoe", "cbow", "skipgram"], default="bidirmoe")
    d.add_argument("--heads", type=int, default=2)
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="worker threads (default: all cores)")
    d.add_argument("--seed", type=int, default=1)
    d.set_defaults(func=_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("bidirmoe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except CliError as e:
        print(f"bidirmoe: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"bidirmoe: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
