"""Moved to `cwm/data/chat.py` (the chat format is shared by data, forager and RL); re-exported here for old
imports."""
from cwm.data.chat import message_segments, prompt_text, trajectory_segments  # noqa: F401
