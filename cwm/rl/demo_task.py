"""`python -m cwm.rl.demo_task OUT.jsonl`: one ForagerAgent task for the RL demo's software-engineering env.

A validated mutate-fix task (`cwm.forager.tasks.generate_mutate_fix`) on the forager's demo repository image
(`cwm.forager.demo`, built on first use). Without a Docker engine it prints why and writes nothing, exit 0:
the demo recipe marks the swe env optional, so the RL demo then runs without it and says so.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from cwm.forager import images
    from cwm.forager.demo import ensure_demo_image
    from cwm.forager.sandbox import DockerSandbox
    from cwm.forager.tasks import TaskError, generate_mutate_fix, write_tasks

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cwm.rl.demo_task OUT.jsonl", file=sys.stderr)
        return 2
    out = Path(args[0])
    try:
        dc = images.client()
        image = ensure_demo_image(dc, Path(tempfile.mkdtemp(prefix="cwm-rl-demo-")) / "calc")
        info = images.image_info(dc, image)
        tasks = generate_mutate_fix(image, info.repo, info.commit, info.passing, 1, seed=0,
                                    open_sandbox=lambda: DockerSandbox(image, dc=dc, run_id="rl-demo-task"))
    except images.ImageError as e:
        print(f"cwm-rl demo task: SKIPPED (no Docker task for the RL demo): {e}")
        return 0
    except TaskError as e:
        print(f"cwm-rl demo task: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    write_tasks(tasks, out)
    print(f"cwm-rl demo task: {len(tasks)} mutate-fix task on {image} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
