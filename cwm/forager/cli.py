"""`cwm-forager`: base image, repository images, tasks, trajectory collection.

    cwm-forager base-image
    cwm-forager build-image REPO --tag NAME [--base IMAGE]
    cwm-forager build-images LIST [--ray auto|ADDRESS] [--jobs N]     one image per line of LIST (resumable)
    cwm-forager tasks IMAGE --kind mutate-fix -n 20 -o tasks.jsonl [--seed 0] [--workers 2]
    cwm-forager tasks IMAGE --kind issue-fix --repo REPO -n 5 -o tasks.jsonl
    cwm-forager tasks --kind pr-history --repo REPO -n 50 -o tasks.jsonl   # offline (SWE-RL): no image
    cwm-forager collect tasks.jsonl --policy oracle --workers 2 -o runs/traj
    cwm-forager collect tasks.jsonl --policy openai --base-url http://localhost:8000/v1 --model NAME -o DIR
    cwm-forager sweep            # remove containers left by dead collectors
"""
from __future__ import annotations

import argparse
import json
import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cwm.forager import images
from cwm.forager.agent import EpisodeConfig
from cwm.forager.sandbox import SandboxError, SandboxLimits, open_sandbox, sweep_containers
from cwm.forager.tasks import KINDS, TaskError, generate_issue_fix, generate_mutate_fix, load_tasks, write_tasks


def _limits(args) -> SandboxLimits:
    return SandboxLimits(memory_mb=args.memory_mb, cpus=args.cpus, pids=args.pids)


def cmd_base_image(args) -> int:
    print(images.ensure_base_image(images.client()))
    return 0


def cmd_build_image(args) -> int:
    checkers = tuple(c for c in (args.checkers or "").split(",") if c)
    info = images.build_image(images.client(), args.repo, args.tag, base=args.base, flaky_runs=args.flaky_runs,
                              checkers=checkers)
    print(json.dumps({"image": args.tag, "passing": len(info.passing), "flaky": info.flaky,
                      "checkers": info.checkers, "test_command": info.test_command}))
    return 0


def cmd_build_images(args) -> int:
    """Every repository of a list (cwm/corpus.py: folders, git folders, pinned sdists), one image each; a failure
    is a row of the run log with its cause; rerunning skips the items that have a row."""
    from pathlib import Path

    from cwm import corpus
    try:
        items = corpus.parse_list(Path(args.list))
        log = Path(args.log or f"{args.list}.images.jsonl")
        stats = corpus.run_corpus(items, corpus.CorpusConfig(mode="build", base=args.base), log_path=log,
                                  ray_address=args.ray, jobs=args.jobs)
    except corpus.CorpusInputError as exc:
        raise ValueError(str(exc)) from None
    corpus.print_summary(stats, log, f"cwm-forager build-images: {args.list}")
    return 0


def cmd_tasks(args) -> int:
    if args.kind == "pr-history":
        return _pr_history_tasks(args)
    if not args.image:
        raise TaskError(f"--kind {args.kind} needs the repository IMAGE (cwm-forager build-image REPO --tag IMAGE)")
    if args.sandbox == "docker":
        dc = images.client()
        sweep_containers(dc)
        info = images.image_info(dc, args.image)
        new_sandbox = lambda: open_sandbox("docker", image=args.image, limits=_limits(args), dc=dc)  # noqa: E731
        if getattr(args, "ray", None):   # the sandboxes live on the cluster's worker nodes (cwm/corpus.py)
            from cwm import corpus
            try:
                new_sandbox = corpus.ray_sandboxes(args.ray, args.image, _limits(args), args.workers)
            except corpus.CorpusInputError as exc:
                raise ValueError(str(exc)) from None
    else:
        if not args.repo:
            raise TaskError("--sandbox local needs --repo DIR (the repository, with its dependencies importable)")
        with open_sandbox("local", source=args.repo) as sb:
            run = sb.run_tests()
        info = images.ImageInfo(repo=args.image, test_command=[], passing=sorted(run.passed))
        new_sandbox = lambda: open_sandbox("local", source=args.repo, limits=_limits(args))  # noqa: E731
    if args.kind == "mutate-fix":
        with Progress(TextColumn("[bold]tasks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[tried]} mutations tried"), console=Console(stderr=True)) as bar:
            job = bar.add_task("tasks", total=args.n, tried=0)
            tasks = generate_mutate_fix(
                args.image, info.repo, info.commit, info.passing, args.n, seed=args.seed, open_sandbox=new_sandbox,
                workers=args.workers, progress=lambda accepted, tried: bar.update(job, completed=accepted, tried=tried),
                flaky=info.flaky)
    else:
        if not args.repo:
            raise TaskError("--kind issue-fix needs --repo DIR: the git repository whose history is mined")
        quarantined: list = []
        tasks = generate_issue_fix(args.repo, args.image, open_sandbox=new_sandbox, n=args.n, quarantined=quarantined)
        if quarantined:
            print(f"quarantined {len(quarantined)} commit(s) whose fix passes its tests only some of the time: "
                  f"{', '.join(c[:10] for c in quarantined)}", file=sys.stderr)
    if getattr(args, "ray", None):
        from cwm import corpus
        corpus.disconnect_ray()
    write_tasks(tasks, args.output)
    print(f"{len(tasks)} {args.kind} tasks -> {args.output}")
    return 0 if tasks else 1


def _pr_history_tasks(args) -> int:
    from pathlib import Path

    from cwm.forager.tasks import generate_pr_history, require_history
    if not args.repo:
        raise TaskError("--kind pr-history needs --repo DIR: the git repository whose history is mined")
    require_history(Path(args.repo).resolve())
    with Progress(TextColumn("[bold]pr-history"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[tried]} commits read"), console=Console(stderr=True)) as bar:
        job = bar.add_task("tasks", total=args.n, tried=0)
        tasks = generate_pr_history(args.repo, n=args.n, max_files=args.max_files, include=args.include,
                                    progress=lambda kept, tried: bar.update(job, completed=kept, tried=tried))
    write_tasks(tasks, args.output)
    print(f"{len(tasks)} pr-history tasks -> {args.output}")
    return 0 if tasks else 1


def cmd_collect(args) -> int:
    from cwm.forager.collect import CollectConfig, collect
    from cwm.forager.policies import make_policy
    tasks = load_tasks(args.tasks)
    if args.sandbox == "docker":
        dc = images.client()
        swept = sweep_containers(dc)
        if swept:
            print(f"removed {swept} leftover containers of dead collectors", file=sys.stderr)
        new_sandbox = lambda task: open_sandbox("docker", image=task.image, limits=_limits(args), dc=dc)  # noqa
    else:
        if not args.repo:
            raise TaskError("--sandbox local needs --repo DIR (the repository the tasks were made from)")
        new_sandbox = lambda task: open_sandbox("local", source=args.repo, limits=_limits(args))  # noqa: E731
    kw = {"model": args.model, "base_url": args.base_url}
    if args.policy == "openai" and args.max_reply_tokens:
        kw["max_reply_tokens"] = args.max_reply_tokens
    if args.ray:   # units of --chunk tasks as Ray tasks (cwm/corpus.py); each worker makes its own policy
        from dataclasses import asdict
        if args.sandbox != "docker":
            raise TaskError("--ray runs episodes in Docker on the cluster's nodes: drop --sandbox local")

        from cwm import corpus
        make_policy(args.policy, **kw)
        try:
            summary = corpus.collect_on_ray(
                tasks, address=args.ray, out=args.output, chunk=args.chunk, policy=args.policy, policy_kw=kw,
                limits_kw=asdict(_limits(args)), workers=1, episode_kw=dict(
                    max_turns=args.max_turns, max_tokens=args.max_tokens, wall_s=args.wall_s,
                    bash_timeout_s=args.bash_timeout))
        except corpus.CorpusInputError as exc:
            raise ValueError(str(exc)) from None
        print(json.dumps(summary, indent=2))
        return 0
    if args.policy == "hf":  # one model in memory, shared by the workers one turn at a time
        shared = make_policy("hf", **kw)
        lock = threading.Lock()
        act = shared.act
        shared.act = lambda messages: _locked(lock, act, messages)
        new_policy = lambda: shared  # noqa: E731
    else:
        make_policy(args.policy, **kw)  # fail on bad arguments before any episode starts
        new_policy = lambda: make_policy(args.policy, **kw)  # noqa: E731
    cfg = CollectConfig(workers=args.workers, shard_samples=args.shard_samples, episode=EpisodeConfig(
        max_turns=args.max_turns, max_tokens=args.max_tokens, wall_s=args.wall_s, bash_timeout_s=args.bash_timeout))
    summary = collect(tasks, new_policy, new_sandbox, args.output, cfg, show_progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _locked(lock, fn, *a):
    with lock:
        return fn(*a)


def cmd_sweep(args) -> int:
    print(f"removed {sweep_containers(images.client(), all_owners=args.all)} containers")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cwm-forager", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("base-image", help="bootstrap the registry-free base image (cached by recipe hash)")
    b = sub.add_parser("build-image", help="install a Python repository + pytest on a base, record passing tests")
    b.add_argument("repo")
    b.add_argument("--tag", required=True)
    b.add_argument("--base", help="base image with python3 and git (default: the debootstrap base)")
    b.add_argument("--flaky-runs", type=int, default=3, help="run the suite this many times; tests that flip "
                   "are recorded as flaky (default 3)")
    b.add_argument("--checkers", help="comma-separated checkers a composite reward reads: ruff,mypy,pyright")

    def sandbox_args(q):
        q.add_argument("--sandbox", choices=("docker", "local"), default="docker")
        q.add_argument("--repo", help="repository folder (local sandbox; issue-fix history)")
        q.add_argument("--memory-mb", type=int, default=2048)
        q.add_argument("--cpus", type=float, default=1.0)
        q.add_argument("--pids", type=int, default=256)
        q.add_argument("--workers", type=int, default=2)

    bl = sub.add_parser("build-images", help="build the image of every repository of a list (resumable)")
    bl.add_argument("list", help="one repository a line: FOLDER, or name==version [--hash=sha256:HEX]")
    bl.add_argument("--log", help="run log (default: LIST.images.jsonl)")
    bl.add_argument("--ray", metavar="auto|ADDRESS", help="build as Ray tasks on an existing cluster")
    bl.add_argument("--jobs", type=int, default=1, help="builds at once without --ray (default 1)")
    bl.add_argument("--base", help="base image with python3 and git (default: the debootstrap base)")

    t = sub.add_parser("tasks", help="generate validated tasks from a repository image")
    t.add_argument("image", nargs="?", help="repository image (not for --kind pr-history)")
    t.add_argument("--kind", choices=KINDS, default="mutate-fix")
    t.add_argument("--max-files", type=int, default=4, help="pr-history: most files a commit may touch")
    t.add_argument("--include", help="pr-history: regex every touched path must match, e.g. '\\.py$'")
    t.add_argument("-n", type=int, default=10)
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ray", metavar="auto|ADDRESS", help="validate candidates in sandboxes on a Ray cluster's nodes")
    sandbox_args(t)
    c = sub.add_parser("collect", help="run episodes and write trajectory shards (resumable)")
    c.add_argument("tasks")
    c.add_argument("--policy", required=True, choices=("oracle", "noop", "openai", "hf"))
    c.add_argument("--model")
    c.add_argument("--base-url")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--max-turns", type=int, default=128)
    c.add_argument("--max-tokens", type=int, default=65536)
    c.add_argument("--wall-s", type=float, default=1800.0)
    c.add_argument("--bash-timeout", type=float, default=120.0)
    c.add_argument("--shard-samples", type=int, default=1000, help="episodes per shard (the unit of resume)")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("--max-reply-tokens", type=int, help="openai: most tokens per reply (default: a quarter of the "
                   "context the server reports at /v1/models; always capped to the room the conversation leaves)")
    c.add_argument("--ray", metavar="auto|ADDRESS", help="run chunks of tasks as Ray tasks on an existing cluster")
    c.add_argument("--chunk", type=int, default=8, help="tasks per Ray unit (default 8)")
    sandbox_args(c)
    s = sub.add_parser("sweep", help="remove leftover cwm-forager containers")
    s.add_argument("--all", action="store_true", help="also those of live collectors")
    return p


COMMANDS = {"base-image": cmd_base_image, "build-image": cmd_build_image, "build-images": cmd_build_images,
            "tasks": cmd_tasks,
            "collect": cmd_collect, "sweep": cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (images.ImageError, TaskError, SandboxError, ValueError, FileNotFoundError) as exc:
        print(f"cwm-forager {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cwm-forager {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
