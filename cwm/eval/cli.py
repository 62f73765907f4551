"""`cwm-eval`: measure a model the way the field does, from local files (nothing is downloaded).

    cwm-eval output-prediction [FILE.jsonl] --model DIR [--style direct|trace]
    cwm-eval input-prediction  [FILE.jsonl] --base-url http://127.0.0.1:8000/v1 --model NAME
    cwm-eval trace-prediction  [SHARDS | FUNCTIONS.jsonl] [--recipe R] --model DIR
    cwm-eval codegen           [FILE.jsonl] --model DIR --n 10 --temperature 0.8
    cwm-eval swe               [TASKS.jsonl] --base-url URL --model NAME --n 4

Without a file each suite runs on its bundled sample (cwm/eval/samples/, formats in its README.md).
`--model oracle` / `--model wrong` are test backends: the known answers (100%) and never-right ones (0%).
Results go to `-o DIR` (default runs/eval/SUITE/MODEL): results.jsonl (one scored example per line), summary.json,
summary.md, pass_at_k.png; re-running the same command resumes.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_FILES = {"output-prediction": "cruxeval.jsonl", "input-prediction": "cruxeval.jsonl",
                "trace-prediction": "cruxeval.jsonl", "codegen": "humaneval.jsonl", "swe": None}
SUITES = tuple(SAMPLE_FILES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cwm-eval", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("model (one of)")
    g.add_argument("--model", help="a local model folder (transformers), the served model NAME with --base-url, "
                                   "or oracle|wrong (test backends)")
    g.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang)")
    g.add_argument("--tokenizer", help="tokenizer folder (for a server, or the test backends; default: the model's)")
    g.add_argument("--dtype", default="float32", help="local model dtype (default float32)")
    s = common.add_argument_group("sampling")
    s.add_argument("--n", type=int, default=1, help="samples per example (pass@k uses them)")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--max-tokens", type=int, help="new tokens per answer (default: the suite's)")
    s.add_argument("--stop", action="append", help="a stop string (repeatable; default: the suite's)")
    s.add_argument("--seed", type=int, default=0)
    r = common.add_argument_group("run")
    r.add_argument("-o", "--out", help="results folder (default runs/eval/SUITE/MODEL)")
    r.add_argument("--limit", type=int, help="only the first N examples")
    r.add_argument("--batch-size", type=int, default=8, help="prompts per generate call / scoring batch")
    r.add_argument("--concurrency", type=int, default=8, help="parallel requests to a server")
    r.add_argument("--fresh", action="store_true", help="forget the results folder's earlier results and start over")
    r.add_argument("--no-progress", action="store_true")
    helps = {"output-prediction": "predict f(input) (CRUXEval-O format)",
             "input-prediction": "predict an input giving the output (CRUXEval-I), checked by running f",
             "trace-prediction": "next-state (teacher forcing) and full-trace generation on trace shards",
             "codegen": "HumanEval-format tasks, n samples, unbiased pass@k, tests in the jail",
             "swe": "forager tasks solved by the agent in Docker: resolution rate and pass@k"}
    for name in SUITES:
        sample = SAMPLE_FILES[name] or "mutate-fix tasks on the forager's demo image"
        p = sub.add_parser(name, parents=[common], help=helps[name], description=helps[name],
                           epilog=f"example, on the bundled sample ({sample}; formats: {SAMPLES / 'README.md'}):\n"
                                  f"  cwm-eval {name} --model oracle --limit 3 -o /tmp/cwm-eval-{name}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("input", nargs="?", help="the suite's file (default: the bundled sample)")
        if name == "output-prediction":
            p.add_argument("--style", choices=("direct", "trace"), default="direct")
        if name in ("output-prediction", "trace-prediction"):
            p.add_argument("--depth", type=int, default=2, help="trace depth of nested calls (default 2)")
        if name == "trace-prediction":
            p.add_argument("--recipe", help="take the held-out records of this recipe's trace source")
            p.add_argument("--mode", choices=("both", "teacher-forcing", "generation"), default="both")
            p.add_argument("--max-len", type=int, default=2048, help="tokens of a trace scored by teacher forcing")
        if name == "swe":
            p.add_argument("--max-turns", type=int, default=32)
            p.add_argument("--search", choices=("tree",),
                           help="also run a tree search over the agent's turns per task, with the n episodes' "
                                "budget of policy turns; reports search_resolved")
            p.add_argument("--budget", type=int, help="tree: policy turns per task (default n x max-turns)")
            p.add_argument("--reward-model", help="tree: value states by this reward model (a folder from "
                                                  "`python -m cwm.rl.reward_model train`) instead of the tests run")
        if name == "codegen":
            p.add_argument("--search", choices=("best-of-n", "rerank"),
                           help="also choose one of the n samples: best-of-n (CodeT dual agreement on tests the "
                                "model writes) or rerank (--reward-model); reports search_pass@1")
            p.add_argument("--reward-model", help="rerank: a folder from `python -m cwm.rl.reward_model train`")
    return parser


def make_suite(args):
    from cwm.eval.codegen import Codegen
    from cwm.eval.cruxeval import InputPrediction, OutputPrediction
    from cwm.eval.swe import SWE
    from cwm.eval.trace_prediction import TracePrediction

    if args.suite == "output-prediction":
        return OutputPrediction(args.style, args.depth)
    if args.suite == "input-prediction":
        return InputPrediction()
    if args.suite == "trace-prediction":
        return TracePrediction(args.mode, args.max_len, args.depth)
    if args.suite == "codegen":
        return Codegen(search=args.search, reward_model=args.reward_model)
    if args.reward_model:
        from cwm.eval.harness import EvalInputError

        if not args.search:
            raise EvalInputError("--reward-model values the states of a tree search: add --search tree")
        if not Path(args.reward_model, "reward_model.json").is_file():
            raise EvalInputError(f"--reward-model {args.reward_model}: not a reward model folder (make one with "
                                 "`python -m cwm.rl.reward_model train`)")
    return SWE(max_turns=args.max_turns, search=args.search, budget=args.budget, reward_model=args.reward_model)


def load_examples(args, console) -> tuple[list[dict], str]:
    from cwm.eval import codegen, cruxeval, swe, trace_prediction
    from cwm.eval.harness import EvalInputError

    path = args.input
    if args.suite == "trace-prediction" and getattr(args, "recipe", None):
        if path:
            raise EvalInputError("trace-prediction: give SHARDS or --recipe, not both")
        return recipe_examples(args), args.recipe
    if path is None:
        sample = SAMPLE_FILES[args.suite]
        if sample is None:
            return swe_demo_examples(args, console)
        path = str(SAMPLES / sample)
        console.print(f"{args.suite}: no file given, using the bundled sample {path}")
    if args.suite in ("output-prediction", "input-prediction"):
        examples = cruxeval.load_examples(path)
    elif args.suite == "codegen":
        examples = codegen.load_examples(path)
    elif args.suite == "swe":
        examples = swe.load_examples(path)
    elif path.endswith(".jsonl"):
        examples = traced_examples(path, args.depth, args.limit)
    else:
        examples = trace_prediction.load_shards(path, args.depth)
    return examples[:args.limit] if args.limit else examples, path


def traced_examples(path: str, depth: int, limit: int | None) -> list[dict]:
    """Trace-prediction examples from a functions file (CRUXEval or cwm-trace function format: code, input and
    optionally entry), each call traced by the project's tracer in the jail."""
    from concurrent.futures import ThreadPoolExecutor

    from cwm.eval.cruxeval import load_examples as load_functions
    from cwm.eval.execute import trace_function
    from cwm.eval.trace_prediction import examples_from_records

    rows = load_functions(path)[:limit] if limit else load_functions(path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        records = list(pool.map(lambda r: trace_function(r["code"], r.get("entry") or "f", r["input"], depth=depth),
                                rows))
    return examples_from_records([(r["id"], rec) for r, rec in zip(rows, records) if rec is not None], depth)


def recipe_examples(args) -> list[dict]:
    from cwm.data.documents import iter_heldout
    from cwm.data.recipe import RecipeError, load_recipe
    from cwm.eval.harness import EvalInputError
    from cwm.eval.trace_prediction import examples_from_records

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        raise EvalInputError(str(e)) from None
    sources = [s for s in recipe.sources if s.kind == "trace" and s.holdout > 0]
    if not sources:
        raise EvalInputError(f"{args.recipe}: no trace source with a holdout fraction; pass SHARDS instead")
    source = sources[0]
    items = []
    for key, record in iter_heldout(source):
        items.append((key, record))
        if args.limit and len(items) >= 4 * args.limit:
            break
    examples = examples_from_records(items, source.trace.depth)
    if not examples:
        raise EvalInputError(f"{args.recipe}: source {source.name!r} holds out no trace that starts with a call")
    return examples[:args.limit] if args.limit else examples


def swe_demo_examples(args, console) -> tuple[list[dict], str]:
    """The bundled SWE sample: mutate-fix tasks on the forager's demo image, made (Docker) into the results folder."""
    from cwm.eval import swe

    out = Path(args.out or default_out(args)) / "sample_tasks.jsonl"
    if out.exists():
        return swe.load_examples(out), str(out)
    console.print(f"swe: no TASKS given: making the bundled sample (mutate-fix tasks on the forager's demo image) "
                  f"into {out}")
    return swe.make_demo_tasks(out), str(out)


def sampling(args, suite):
    from cwm.eval.backends import SamplingParams
    from cwm.eval.harness import EvalInputError

    params = SamplingParams(**suite.default_params())
    params = replace(params, n=args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.max_tokens:
        params = replace(params, max_tokens=args.max_tokens)
    if args.stop:
        params = replace(params, stop=tuple(s.encode().decode("unicode_escape") for s in args.stop))
    if args.n < 1:
        raise EvalInputError("--n must be at least 1")
    if args.n > 1 and args.temperature == 0:
        print("cwm-eval: --n > 1 with --temperature 0: every sample is the greedy answer", file=sys.stderr)
    return params


def default_out(args) -> str:
    name = Path(args.model.rstrip("/")).name if args.model else "model"
    if args.model and Path(args.model).is_dir() and name == "hf":
        name = Path(args.model).resolve().parent.name + "-hf"
    return str(Path("runs/eval") / args.suite / name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from cwm.eval.backends import BackendError, make_backend
    from cwm.eval.harness import EvalInputError, run_suite

    console = Console(stderr=False)
    backend = None
    try:
        suite = make_suite(args)
        params = sampling(args, suite)
        examples, input_name = load_examples(args, console)
        backend = make_backend(model=args.model, base_url=args.base_url, tokenizer=args.tokenizer,
                               batch_size=args.batch_size, concurrency=args.concurrency, dtype=args.dtype)
        run_suite(suite, examples, backend, params, args.out or default_out(args), input_name=input_name,
                  batch_size=args.batch_size, console=console, progress=not args.no_progress, fresh=args.fresh)
    except (EvalInputError, BackendError) as e:
        print(f"cwm-eval {args.suite}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cwm-eval {args.suite}: interrupted; the examples scored so far are kept (re-run to resume)",
              file=sys.stderr)
        return 130
    finally:
        if backend is not None:
            backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
