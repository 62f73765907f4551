"""ForagerAgent: agent trajectories on real repositories in sandboxes (DESIGN.md §4).

images (base image, repository images) -> tasks (mutate-fix, issue-fix) -> agent (episode loop, tools)
with policies (openai, hf, oracle, noop) in sandboxes (Docker, local) -> collect (shards) -> render (training).
"""
