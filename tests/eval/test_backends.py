"""The local backend against a plain reference: batched, left-padded generation with a KV cache gives what a
cache-free greedy loop over one prompt gives; sampling is seeded; teacher forcing agrees with generation."""
import torch

from cwm.eval.backends import HFBackend, Prompt, SamplingParams, cut_at_stop

PROMPTS = ["def f(xs):\n    total = 0\n", "assert f(3) ==", "<|trace_context_start|>def f(a, b=3):\n    c = a",
           "x"]


def reference_greedy(backend, text, max_tokens, ids_only=False):
    """One prompt, no cache, no padding: the full sequence through the model at every step."""
    ids = backend.encode(text)
    new = []
    with torch.no_grad():
        for _ in range(max_tokens):
            x = torch.tensor([ids + new])
            token = int(backend.model(input_ids=x).logits[0, -1].argmax())
            if token == backend.tokenizer.eos_token_id:
                break
            new.append(token)
    if ids_only:
        return ids, new
    text = backend.tokenizer.decode(new, skip_special_tokens=False)
    return text.rstrip("\ufffd") if len(new) == max_tokens else text   # bytes of a cut character held back


def test_batched_generation_equals_one_prompt_at_a_time(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, batch_size=4)
    got = backend.generate([Prompt(str(i), t) for i, t in enumerate(PROMPTS)], SamplingParams(max_tokens=16))
    want = [reference_greedy(backend, t, 16) for t in PROMPTS]
    assert [g[0] for g in got] == want
    assert len({len(backend.encode(t)) for t in PROMPTS}) > 1 and any(len(w) > 8 for w in want)
    # stop strings: the text up to the first one, as the OpenAI API returns it
    stop = next(w[3:5] for w in want if len(w) > 6)
    stopped = backend.generate([Prompt(str(i), t) for i, t in enumerate(PROMPTS)],
                               SamplingParams(max_tokens=16, stop=(stop,)))
    assert [s[0] for s in stopped] == [cut_at_stop(w, (stop,)) for w in want]


def test_sampling_is_seeded(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, batch_size=2)
    prompts = [Prompt("a", PROMPTS[0]), Prompt("b", PROMPTS[1])]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=7)
    first, again = backend.generate(prompts, params), backend.generate(prompts, params)
    other = backend.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=8))
    assert first == again and first != other and all(len(s) == 3 for s in first)
    assert len(set(first[0])) > 1   # n samples differ from each other


def test_teacher_forcing_predicts_what_greedy_generation_wrote(tiny_model_dir):
    backend = HFBackend(tiny_model_dir)
    prompt_ids, generated = reference_greedy(backend, PROMPTS[2], 10, ids_only=True)
    seq = prompt_ids + generated
    (preds,) = backend.greedy_next_tokens([seq])
    assert len(preds) == len(seq) and len(generated) == 10
    assert preds[len(prompt_ids) - 1:-1] == generated     # each greedy token is the argmax after its prefix
