"""The CWM trace text format (DESIGN.md §1): special tokens, rendering a record to text, parsing it back.

Standard library only: this module is imported inside the traced program's own interpreter.
"""

TRACE_CONTEXT_START = "<|trace_context_start|>"
FRAME_SEP = "<|frame_sep|>"
CALL_SEP = "<|call_sep|>"
LINE_SEP = "<|line_sep|>"
RETURN_SEP = "<|return_sep|>"
EXCEPTION_SEP = "<|exception_sep|>"
ACTION_SEP = "<|action_sep|>"
ARG_SEP = "<|arg_sep|>"

# In CWM's vocabulary these are ids 128100-128107, in this order.
TRACE_TOKENS = (
    TRACE_CONTEXT_START, FRAME_SEP, CALL_SEP, LINE_SEP, RETURN_SEP, EXCEPTION_SEP, ACTION_SEP, ARG_SEP,
)
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."
