"""Every special token the toolkit's tokenizer must keep whole: chat headers (Llama-3 style, as CWM) and trace tokens."""
from tracer.format import TRACE_TOKENS

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|pad|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"

CHAT_TOKENS = (START_HEADER, END_HEADER, EOT)
ALL_SPECIAL_TOKENS = (BOS, EOS, PAD, *CHAT_TOKENS, *TRACE_TOKENS)


def chat_header(role: str) -> str:
    """The text that opens a chat turn of `role` (system, user, assistant, tool)."""
    return f"{START_HEADER}{role}{END_HEADER}\n\n"
