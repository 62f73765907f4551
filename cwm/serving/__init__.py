"""Local inference servers for trained folders (vLLM), shared by RL, the forager's policies and eval."""
